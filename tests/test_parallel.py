"""Context-parallel generation (svi.parallel) on diffusers' engine: 2 CPU processes (gloo).

A tiny Wan 2.1 I2V folder, 32x32, 9 frames (3 latent frames x 2 x 2 = 12 video tokens,
6 per rank), 2 clips, lossless mp4. Ulysses runs on the CPU through tests/cpu_cp_launch.py
(which only stands in for the accelerator count diffusers divides by); ring needs a GPU
kernel that returns the log-sum-exp and is skipped here with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from svi import parallel
from svi.errors import SviError
from svi.interrupts import Interrupted
from svi.manifest import manifest_path
from svi.plan import GenerationConfig
from svi.request import GenerateRequest, run_generate
from svi.session import Hooks
from svi.video import read_video
from wan_fixtures import build_tiny_wan_folder

VARIANT = "wan2.1-i2v-14b-480p"
SIZE = {"height": 32, "width": 32, "num_frames": 9}
PROMPT = "a red disc bounces over a green checkerboard"
# uint8 levels between the 1- and 2-process videos of 2 clips (measured: 0). Each head's
# attention is over all tokens; the linear layers run on half the tokens per rank, which
# may round differently - over 150 clips by hand: max 4 levels (docs/scaling.md)
MAX_LEVELS = 1
LAUNCHER = Path(__file__).with_name("cpu_cp_launch.py")


def _tiny_folder(root: Path, variant: str) -> Path:
    """A tiny Wan folder with a start picture beside it."""
    from PIL import Image

    picture = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(picture).save(root / "start.png")
    return build_tiny_wan_folder(root, variant)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_folder(tmp_path_factory.mktemp("wan"), VARIANT)


def _request(folder: Path, out: Path, **kw) -> GenerateRequest:
    return GenerateRequest(out=out, model=str(folder), prompt=PROMPT, clips=2, lossless=True,
                           image=folder.parent / "start.png",
                           progress=False, config=GenerationConfig(steps=2, seed=3),
                           **SIZE, **kw)  # fmt: skip


def _torchrun(folder: Path, out: Path, mode: str, *extra: str) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    cmd = [torchrun, "--nproc_per_node", "2", str(LAUNCHER), "generate", "--model", str(folder),
           "--out", str(out), "--prompt", PROMPT, "--image", str(folder.parent / "start.png"),
           "--clips", "2", "--lossless", "--steps", "2",
           "--seed", "3", "--height", "32", "--width", "32", "--num-frames", "9",
           "--no-progress", "--parallel", mode, *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _levels(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def test_ulysses_on_two_processes_matches_one_and_resumes(folder: Path, tmp_path: Path) -> None:
    """2 processes: the video equals 1 process's within MAX_LEVELS; rank 0 alone writes
    (one mp4, one manifest recording the layout, no lock left); a 1-process run
    interrupted after clip 0 resumes on 2 processes to the same video."""
    ref = tmp_path / "ref.mp4"
    run_generate(_request(folder, ref))
    cut = tmp_path / "cut.mp4"
    done: list = []
    hooks = Hooks(on_clip=lambda record, clip: done.append(clip),
                  should_stop=lambda: len(done) >= 1)  # fmt: skip
    with pytest.raises(Interrupted):
        run_generate(_request(folder, cut), hooks)

    out = tmp_path / "par.mp4"
    fresh = _torchrun(folder, out, "ulysses")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert fresh.stdout.count("par.mp4:") == 1  # one summary line, from rank 0
    assert sorted(p.name for p in tmp_path.glob("par*")) == ["par.mp4", "par.svi.json"]
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["status"] == "complete"
    assert manifest["parallel"] == {"mode": "ulysses", "world_size": 2, "ulysses": 2,
                                    "ring": 1, "nodes": 1}  # fmt: skip
    assert _levels(read_video(out), read_video(ref)) <= MAX_LEVELS

    resumed = _torchrun(folder, cut, "ulysses", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    manifest = json.loads(manifest_path(cut).read_text())
    assert manifest["status"] == "complete" and len(manifest["clips"]) == 2
    assert manifest["parallel_changes"][0]["from_clip"] == 1
    assert manifest["parallel_changes"][0]["parallel"]["world_size"] == 2
    assert _levels(read_video(cut), read_video(ref)) <= MAX_LEVELS


def test_both_experts_of_wan22_a14b_split_with_group_offload(tmp_path: Path) -> None:
    """Wan 2.2 A14B: both experts take the plan; with --offload group (diffusers' hooks
    beside the engine's) the 2-process video still equals 1 process's."""
    folder = _tiny_folder(tmp_path, "wan2.2-i2v-a14b")
    ref, out = tmp_path / "ref.mp4", tmp_path / "par.mp4"
    run_generate(_request(folder, ref))
    done = _torchrun(folder, out, "ulysses", "--offload", "group")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _levels(read_video(out), read_video(ref)) <= MAX_LEVELS


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="ring attention needs the log-sum-exp of each block: diffusers' CPU backend "
    "'native' raises 'Native attention does not support return_lse=True' "
    "(attention_dispatch._native_attention_forward_op); the backends that return it "
    "(_native_cudnn, flash, sage) are CUDA-only. GPU: torchrun --nproc_per_node 2 -m svi.cli "
    "generate --model WAN_FOLDER --parallel ring (docs/scaling.md)",
)
def test_ring_on_two_gpus_matches_one(folder: Path, tmp_path: Path) -> None:
    ref, out = tmp_path / "ref.mp4", tmp_path / "ring.mp4"
    run_generate(_request(folder, ref))
    done = _torchrun(folder, out, "ring")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _levels(read_video(out), read_video(ref)) <= 8  # bf16 on the GPU


def test_refusals_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not launched, an unknown mode, ring on the CPU, and the CPU itself (diffusers
    divides by the accelerator count) each say why in one line."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SviError, match="torchrun or accelerate launch"):
        parallel.start("ulysses")
    with pytest.raises(SviError, match="one of ulysses, ring, usp"):
        parallel.start("tensor")
    monkeypatch.setenv("WORLD_SIZE", "2")
    if not torch.cuda.is_available():
        with pytest.raises(SviError, match="return_lse"):
            parallel.start("ring")
        with pytest.raises(SviError, match="device_count"):
            parallel.start("ulysses")


def test_degrees_and_token_split() -> None:
    assert parallel.degrees("ulysses", 8, 8) == (8, 1)
    assert parallel.degrees("ring", 8, 8) == (1, 8)
    assert parallel.degrees("usp", 16, 8) == (8, 2)  # 2 nodes x 8 GPUs: 40 heads / 8
    group = parallel.Group("ulysses", 0, 8, 8, 1)
    parallel.check_tokens(21 * 30 * 52, group)  # Wan 2.1 480p, 81 frames: 32,760 tokens
    with pytest.raises(SviError, match="do not split"):
        parallel.check_tokens(12, group)


def test_sharded_training_launch_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """An FSDP config on CPU processes would silently run as plain data parallel
    (accelerate shards only on accelerators); on GPUs sharding is not wired yet."""
    parallel.check_training_engine("MULTI_CPU")  # no sharded config: nothing to say
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(SviError, match="accelerate runs MULTI_CPU: it shards only on accel"):
        parallel.check_training_engine("MULTI_CPU")
    with pytest.raises(SviError, match=r"sharded training \(FSDP\) is not supported yet"):
        parallel.check_training_engine("FSDP")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert parallel.training_layout("MULTI_GPU", 16) == {
        "distributed_type": "MULTI_GPU", "world_size": 16, "nodes": 2}  # fmt: skip
