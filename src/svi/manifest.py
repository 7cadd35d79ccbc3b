"""The manifest of a generation session (``OUT.svi.json``) and its state files: what a
run records, and the check that makes it evidence rather than input on ``--resume``.

:func:`describe_inputs` records a run's inputs (prompts, start image hash, model and
LoRA hashes, the resolved plan); :func:`check_evidence` compares a stored manifest
with the request being resumed - every input field by field, each finished clip's
seed, tries and prompt - and refuses an edited one naming the field. State files
``OUT.svi-state/after-clip-K.safetensors`` hold a finished clip's hand-off and tail.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from svi.atomic import write_atomic
from svi.errors import SviError
from svi.pipeline import Carry, SVIPipeline
from svi.plan import GenerationPlan
from svi.steering import PromptSource, Stream

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


def save_state(path: Path, carry: Carry, tail: np.ndarray) -> None:
    path.parent.mkdir(exist_ok=True)
    tensors = {
        "carry_frames": torch.from_numpy(np.ascontiguousarray(carry.frames)),
        "tail": torch.from_numpy(np.ascontiguousarray(tail)),
    }
    if carry.latents is not None:
        tensors["carry_latents"] = carry.latents.contiguous()
    write_atomic(path, save_safetensors(tensors))


def load_state(path: Path) -> tuple[Carry, np.ndarray]:
    try:
        t = load_file(str(path))
        carry = Carry(frames=t["carry_frames"].numpy(), latents=t.get("carry_latents"))
        return carry, t["tail"].numpy()
    except FileNotFoundError:
        raise SviError(f"cannot resume: {path} is missing") from None
    except (SafetensorError, OSError, KeyError) as exc:
        raise SviError(f"cannot resume: the state file {path} is damaged ({exc}); "
                       "pass --overwrite to start over") from None  # fmt: skip


def read_manifest(path: Path) -> dict[str, Any]:
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


def inputs_key(inputs: dict[str, Any]) -> str:
    """Hash of everything that determines the output (resume refuses other inputs)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def array_sha256(array: np.ndarray) -> str:
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
        "start_frames_sha256": array_sha256(start),
        "start_shape": list(start.shape),
        **PromptSource.wrap(prompts).first.table(),
        "plan": plan.to_dict(),
        **extra,
    }


def changed_inputs(stored: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
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


def check_evidence(manifest: dict[str, Any], inputs: dict[str, Any], path: Path) -> None:
    """A manifest is evidence of what a run did, never input: resumed, it must be what
    this request's run writes - its inputs (the plan field by field; the key says they
    are this request's), every finished clip's index, seed (re-rolls: its tries) and
    prompt, the frames written. SviError naming the first field edited by hand."""
    recorded = manifest.get("inputs")
    current = json.loads(json.dumps(inputs, default=str))  # as the manifest stores it
    if not isinstance(recorded, dict):
        raise _edited(path, "inputs", recorded)
    for name in changed_inputs(recorded, current):
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
    """The value of a name of :func:`changed_inputs` (``plan.steps``, ``loras[0].scale``)."""
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
