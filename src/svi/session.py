"""A generation session: clips -> streaming mp4 + JSON manifest, resumable after a crash.

Next to ``OUT.mp4`` the session keeps (written atomically after every clip):

- ``OUT.svi.json``: the manifest - inputs (prompts, start image hash, model, LoRA
  hashes, settings), per-clip prompt/seed/timing, frames written, status;
- ``OUT.svi-state/after-clip-K.safetensors``: the hand-off of finished clip K
  (carried frames or latents) and its tail frames, so ``resume=True`` continues exactly.

Order per clip: append the frames to the video, write the clip's state file, then
the manifest (which makes the clip count), then delete the previous state file. A
crash anywhere leaves the manifest naming a complete clip whose state exists; the
video may be one clip ahead, and resuming cuts it back to what the manifest vouches
for, so the final file is frame-identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file

from svi.errors import SviError
from svi.pipeline import Carry, GenerationConfig, SVIPipeline
from svi.video_io import VideoWriter, write_video

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1


def manifest_path(out: Path) -> Path:
    return out.with_suffix(".svi.json")


def state_dir(out: Path) -> Path:
    return out.with_suffix(".svi-state")


def state_path(out: Path, clip: int) -> Path:
    return state_dir(out) / f"after-clip-{clip:06d}.safetensors"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _save_state(path: Path, carry: Carry, tail: np.ndarray) -> None:
    path.parent.mkdir(exist_ok=True)
    tensors = {
        "carry_frames": torch.from_numpy(np.ascontiguousarray(carry.frames)),
        "tail": torch.from_numpy(np.ascontiguousarray(tail)),
    }
    if carry.latents is not None:
        tensors["carry_latents"] = carry.latents.contiguous()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    save_file(tensors, tmp)
    os.replace(tmp, path)


def _load_state(path: Path) -> tuple[Carry, np.ndarray]:
    try:
        t = load_file(str(path))
    except FileNotFoundError:
        raise SviError(f"cannot resume: {path} is missing") from None
    carry = Carry(frames=t["carry_frames"].numpy(), latents=t.get("carry_latents"))
    return carry, t["tail"].numpy()


def inputs_key(inputs: dict[str, Any]) -> str:
    """Hash of everything that determines the output (resume refuses other inputs)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def describe_inputs(
    pipe: SVIPipeline, start: np.ndarray, prompts: list[str], config: GenerationConfig, fps: int
) -> dict[str, Any]:
    return {
        "model": pipe.bundle.source,
        "preset": pipe.bundle.preset.name,
        "loras": pipe.loras,
        "start_frames_sha256": _sha256(start),
        "start_shape": list(start.shape),
        "prompts": prompts,
        "config": config.to_dict(),
        "fps": fps,
    }


