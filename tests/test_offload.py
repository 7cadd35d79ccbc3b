"""Memory modes (svi.models.offload) on tiny real-class Wan folders, on the CPU.

The onload device here is the CPU itself, so the hooks run their real code paths (accelerate
whole-component offload, diffusers group / leaf offloading, layerwise fp8 casting) while the
math stays the same: offloading must give the frames of ``none`` bit for bit; fp8 storage
stays within the stated tolerance.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from svi.errors import SviError
from svi.manifest import manifest_path
from svi.models.offload import FP8, MemoryMode
from svi.pipeline import GenerationConfig, SVIPipeline, rollout
from svi.plan import GenerationConfig as Config
from svi.request import GenerateRequest, run_generate
from svi.video import read_video
from wan_fixtures import build_tiny_wan_folder

CLIP = {"height": 32, "width": 32, "num_frames": 9, "steps": 2}
VARIANTS = ("wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b")
# fp8 (e4m3: 3 mantissa bits) tolerance on the uint8 frames of the tiny folders, two clips
FP8_MAX_LEVELS, FP8_MEAN_LEVELS = 8, 1.0


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wan")
    return {v: build_tiny_wan_folder(root, v) for v in VARIANTS}


def _frames(folder: Path, mode: MemoryMode) -> tuple[np.ndarray, SVIPipeline]:
    pipe = SVIPipeline.from_pretrained(folder, memory=mode, **CLIP)
    start = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    cfg = GenerationConfig(clips=2, motion_frames=1, cfg=2.0)
    video, _ = rollout(pipe, start, ["a red disc", "a blue square"], cfg)
    return video, pipe


@pytest.mark.parametrize("variant", VARIANTS)
def test_offloading_gives_the_same_frames(folders: dict[str, Path], variant: str) -> None:
    ref, _ = _frames(folders[variant], MemoryMode())
    for offload in ("model", "group", "sequential"):
        video, _ = _frames(folders[variant], MemoryMode(offload=offload))
        assert np.array_equal(video, ref), offload


@pytest.mark.parametrize("variant", VARIANTS)
def test_fp8_weights_stay_within_tolerance(folders: dict[str, Path], variant: str) -> None:
    ref, _ = _frames(folders[variant], MemoryMode())
    for offload in ("none", "group"):
        video, pipe = _frames(folders[variant], MemoryMode(offload=offload, weights_dtype="fp8"))
        diff = np.abs(video.astype(np.int16) - ref.astype(np.int16))
        assert diff.max() <= FP8_MAX_LEVELS and diff.mean() <= FP8_MEAN_LEVELS, offload
        block = pipe.bundle.transformer.blocks[0]
        assert block.ffn.net[2].weight.dtype == FP8  # stored in fp8 ...
        assert pipe.bundle.transformer.patch_embedding.weight.dtype == torch.float32  # ... not all


def test_the_hooks_are_the_ecosystems(folders: dict[str, Path]) -> None:
    from accelerate.hooks import CpuOffload
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    _, pipe = _frames(folders["wan2.1-i2v-14b-480p"], MemoryMode(offload="model"))
    b = pipe.bundle
    ring = [b.codec.vae, b.image_model, b.transformer]
    assert all(isinstance(m._hf_hook, CpuOffload) for m in ring)
    assert b.codec.vae._hf_hook.prev_module_hook.model is b.transformer  # the ring is closed
    assert b.transformer._hf_hook.prev_module_hook.model is b.image_model
    assert next(b.text_encoder.model.parameters()).device.type == "cpu"  # released
    _, pipe = _frames(folders["wan2.2-i2v-a14b"], MemoryMode(offload="group"))
    b = pipe.bundle
    assert all(_is_group_offload_enabled(m) for m in (b.transformer, b.transformer_2, b.codec.vae))


def test_options_are_checked_and_loras_merge_first(folders: dict[str, Path], tmp_path) -> None:
    with pytest.raises(SviError, match="unknown offload mode 'disk'"):
        MemoryMode(offload="disk")
    with pytest.raises(SviError, match="unknown weights dtype 'int4'"):
        MemoryMode.from_options(None, "int4", None)
    _, pipe = _frames(folders["wan2.1-i2v-14b-480p"], MemoryMode(offload="group"))
    with pytest.raises(SviError, match="merge before the first clip"):
        pipe.load_lora(tmp_path / "x.safetensors")


def _request(folder: Path, out: Path, image: Path, **kw) -> GenerateRequest:
    return GenerateRequest(out=out, model=str(folder), image=image, prompt="a red disc",
                           height=32, width=32, num_frames=9, clips=3, lossless=True,
                           progress=False, config=Config(steps=2, seed=1), **kw)  # fmt: skip


def test_manifest_records_the_mode_and_resume_may_change_it(
    folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    from PIL import Image

    from svi import session

    image = tmp_path / "start.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
    folder = folders["wan2.1-i2v-14b-480p"]
    ref = tmp_path / "ref.mp4"
    manifest = run_generate(_request(folder, ref, image, offload="group"))
    assert manifest["memory"]["offload"] == "group"
    assert manifest["memory"]["storage_dtype"] == "float32"
    out = tmp_path / "out.mp4"
    real, calls = session.write_atomic, {"n": 0}

    def crash_at_second_clip(path: Path, data: bytes) -> None:
        calls["n"] += Path(path).name.endswith(".svi.json")
        if calls["n"] == 3:  # the initial manifest, clip 0, then clip 1 fails
            raise RuntimeError("simulated crash")
        real(path, data)

    with monkeypatch.context() as m:
        m.setattr(session, "write_atomic", crash_at_second_clip)
        with pytest.raises(RuntimeError, match="simulated"):
            run_generate(_request(folder, out, image))
    with caplog.at_level(logging.WARNING, logger="svi.session"):
        resumed = run_generate(_request(folder, out, image, offload="sequential", resume=True))
    lines = [r.getMessage() for r in caplog.records if "memory mode" in r.getMessage()]
    assert len(lines) == 1 and "offload none -> sequential" in lines[0]
    assert "leaves the frames" in lines[0]
    (change,) = resumed["memory_changes"]
    assert change["from_clip"] == 1 and change["memory"]["offload"] == "sequential"
    assert resumed["memory"]["offload"] == "none"  # the run's first mode stays recorded
    assert np.array_equal(read_video(out), read_video(ref))
    assert manifest_path(out).exists()
