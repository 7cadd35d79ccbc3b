"""Expert LoRAs of Wan 2.2 A14B: ``--lora`` merges into the high-noise expert (or the
only DiT), ``--lora-low`` into the low-noise one; each is recorded with its expert."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from svi import session
from svi.cli import main
from svi.errors import SviError
from svi.lora import save_lora
from svi.manifest import manifest_path
from svi.pipeline import SVIPipeline
from svi.plan import GenerationConfig
from svi.request import GenerateRequest, run_generate
from wan_fixtures import build_tiny_wan_folder
from world_fixtures import build_tiny_world_model, random_lora

WAN21, A14B = "wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b"
CLIP = {"height": 32, "width": 32, "num_frames": 9}
CLIP_ARGS = ["--height", "32", "--width", "32", "--num-frames", "9", "--steps", "1"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny A14B, Wan 2.1 and world models, two LoRAs for their (same-shaped) DiTs and a
    start image."""
    from PIL import Image

    root = tmp_path_factory.mktemp("experts")
    a14b = build_tiny_wan_folder(root, A14B)
    dit = SVIPipeline.from_pretrained(a14b, **CLIP).bundle.transformer
    loras = {}
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        weights = {k: 0.1 * v for k, v in random_lora(dit).items()}  # small: finite videos
        loras[name] = save_lora(root / f"{name}.safetensors", weights, form="diffusers")
    image = root / "start.png"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(image)
    return {"a14b": a14b, "wan21": build_tiny_wan_folder(root, WAN21),
            "world": build_tiny_world_model(root / "world"), "image": image, **loras}  # fmt: skip


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    """Names of the tensors of ``module`` that are not bit-identical to ``before``."""
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


# -- library: which DiT a LoRA lands on -----------------------------------------------
@pytest.mark.parametrize(("expert", "target", "other"),
                         [("low", "transformer_2", "transformer"),
                          ("high", "transformer", "transformer_2")])  # fmt: skip
def test_lora_changes_exactly_its_expert(folders, expert: str, target: str, other: str) -> None:
    pipe = SVIPipeline.from_pretrained(folders["a14b"], **CLIP)
    dits = {name: getattr(pipe.bundle, name) for name in ("transformer", "transformer_2")}
    before = {name: _weights(dit) for name, dit in dits.items()}
    entry = pipe.load_lora(folders["a"], expert=expert)
    assert entry["expert"] == expert and pipe.loras == [entry]
    changed = _changed(before[target], dits[target])
    assert changed and all(".attn1.to_q." in k for k in changed)
    assert not _changed(before[other], dits[other])  # the other expert: bit-identical


def test_both_experts_together_change_both(folders) -> None:
    pipe = SVIPipeline.from_pretrained(folders["a14b"], **CLIP)
    high, low = pipe.bundle.transformer, pipe.bundle.transformer_2
    before_high, before_low = _weights(high), _weights(low)
    pipe.load_lora(folders["a"], scale=0.5, expert="high")
    pipe.load_lora(folders["b"], expert="low")
    assert _changed(before_high, high) and _changed(before_low, low)
    assert [(e["expert"], e["scale"]) for e in pipe.loras] == [("high", 0.5), ("low", 1.0)]
    assert pipe.lora_padding() is None  # no trained padding in these files: still works


@pytest.mark.parametrize("model", ["wan21", "world"])
def test_low_lora_without_a_low_noise_expert_is_refused(folders, model: str) -> None:
    pipe = SVIPipeline.from_pretrained(folders[model])
    before = _weights(pipe.bundle.transformer)
    with pytest.raises(SviError, match=r"has no low-noise expert; --lora-low needs Wan 2\.2 A14B"):
        pipe.load_lora(folders["a"], expert="low")
    assert not _changed(before, pipe.bundle.transformer) and pipe.loras == []
    with pytest.raises(SviError, match="expert must be one of high, low"):
        pipe.load_lora(folders["a"], expert="middle")


