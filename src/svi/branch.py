"""Branch a generation at clip k: keep clips 0..k-1, generate clip k on with another
seed and/or prompt stream, as a new session next to the old one (nothing overwritten).

A session that keeps its per-clip states (``Hooks(keep_states=True)``, as ``svi ui``
runs) holds, after every clip K, the hand-off of clip K (``after-clip-K``). A branch at
clip k is built as an interrupted run of the new settings: the source's stitched frames
before clip k (``plan.written(k)``), its first k clip records and its state after clip
k-1 are written under the new output, and the ordinary resume continues from there
(:func:`svi.session.generate_to_file`), so a branch runs the same code as every
generation. A branch with its source's prompt stream also follows the source's edits
(:mod:`svi.steering`): a steered video is reproduced as well. The video is the source's
file copied as it is and cut back to the end of clip k-1 by the resume (its clips are
not encoded again), so the branch must use the source's encoding (``lossless`` or
not). Branching with the source's own settings reproduces the source exactly (tested).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from svi.atomic import write_atomic
from svi.errors import SviError
from svi.manifest import (
    MANIFEST_VERSION,
    describe_inputs,
    inputs_key,
    manifest_path,
    read_manifest,
    state_path,
)
from svi.request import GenerateRequest, prepare_generation
from svi.session import Hooks, generate_to_file
from svi.video import VideoWriter

# Plan fields a branch must share with its source: the frames before clip k and the
# carried state mean the same thing only with the same clip geometry and hand-off.
SHARED = ("height", "width", "num_frames", "motion_frames", "carried_frames", "handoff",
          "stitch_head", "stitch_tail", "padding", "mask")  # fmt: skip


def branch(
    source: str | Path, clip: int, req: GenerateRequest, hooks: Hooks | None = None
) -> dict[str, Any]:
    """Clips ``0 .. clip - 1`` of ``source`` and then ``req`` (its seed, prompts, length)
    from clip ``clip`` on, into the new file ``req.out``; returns the new manifest."""
    source, out = Path(source), Path(req.out)
    old = read_manifest(manifest_path(source))
    done = len(old["clips"])
    if out.resolve() == source.resolve():
        raise SviError("a branch is a new session: give another --out than its source")
    if not 1 <= clip <= done:
        raise SviError(f"{source} has {done} finished clips: branch from a clip in 1..{done}")
    state = state_path(source, clip - 1)
    if not state.is_file():
        raise SviError(f"{source} kept no state after clip {clip - 1}: branching needs a "
                       "session that keeps every clip's state (svi ui does)")  # fmt: skip
    if out.exists() or manifest_path(out).exists() or VideoWriter.partial_path_for(out).exists():
        raise SviError(f"{out} exists: a branch never overwrites a session")
    p = prepare_generation(replace(req, resume=False, overwrite=False))
    inputs = describe_inputs(p.pipe, p.start, p.prompts, p.plan, p.drive, p.extend)
    _check_compatible(old["inputs"], inputs, p.plan.clips, clip)
    frames = p.plan.written(clip)
    # the source's encoded clips as they are: the resume cuts the copy back to clip k
    shutil.copyfile(_source_video(source), VideoWriter.partial_path_for(out))
    texts = old["inputs"].get("prompt_texts", [])
    records = [_with_prompt_text(r, texts) for r in old["clips"][:clip]]
    manifest = {"version": MANIFEST_VERSION, "key": inputs_key(inputs), "inputs": inputs,
                "status": "interrupted", "started": time.time(), "clips": records,
                "frames_written": frames, "tail_frames": 0,
                "branch": {"source": str(source), "clip": clip}}  # fmt: skip
    if old.get("edits") and _same_stream(old["inputs"], inputs):
        manifest["edits"] = old["edits"]  # the source's steering: the branch follows it too
    state_path(out, clip - 1).parent.mkdir(exist_ok=True)
    shutil.copyfile(state, state_path(out, clip - 1))
    write_atomic(manifest_path(out), json.dumps(manifest, indent=1).encode())
    return generate_to_file(p.pipe, p.start, p.prompts, p.plan, out, lossless=req.lossless,
                            resume=True, progress=req.progress, drive=p.drive,
                            hooks=hooks, prefix=p.prefix, extend=p.extend)  # fmt: skip


def _source_video(source: Path) -> Path:
    """The source's video: the finished file, or the growing one of a running session."""
    partial = VideoWriter.partial_path_for(source)
    if partial.is_file():
        return partial
    if source.is_file():
        return source
    raise SviError(f"the video of {source} is missing")


def _check_compatible(old: dict, new: dict, clips: int, clip: int) -> None:
    if old.get("start_frames_sha256") != new["start_frames_sha256"]:
        raise SviError("a branch keeps its source's start image (the anchor of every clip)")
    changed = [f for f in SHARED if old.get("plan", {}).get(f) != new["plan"].get(f)]
    if changed:
        raise SviError(f"a branch keeps its source's clip layout; changed: {', '.join(changed)}")
    if clips and clips <= clip:
        raise SviError(f"the branch asks for {clips} clips in all: more than the {clip} it keeps")


def _same_stream(old: dict, new: dict) -> bool:
    """The same prompt stream (texts, order, LoRA strengths): a branch with its source's
    stream follows the source's edits (:mod:`svi.steering`) and reproduces it."""
    keys = ("prompt_texts", "prompt_stream", "prompt_loras")
    return all(old.get(k) == new.get(k) for k in keys)


def _with_prompt_text(record: dict, texts: list[str]) -> dict:
    """A copied clip record with its prompt as text (the new session's prompt table
    differs)."""
    out = {k: v for k, v in record.items() if k != "prompt_index"}
    index = record.get("prompt_index")
    if isinstance(index, int) and 0 <= index < len(texts):
        out["prompt"] = texts[index]
    return out
