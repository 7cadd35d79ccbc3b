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

An app passes :class:`Hooks`: per-step and per-clip callbacks, a stop request (handled
as SIGINT is), and ``keep_states`` - every clip's state file is kept, so a session can
be branched at any clip (:mod:`svi.branch`).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from svi import interrupts, locks, parallel
from svi.atomic import write_atomic
from svi.errors import SviError
from svi.interrupts import Interrupted
from svi.parallel import Group
from svi.pipeline import Carry, SVIPipeline
from svi.plan import GenerationConfig, GenerationPlan
from svi.steering import PromptSource, Stream
from svi.video import VideoWriter, write_video

if TYPE_CHECKING:
    from svi.conditions.drive import Drive

log = logging.getLogger(__name__)

MANIFEST_VERSION = 2  # 2: prompts stored once (texts + per-entry index), the plan


def manifest_path(out: Path) -> Path:
    return out.with_suffix(".svi.json")


def state_dir(out: Path) -> Path:
    return out.with_suffix(".svi-state")


def state_path(out: Path, clip: int) -> Path:
    return state_dir(out) / f"after-clip-{clip:06d}.safetensors"


def _save_state(path: Path, carry: Carry, tail: np.ndarray) -> None:
    path.parent.mkdir(exist_ok=True)
    tensors = {
        "carry_frames": torch.from_numpy(np.ascontiguousarray(carry.frames)),
        "tail": torch.from_numpy(np.ascontiguousarray(tail)),
    }
    if carry.latents is not None:
        tensors["carry_latents"] = carry.latents.contiguous()
    write_atomic(path, save_safetensors(tensors))


def _load_state(path: Path) -> tuple[Carry, np.ndarray]:
    try:
        t = load_file(str(path))
        carry = Carry(frames=t["carry_frames"].numpy(), latents=t.get("carry_latents"))
        return carry, t["tail"].numpy()
    except FileNotFoundError:
        raise SviError(f"cannot resume: {path} is missing") from None
    except (SafetensorError, OSError, KeyError) as exc:
        raise SviError(f"cannot resume: the state file {path} is damaged ({exc}); "
                       "pass --overwrite to start over") from None  # fmt: skip


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of an earlier run; SviError if it is missing, damaged or not one."""
    again = "pass --overwrite to start over"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SviError(f"cannot resume: the manifest {path} is missing; {again}") from None
    except (ValueError, OSError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise SviError(f"cannot resume: the manifest {path} is damaged ({exc}); {again}") from None
    if not (
        isinstance(manifest, dict)
        and isinstance(manifest.get("clips"), list)
        and _is_count(manifest.get("frames_written"))
        and _is_count(manifest.get("tail_frames", 0))
    ):
        raise SviError(f"cannot resume: {path} is not a manifest of svi generate; {again}")
    return manifest


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


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


def inputs_key(inputs: dict[str, Any]) -> str:
    """Hash of everything that determines the output (resume refuses other inputs)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def describe_inputs(
    pipe: SVIPipeline,
    start: np.ndarray,
    prompts: list[str] | Stream | PromptSource,
    plan: GenerationPlan,
    drive: Drive | None = None,
    extend: dict | None = None,
) -> dict[str, Any]:
    """What determines the output (``extend``: the extended video's record, absent
    without one, as ``drive``)."""
    from svi.fingerprint import fingerprint_model

    extra = {} if drive is None else {"drive": drive.describe()}  # absent: keys unchanged
    if extend is not None:
        extra["extend"] = extend
    return {
        "model": pipe.bundle.source,
        "model_fingerprint": fingerprint_model(pipe.bundle.source),
        "preset": pipe.bundle.preset.name,
        "loras": pipe.loras,
        "start_frames_sha256": _sha256(start),
        "start_shape": list(start.shape),
        **PromptSource.wrap(prompts).first.table(),
        "plan": plan.to_dict(),
        **extra,
    }


