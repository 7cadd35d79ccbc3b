"""Text encoders: the packaged MiniLM and a tiny umT5, same output contract and cache."""

from __future__ import annotations

import pytest
import torch

from svi.errors import SviError
from svi.models.text import MiniLMTextEncoder, TextEncoder, UMT5TextEncoder
from wan_fixtures import TEXT_DIM, tiny_tokenizer, tiny_umt5


def _real_tokens(states: torch.Tensor) -> int:
    """Rows before the zero padding of one prompt's (L, D) states."""
    nonzero = (states.abs().sum(-1) > 0).long()
    n = int(nonzero.sum())
    assert torch.all(nonzero[:n] == 1) and torch.all(nonzero[n:] == 0)
    return n


# --------------------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextEncoder:
    return MiniLMTextEncoder(max_length=40)


def test_minilm_loads_lazily():
    enc = MiniLMTextEncoder()
    assert isinstance(enc, TextEncoder)
    assert enc._model is None  # nothing loaded until the first prompt
    assert (enc.dim, enc.max_length) == (384, 40)


def test_minilm_shapes_and_zero_padding(minilm):
    out = minilm.encode(["a red disc", ""])
    assert out.shape == (2, 40, 384) and out.dtype == torch.float32
    assert _real_tokens(out[0]) == 5  # [CLS] a red disc [SEP]
    assert _real_tokens(out[1]) == 2  # [CLS] [SEP]: the empty prompt is allowed
    assert not out.requires_grad


def test_minilm_truncates_long_prompts(minilm):
    out = minilm.encode(["red disc " * 60])
    assert _real_tokens(out[0]) == 40


def test_minilm_is_deterministic_and_batch_independent(minilm):
    alone = MiniLMTextEncoder(cache_size=0)
    alone._model, alone._tokenizer = minilm._model, minilm._tokenizer
    a = alone.encode(["a blue square enters from the left"])[0]
    b = alone.encode(["the lights dim", "a blue square enters from the left"])[1]
    assert torch.equal(a, b)


def test_minilm_cache_counts(minilm):
    minilm.clear_cache()
    before = minilm.cache_info()
    minilm.encode(["the red disc turns yellow", "the red disc turns yellow"])
    minilm.encode(["the red disc turns yellow"])
    info = minilm.cache_info()
    assert info.misses - before.misses == 1
    assert info.hits - before.hits == 2
    assert info.size == 1 and info.seconds > 0


def test_minilm_is_the_pretrained_model(minilm):
    """Mean-pooled states of paraphrases are close, unrelated prompts are not."""

    def pooled(prompt: str) -> torch.Tensor:
        s = minilm.encode([prompt])[0]
        v = s[: _real_tokens(s)].mean(0)
        return v / v.norm()

    a = pooled("a red disc bounces over a green checkerboard")
    b = pooled("a red circle bounces over a green chessboard")
    c = pooled("the lights dim")
    assert float(a @ b) > float(a @ c) + 0.3


def test_minilm_rejects_non_strings(minilm):
    with pytest.raises(SviError):
        minilm.encode([1, 2])
    with pytest.raises(SviError):
        minilm.encode([])


# --------------------------------------------------------------------------- umT5


@pytest.fixture(scope="module")
def umt5_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("umt5")
    tok = tiny_tokenizer()
    tiny_umt5(vocab_size=len(tok)).save_pretrained(root / "text_encoder")
    tok.save_pretrained(root / "tokenizer")
    return root / "text_encoder", root / "tokenizer"


def test_umt5_from_folder_contract(umt5_dirs):
    enc = UMT5TextEncoder.from_folder(*umt5_dirs)
    assert isinstance(enc, TextEncoder)
    assert (enc.dim, enc.max_length) == (TEXT_DIM, 512)
    out = enc.encode(["a red disc", ""])
    assert out.shape == (2, 512, TEXT_DIM) and out.dtype == torch.float32
    assert _real_tokens(out[0]) == 4  # a red disc </s>
    assert _real_tokens(out[1]) == 1  # </s>


def test_umt5_matches_the_wan_pipeline(umt5_dirs):
    """Same states as diffusers' WanPipeline._get_t5_prompt_embeds (pad to max, cut, zero)."""
    from diffusers import WanPipeline
    from transformers import AutoTokenizer, UMT5EncoderModel

    model = UMT5EncoderModel.from_pretrained(umt5_dirs[0], use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(umt5_dirs[1])
    pipe = WanPipeline(tokenizer=tok, text_encoder=model, vae=None, scheduler=None)
    prompts = ["a red  disc\n bounces", "", "the lights dim"]
    with torch.no_grad():
        ref = pipe._get_t5_prompt_embeds(prompt=prompts, max_sequence_length=16, device="cpu")
    ours = UMT5TextEncoder(model, tok, max_length=16).encode(prompts)
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-5)


def test_umt5_cache_and_cleaning(umt5_dirs):
    enc = UMT5TextEncoder.from_folder(*umt5_dirs, max_length=16)
    a = enc.encode(["a  red\n disc "])
    b = enc.encode(["a red disc"])
    torch.testing.assert_close(a, b)  # whitespace is normalised as Wan does
    enc.encode(["a red disc"])
    assert enc.cache_info().hits == 1 and enc.cache_info().misses == 2


def test_umt5_missing_folder(tmp_path, umt5_dirs):
    with pytest.raises(SviError, match="does not exist"):
        UMT5TextEncoder.from_folder(tmp_path / "nope", umt5_dirs[1])


def test_a_truncated_prompt_warns_once(umt5_dirs, caplog):
    """A prompt longer than max_length gives ONE visible warning line, whatever the cache."""
    import logging

    enc = UMT5TextEncoder.from_folder(*umt5_dirs, max_length=8, cache_size=0)
    long = "a red disc bounces over the blue square and the green circle"  # 12 words + </s>
    with caplog.at_level(logging.WARNING, logger="svi.models.text"):
        for _ in range(3):
            enc.encode([long])  # uncached: tokenised again every time
        enc.encode(["a red disc"])  # fits: no warning
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].name == "svi.models.text"
    message = warnings[0].getMessage()
    assert "13 tokens" in message and "8" in message and "\n" not in message
    with caplog.at_level(logging.WARNING, logger="svi.models.text"):
        enc.encode([long + " and the triangle"])  # another prompt: its own warning
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2
