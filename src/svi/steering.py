"""A prompt stream that may change while a video is generated (issue 27: steering).

A :class:`Stream` is what a generation follows: one prompt per stream entry and, per
entry, the LoRA strengths it sets (``{name: scale}``; ``{}``: the loaded strengths).
A :class:`PromptSource` holds the stream in effect from each clip on: a caller (the web
app, a script on another thread) calls :meth:`PromptSource.set` between clips, and every
clip not started yet takes the new stream; the finished clips stay. The manifest records
the stream the run started with (its inputs) and every change (``edits``: from which
clip, at what time, the new stream), so ``--resume`` and a branch follow the same
streams clip for clip and reproduce the video exactly.

From Python::

    source = PromptSource(["a red disc bounces"])
    thread = threading.Thread(target=generate_to_file,
                              args=(pipe, start, source, plan, Path("out.mp4")))
    thread.start()
    ...
    source.set(["the disc turns yellow"], [{"style": 0.5}])  # clips not started yet
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from svi.errors import SviError


@dataclass(frozen=True)
class Stream:
    """Prompts (one per entry) and each entry's LoRA strengths."""

    prompts: tuple[str, ...]
    loras: tuple[dict[str, float], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise SviError("a prompt stream needs at least one prompt, none of them empty")
        loras = self.loras or tuple({} for _ in self.prompts)
        if len(loras) != len(self.prompts):
            raise SviError("give one LoRA strength table per prompt")
        for table in loras:
            for name, scale in table.items():
                if not math.isfinite(float(scale)):
                    raise SviError(f"the strength of LoRA {name!r} must be finite, got {scale}")
        object.__setattr__(self, "loras", tuple(dict(t) for t in loras))

    @classmethod
    def of(cls, prompts: list[str], loras: list[dict[str, float]] | None = None) -> Stream:
        return cls(tuple(prompts), tuple(loras or ()))

    def entry(self, k: int, plan) -> int:
        """The entry clip k uses: each entry ``plan.prompt_repeat`` times, the last one
        held once the stream runs out (the first only with ``first_prompt_only``)."""
        if plan.first_prompt_only:
            return 0
        return min(k // plan.prompt_repeat, len(self.prompts) - 1)

    def names(self) -> set[str]:
        """The LoRAs any entry sets."""
        return {name for table in self.loras for name in table}

    def table(self) -> dict[str, list]:
        """The stream as the manifest stores it: distinct texts + one index per entry
        (a long prompt over many clips is stored once), and the LoRA strengths where
        an entry sets any."""
        texts: dict[str, int] = {}
        stream = [texts.setdefault(p, len(texts)) for p in self.prompts]
        out: dict[str, list] = {"prompt_texts": list(texts), "prompt_stream": stream}
        if any(self.loras):  # absent otherwise: the keys of older manifests unchanged
            out["prompt_loras"] = [dict(t) for t in self.loras]
        return out

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> Stream:
        texts = table["prompt_texts"]
        prompts = [texts[i] for i in table["prompt_stream"]]
        return cls.of(prompts, table.get("prompt_loras"))


class PromptSource:
    """The stream in effect from each clip on; :meth:`set` may be called from another
    thread while a generation runs (the clips not started yet take it)."""

    def __init__(self, prompts: list[str] | Stream, loras: list[dict] | None = None) -> None:
        first = prompts if isinstance(prompts, Stream) else Stream.of(prompts, loras)
        self._lock = threading.Lock()
        self._streams: list[tuple[int, Stream]] = [(0, first)]  # (from clip, stream)
        self.check: Callable[[Stream], None] | None = None  # set by the generation: LoRAs

    @classmethod
    def wrap(cls, prompts: list[str] | Stream | PromptSource) -> PromptSource:
        return prompts if isinstance(prompts, PromptSource) else cls(prompts)

    def set(self, prompts: list[str] | Stream, loras: list[dict] | None = None,
            from_clip: int = 0) -> None:  # fmt: skip
        """Every clip from ``from_clip`` on that has not started takes this stream.
        SviError (nothing changed) if the running generation cannot follow it: a LoRA
        it names is not loaded as an adapter."""
        stream = prompts if isinstance(prompts, Stream) else Stream.of(prompts, loras)
        if self.check is not None:
            self.check(stream)
        with self._lock:
            kept = [(k, s) for k, s in self._streams if k < from_clip]
            self._streams = [*kept, (from_clip, stream)]

    def stream_for(self, k: int) -> Stream:
        """The stream clip k follows."""
        with self._lock:
            return [s for start, s in self._streams if start <= k][-1]

    @property
    def first(self) -> Stream:
        return self.stream_for(0)

    def streams(self) -> list[Stream]:
        """Every stream this source holds (the prompts to encode, the LoRAs named)."""
        with self._lock:
            return [s for _, s in self._streams]

    @classmethod
    def recorded(cls, inputs: dict[str, Any], edits: list[dict] | None) -> PromptSource:
        """The streams a manifest records: its inputs', then each edit from its clip."""
        source = cls(Stream.from_table(inputs))
        for edit in edits or []:
            source.set(Stream.from_table(edit), from_clip=edit["from_clip"])
        return source