def _changed_inputs(stored: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
    """What differs between a manifest's inputs and this run's: plan fields by name, LoRA
    fields by position and name (``loras[0].expert``)."""
    changed = []
    for key in sorted(set(stored) | set(inputs)):
        if key == "plan" and isinstance(stored.get(key), dict):
            old, new = stored[key], inputs[key]
            changed += [f"plan.{f}" for f in sorted(set(old) | set(new))
                        if _recorded(old, f, new.get(f)) != new.get(f)]  # fmt: skip
        elif key == "loras" and _same_length_records(stored.get(key), inputs.get(key)):
            for i, (old, new) in enumerate(zip(stored[key], inputs[key], strict=True)):
                changed += [f"loras[{i}].{f}" for f in sorted(set(old) | set(new))
                            if old.get(f) != new.get(f)]  # fmt: skip
        elif stored.get(key) != inputs.get(key):
            changed.append(key)
    return changed


# What a run did before its plan recorded these fields (where it applied: the new value
# is not None): Wan 2.1's CLIP input came from the diffusers processor.
_BEFORE_FIELDS = {"clip_preprocess": "diffusers", "extend_frames": 0, "skip_first": 0}


def _recorded(plan: dict[str, Any], field: str, new: Any) -> Any:
    """A stored plan's ``field``; a manifest older than the field: what the code did then."""
    if field in plan:
        return plan[field]
    return _BEFORE_FIELDS.get(field) if new is not None else None


def _check_evidence(manifest: dict[str, Any], inputs: dict[str, Any], path: Path) -> None:
    """A manifest is evidence of what a run did, never input: resumed, it must be what
    this request's run writes - its inputs (the plan field by field; the key says they
    are this request's), every finished clip's index, seed (re-rolls: its tries) and
    prompt, the frames written. SviError naming the first field edited by hand."""
    recorded = manifest.get("inputs")
    current = json.loads(json.dumps(inputs, default=str))  # as the manifest stores it
    if not isinstance(recorded, dict):
        raise _edited(path, "inputs", recorded)
    for name in _changed_inputs(recorded, current):
        raise _edited(path, f"inputs.{name}", _field(recorded, name), _field(current, name))
    plan = GenerationPlan(**current["plan"])
    texts = current["prompt_texts"]
    streams = PromptSource.recorded(current, manifest.get("edits"))
    copied = (manifest.get("branch") or {}).get("clip", 0)  # a branch's clips: its source's
    for k, record in enumerate(manifest["clips"]):
        if not isinstance(record, dict) or record.get("index") != k:
            got = record.get("index") if isinstance(record, dict) else record
            raise _edited(path, f"clips[{k}].index", got, k)
        if k < copied:
            continue
        seed = _kept_seed(record.get("tries"), plan, k)
        if seed is None:
            raise _edited(path, f"clips[{k}].tries", record.get("tries"))
        if record.get("seed") != seed:
            raise _edited(path, f"clips[{k}].seed", record.get("seed"), seed)
        stream = streams.stream_for(k)
        prompt = stream.prompts[stream.entry(k, plan)]
        if prompt not in texts:  # a prompt of an edit (svi.steering): recorded as text
            if record.get("prompt") != prompt:
                raise _edited(path, f"clips[{k}].prompt", record.get("prompt"), prompt)
        elif record.get("prompt_index") != texts.index(prompt):
            raise _edited(path, f"clips[{k}].prompt_index", record.get("prompt_index"),
                          texts.index(prompt))  # fmt: skip
    # frames: the clips' (plan.written), then the last clip's tail - in a finished video,
    # and in a stopped one as tail_frames (a crashed run has not written it)
    n, status, tail = len(manifest["clips"]), manifest.get("status"), manifest.get("tail_frames", 0)
    last = plan.stitch_tail if n else 0
    if tail not in (0, last) or (tail and status != "interrupted"):
        raise _edited(path, "tail_frames", tail, last)
    frames = plan.written(n) + (last if status == "complete" else tail)
    if manifest["frames_written"] != frames:
        raise _edited(path, "frames_written", manifest["frames_written"], frames)


def _kept_seed(tries: Any, plan: GenerationPlan, k: int) -> int | None:
    """Clip k's seed by the plan: ``clip_seed(k)``; with re-roll, the kept one of its
    tries, which must be ``clip_seed(k) + 0, 1, ...`` (None: a record no run writes)."""
    first = plan.clip_seed(k)
    if plan.reroll is None:
        return first if tries is None else None
    if not isinstance(tries, list) or not 1 <= len(tries) <= plan.max_rerolls + 1:
        return None
    if not all(isinstance(t, dict) and t.get("seed") == first + r for r, t in enumerate(tries)):
        return None
    kept = [t["seed"] for t in tries if t.get("kept") is True]
    return kept[0] if len(kept) == 1 else None


def _field(inputs: dict[str, Any], name: str) -> Any:
    """The value of a name of :func:`_changed_inputs` (``plan.steps``, ``loras[0].scale``)."""
    head, _, rest = name.partition(".")
    if head.endswith("]"):
        key, index = head[:-1].split("[")
        record = (inputs.get(key) or [])[int(index)]
        return record.get(rest) if isinstance(record, dict) else None
    value = inputs.get(head)
    return value.get(rest) if rest and isinstance(value, dict) else value


_UNSAID = object()


def _edited(path: Path, name: str, recorded: Any, used: Any = _UNSAID) -> SviError:
    """The refusal of a manifest edited by hand: the field, its value and the run's."""
    said = "not what a run writes" if used is _UNSAID else f"the run it records used {_short(used)}"
    return SviError(f"cannot resume: {path} was edited: {name} is {_short(recorded)}, {said}; "
                    "pass --overwrite to start over")  # fmt: skip


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _same_length_records(old: Any, new: Any) -> bool:
    """Two lists of dicts of one length (compared field by field), e.g. LoRA records."""
    return (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
            and all(isinstance(r, dict) for r in old + new))  # fmt: skip


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
                    _save_state(state_path(out, clip.index), clip.carry, tail)
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
              "seconds": round(clip.seconds, 4), "frames_sha256": _sha256(clip.new_frames),
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
        manifest = _read_manifest(mpath)
        if manifest.get("key") != inputs_key(inputs):
            changed = _changed_inputs(manifest.get("inputs") or {}, inputs)
            raise SviError("--resume needs the same settings as the interrupted run; changed: "
                           + (", ".join(changed) or "unknown"))  # fmt: skip
        _check_evidence(manifest, inputs, mpath)
        if manifest.get("status") == "complete" and out.is_file():
            log.warning("%s is already complete: nothing to resume", out)
            return manifest, None, None, None, 0
        first = len(manifest["clips"])
        _note_memory_change(manifest, memory, first)
        _note_parallel_change(manifest, group, first)
        if first == 0:  # crashed inside the first clip: start over under the same manifest
            VideoWriter.discard_partial(out)
            return manifest, VideoWriter(out, **video), None, None, 0
        carry, tail = _load_state(state_path(out, first - 1))
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


@dataclass(frozen=True)
class GenerateRequest:
    """Everything ``svi generate`` accepts (the CLI only fills this in). Generation
    settings live in ``config`` (their defaults: :class:`GenerationConfig`); its
    ``clips`` is replaced by the length asked for here."""

    out: Path = Path("svi.mp4")
    model: str | None = None
    preset: str | None = None
    lora: list[Path] = field(default_factory=list)  # high-noise expert (or the only DiT)
    lora_scale: list[float] = field(default_factory=list)
    lora_low: list[Path] = field(default_factory=list)  # low-noise expert (Wan 2.2 A14B)
    lora_low_scale: list[float] = field(default_factory=list)
    no_lora: bool = False
    image: Path | None = None
    extend: Path | None = None  # a video to continue: its last frames carry into clip 0
    new_only: bool = False  # with extend: write the new frames alone
    steerable: bool = False  # every LoRA attached as an adapter: any strength may be steered
    prompt: str | None = None
    prompts: Path | None = None
    config: GenerationConfig = field(default_factory=GenerationConfig)
    clips: int | None = None
    seconds: float | None = None
    frames: int | None = None
    forever: bool = False
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    world_kind: str | None = None  # default: consistent; talking / dancing with audio / pose
    world_seed: int | None = None
    audio: Path | None = None  # SVI-Talk: the driving wav
    audio_cfg: float | None = None  # audio guidance (default 1: no audio CFG pass)
    audio_encoder: Path | None = None  # wav2vec2 folder (Wan); world: log-mel features
    pose: Path | None = None  # SVI-Dance: the driving pose video
    clips_dir: Path | None = None
    lossless: bool = False
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    offload: str | None = None  # memory mode (svi.models.offload; None: its default)
    weights_dtype: str | None = None
    vae_tiling: bool | None = None
    parallel: str | None = None  # context parallelism across launched processes (svi.parallel)


DEFAULT_SECONDS = 32.0


def _fit_clip_to_image(pipe: SVIPipeline, image_size: tuple[int, int], variant) -> None:
    """A Wan clip takes the start image's aspect (svi.starts.clip_size): a variant's
    width cap (its script's rule; a fixed-size variant keeps the preset's size), else
    the preset's longer side as the cap. The world model's size is fixed."""
    from svi.starts import clip_size

    preset = pipe.bundle.preset
    if preset.family != "wan" or (variant is not None and variant.max_width is None):
        return
    h0, w0 = image_size
    if variant is not None:
        h, w = clip_size(h0, w0, max_width=variant.max_width)
    else:
        h, w = clip_size(h0, w0, max_side=max(preset.height, preset.width))
    if (h, w) != (preset.height, preset.width):
        log.info("clip size %dx%d from the %dx%d start image", w, h, w0, h0)
        pipe.bundle.preset = replace(preset, height=h, width=w)


def _load_loras(
    pipe: SVIPipeline, req: GenerateRequest, adapters: bool | set[str] = frozenset()
) -> None:
    """Merge ``--lora`` files into the high-noise expert (or the only DiT) and
    ``--lora-low`` files into the low-noise one, each at its scale (default 1.0); with
    neither (and no ``--no-lora``), the embedded model's default LoRA. The ones named in
    ``adapters`` (by a prompt stream's segments; True: all) are attached as peft
    adapters."""
    if req.lora_low:
        pipe.expert_dit("low")  # no low-noise expert: refused before anything is merged
    for expert, paths, scales in (("high", req.lora, req.lora_scale),
                                  ("low", req.lora_low, req.lora_low_scale)):  # fmt: skip
        for i, path in enumerate(paths):
            pipe.load_lora(path, scales[i] if i < len(scales) else 1.0, expert=expert,
                           adapter=adapters)  # fmt: skip
    if req.lora or req.lora_low or req.no_lora:
        return
    if req.audio is not None or req.pose is not None:  # the shipped Talk / Dance adapter
        name = "talk" if req.audio is not None else "dance"
        if pipe.bundle.bundled_lora(name) is None:
            raise SviError(f"no {name} adapter ships with {pipe.bundle.preset.name}; give the "
                           "conditional adapter with --lora")  # fmt: skip
        pipe.load_lora(name, adapter=adapters)
    elif pipe.bundle.default_lora is not None:
        pipe.load_lora(pipe.bundle.default_lora, adapter=adapters)


@dataclass
class Prepared:
    """A request resolved: the loaded pipeline and everything ``generate_to_file`` takes."""

    pipe: SVIPipeline
    start: np.ndarray
    prompts: Stream  # prompts and per-entry LoRA strengths (svi.steering)
    plan: GenerationPlan
    drive: Drive | None
    prefix: np.ndarray | None = None  # an extension's input frames, written first
    extend: dict | None = None  # ... and their record in the manifest's inputs
    group: Group | None = None  # context parallelism (svi.parallel)


def run_generate(req: GenerateRequest, hooks: Hooks | None = None) -> dict[str, Any]:
    """Resolve a request (:func:`prepare_generation`), then generate (``hooks``: an app's
    callbacks, :class:`Hooks`)."""
    p = prepare_generation(req)
    if p.group is not None and not p.group.is_main:
        return _follow(p)
    return generate_to_file(
        p.pipe, p.start, p.prompts, p.plan, Path(req.out), lossless=req.lossless,
        resume=req.resume, overwrite=req.overwrite, clips_dir=req.clips_dir,
        progress=req.progress, drive=p.drive, hooks=hooks, prefix=p.prefix, extend=p.extend,
        group=p.group,
    )  # fmt: skip


def _follow(p: Prepared) -> dict[str, Any]:
    """A rank other than 0 of a context-parallel run: the same clip loop from where rank
    0 starts (:func:`svi.parallel.share_start`), every DiT forward shared; no file."""
    shared = parallel.share_start(p.group, None)
    frames = clips = 0
    if not shared["done"]:
        for clip in p.pipe.generate(p.start, p.prompts, p.plan, first_clip=shared["first"],
                                    carry=shared["carry"], drive=p.drive):  # fmt: skip
            frames, clips = frames + len(clip.new_frames), clips + 1
    return {"status": f"rank {p.group.rank}", "frames_written": frames, "clips": [None] * clips}


def prepare_generation(req: GenerateRequest) -> Prepared:
    """Resolve a request: model, LoRAs, start, prompts, plan, length and stream.

    Every setting is resolved and validated into a :class:`GenerationPlan` before the
    output or its manifest is touched.
    """
    from svi.crop import fit_frames
    from svi.models.offload import MemoryMode
    from svi.plan import clips_for_length
    from svi.prompt_stream import read_prompt_entries
    from svi.starts import DEFAULT_WORLD_SEED, image_start, world_start
    from svi.variants import get_variant, variant_clips
    from svi.video import read_image

    if req.prompt is not None and req.prompts is not None:
        raise SviError("give --prompt or --prompts, not both")
    if req.image is not None and not Path(req.image).is_file():
        raise SviError(f"image {req.image} does not exist")
    if req.new_only and req.extend is None:
        raise SviError("--new-only needs --extend VIDEO")
    _check_drive_request(req)
    if len(req.lora_scale) > len(req.lora):
        raise SviError("more --lora-scale values than --lora files")
    if len(req.lora_low_scale) > len(req.lora_low):
        raise SviError("more --lora-low-scale values than --lora-low files")
    for side, value in (("--height", req.height), ("--width", req.width)):
        if value is not None and (value < 16 or value % 16):
            raise SviError(f"{side} must be a positive multiple of 16 (Wan's token size), "
                           f"got {value}")  # fmt: skip
    memory = MemoryMode.from_options(req.offload, req.weights_dtype, req.vae_tiling)
    group = None if req.parallel is None else parallel.start(req.parallel)
    picture = None if req.image is None else read_image(req.image)  # read once, before weights
    source = None if req.extend is None else read_extend_source(req.extend)
    pipe = SVIPipeline.from_pretrained(req.model, req.preset, memory, height=req.height,
                                       width=req.width, num_frames=req.num_frames)  # fmt: skip
    variant = get_variant(req.config.variant, pipe.bundle.preset) if req.config.variant else None
    fitted = picture if source is None else source.frames[0]
    if fitted is not None and req.height is None and req.width is None:
        _fit_clip_to_image(pipe, fitted.shape[:2], variant)
    preset = pipe.bundle.preset
    config = replace(req.config, clips=0)
    fps = req.fps
    if source is not None:
        config = replace(config, extend=len(source.frames), new_only=req.new_only)
        fps = fps or source.fps
    segment_loras = None
    if req.prompts is not None:
        per_clip = pipe.plan(config, ["a", "b"], fps)  # a stream's clip length (LoRAs: none)
        prompts, segment_loras = read_prompt_entries(
            req.prompts, seconds_per_clip=per_clip.new_frames / per_clip.fps
        )
    elif req.prompt is not None:
        if not req.prompt.strip():
            raise SviError("--prompt is empty")
        prompts = [req.prompt]
    elif req.image is None and (req.extend is None or preset.family == "world"):
        prompts = None
    else:
        raise SviError(f"give --prompt or --prompts with --{'image' if req.image else 'extend'}")
    named = {name for table in segment_loras or [] for name in table}
    _load_loras(pipe, req, True if req.steerable else named)  # adapters: the ones named
    pipe.check_lora_names(named)
    prefix = extend = None
    if source is not None:
        video = fit_frames(source.frames, preset.height, preset.width)  # (F', H, W, 3)
        anchor = video[:1] if picture is None else image_start(picture, preset)
        plan = pipe.plan(config, prompts or ["a"], fps)  # checks the length; carried frames
        start = np.concatenate([anchor, video[-plan.carried_frames :]])
        prefix = None if req.new_only else video
        extend = {**source.record, "frames_sha256": _sha256(video)}
        if prompts is None:
            prompts = world_start(preset)[1]  # the world scene's prompt on a world model
    elif req.image is not None:
        start = image_start(picture, preset, stretch=variant is not None)
    else:
        kind = req.world_kind or ("talking" if req.audio else "dancing" if req.pose else None)
        start, world_prompts = world_start(
            preset, kind or "consistent", req.world_seed or DEFAULT_WORLD_SEED
        )
        prompts = prompts or world_prompts
    plan = pipe.plan(config, prompts, fps)
    drive = _read_drive(req, pipe, plan, variant)
    n_prompts = 1 if plan.first_prompt_only else len(prompts) * plan.prompt_repeat
    given = any(x is not None for x in (req.clips, req.seconds, req.frames)) or req.forever
    if drive is not None and not given:  # the video follows the audio / pose stream
        n = drive.default_clips(plan.num_frames, plan.motion_frames)
    else:
        n = clips_for_length(
            clips=req.clips, seconds=req.seconds, frames=req.frames, forever=req.forever,
            fps=plan.fps, num_frames=plan.num_frames, new_frames=plan.new_frames,
            n_prompts=n_prompts, default_seconds=DEFAULT_SECONDS,
            default_clips=variant_clips(plan, n_prompts),
        )  # fmt: skip
    if drive is not None:
        drive.check_clips(n, plan.num_frames, plan.motion_frames)
    plan = pipe.plan(replace(config, clips=n), prompts, fps)
    if group is not None:
        _enable_parallel(pipe, group)
    stream = Stream.of(prompts, segment_loras if named else None)
    return Prepared(pipe, start, stream, plan, drive, prefix, extend, group)


@dataclass(frozen=True)
class ExtendSource:
    """A video to continue, as read: its frames, frame rate and record (path, hash)."""

    frames: np.ndarray  # (F', h, w, 3) uint8
    fps: int | None
    record: dict


def read_extend_source(path: Path) -> ExtendSource:
    """The frames of ``--extend`` (any video or image the reader takes) with its frame
    rate (rounded; a still image: None) and the file's sha256; SviError if unreadable."""
    from svi.video import read_video, video_fps
    from svi.video.reader import check_input_file

    file = check_input_file(path)
    frames = read_video(file)
    fps = round(video_fps(file)) or None  # a still image has none: the model's
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return ExtendSource(frames, fps, {"sha256": digest, "frames": len(frames)})


def _enable_parallel(pipe: SVIPipeline, group: Group) -> None:
    """Split every DiT forward of a Wan model over the launched processes."""
    b = pipe.bundle
    if b.preset.family != "wan":
        raise SviError("--parallel splits a Wan model's DiT; the embedded world model runs "
                       "in one process")  # fmt: skip
    _, ph, pw = b.transformer.config.patch_size
    side = b.codec.spatial_factor
    tokens = (b.codec.latent_frames(b.preset.num_frames) * (b.preset.height // (side * ph))
              * (b.preset.width // (side * pw)))  # fmt: skip
    parallel.check_tokens(tokens, group)
    parallel.enable([d for d in (b.transformer, b.transformer_2) if d is not None], group)


def _check_drive_request(req: GenerateRequest) -> None:
    """Audio / pose inputs are files and not both (before any weight loads)."""
    if req.audio is not None and req.pose is not None:
        raise SviError("give --audio or --pose, not both")
    for flag, path in (("--audio", req.audio), ("--pose", req.pose),
                       ("--audio-encoder", req.audio_encoder)):  # fmt: skip
        if path is not None and not Path(path).exists():
            raise SviError(f"{flag} {path} does not exist")
    if req.audio is None and (req.audio_cfg is not None or req.audio_encoder is not None):
        raise SviError("--audio-cfg and --audio-encoder need --audio")


def _read_drive(req: GenerateRequest, pipe: SVIPipeline, plan: GenerationPlan, variant=None):
    """The audio / pose stream of the request at the plan's frame rate and clip size,
    checked against the loaded adapter and the variant (None without --audio / --pose).
    Audio guidance: ``--audio-cfg``, else the variant's on Wan (Talk: 5), else 1."""
    from svi.conditions.drive import check_model_drive, read_audio_drive, read_pose_drive

    b = pipe.bundle
    if variant is not None and variant.condition is not None:
        given = "audio" if req.audio is not None else "pose" if req.pose is not None else None
        if given != variant.condition:
            raise SviError(f"--variant {variant.name} is driven by --{variant.condition}")
    tf = b.codec.temporal_factor
    drive = None
    if req.audio is not None:
        encoder = None
        if req.audio_encoder is not None:
            from svi.conditions.wav2vec import Wav2Vec2Features

            encoder = Wav2Vec2Features.from_folder(req.audio_encoder)
        elif b.preset.family != "world":
            raise SviError("--audio on a Wan model needs --audio-encoder (a local wav2vec2 "
                           "folder, e.g. chinese-wav2vec2-base)")  # fmt: skip
        guidance = 1.0 if variant is None or b.preset.family == "world" else variant.audio_cfg
        guidance = guidance if req.audio_cfg is None else req.audio_cfg
        drive = read_audio_drive(req.audio, fps=plan.fps, temporal_factor=tf,
                                 guidance=guidance, encoder=encoder)  # fmt: skip
    elif req.pose is not None:
        drive = read_pose_drive(req.pose, height=b.preset.height, width=b.preset.width,
                                temporal_factor=tf)  # fmt: skip
    for dit in filter(None, (b.transformer, b.transformer_2)):
        check_model_drive(dit, drive)
    return drive
