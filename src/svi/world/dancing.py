"""The dancing kind: a stick figure driven by a skeleton stream, plus its pose video.

Skeleton: 15 joints (:data:`JOINTS`; "right" is the figure's right, drawn on the
screen's left). Joint angles are smooth sums of sinusoids: a per-episode tempo of
0.2-0.45 Hz with its second harmonic and one slow incommensurate component, random
amplitudes and phases; forward kinematics from the pelvis gives joint positions, and
the figure stands on a floor (its lowest foot touches ``0.95 * size``). The figure is
drawn as thick lines (2 px at 32 px, at least 1.5 px) plus a head disc in one flat
colour; ``pose_frames`` draws the same limbs on black, one colour per limb, as
DWPose/OpenPose drawings do.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

from svi.world.backgrounds import BackgroundSpec, render_background, sample_background
from svi.world.config import WorldConfig
from svi.world.episode import Episode, base_meta, build_truth, episode_rng, num_clips
from svi.world.palette import MIN_CONTRAST, OBJECT_COLOURS, contrast
from svi.world.prompts import article, describe_background
from svi.world.raster import Layer, composite
from svi.world.shapes import pixel_centres, segment_distance

JOINTS = (
    "head",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_hand",
    "left_shoulder",
    "left_elbow",
    "left_hand",
    "pelvis",
    "right_hip",
    "right_knee",
    "right_foot",
    "left_hip",
    "left_knee",
    "left_foot",
)
_J = {name: i for i, name in enumerate(JOINTS)}
LIMBS = tuple(
    (_J[a], _J[b])
    for a, b in (
        ("neck", "head"),
        ("neck", "right_shoulder"),
        ("right_shoulder", "right_elbow"),
        ("right_elbow", "right_hand"),
        ("neck", "left_shoulder"),
        ("left_shoulder", "left_elbow"),
        ("left_elbow", "left_hand"),
        ("neck", "pelvis"),
        ("pelvis", "right_hip"),
        ("right_hip", "right_knee"),
        ("right_knee", "right_foot"),
        ("pelvis", "left_hip"),
        ("left_hip", "left_knee"),
        ("left_knee", "left_foot"),
    )
)
LIMB_COLOURS = np.array(
    [
        [round(255 * c) for c in colorsys.hsv_to_rgb(i / len(LIMBS), 1.0, 1.0)]
        for i in range(len(LIMBS))
    ],
    dtype=np.uint8,
)
# Bone lengths as fractions of the frame size.
BONES = {
    "spine": 0.24,
    "neck": 0.10,
    "shoulder": 0.08,
    "upper_arm": 0.13,
    "forearm": 0.12,
    "hip": 0.05,
    "thigh": 0.16,
    "shin": 0.16,
    "head_radius": 0.075,
}
FLOOR = 0.95
_VERBS = ("dances", "grooves", "moves to the beat", "dances happily")
_TEMPLATES = (
    "{a} {c} stick figure {verb}{detail} over {bg}",
    "over {bg}, {a} {c} stick figure {verb}{detail}",
    "{a} {c} stick figure {verb}{detail} in front of {bg}",
)


def _unit(angle: np.ndarray) -> np.ndarray:
    """Direction of ``angle`` (0 = straight down, pi = up; positive turns toward +x)."""
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def _perpendicular(angle: np.ndarray) -> np.ndarray:
    """Unit vector toward the figure's right (screen left) for a limb at ``angle``."""
    return np.stack([np.cos(angle), -np.sin(angle)], axis=-1)


def _oscillator(rng: np.random.Generator, tempo: float, t: np.ndarray) -> np.ndarray:
    """Smooth signal in [0, 1]: tempo, its 2nd harmonic and a slow random component."""
    ratios = np.array([1.0, 2.0, float(rng.uniform(0.3, 0.7))])
    amplitudes = rng.uniform([0.5, 0.1, 0.2], [1.0, 0.4, 0.8])
    phases = rng.uniform(0, 2 * math.pi, size=3)
    waves = np.sin(2 * np.pi * tempo * ratios[:, None] * t[None, :] + phases[:, None])
    return 0.5 + 0.5 * (amplitudes[:, None] * waves).sum(axis=0) / amplitudes.sum()


