"""The consistent and creative kinds: coloured shapes with simple physics.

A scene is a few object records (shape, radius, colour, motion, clock). Each object's
position is its motion evaluated at its own clock ``tau``; the clock advances by
``rate`` per frame, so speeding up (rate x1.4-1.6, capped at ``max_speed``) and
stopping (rate 0) keep paths continuous. Creative scenes apply one event at every
clip boundary (frame ``k * clip_frames``, k >= 1): colour change, an object entering
from a side, an object leaving, a new background, lights dimming/brightening, an
object speeding up (or moving again) or stopping. Leaving objects are the one
exception to the speed limit: they move straight out fast enough to be gone by the
clip's last frame (up to about 3x ``max_speed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from svi.world.backgrounds import BackgroundSpec, render_background, sample_background
from svi.world.config import WorldConfig
from svi.world.motion import Bounce, Fall, Motion, Orbit, Transit
from svi.world.palette import MIN_CONTRAST, OBJECT_COLOURS, contrast, rgb
from svi.world.prompts import Event, ObjectState, SceneState, describe, describe_event
from svi.world.raster import Layer, shape_layer
from svi.world.shapes import SHAPES, extents

LIGHT_LEVELS = (0.45, 0.6, 0.8, 1.0, 1.2)
_MOTION_WEIGHTS = {"bounce": 0.45, "fall": 0.25, "orbit": 0.30}
_EVENT_WEIGHTS = {
    "colour": 3.0,
    "enter": 2.0,
    "leave": 2.0,
    "background": 2.0,
    "lights": 2.0,
    "speed": 2.0,
    "stop": 1.5,
}
SIDES = ("left", "right", "top", "bottom")
COLOUR_NAMES = list(OBJECT_COLOURS)
_COLOUR_TABLE = np.array(list(OBJECT_COLOURS.values()), dtype=np.uint8)


@dataclass
class _Object:
    index: int
    shape: str
    radius: float
    colour: str
    size_word: str
    motion: Motion
    tau: float = 0.0
    rate: float = 1.0
    leaving: bool = False
    alive: bool = True

    def settled(self) -> bool:
        """Fully in the box and not on its way out (events may target it)."""
        entering = isinstance(self.motion, Bounce) and self.tau < self.motion.free_until
        return self.alive and not self.leaving and not entering

    def state(self) -> ObjectState:
        motion = "still" if self.rate == 0 else self.motion.kind
        if self.leaving:
            motion = "exit"
        return ObjectState(self.colour, self.shape, motion, self.motion.direction(), self.size_word)

    def position(self) -> np.ndarray:
        return self.motion.position(np.array([self.tau]))[0]


@dataclass
class SceneTrack:
    """Everything a scene simulation produces before rendering."""

    objects: list[_Object]
    centres: list[np.ndarray]  # per object (T, 2), NaN where not in the scene
    colour_index: list[np.ndarray]  # per object (T,) index into COLOUR_NAMES
    backgrounds: list[BackgroundSpec]
    background_index: np.ndarray  # (T,)
    lighting: np.ndarray  # (T,)
    prompts: list[str]
    events: list[dict] = field(default_factory=list)


class _Simulation:
    def __init__(self, rng: np.random.Generator, num_frames: int, config: WorldConfig):
        self.rng, self.config, self.num_frames = rng, config, num_frames
        self.scale = config.scale
        self.size = config.size
        self.max_speed = config.max_speed * config.scale
        self.objects: list[_Object] = []
        self.centres: list[np.ndarray] = []
        self.colour_index: list[np.ndarray] = []
        self.light = LIGHT_LEVELS.index(1.0)
        self.lighting = np.ones(num_frames)
        self.backgrounds: list[BackgroundSpec] = []
        self.background_index = np.zeros(num_frames, dtype=np.int64)
        self.events: list[dict] = []

    # ---- scene set-up -------------------------------------------------------
    def alive(self) -> list[_Object]:
        return [obj for obj in self.objects if obj.alive]

    def background_image(self) -> np.ndarray:
        return render_background(self.backgrounds[-1], self.size)

    def free_colours(self) -> list[str]:
        """Object colours unused by live objects that stand out from the background."""
        used = {obj.colour for obj in self.alive()}
        image = self.background_image()
        return [
            name
            for name in OBJECT_COLOURS
            if name not in used and contrast(rgb(name), image) >= MIN_CONTRAST
        ]

    def sample_radius(self) -> tuple[float, str]:
        cfg = self.config
        base = float(self.rng.uniform(cfg.min_radius, cfg.max_radius))
        span = cfg.max_radius - cfg.min_radius
        frac = (base - cfg.min_radius) / span if span > 0 else 0.5
        word = "small" if frac < 1 / 3 else "big" if frac > 2 / 3 else ""
        return base * self.scale, word

    def sample_motion(self, radius: float) -> Motion:
        rng, size = self.rng, self.size
        lo, hi = (radius, radius), (size - radius, size - radius)
        speed = float(rng.uniform(0.3, 0.65)) * self.max_speed
        kinds = list(_MOTION_WEIGHTS)
        weights = np.array(list(_MOTION_WEIGHTS.values()))
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        if kind == "orbit":
            orbit = min(float(rng.uniform(0.18, 0.3)) * size, size / 2 - radius - 0.5)
            orbit = max(orbit, 1.0)
            margin = min(orbit + radius, size / 2)
            centre = (
                float(rng.uniform(margin, size - margin)),
                float(rng.uniform(margin, size - margin)),
            )
            omega = speed / orbit * float(rng.choice([-1.0, 1.0]))
            return Orbit(centre, orbit, omega, float(rng.uniform(0, 2 * math.pi)))
        if kind == "fall":
            vy = speed * float(rng.uniform(0.8, 0.95))
            vx = math.sqrt(speed * speed - vy * vy) * float(rng.choice([-1.0, 1.0]))
            apex = float(rng.uniform(0.45, 0.9)) * (hi[1] - lo[1])
            gravity = vy * vy / (2 * apex)
            half = math.sqrt(2 * apex / gravity)
            x0 = float(rng.uniform(lo[0], hi[0]))
            return Fall(x0, vx, lo, hi, apex, gravity, float(rng.uniform(-half, half)))
        angle = float(rng.uniform(0, 2 * math.pi))
        start = (float(rng.uniform(lo[0], hi[0])), float(rng.uniform(lo[1], hi[1])))
        return Bounce(start, (speed * math.cos(angle), speed * math.sin(angle)), lo, hi)

    def add_object(self, shape: str, colour: str, radius: float, word: str, motion: Motion):
        index = len(self.objects)
        self.objects.append(_Object(index, shape, radius, colour, word, motion))
        self.centres.append(np.full((self.num_frames, 2), np.nan, dtype=np.float32))
        self.colour_index.append(np.full(self.num_frames, COLOUR_NAMES.index(colour)))

    def setup(self) -> None:
        rng, cfg = self.rng, self.config
        count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        names = list(OBJECT_COLOURS)
        colours = [names[i] for i in rng.choice(len(names), size=count, replace=False)]
        spec = sample_background(rng, self.size, avoid=[rgb(c) for c in colours])
        self.backgrounds.append(spec)
        specs = []
        starts: list[tuple[np.ndarray, float]] = []
        for colour in colours:
            radius, word = self.sample_radius()
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            for _ in range(20):  # avoid starting on top of another object
                motion = self.sample_motion(radius)
                start = motion.position(np.zeros(1))[0]
                if all(np.hypot(*(start - p)) > 0.8 * (radius + r) for p, r in starts):
                    break
            starts.append((start, radius))
            specs.append((shape, colour, radius, word, motion))
        for shape, colour, radius, word, motion in sorted(specs, key=lambda s: -s[2]):
            self.add_object(shape, colour, radius, word, motion)  # big ones drawn first

    def scene_state(self, style: int) -> SceneState:
        states = tuple(obj.state() for obj in self.alive())
        return SceneState(states, self.backgrounds[-1], style)

    # ---- time ---------------------------------------------------------------
    def advance(self, t0: int, t1: int) -> None:
        steps = np.arange(t1 - t0, dtype=np.float64)
        for obj in self.alive():
            self.centres[obj.index][t0:t1] = obj.motion.position(obj.tau + obj.rate * steps)
            self.colour_index[obj.index][t0:] = COLOUR_NAMES.index(obj.colour)
            obj.tau += obj.rate * (t1 - t0)
        self.background_index[t0:t1] = len(self.backgrounds) - 1
        self.lighting[t0:t1] = LIGHT_LEVELS[self.light]

    def retire_leavers(self) -> None:
        for obj in self.alive():
            if obj.leaving:
                obj.alive = False

    # ---- events -------------------------------------------------------------
    def feasible_events(self) -> dict[str, float]:
        settled = [obj for obj in self.alive() if obj.settled()]
        ok = {
            "colour": bool(self.alive()) and bool(self.free_colours()),
            "enter": len(self.alive()) < self.config.max_objects and bool(self.free_colours()),
            "leave": bool(settled) and len(self.alive()) > self.config.min_objects,
            "background": True,
            "lights": True,
            "speed": any(obj.rate == 0 or self._can_speed_up(obj) for obj in settled),
            "stop": any(obj.rate > 0 for obj in settled),
        }
        return {name: weight for name, weight in _EVENT_WEIGHTS.items() if ok[name]}

    def _can_speed_up(self, obj: _Object) -> bool:
        return obj.motion.peak_speed() * obj.rate * 1.4 <= self.max_speed * 1.0001

    def pick(self, items: list):
        return items[int(self.rng.integers(len(items)))]

    def apply_event(self) -> tuple[Event, _Object | None]:
        """Draw and apply one feasible event; returns it and its target object."""
        weights = self.feasible_events()
        names = list(weights)
        p = np.array(list(weights.values()))
        kind = names[int(self.rng.choice(len(names), p=p / p.sum()))]
        settled = [obj for obj in self.alive() if obj.settled()]
        if kind == "colour":
            obj = self.pick(self.alive())
            new = self.pick(self.free_colours())
            event = Event("colour", old=obj.colour, new=new, shape=obj.shape)
            obj.colour = new
            return event, obj
        if kind == "enter":
            return self._enter()
        if kind == "leave":
            return self._leave(self.pick(settled))
        if kind == "background":
            avoid = [rgb(obj.colour) for obj in self.alive()]
            spec = self.backgrounds[-1]
            while spec == self.backgrounds[-1]:
                spec = sample_background(self.rng, self.size, avoid=avoid)
            self.backgrounds.append(spec)
            return Event("background", background=spec), None
        if kind == "lights":
            top = len(LIGHT_LEVELS) - 1
            dim = self.light == top or (self.light > 0 and bool(self.rng.integers(2)))
            self.light += -1 if dim else 1
            return Event("dim" if dim else "brighten"), None
        if kind == "speed":
            obj = self.pick([o for o in settled if o.rate == 0 or self._can_speed_up(o)])
            event = Event(
                "resume" if obj.rate == 0 else "speed_up", old=obj.colour, shape=obj.shape
            )
            if obj.rate == 0:
                obj.rate = 1.0
            else:
                limit = self.max_speed / (obj.motion.peak_speed() * obj.rate)
                obj.rate *= min(float(self.rng.uniform(1.4, 1.6)), limit)
            return event, obj
        obj = self.pick([o for o in settled if o.rate > 0])
        obj.rate = 0.0
        return Event("stop", old=obj.colour, shape=obj.shape), obj

    def _enter(self) -> tuple[Event, _Object]:
        rng, size = self.rng, self.size
        colour = self.pick(self.free_colours())
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        radius, word = self.sample_radius()
        side = SIDES[int(rng.integers(4))]
        left, right, up, down = extents(shape, radius)
        lo, hi = (radius, radius), (size - radius, size - radius)
        speed = float(rng.uniform(0.45, 0.65)) * self.max_speed
        angle = float(rng.uniform(-0.45, 0.45))
        inward, across = speed * math.cos(angle), speed * math.sin(angle)
        other = float(rng.uniform(lo[0] + 0.2 * (hi[0] - lo[0]), hi[0] - 0.2 * (hi[0] - lo[0])))
        if side == "left":
            start, velocity, axis = (-right + 0.5 * radius, other), (inward, across), 0
            until = (lo[0] - start[0]) / inward
        elif side == "right":
            start, velocity, axis = (size + left - 0.5 * radius, other), (-inward, across), 0
            until = (start[0] - hi[0]) / inward
        elif side == "top":
            start, velocity, axis = (other, -down + 0.5 * radius), (across, inward), 1
            until = (lo[1] - start[1]) / inward
        else:
            start, velocity, axis = (other, size + up - 0.5 * radius), (across, -inward), 1
            until = (start[1] - hi[1]) / inward
        motion = Bounce(start, velocity, lo, hi, free_axis=axis, free_until=until)
        self.add_object(shape, colour, radius, word, motion)
        event = Event("enter", new=colour, shape=shape, side=side)
        return event, self.objects[-1]

    def _leave(self, obj: _Object) -> tuple[Event, _Object]:
        x, y = (float(v) for v in obj.position())
        left, right, up, down = extents(obj.shape, obj.radius)
        size = self.size
        # (side, distance until fully out, unit direction)
        options = [
            ("left", x + right, (-1.0, 0.0)),
            ("right", size - x + left, (1.0, 0.0)),
            ("top", y + down, (0.0, -1.0)),
            ("bottom", size - y + up, (0.0, 1.0)),
        ]
        side, travel, (ux, uy) = min(options, key=lambda o: o[1])
        speed = max((travel + 0.5) / (self.config.clip_frames - 1), 0.3 * self.max_speed)
        obj.motion = Transit((x, y), (ux * speed, uy * speed))
        obj.tau, obj.rate, obj.leaving = 0.0, 1.0, True
        return Event("leave", old=obj.colour, shape=obj.shape, side=side), obj


def simulate(
    kind: str, rng: np.random.Generator, num_frames: int, config: WorldConfig
) -> SceneTrack:
    """Run a consistent or creative scene; returns a :class:`SceneTrack`."""
    sim = _Simulation(rng, num_frames, config)
    sim.setup()
    style = int(rng.integers(2**31))
    first = describe(sim.scene_state(style))
    clip = config.clip_frames
    num_clips = -(-num_frames // clip)
    if kind == "consistent":
        sim.advance(0, num_frames)
        return _track(sim, [first] * num_clips)
    prompts = [first]
    sim.advance(0, min(clip, num_frames))
    for k in range(1, num_clips):
        sim.retire_leavers()
        event, target = sim.apply_event()
        others = [o.state() for o in sim.alive() if o is not target and not o.leaving]
        text = describe_event(event, others, style, k)
        prompts.append(text)
        sim.events.append(
            {
                "clip": k,
                "frame": k * clip,
                "kind": event.kind,
                "object": None if target is None else target.index,
                "text": text,
            }
        )
        sim.advance(k * clip, min((k + 1) * clip, num_frames))
    return _track(sim, prompts)


def _track(sim: _Simulation, prompts: list[str]) -> SceneTrack:
    return SceneTrack(
        sim.objects,
        sim.centres,
        sim.colour_index,
        sim.backgrounds,
        sim.background_index,
        sim.lighting,
        prompts,
        sim.events,
    )


def scene_layers(track: SceneTrack, size: int) -> list[Layer]:
    """One shape layer per object, in drawing order."""
    layers = []
    for obj, centres, index in zip(track.objects, track.centres, track.colour_index, strict=True):
        sizes = np.full(len(centres), obj.radius, dtype=np.float32)
        label = f"{COLOUR_NAMES[index[_first_frame(centres)]]} {obj.shape}"
        layers.append(shape_layer(label, obj.shape, _COLOUR_TABLE[index], centres, sizes, size))
    return layers


def colour_timeline(index: np.ndarray) -> list[list]:
    """[[frame, colour name], ...] at every colour change of one object."""
    changes = np.flatnonzero(np.diff(index)) + 1
    starts = [0, *changes.tolist()] if len(index) else []
    return [[int(t), COLOUR_NAMES[int(index[t])]] for t in starts]


def _first_frame(centres: np.ndarray) -> int:
    alive = np.flatnonzero(~np.isnan(centres[:, 0]))
    return int(alive[0]) if len(alive) else 0
