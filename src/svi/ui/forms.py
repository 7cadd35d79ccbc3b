"""The page's inputs as one :class:`Form`, checked and turned into a
:class:`~svi.request.GenerateRequest` (the request ``svi generate`` builds from flags).

A session keeps its form next to its video (``ID.ui.json``) and copies of its inputs
(prompt stream, start image, audio / pose), so a session can be resumed or branched after
the app restarts and its uploads are gone from Gradio's temporary folder.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from svi.errors import SviError
from svi.plan import GenerationConfig
from svi.request import GenerateRequest

LENGTHS = ("clips", "seconds", "forever")


@dataclass(frozen=True)
class Form:
    """Every setting of the page; None = the model's or variant's default."""

    prompts: str = ""  # the prompt stream editor: one per line, or a `prompts = [...]` list
    model: str = ""  # "" = the embedded model; a preset name, model folder or Wan folder
    variant: str = ""  # "" = none (svi.variants)
    image: str | None = None  # start image; None = a world scene (world_kind, world_seed)
    world_kind: str = "consistent"
    world_seed: int | None = None
    loras: str = ""  # one per line: "file" or "file, scale"
    length: str = "clips"  # clips | seconds | forever
    amount: float = 10  # clips or seconds
    seed: int = 0
    steps: int | None = None
    cfg: float | None = None
    reroll: float | None = None  # None or 0: no auto re-roll
    max_rerolls: int | None = None
    audio: str | None = None  # SVI-Talk driving wav
    pose: str | None = None  # SVI-Dance driving pose video
    extend: str | None = None  # a video to continue (its first frame the anchor, or image)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Form:
        """A form from page values (Gradio gives floats for numbers, "" for blanks)."""
        known = {f.name for f in fields(cls)}
        clean = {k: (None if v == "" and k not in ("prompts", "model", "variant", "loras")
                     else v) for k, v in values.items() if k in known}  # fmt: skip
        for name in ("world_seed", "seed", "steps", "max_rerolls"):
            if clean.get(name) is not None:
                clean[name] = _whole(clean[name], name)
        for name in ("amount", "cfg", "reroll"):
            if clean.get(name) is not None:
                clean[name] = _number(clean[name], name)
        if clean.get("seed") is None:
            clean["seed"] = 0
        return cls(**clean)


def _number(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SviError(f"{name.replace('_', ' ')} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SviError(f"{name.replace('_', ' ')} must be a finite number, got {value!r}")
    return number


def _whole(value: Any, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SviError(f"{name.replace('_', ' ')} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise SviError(f"{name.replace('_', ' ')} must be a whole number, got {value!r}")
    return int(number)


def check(form: Form) -> list[str]:
    """The prompt stream of ``form`` (empty: the world scene's prompt, as ``svi generate``
    without prompts); SviError (one sentence) for what the page got wrong, before
    anything is loaded or written."""
    from svi.prompt_stream import parse_prompt_stream
    from svi.variants import VARIANTS
    from svi.world.config import KINDS

    prompts: list[str] = []
    if form.prompts.strip():  # blank: the world scene's own prompt, as `svi generate`
        prompts = parse_prompt_stream(form.prompts, "the prompt stream", seconds_per_clip=1.0)
    elif form.image is not None:
        raise SviError("enter a prompt for the start image (only a world scene has one of "
                       "its own)")  # fmt: skip
    if form.variant and form.variant not in VARIANTS:
        known = ", ".join(n for n in VARIANTS if n != "2.0-a14b")
        raise SviError(f"unknown variant {form.variant!r}; known: {known}")
    if form.image is None and form.world_kind not in KINDS:
        raise SviError(f"unknown world scene kind {form.world_kind!r}; known: {', '.join(KINDS)}")
    if form.length not in LENGTHS:
        raise SviError(f"length must be one of {', '.join(LENGTHS)}, got {form.length!r}")
    if form.length != "forever" and not (form.amount and form.amount > 0):
        raise SviError(f"the length in {form.length} must be positive, got {form.amount}")
    if form.length == "clips" and form.amount != int(form.amount):
        raise SviError(f"the number of clips must be whole, got {form.amount}")
    if form.audio and form.pose:
        raise SviError("give an audio or a pose upload, not both")
    for what, path in (("start image", form.image), ("audio", form.audio), ("pose", form.pose),
                       ("video to continue", form.extend)):  # fmt: skip
        if path and not Path(path).is_file():
            raise SviError(f"the {what} {path} does not exist; upload it again")
    parse_loras(form.loras)
    return prompts


def parse_loras(text: str) -> list[tuple[str, float]]:
    """``file`` or ``file, scale`` per line (blank lines and ``#`` comments skipped)."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path, scale = line, 1.0
        head, sep, tail = line.rpartition(",")
        if sep:
            try:
                path, scale = head.strip(), float(tail)
            except ValueError:
                raise SviError(f"LoRA line {number}: the scale after the last comma must be a "
                               f"number, got {tail.strip()!r}") from None  # fmt: skip
        out.append((path, scale))
    return out


def adopt_inputs(form: Form, folder: Path) -> Form:
    """``form`` with its uploads copied into the session ``folder`` (kept for resume and
    branch) and its prompt stream written there as ``prompts.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.txt").write_text(form.prompts, encoding="utf-8")
    moved = {}
    for name in ("image", "audio", "pose", "extend"):
        path = getattr(form, name)
        if path and Path(path).parent.resolve() != folder.resolve():
            target = folder / f"{name}{Path(path).suffix.lower()}"
            shutil.copyfile(path, target)
            moved[name] = str(target)
    return replace(form, **moved)


def to_request(form: Form, folder: Path, out: Path) -> GenerateRequest:
    """The request of an adopted ``form`` (:func:`adopt_inputs`) writing ``out``."""
    loras = parse_loras(form.loras)
    settings = {"seed": form.seed, "steps": form.steps, "cfg": form.cfg,
                "variant": form.variant or None, "reroll": form.reroll or None,
                "max_rerolls": form.max_rerolls}  # fmt: skip
    config = GenerationConfig(**{k: v for k, v in settings.items() if v is not None})
    length = {"clips": {"clips": int(form.amount)}, "seconds": {"seconds": float(form.amount)},
              "forever": {"forever": True}}[form.length]  # fmt: skip
    return GenerateRequest(
        out=out, model=form.model.strip() or None, lora=[Path(p) for p, _ in loras],
        lora_scale=[s for _, s in loras], image=_path(form.image),
        prompts=folder / "prompts.txt" if form.prompts.strip() else None, config=config,
        world_kind=None if form.image or form.extend else form.world_kind,
        world_seed=form.world_seed, extend=_path(form.extend),
        audio=_path(form.audio), pose=_path(form.pose), progress=False, steerable=True,
        **length,
    )  # fmt: skip


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def save(form: Form, path: Path) -> None:
    path.write_text(json.dumps(asdict(form), indent=1), encoding="utf-8")


def load(path: Path) -> Form:
    try:
        return Form(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise SviError(f"{path.parent.name} has no page settings (not made by svi ui)") from None
    except (ValueError, TypeError) as exc:
        raise SviError(f"the page settings {path} are damaged ({exc})") from None
