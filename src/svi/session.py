"""A generation session: clips -> streaming mp4 + JSON manifest, resumable after a crash.

Next to ``OUT.mp4`` the session keeps (written atomically after every clip):

- ``OUT.svi.json``: the manifest - inputs (prompts and per-segment LoRA strengths,
  start image hash, an extended video's sha256, model, LoRAs with path, expert, scale
  and hash, settings), per-clip prompt/LoRA strengths/seed/timing, the edits of a
  steered prompt stream (:mod:`svi.steering`: from which clip, when), frames
  written, status, and the memory mode (:mod:`svi.models.offload`; not an input: a
  resume may use another, which is logged and recorded);
- ``OUT.svi-state/after-clip-K.safetensors``: the hand-off of finished clip K
  (carried frames or latents) and its tail frames, so ``resume=True`` continues exactly.

Order per clip: append the frames to the video, write the clip's state file, then
the manifest (which makes the clip count), then delete the previous state file. A
crash anywhere leaves the manifest naming a complete clip whose state exists; the
video may be one clip ahead, and resuming cuts it back to what the manifest vouches
for, so the final file is frame-identical to an uninterrupted run.

A run holds ``OUT.mp4.lock`` (:mod:`svi.locks`) from before it touches any file. SIGINT
and SIGTERM (:mod:`svi.interrupts`) finalise ``OUT.mp4`` with the clips finished so far
(plus the last clip's tail, counted as ``tail_frames``), keep that clip's state file and
mark the manifest "interrupted"; resuming takes the video back to the partial file and
cuts the tail off. A run that fails before its first clip leaves no file behind.

What the manifest records and how a resume checks it: :mod:`svi.manifest`; the request
that becomes a session: :mod:`svi.request`.

An app passes :class:`Hooks`: per-step and per-clip callbacks, a stop request (handled
as SIGINT is), and ``keep_states`` - every clip's state file is kept, so a session can
be branched at any clip (:mod:`svi.branch`).
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from svi import interrupts, locks, parallel
from svi.atomic import write_atomic
from svi.errors import SviError
from svi.interrupts import Interrupted
from svi.manifest import (
    MANIFEST_VERSION,
    array_sha256,
    changed_inputs,
    check_evidence,
    describe_inputs,
    inputs_key,
    load_state,
    manifest_path,
    read_manifest,
    save_state,
    state_dir,
    state_path,
)
from svi.parallel import Group
from svi.pipeline import SVIPipeline
from svi.plan import GenerationConfig, GenerationPlan
from svi.steering import PromptSource, Stream
from svi.video import VideoWriter, write_video

if TYPE_CHECKING:
    from svi.conditions.drive import Drive

log = logging.getLogger(__name__)


def _check_paths(out: Path, clips_dir: Path | None) -> None:
    """The output must be a new or old .mp4 file in an existing folder."""
    if out.is_dir():
        raise SviError(f"output {out} is a directory; give a file name ending in .mp4")
    if not out.parent.is_dir():
        what = "is not a folder" if out.parent.exists() else "does not exist"
        raise SviError(f"output folder {out.parent} {what}")
    check_mp4_name(out)
    if clips_dir is not None and clips_dir.exists() and not clips_dir.is_dir():
        raise SviError(f"--clips-dir {clips_dir} is a file, not a folder")


def _guarded(generate):
    """Run ``generate_to_file`` as the one writer of its output: paths checked, the
    output's lock (:mod:`svi.locks`) held and SIGINT/SIGTERM turned into a clean stop
    (:mod:`svi.interrupts`) for the whole run, before any file is touched."""
    signature = inspect.signature(generate)

    @functools.wraps(generate)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        named = signature.bind(*args, **kwargs).arguments
        out = Path(named["out"])
        _check_paths(out, named.get("clips_dir"))
        with locks.exclusive(locks.lock_path_for(out), out), interrupts.raising():
            return generate(*args, **kwargs)

    return wrapper


@_guarded
def generate_to_file(
    pipe: SVIPipeline,
    start: np.ndarray,
    prompts: list[str] | Stream | PromptSource,
    config: GenerationConfig | GenerationPlan,
    out: Path,
    *,
    fps: int | None = None,
    crf: int = 18,
    lossless: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    clips_dir: Path | None = None,
    progress: bool = True,
    drive: Drive | None = None,
    hooks: Hooks | None = None,
    prefix: np.ndarray | None = None,
    extend: dict | None = None,
    group: Group | None = None,
) -> dict[str, Any]:
    """Generate ``plan.clips`` clips (0: until Ctrl-C) into ``out``; returns the manifest.

    An extension (``plan.extend_frames``) writes ``prefix``, the extended video's frames
    (F', H, W, 3) uint8, before clip 0; ``extend`` is its record in the inputs.
    ``config`` is resolved to a plan (:meth:`SVIPipeline.plan`) before any file is touched.
    ``drive``: the audio / pose stream of a conditional adapter (recorded in the manifest;
    clip k's part of it depends on k alone, so a resume reads the same stream position).
    ``hooks``: callbacks of an app (:class:`Hooks`). ``prompts``: a list, a
    :class:`~svi.steering.Stream` or a :class:`~svi.steering.PromptSource` that the
    caller may change between clips (from another thread): every clip not started yet
    follows the change, which the manifest records (``edits``: from which clip, when,
    the new stream) and a resume or a branch follows again. ``group``: rank 0 of a
    context-parallel run (:mod:`svi.parallel`): the other ranks learn where to start.
    """
    out, hooks = Path(out), hooks or Hooks()
    source = PromptSource.wrap(prompts)
    first_prompts = list(source.first.prompts)
    if not isinstance(config, GenerationPlan):
        config = pipe.plan(config, first_prompts, fps)
    plan = config
    fps = plan.fps
    inputs = describe_inputs(pipe, start, source, plan, drive, extend)
    pipe.check_lora_names(set().union(*(s.names() for s in source.streams())))
    if plan.extend_frames and (prefix is None or len(prefix) != plan.extend_frames):
        raise SviError(f"the plan extends a video of {plan.extend_frames} frames; pass them")
    video = {"fps": fps, "crf": 0, "pix_fmt": "yuv444p"} if lossless else {"fps": fps, "crf": crf}
    try:
        manifest, writer, carry, tail, first = _open(out, inputs, video, resume, overwrite,
                                                     pipe.memory_record(), group)  # fmt: skip
        if group is not None and manifest.get("edits"):  # only rank 0 reads the manifest
            raise SviError("a run steered while it ran (prompt edits in its manifest) "
                           "resumes in one process, not with --parallel")  # fmt: skip
    except BaseException as exc:
        if group is not None:
            parallel.share_start(group, exc)
        raise
    if group is not None:
        parallel.share_start(group, {"first": first, "carry": carry, "done": writer is None})
    if writer is None:  # --resume of a finished run
        return manifest
    for edit in manifest.get("edits", []):  # a resumed run follows its recorded edits
        source.set(Stream.from_table(edit), from_clip=edit["from_clip"])
    recorded = PromptSource.recorded(inputs, manifest.get("edits"))
    source.check = lambda stream: pipe.check_lora_names(stream.names())
    if hooks.on_source is not None:
        hooks.on_source(source)
    if first == 0 and plan.extend_frames and writer.frames_written == 0:
        writer.write(prefix)  # the extended video, then its continuation
    if clips_dir is not None:
        clips_dir.mkdir(parents=True, exist_ok=True)
    stop: Interrupted | None = None
    kept = len(manifest["clips"])  # clips the manifest on disk records
    try:
        with _bars(progress, plan, first) as (bar, on_step):
            current = [first]  # the clip being sampled

            def step(i: int) -> None:
                on_step(i)
                if hooks.on_step is not None:
                    hooks.on_step(current[0], i)
                if hooks.should_stop is not None and hooks.should_stop():
                    raise Interrupted(signal.SIGINT, "interrupted (stopped)")

            clips = pipe.generate(start, source, plan, first_clip=first, carry=carry,
                                  on_step=step, drive=drive)  # fmt: skip
            for clip in clips:
                with _defer_interrupt():  # a clip's bookkeeping is all or nothing
                    writer.write(clip.new_frames)
                    tail = clip.tail
                    save_state(state_path(out, clip.index), clip.carry, tail)
                    _note_edit(manifest, recorded, clip)
                    manifest["clips"].append(_clip_record(clip, inputs["prompt_texts"]))
                    manifest["frames_written"] = writer.frames_written
                    write_atomic(manifest_path(out), json.dumps(manifest, indent=1).encode())
                    kept = len(manifest["clips"])
                    if not hooks.keep_states:
                        state_path(out, clip.index - 1).unlink(missing_ok=True)
                    if clips_dir is not None:
                        write_video(clips_dir / f"clip_{clip.index:05d}.mp4", clip.frames, fps=fps)
                bar(len(clip.new_frames))
                current[0] = clip.index + 1
                if hooks.on_clip is not None:
                    hooks.on_clip(manifest["clips"][-1], clip)
    except (Interrupted, KeyboardInterrupt) as exc:  # SIGINT / SIGTERM: keep what is done
        stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        log.info("interrupted: finalising %s with the clips finished so far", out)
    except BaseException as exc:
        if not manifest["clips"]:  # failed before a clip was finished: leave nothing behind
            _discard(out, writer)
        elif _disk_full(exc):  # what is finished is kept: say where, and how to go on
            raise SviError(
                f"no space left on the disk of {out} (the video, its manifest and "
                f"state beside it): {kept} finished clip{'s' * (kept != 1)} kept; free "
                "space, then the same command with --resume continues"
            ) from exc
        raise
    with interrupts.ignored():  # a second Ctrl-C must not cut the finalising short
        return _finish(out, manifest, writer, tail, stop, hooks.keep_states)


def _clip_record(clip, texts: list[str]) -> dict[str, Any]:
    """A finished clip in the manifest: its prompt (an index into the inputs' texts, or
    the text of an edited stream's prompt), seed, time, frames' hash and - where LoRAs
    are attached as adapters - the strengths it used."""
    said = {"prompt_index": texts.index(clip.prompt)} if clip.prompt in texts else {
        "prompt": clip.prompt}  # fmt: skip
    record = {"index": clip.index, **said, "seed": clip.seed,
              "seconds": round(clip.seconds, 4), "frames_sha256": array_sha256(clip.new_frames),
              **clip.info}  # "tries": every re-roll (svi.reroll)  # fmt: skip
    if clip.loras:
        record["loras"] = clip.loras
    return record


def _note_edit(manifest: dict, recorded: PromptSource, clip) -> None:
    """A clip that followed another stream than the recorded one (the caller changed
    its :class:`~svi.steering.PromptSource`): record the change from this clip on."""
    if clip.stream is None or clip.stream == recorded.stream_for(clip.index):
        return
    recorded.set(clip.stream, from_clip=clip.index)
    edits = [e for e in manifest.get("edits", []) if e["from_clip"] < clip.index]
    manifest["edits"] = [*edits, {"from_clip": clip.index, "at": time.time(),
                                  **clip.stream.table()}]  # fmt: skip
    log.info("clip %d follows the edited prompt stream", clip.index)


def _disk_full(exc: BaseException) -> bool:
    """A full disk or quota, raised directly or as the cause of an svi error."""
    for e in (exc, exc.__cause__):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
    return False


def _discard(out: Path, writer: VideoWriter) -> None:
    """Remove every file of a run that finished no clip (video, manifest, state)."""
    writer.discard()
    manifest_path(out).unlink(missing_ok=True)
    shutil.rmtree(state_dir(out), ignore_errors=True)


def _finish(
    out: Path,
    manifest: dict,
    writer: VideoWriter,
    tail,
    stop: Interrupted | None,
    keep_states: bool = False,
):
    """Append the last clip's tail, close the video and the manifest; returns the manifest.

    After a signal (``stop``) the video is finalised just the same, the manifest says
    "interrupted" and the last clip's state is kept, so ``--resume`` continues the run
    (it cuts the tail off again); then ``stop`` is raised with what was written.
    """
    if not manifest["clips"]:  # not one clip finished: leave nothing behind
        _discard(out, writer)
        if stop is not None:
            raise stop.with_message(f"no clip was finished; nothing written to {out}")
        raise SviError("no clip was finished; nothing written")
    tail_frames = 0 if tail is None else len(tail)
    if tail_frames:
        writer.write(tail)
    writer.close()
    manifest.update(status="complete" if stop is None else "interrupted",
                    frames_written=writer.frames_written, finished=time.time())  # fmt: skip
    if stop is not None:
        manifest["tail_frames"] = tail_frames
    write_atomic(manifest_path(out), json.dumps(manifest, indent=1).encode())
    if stop is not None:
        clips = len(manifest["clips"])
        raise stop.with_message(f"wrote {clips} clip{'s' * (clips != 1)} to {out}; "
                                "--resume continues")  # fmt: skip
    if not keep_states:
        shutil.rmtree(state_dir(out), ignore_errors=True)
    return manifest


def check_mp4_name(out: Path) -> None:
    """An output is NAME.mp4; a bare ``.mp4`` is a hidden file with no suffix, not one."""
    if out.suffix.lower() == ".mp4":
        return
    if out.name.lower() == ".mp4":
        raise SviError(f"output {out} has no name before .mp4; give one, e.g. out.mp4")
    raise SviError(f"output {out} must end in .mp4")


def _open(out: Path, inputs: dict, video: dict, resume: bool, overwrite: bool,
          memory: dict | None = None, group: Group | None = None):  # fmt: skip
    """Writer + manifest for a fresh run, or restored ones for ``resume``. ``memory``:
    the memory mode (:mod:`svi.models.offload`), recorded beside the inputs - not one of
    them: a resume may use another (:func:`_note_memory_change`)."""
    if not out.parent.is_dir():
        raise SviError(f"output folder {out.parent} does not exist")
    check_mp4_name(out)
    partial = VideoWriter.partial_path_for(out)
    mpath = manifest_path(out)
    if resume and not mpath.exists() and not partial.exists():
        if out.exists():
            raise SviError(f"cannot resume {out}: it has no manifest {mpath.name} (not made by "
                           "svi generate?); pass --overwrite to replace it")  # fmt: skip
        log.warning("nothing to resume at %s (no manifest, no partial video): starting it", out)
        resume = False
    if resume:
        manifest = read_manifest(mpath)
        if manifest.get("key") != inputs_key(inputs):
            changed = changed_inputs(manifest.get("inputs") or {}, inputs)
            raise SviError("--resume needs the same settings as the interrupted run; changed: "
                           + (", ".join(changed) or "unknown"))  # fmt: skip
        check_evidence(manifest, inputs, mpath)
        if manifest.get("status") == "complete" and out.is_file():
            log.warning("%s is already complete: nothing to resume", out)
            return manifest, None, None, None, 0
        first = len(manifest["clips"])
        _note_memory_change(manifest, memory, first)
        _note_parallel_change(manifest, group, first)
        if first == 0:  # crashed inside the first clip: start over under the same manifest
            VideoWriter.discard_partial(out)
            return manifest, VideoWriter(out, **video), None, None, 0
        carry, tail = load_state(state_path(out, first - 1))
        writer = _reopen(out, manifest, video)
        log.info("resuming %s after its %d finished clip%s (%d frames)", out, first,
                 "s" * (first != 1), writer.frames_written)  # fmt: skip
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
    if memory is not None:
        manifest["memory"] = memory
    if group is not None:
        manifest["parallel"] = group.record()
    try:
        write_atomic(mpath, json.dumps(manifest, indent=1).encode())
    except BaseException:
        _discard(out, writer)
        raise
    return manifest, writer, None, None, 0


def _note_memory_change(manifest: dict, memory: dict | None, first: int) -> None:
    """A resume under another memory mode goes on (offloading does not change the frames)
    but says so in one line and records it (``memory_changes``: from which clip)."""
    before = manifest.get("memory")
    if memory is None or before is None:
        return
    last = (manifest.get("memory_changes") or [{"memory": before}])[-1]["memory"]
    keys = ("offload", "storage_dtype", "compute_dtype", "vae_tiling", "device")
    diff = [k for k in keys if last.get(k) != memory.get(k)]
    if not diff:
        return
    changes = ", ".join(f"{k} {last.get(k)} -> {memory.get(k)}" for k in diff)
    exact = set(diff) <= {"offload"}
    log.warning("resuming at clip %d with another memory mode (%s): %s", first, changes,
                "offloading leaves the frames as they were" if exact else
                "clips from here on may differ slightly from an uninterrupted run")  # fmt: skip
    manifest.setdefault("memory_changes", []).append({"from_clip": first, "memory": memory})


def _note_parallel_change(manifest: dict, group: Group | None, first: int) -> None:
    """A resume with another context-parallel layout (or none) goes on - the frames agree
    within float error - and records it (``parallel_changes``: from which clip)."""
    now = None if group is None else group.record()
    last = (manifest.get("parallel_changes") or [{"parallel": manifest.get("parallel")}])[-1]
    if last["parallel"] == now:
        return
    log.warning("resuming at clip %d with another process layout (%s -> %s): later clips "
                "may differ slightly in float rounding", first, last["parallel"], now)  # fmt: skip
    manifest.setdefault("parallel_changes", []).append({"from_clip": first, "parallel": now})


def _reopen(out: Path, manifest: dict, video: dict) -> VideoWriter:
    """The interrupted run's video, writable again after its last recorded clip.

    A run stopped by a signal finalised its video (``out``, ending in the last clip's
    tail): it is taken back to the partial file and the tail cut off. Every step can be
    repeated, so a crash while resuming is resumed the same way.
    """
    partial = VideoWriter.partial_path_for(out)
    moved = not partial.exists() and out.is_file()
    if moved:
        os.replace(out, partial)
    expected = manifest["frames_written"] - manifest.get("tail_frames", 0)
    try:
        writer = VideoWriter.resume(out, expected_frames=expected, **video)
    except BaseException:
        if moved:
            os.replace(partial, out)
        raise
    manifest.pop("tail_frames", None)
    manifest.update(status="running", frames_written=expected)
    write_atomic(manifest_path(out), json.dumps(manifest, indent=1).encode())
    return writer


@contextmanager
def _defer_interrupt() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while a finished clip is written (video, state, manifest),
    then stop.

    A signal during sampling stops at once; one during the few milliseconds of
    bookkeeping waits for it, so the files always agree with each other.
    """
    with interrupts.deferred() as pending:
        yield
    pending.raise_if_any()


@contextmanager
def _bars(enabled: bool, plan: GenerationPlan, first: int) -> Iterator:
    """One bar over clips (ETA, frames/s) and one over the sampler steps of the current clip."""
    steps = plan.steps
    total = plan.clips or None
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


@dataclass
class Hooks:
    """Callbacks of a generation for an app (``svi ui``); the CLI uses none."""

    on_step: Callable[[int, int], None] | None = None  # (clip index, sampler step)
    on_clip: Callable[[dict, Any], None] | None = None  # (manifest record, Clip), when written
    should_stop: Callable[[], bool] | None = None  # asked every step: True stops as Ctrl-C does
    keep_states: bool = False  # keep every clip's state file: branching from any clip
    on_source: Callable[[PromptSource], None] | None = None  # the prompts to steer, once set