def skeleton_stream(rng: np.random.Generator, num_frames: int, fps: float, size: int) -> np.ndarray:
    """(T, J, 2) float32 joint positions (x, y) in pixels."""
    t = np.arange(num_frames) / fps
    tempo = float(rng.uniform(0.2, 0.45))

    def osc(lo: float, hi: float) -> np.ndarray:
        return lo + (hi - lo) * _oscillator(rng, tempo, t)

    b = {name: value * size for name, value in BONES.items()}
    lean, tilt = osc(-0.18, 0.18), osc(-0.25, 0.25)
    raise_r, raise_l = osc(0.0, 2.1), osc(0.0, 2.1)
    bend_r, bend_l = osc(0.0, 1.5), osc(0.0, 1.5)
    kick_r, kick_l = osc(-0.1, 0.55), osc(-0.1, 0.55)
    knee_r, knee_l = osc(0.0, 0.9), osc(0.0, 0.9)
    sway = osc(-0.1, 0.1) * size

    joints = np.zeros((num_frames, len(JOINTS), 2))
    spine = np.pi + lean
    joints[:, _J["neck"]] = b["spine"] * _unit(spine)
    joints[:, _J["head"]] = joints[:, _J["neck"]] + b["neck"] * _unit(spine + tilt)
    across = _perpendicular(spine)
    hips = _perpendicular(np.full(num_frames, np.pi))
    for side, sign, lift, bend, kick, knee in (
        ("right", -1.0, raise_r, bend_r, kick_r, knee_r),
        ("left", 1.0, raise_l, bend_l, kick_l, knee_l),
    ):
        shoulder = joints[:, _J["neck"]] - sign * b["shoulder"] * across
        upper = sign * (0.35 + lift)
        elbow = shoulder + b["upper_arm"] * _unit(upper)
        hand = elbow + b["forearm"] * _unit(upper + sign * bend)
        hip = -sign * b["hip"] * hips
        thigh = sign * (0.08 + kick)
        knee_pos = hip + b["thigh"] * _unit(thigh)
        foot = knee_pos + b["shin"] * _unit(thigh - sign * knee)
        for name, value in (
            ("shoulder", shoulder),
            ("elbow", elbow),
            ("hand", hand),
            ("hip", hip),
            ("knee", knee_pos),
            ("foot", foot),
        ):
            joints[:, _J[f"{side}_{name}"]] = value
    lowest = np.maximum(joints[:, _J["right_foot"], 1], joints[:, _J["left_foot"], 1])
    joints[:, :, 0] += size / 2 + sway[:, None]
    joints[:, :, 1] += (FLOOR * size - lowest)[:, None]
    return joints.astype(np.float32)


def _half_width(size: int) -> float:
    return max(size / 32, 0.75)


def limb_mask(joints: np.ndarray, limb: tuple[int, int], size: int) -> np.ndarray:
    """(T, H, W) pixels within the line half-width of one limb."""
    distance = segment_distance(joints[:, limb[0]], joints[:, limb[1]], size)
    return distance <= _half_width(size)