def test_a_file_named_for_the_other_expert_warns_once(folders, tmp_path: Path) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("svi.pipeline")
    logger.addHandler(handler)
    cases = [("x_low_noise_lora_v2.0.safetensors", "high", True),
             ("x_HIGH-NOISE.safetensors", "low", True),
             ("x_high_noise.safetensors", "high", False), ("x_low_noise.safetensors", "low", False),
             ("x.safetensors", "low", False)]  # fmt: skip
    try:
        for name, expert, warns in cases:
            path = shutil.copy(folders["a"], tmp_path / name)
            pipe = SVIPipeline.from_pretrained(folders["a14b"], **CLIP)
            records.clear()
            pipe.load_lora(path, expert=expert)
            warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
            assert len(warnings) == warns, name
            assert all(name in w and "\n" not in w for w in warnings)
    finally:
        logger.removeHandler(handler)


# -- CLI and manifest -----------------------------------------------------------------
def _generate(folders, out: Path, model: str, *args: str) -> list[str]:
    """``svi generate`` of one clip on ``folders[model]`` (Wan: from the start image)."""
    start = ["--image", str(folders["image"]), "--prompt", "a red disc", *CLIP_ARGS]
    return ["generate", "--model", str(folders[model]), "--clips", "1", "--out", str(out),
            "--no-progress", *(start if model != "world" else ["--steps", "1"]),
            *args]  # fmt: skip


@pytest.mark.parametrize("model", ["wan21", "world"])
def test_cli_lora_low_on_a_single_expert_model_is_one_error(
    folders, tmp_path: Path, capsys, monkeypatch, model: str
) -> None:
    import svi.lora

    merged = []
    monkeypatch.setattr(svi.lora, "apply_lora", lambda *a, **k: merged.append(a))
    out = tmp_path / "v.mp4"
    argv = _generate(folders, out, model, "--lora", str(folders["a"]), "--lora-low",
                     str(folders["b"]))  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "has no low-noise expert; --lora-low needs Wan 2.2 A14B" in err[0]
    assert merged == []  # refused before the --lora was merged
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_more_low_scales_than_files_is_one_error(folders, tmp_path: Path, capsys) -> None:
    out = tmp_path / "v.mp4"
    argv = _generate(folders, out, "a14b", "--lora-low", str(folders["b"]), "--lora-low-scale",
                     "0.5", "--lora-low-scale", "0.7")  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: more --lora-low-scale values than --lora-low files"]
    assert list(tmp_path.iterdir()) == []


def test_cli_manifest_records_the_expert_of_every_lora(folders, tmp_path: Path, capsys) -> None:
    from svi.lora import lora_fingerprint

    out = tmp_path / "v.mp4"
    argv = _generate(folders, out, "a14b", "--lora", str(folders["a"]), "--lora-scale", "0.5",
                     "--lora-low", str(folders["b"]), "--lora-low", str(folders["a"]),
                     "--lora-low-scale", "0.7")  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    loras = json.loads(manifest_path(out).read_text())["inputs"]["loras"]
    got = [(r["path"], r["expert"], r["scale"], r["sha256"]) for r in loras]
    a, b = str(folders["a"]), str(folders["b"])
    assert got == [(a, "high", 0.5, lora_fingerprint(a)), (b, "low", 0.7, lora_fingerprint(b)),
                   (a, "low", 1.0, lora_fingerprint(a))]  # fmt: skip


def test_resume_refuses_a_lora_moved_to_the_other_expert(
    folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "v.mp4"

    def request(**loras) -> GenerateRequest:
        return GenerateRequest(out=out, model=str(folders["a14b"]), image=folders["image"],
                               prompt="a red disc", clips=2, progress=False, lossless=True,
                               config=GenerationConfig(steps=1), **CLIP, **loras)  # fmt: skip

    real, writes = session.write_atomic, []

    def crash_after_clip_0(path: Path, data: bytes) -> None:
        if Path(path).name.endswith(".svi.json"):
            writes.append(path)
            if len(writes) == 3:  # 1: the initial manifest, 2: clip 0, 3: clip 1
                raise RuntimeError("simulated crash")
        real(path, data)

    with monkeypatch.context() as m:
        m.setattr(session, "write_atomic", crash_after_clip_0)
        with pytest.raises(RuntimeError, match="simulated"):
            run_generate(request(lora=[folders["a"]]))
    with pytest.raises(SviError, match=r"changed: loras\[0\]\.expert$"):
        run_generate(request(lora_low=[folders["a"]], resume=True))
    manifest = run_generate(request(lora=[folders["a"]], resume=True))  # the same: resumes
    assert manifest["status"] == "complete" and len(manifest["clips"]) == 2
