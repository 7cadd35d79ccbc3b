"""Prompts: scene descriptions and event sentences, worded deterministically from a seed.

Grammar (one sentence, lower case, no final period)::

    scene   := clauses (" over "|" in front of "|" against ") background
             | ("over "|"on ") background ", " clauses
    clauses := clause | clause (" and "|" while "|" as ") clause | clause ", " clause " and " clause
    clause  := ["a"|"an"] [size] colour shape motion         e.g. "a small red disc drifts left"
    event   := event_clause [" while " ongoing (" and " ongoing)]
    ongoing := "the " colour shape " keeps " gerund | "the " colour shape " stays still"

The wording (verbs, connectors, adjectives) is drawn from ``style`` (an integer from
the episode seed), so different scenes get different sentences while colours,
shapes, motions and directions are always named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svi.world.backgrounds import BackgroundSpec

_MOTION = {
    "bounce": ("drifts {d}", "glides {d}", "slides {d}", "moves {d}", "floats {d}"),
    "fall": (
        "falls and bounces",
        "bounces up and down",
        "hops like a ball toward the {d}",
        "drops and rebounds",
    ),
    "orbit": ("orbits {d}", "circles {d}", "goes round in a circle {d}"),
    "still": ("rests", "stays still", "sits still"),
    "enter": ("enters from the {d}", "slides in from the {d}"),
    "exit": ("leaves the frame on the {d}", "exits on the {d}"),
}
_GERUND = {
    "bounce": ("drifting", "gliding", "bouncing around"),
    "fall": ("bouncing", "hopping"),
    "orbit": ("orbiting", "circling"),
    "enter": ("moving",),
    "exit": ("moving",),
}
_BACKGROUND = {
    "checkerboard": (
        "{a0} {c0} and {c1} checkerboard",
        "a checkerboard of {c0} and {c1} squares",
        "{a0} {c0} and {c1} checkered floor",
    ),
    "gradient": (
        "{a0} {c0} to {c1} gradient",
        "a gradient from {c0} to {c1}",
        "a soft {c0} and {c1} gradient",
    ),
    "stripes": (
        "{o} {c0} and {c1} stripes",
        "{a0} {c0} backdrop with {o} {c1} stripes",
        "a pattern of {o} {c0} and {c1} stripes",
    ),
    "noise": ("a mottled {cs} texture", "a cloudy {cs} pattern", "a blotchy {cs} surface"),
    "plain": ("a plain {c0} background", "a flat {c0} backdrop", "{a0} {c0} wall"),
}
_SCENE = (
    "{clauses} over {bg}",
    "over {bg}, {clauses}",
    "{clauses} in front of {bg}",
    "on {bg}, {clauses}",
    "{clauses} against {bg}",
)
_EVENT = {
    "colour": (
        "the {old} {shape} turns {new}",
        "the {old} {shape} changes colour to {new}",
        "the {old} {shape} becomes {new}",
    ),
    "enter": (
        "{a} {new} {shape} enters from the {side}",
        "{a} {new} {shape} slides in from the {side}",
        "{a} {new} {shape} appears from the {side}",
    ),
    "leave": (
        "the {old} {shape} leaves the frame on the {side}",
        "the {old} {shape} exits on the {side}",
        "the {old} {shape} moves out of view on the {side}",
    ),
    "background": (
        "the background changes to {bg}",
        "the backdrop switches to {bg}",
        "the background becomes {bg}",
    ),
    "dim": ("the lights dim", "the scene grows darker", "the lighting fades"),
    "brighten": ("the lights brighten", "the scene grows brighter", "the lighting comes up"),
    "speed_up": (
        "the {old} {shape} speeds up",
        "the {old} {shape} moves faster",
        "the {old} {shape} accelerates",
    ),
    "resume": ("the {old} {shape} starts moving again", "the {old} {shape} moves again"),
    "stop": (
        "the {old} {shape} stops",
        "the {old} {shape} comes to a halt",
        "the {old} {shape} freezes in place",
    ),
}


@dataclass(frozen=True)
class ObjectState:
    """What a prompt says about one object."""

    colour: str
    shape: str
    motion: str  # bounce | fall | orbit | still | enter | exit
    direction: str = ""  # "left", "up and right", "clockwise", or a side for enter/exit
    size_word: str = ""  # "", "small" or "big"

    @property
    def noun(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class SceneState:
    """A scene as prompts see it: objects, background and a wording style."""

    objects: tuple[ObjectState, ...]
    background: BackgroundSpec
    style: int = 0


@dataclass(frozen=True)
class Event:
    """A creative event at a clip boundary (see ``scenes.py``)."""

    kind: str  # colour | enter | leave | background | dim | brighten | speed_up | resume | stop
    old: str = ""  # the target's colour before the event
    new: str = ""  # new colour (colour, enter)
    shape: str = ""
    side: str = ""  # enter, leave
    background: BackgroundSpec | None = None


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _choose(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def join_clauses(clauses: list[str], rng: np.random.Generator) -> str:
    if len(clauses) == 1:
        return clauses[0]
    if len(clauses) == 2:
        return f"{clauses[0]} {_choose(('and', 'while', 'as'), rng)} {clauses[1]}"
    return ", ".join(clauses[:-1]) + " and " + clauses[-1]


def describe_background(spec: BackgroundSpec, rng: np.random.Generator) -> str:
    """A noun phrase for a background, e.g. 'a navy and teal checkerboard'."""
    names = list(spec.colours)
    colour_list = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    angle = round(spec.angle) % 180
    orient = {0: "vertical", 90: "horizontal"}.get(angle, "diagonal")
    template = _choose(_BACKGROUND[spec.family], rng)
    return template.format(
        a0=article(names[0]),
        c0=names[0],
        c1=names[-1],
        cs=colour_list,
        o=orient,
    )


def describe_object(obj: ObjectState, rng: np.random.Generator, sizes: bool) -> str:
    """'a small red disc drifts left'."""
    words = [obj.size_word] if sizes and obj.size_word else []
    words += [obj.colour, obj.shape]
    noun = " ".join(words)
    motion = _choose(_MOTION[obj.motion], rng).format(d=obj.direction)
    return f"{article(noun)} {noun} {motion}"


def describe(state: SceneState) -> str:
    """One sentence naming every object's colour, shape and motion, and the background."""
    rng = np.random.default_rng([state.style, 1])
    sizes = bool(rng.integers(2))
    clauses = [describe_object(obj, rng, sizes) for obj in state.objects]
    background = describe_background(state.background, rng)
    template = _choose(_SCENE, rng)
    return template.format(clauses=join_clauses(clauses, rng), bg=background)


def ongoing(obj: ObjectState, rng: np.random.Generator) -> str:
    """'the blue square keeps orbiting' (or 'stays still')."""
    if obj.motion == "still":
        return f"the {obj.noun} stays still"
    return f"the {obj.noun} keeps {_choose(_GERUND[obj.motion], rng)}"


def describe_event(event: Event, others: list[ObjectState], style: int, clip: int) -> str:
    """The prompt of a clip that starts with ``event``; ``others`` carry on unchanged."""
    rng = np.random.default_rng([style, 2, clip])
    background = describe_background(event.background, rng) if event.background else ""
    text = _choose(_EVENT[event.kind], rng).format(
        old=event.old,
        new=event.new,
        shape=event.shape,
        side=event.side,
        a=article(event.new),
        bg=background,
    )
    if others:
        text += " while " + " and ".join(ongoing(obj, rng) for obj in others[:2])
    return text