def generate_to_file(
    pipe: SVIPipeline,
    start: np.ndarray,
    prompts: list[str],
    config: GenerationConfig,
    out: Path,
    *,
    fps: int | None = None,
    crf: int = 18,
    lossless: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    clips_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate ``config.clips`` clips (0: until Ctrl-C) into ``out``; returns the manifest."""
    out = Path(out)
    fps = fps or pipe.bundle.preset.fps
    inputs = describe_inputs(pipe, start, prompts, config, fps)
    video = {"fps": fps, "crf": 0, "pix_fmt": "yuv444p"} if lossless else {"fps": fps, "crf": crf}
    manifest, writer, carry, tail, first = _open(out, inputs, video, resume, overwrite)
    if clips_dir is not None:
        clips_dir.mkdir(parents=True, exist_ok=True)
    status = "interrupted"
    try:
        with _bars(progress, config, pipe, first) as (bar, on_step):
            clips = pipe.generate(start, prompts, config, first_clip=first, carry=carry,
                                  on_step=on_step)  # fmt: skip
            for clip in clips:
                with _defer_interrupt():  # a clip's bookkeeping is all or nothing
                    writer.write(clip.new_frames)
                    tail = clip.tail
                    _save_state(state_path(out, clip.index), clip.carry, tail)
                    manifest["clips"].append(
                        {
                            "index": clip.index,
                            "prompt": clip.prompt,
                            "seed": clip.seed,
                            "seconds": round(clip.seconds, 4),
                            "frames_sha256": _sha256(clip.new_frames),
                        }
                    )
                    manifest["frames_written"] = writer.frames_written
                    _atomic_write(manifest_path(out), json.dumps(manifest, indent=1).encode())
                    state_path(out, clip.index - 1).unlink(missing_ok=True)
                    if clips_dir is not None:
                        write_video(clips_dir / f"clip_{clip.index:05d}.mp4", clip.frames, fps=fps)
                bar(len(clip.new_frames))
        status = "complete"
    except KeyboardInterrupt:
        log.warning("interrupted: finalising %s with the clips finished so far", out)
    if tail is not None and len(tail):
        writer.write(tail)
    if writer.frames_written == 0:
        writer.abort()
        raise SviError("no clip was finished; nothing written")
    writer.close()
    manifest.update(status=status, frames_written=writer.frames_written, finished=time.time())
    _atomic_write(manifest_path(out), json.dumps(manifest, indent=1).encode())
    shutil.rmtree(state_dir(out), ignore_errors=True)
    return manifest


def _open(out: Path, inputs: dict, video: dict, resume: bool, overwrite: bool):
    """Writer + manifest for a fresh run, or restored ones for ``resume``."""
    if not out.parent.is_dir():
        raise SviError(f"output folder {out.parent} does not exist")
    if out.suffix.lower() != ".mp4":
        raise SviError(f"output {out} must end in .mp4")
    partial = VideoWriter.partial_path_for(out)
    mpath = manifest_path(out)
    if resume:
        if not mpath.exists() or not partial.exists():
            raise SviError(f"nothing to resume at {out}: no manifest or partial video")
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        if manifest.get("status") == "complete":
            raise SviError(f"{out} is already complete")
        if manifest.get("key") != inputs_key(inputs):
            raise SviError("--resume needs the same arguments as the interrupted run")
        first = len(manifest["clips"])
        if first == 0:  # crashed inside the first clip: start over under the same manifest
            VideoWriter.discard_partial(out)
            return manifest, VideoWriter(out, **video), None, None, 0
        carry, tail = _load_state(state_path(out, first - 1))
        writer = VideoWriter.resume(out, expected_frames=manifest["frames_written"], **video)
        log.info("resuming %s at clip %d (%d frames)", out, first, writer.frames_written)
        return manifest, writer, carry, tail, first
    if (out.exists() or partial.exists() or mpath.exists()) and not overwrite:
        raise SviError(f"{out} or an interrupted run of it exists; pass --resume or --overwrite")
    if overwrite:
        VideoWriter.discard_partial(out)
        mpath.unlink(missing_ok=True)
        shutil.rmtree(state_dir(out), ignore_errors=True)
    writer = VideoWriter(out, **video)
    manifest = {"version": MANIFEST_VERSION, "key": inputs_key(inputs), "inputs": inputs,
                "status": "running", "started": time.time(), "clips": [],
                "frames_written": 0}  # fmt: skip
    _atomic_write(mpath, json.dumps(manifest, indent=1).encode())
    return manifest, writer, None, None, 0


@contextmanager
def _defer_interrupt() -> Iterator[None]:
    """Hold Ctrl-C while a finished clip is written (video, state, manifest), then raise.

    An interrupt during sampling stops at once; one during the few milliseconds of
    bookkeeping waits for it, so the files always agree with each other.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


@contextmanager
def _bars(enabled: bool, config: GenerationConfig, pipe: SVIPipeline, first: int) -> Iterator:
    """One bar over clips (ETA, frames/s) and one over the sampler steps of the current clip."""
    steps = config.steps or pipe.bundle.preset.steps
    total = config.clips or None
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[rate]}"),
        disable=not enabled,
    ) as bar:  # fmt: skip
        clips = bar.add_task("clips", total=total, completed=first, rate="")
        step = bar.add_task("steps", total=steps, rate="")
        t0, frames = time.perf_counter(), 0

        def on_step(i: int) -> None:
            bar.update(step, completed=i + 1)

        def clip_done(new_frames: int) -> None:
            nonlocal frames
            frames += new_frames
            rate = frames / max(time.perf_counter() - t0, 1e-9)
            bar.update(clips, advance=1, rate=f"{rate:.1f} frames/s")
            bar.reset(step)

        yield clip_done, on_step