def figure_mask(joints: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W) the whole figure: every limb plus the head disc."""
    x, y = pixel_centres(size)
    head = joints[:, _J["head"]]
    radius = max(BONES["head_radius"] * size, 0.75)
    mask = (x - head[:, 0, None, None]) ** 2 + (y - head[:, 1, None, None]) ** 2 <= radius**2
    for limb in LIMBS:
        mask |= limb_mask(joints, limb, size)
    return mask


def _pose_frames(joints: np.ndarray, size: int) -> np.ndarray:
    num_frames = len(joints)
    layers = [
        Layer(
            f"limb {i}",
            "line",
            np.broadcast_to(LIMB_COLOURS[i], (num_frames, 3)),
            np.zeros((num_frames, 2), np.float32),
            np.zeros(num_frames, np.float32),
            lambda t0, t1, limb=limb: limb_mask(joints[t0:t1], limb, size),
        )
        for i, limb in enumerate(LIMBS)
    ]
    black = np.zeros((size, size, 3), np.uint8)
    index, light = np.zeros(num_frames, np.int64), np.ones(num_frames, np.float32)
    return composite([black], index, light, layers, size).frames


def render_dancing(seed: int, num_frames: int, config: WorldConfig) -> Episode:
    """The dancing episode of ``seed`` (see the module docstring)."""
    rng = episode_rng("dancing", seed)
    size = config.size
    spec = sample_background(rng, size)
    image = render_background(spec, size)
    names = [
        c for c in OBJECT_COLOURS if contrast(np.array(OBJECT_COLOURS[c]), image) >= MIN_CONTRAST
    ]
    colour = names[int(rng.integers(len(names)))]
    style = int(rng.integers(2**31))
    joints = skeleton_stream(rng, num_frames, config.fps, size)
    top = joints[:, _J["head"], 1] - BONES["head_radius"] * size
    centres = joints.mean(axis=1).astype(np.float32)
    sizes = ((joints[:, :, 1].max(axis=1) - top) / 2).astype(np.float32)
    figure = Layer(
        f"{colour} stick figure",
        "figure",
        np.broadcast_to(np.asarray(OBJECT_COLOURS[colour], np.uint8), (num_frames, 3)),
        centres,
        sizes,
        lambda t0, t1: figure_mask(joints[t0:t1], size),
    )
    index, light = np.zeros(num_frames, np.int64), np.ones(num_frames, np.float32)
    comp = composite([image], index, light, [figure], size)
    prompts = _prompts(colour, spec, style, joints, num_clips(num_frames, config), config)
    meta = base_meta("dancing", seed, config, prompts)
    meta["backgrounds"] = [spec.to_dict()]
    meta["colours"] = [[[0, colour]]]
    meta["limbs"] = [[JOINTS[a], JOINTS[b]] for a, b in LIMBS]
    meta["limb_colours"] = LIMB_COLOURS.tolist()
    truth = build_truth(comp, [figure], meta, joints=joints, joint_names=list(JOINTS))
    return Episode(
        "dancing",
        seed,
        config,
        comp.frames,
        prompts[0],
        prompts,
        truth,
        pose_frames=_pose_frames(joints, size),
    )


def _prompts(
    colour: str,
    spec: BackgroundSpec,
    style: int,
    joints: np.ndarray,
    clips: int,
    config: WorldConfig,
) -> list[str]:
    rng = np.random.default_rng([style, 4])
    background = describe_background(spec, rng)
    verb = _VERBS[int(rng.integers(len(_VERBS)))]
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    prompts = []
    for k in range(clips):
        clip = joints[k * config.clip_frames : (k + 1) * config.clip_frames]
        raised = [
            float((clip[:, _J[f"{s}_hand"], 1] < clip[:, _J[f"{s}_shoulder"], 1]).mean())
            for s in ("right", "left")
        ]
        drift = float(clip[-1, _J["pelvis"], 0] - clip[0, _J["pelvis"], 0]) / max(len(clip), 1)
        if min(raised) > 0.5:
            detail = " with both arms up"
        elif max(raised) > 0.5:
            detail = " waving one arm"
        elif abs(drift) > 0.05 * config.scale:
            detail = " swaying to the " + ("right" if drift > 0 else "left")
        else:
            detail = ""
        text = template.format(a=article(colour), c=colour, verb=verb, detail=detail, bg=background)
        prompts.append(text)
    return prompts