@dataclass(frozen=True)
class GenerateRequest:
    """Everything ``svi generate`` accepts (the CLI only fills this in)."""

    out: Path = Path("svi.mp4")
    model: str | None = None
    preset: str | None = None
    lora: list[Path] = field(default_factory=list)
    lora_scale: list[float] = field(default_factory=list)
    no_lora: bool = False
    image: Path | None = None
    prompt: str | None = None
    prompts: Path | None = None
    first_prompt_only: bool = False
    clips: int | None = None
    seconds: float | None = None
    frames: int | None = None
    forever: bool = False
    motion_frames: int | None = None
    padding: str | None = None
    handoff: str = "pixel"
    steps: int | None = None
    cfg: float | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    negative_prompt: str | None = None
    seed: int = 0
    fps: int | None = None
    world_kind: str = "consistent"
    world_seed: int | None = None
    clips_dir: Path | None = None
    lossless: bool = False
    resume: bool = False
    overwrite: bool = False
    progress: bool = True


DEFAULT_SECONDS = 32.0


def run_generate(req: GenerateRequest) -> dict[str, Any]:
    """Resolve a request (model, LoRAs, start, prompts, length) and generate to file."""
    from svi.pipeline import clips_for_length
    from svi.starts import DEFAULT_WORLD_SEED, image_start, world_start
    from svi.video_io import read_prompt_stream

    if req.prompt is not None and req.prompts is not None:
        raise SviError("give --prompt or --prompts, not both")
    if req.image is not None and not Path(req.image).is_file():
        raise SviError(f"image {req.image} does not exist")
    if len(req.lora_scale) > len(req.lora):
        raise SviError("more --lora-scale values than --lora files")
    pipe = SVIPipeline.from_pretrained(
        req.model, req.preset, height=req.height, width=req.width, num_frames=req.num_frames
    )
    preset = pipe.bundle.preset
    for i, path in enumerate(req.lora):
        pipe.load_lora(path, req.lora_scale[i] if i < len(req.lora_scale) else 1.0)
    default_lora = pipe.bundle.default_lora
    if not req.lora and not req.no_lora and default_lora is not None:
        pipe.load_lora(default_lora)
    if req.image is not None:
        start, prompts = image_start(req.image, preset), []
    else:
        start, prompts = world_start(preset, req.world_kind, req.world_seed or DEFAULT_WORLD_SEED)
    if req.prompts is not None:
        fps = req.fps or preset.fps
        per_clip = (preset.num_frames - preset.stream_motion_frames) / fps
        prompts = read_prompt_stream(req.prompts, seconds_per_clip=per_clip)
    elif req.prompt is not None:
        if not req.prompt.strip():
            raise SviError("--prompt is empty")
        prompts = [req.prompt]
    if not prompts:
        raise SviError("give --prompt or --prompts with --image")
    padding = req.padding or pipe.lora_padding()  # a LoRA brings its conditioning format
    config = GenerationConfig(
        clips=0, motion_frames=req.motion_frames, padding=padding, handoff=req.handoff,
        steps=req.steps, cfg=req.cfg, seed=req.seed, negative_prompt=req.negative_prompt,
        first_prompt_only=req.first_prompt_only,
    )  # fmt: skip
    m = pipe.motion_frames_for(config, prompts)
    n = clips_for_length(
        clips=req.clips, seconds=req.seconds, frames=req.frames, forever=req.forever,
        fps=req.fps or preset.fps, num_frames=preset.num_frames, carried=m,
        n_prompts=1 if req.first_prompt_only else len(prompts), default_seconds=DEFAULT_SECONDS,
    )  # fmt: skip
    config = replace(config, clips=n)
    return generate_to_file(
        pipe, start, prompts, config, Path(req.out), fps=req.fps, lossless=req.lossless,
        resume=req.resume,
        overwrite=req.overwrite, clips_dir=req.clips_dir, progress=req.progress,
    )  # fmt: skip
