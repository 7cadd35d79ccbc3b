"""The talking kind: a cartoon face whose mouth opening follows a speech-like signal.

Audio (16 kHz mono float32): syllables of 80-300 ms (smooth sin^0.8 envelopes,
loudness 0.55-1, short gaps, sometimes 250-700 ms pauses) over a voiced tone (f0
100-250 Hz per episode, 6 harmonics with 1/h weights, 5-6 Hz vibrato, a small pitch
bend per syllable) plus breath noise. The per-frame envelope is the RMS of the audio
in the frame's window ``[t * sr / fps, (t + 1) * sr / fps)`` divided by the RMS of a
full-loudness vowel (:data:`REFERENCE_RMS`), clipped to [0, 1];
``mouth_open = envelope ** 0.75``. A fixed reference (not the episode maximum) keeps
episodes prefix-stable; :func:`audio_envelope` with ``reference_rms=None``
normalises by the maximum instead (for arbitrary wav files).
"""

from __future__ import annotations

import math

import numpy as np

from svi.world.backgrounds import BackgroundSpec, render_background, sample_background
from svi.world.config import SAMPLE_RATE, WorldConfig
from svi.world.episode import Episode, base_meta, build_truth, episode_rng, num_clips
from svi.world.palette import EYE_COLOUR, MIN_CONTRAST, MOUTH_COLOUR, OBJECT_COLOURS, contrast
from svi.world.prompts import article, describe_background
from svi.world.raster import Layer, composite, shape_layer
from svi.world.shapes import ellipse_mask

HARMONICS = np.arange(1, 7, dtype=np.float64)
WEIGHTS = (1.0 / HARMONICS) / (1.0 / HARMONICS).sum()
VOICE_GAIN = 0.8
REFERENCE_RMS = VOICE_GAIN * math.sqrt(float((WEIGHTS**2).sum()) / 2)
MOUTH_GAMMA = 0.75
_TALK = (
    "a {c} face talks over {bg}",
    "a round {c} face speaks in front of {bg}",
    "{a} {c} cartoon head is talking against {bg}",
    "a smiling {c} face chats over {bg}",
)
_QUIET = (
    "a {c} face stays quiet over {bg}",
    "a round {c} face pauses in front of {bg}",
    "{a} {c} cartoon head listens silently against {bg}",
    "a smiling {c} face waits quietly over {bg}",
)
_HEAD_COLOURS = ("yellow", "orange", "pink", "white", "cyan", "lime", "green", "magenta")


def speech_audio(
    rng: np.random.Generator, num_samples: int, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """(num_samples,) float32 speech-like audio; prefix-stable in ``num_samples``."""
    f0 = float(rng.uniform(100.0, 250.0))
    vibrato_rate, vibrato_depth = float(rng.uniform(5.0, 6.0)), float(rng.uniform(0.01, 0.02))
    noise_rng = np.random.default_rng(int(rng.integers(2**63)))
    amplitude = np.zeros(num_samples)
    pitch = np.ones(num_samples)
    cursor = int(rng.uniform(0.05, 0.3) * sample_rate)
    while cursor < num_samples:
        if rng.random() < 0.18:  # a pause between phrases
            cursor += int(rng.uniform(0.25, 0.7) * sample_rate)
            continue
        duration = int(rng.uniform(0.08, 0.30) * sample_rate)
        loudness, bend = float(rng.uniform(0.55, 1.0)), float(rng.uniform(0.9, 1.12))
        gap = int(rng.uniform(0.02, 0.09) * sample_rate)
        end = min(cursor + duration, num_samples)
        x = (np.arange(cursor, end) - cursor) / duration
        amplitude[cursor:end] = loudness * np.sin(np.pi * x) ** 0.8
        pitch[cursor:end] = bend * (1.0 + 0.06 * (0.5 - x))
        cursor += duration + gap
    seconds = np.arange(num_samples) / sample_rate
    frequency = f0 * pitch * (1.0 + vibrato_depth * np.sin(2 * np.pi * vibrato_rate * seconds))
    phase = 2 * np.pi * np.cumsum(frequency) / sample_rate
    voiced = (WEIGHTS[:, None] * np.sin(HARMONICS[:, None] * phase[None, :])).sum(axis=0)
    noise = noise_rng.standard_normal(num_samples) * (0.03 * amplitude + 0.003)
    return np.clip(VOICE_GAIN * amplitude * voiced + noise, -1.0, 1.0).astype(np.float32)


def frame_windows(num_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(T + 1,) sample index where each frame's audio window starts (and the end)."""
    return np.floor(np.arange(num_frames + 1) * sample_rate / fps).astype(np.int64)


def audio_envelope(
    audio: np.ndarray,
    num_frames: int,
    fps: float,
    sample_rate: int = SAMPLE_RATE,
    reference_rms: float | None = REFERENCE_RMS,
) -> np.ndarray:
    """(T,) float32 per-frame RMS of ``audio`` divided by ``reference_rms``, in [0, 1].

    ``reference_rms=None`` divides by the loudest frame instead. Frames past the end
    of the audio get 0.
    """
    bounds = np.minimum(frame_windows(num_frames, fps, sample_rate), len(audio))
    energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    counts = np.diff(bounds)
    sums = energy[bounds[1:]] - energy[bounds[:-1]]
    rms = np.sqrt(np.where(counts > 0, sums / np.maximum(counts, 1), 0.0))
    reference = float(rms.max()) if reference_rms is None else reference_rms
    if reference <= 0:
        return np.zeros(num_frames, dtype=np.float32)
    return np.clip(rms / reference, 0.0, 1.0).astype(np.float32)


def _face_track(rng: np.random.Generator, num_frames: int, config: WorldConfig):
    size, fps = config.size, config.fps
    t = np.arange(num_frames) / fps
    sway = float(rng.uniform(0.2, 0.5)), float(rng.uniform(0, 2 * math.pi))
    bob = float(rng.uniform(0.2, 0.5)), float(rng.uniform(0, 2 * math.pi))
    head = np.stack(
        [
            size / 2 + 0.02 * size * np.sin(2 * np.pi * sway[0] * t + sway[1]),
            0.52 * size + 0.03 * size * np.sin(2 * np.pi * bob[0] * t + bob[1]),
        ],
        axis=1,
    ).astype(np.float32)
    return head, 0.34 * size


def render_talking(seed: int, num_frames: int, config: WorldConfig) -> Episode:
    """The talking episode of ``seed`` (see the module docstring)."""
    rng = episode_rng("talking", seed)
    size = config.size
    spec = sample_background(rng, size, families=("plain", "gradient", "noise"))
    image = render_background(spec, size)
    choices = [
        c for c in _HEAD_COLOURS if contrast(np.array(OBJECT_COLOURS[c]), image) >= MIN_CONTRAST
    ]
    colour = choices[int(rng.integers(len(choices)))]
    style = int(rng.integers(2**31))
    head, radius = _face_track(rng, num_frames, config)
    num_samples = int(frame_windows(num_frames, config.fps)[-1])
    audio = speech_audio(rng, num_samples)
    envelope = audio_envelope(audio, num_frames, config.fps)
    mouth_open = (envelope**MOUTH_GAMMA).astype(np.float32)

    eye_radius = max(0.13 * radius, 0.75)
    mouth_width = 0.42 * radius
    mouth_half = (max(0.06 * radius, 0.55) + 0.32 * radius * mouth_open).astype(np.float32)
    mouth_centre = head + np.array([0.0, 0.42 * radius], np.float32)

    def flat(rgb: tuple[int, int, int]) -> np.ndarray:
        return np.broadcast_to(np.asarray(rgb, np.uint8), (num_frames, 3))

    def const(value: float) -> np.ndarray:
        return np.full(num_frames, value, dtype=np.float32)

    def mouth(t0: int, t1: int) -> np.ndarray:
        widths = np.full(t1 - t0, mouth_width, dtype=np.float32)
        return ellipse_mask(mouth_centre[t0:t1], widths, mouth_half[t0:t1], size)

    layers: list[Layer] = [
        shape_layer(
            f"{colour} face", "disc", flat(OBJECT_COLOURS[colour]), head, const(radius), size
        )
    ]
    for side, name in ((-1.0, "left eye"), (1.0, "right eye")):
        centre = head + np.array([side * 0.38 * radius, -0.25 * radius], np.float32)
        layers.append(
            shape_layer(name, "disc", flat(EYE_COLOUR[1]), centre, const(eye_radius), size)
        )
    layers.append(Layer("mouth", "ellipse", flat(MOUTH_COLOUR[1]), mouth_centre, mouth_half, mouth))

    comp = composite(
        [image], np.zeros(num_frames, np.int64), np.ones(num_frames, np.float32), layers, size
    )
    prompts = _prompts(colour, spec, style, envelope, num_clips(num_frames, config), config)
    meta = base_meta("talking", seed, config, prompts)
    meta["backgrounds"] = [spec.to_dict()]
    meta["colours"] = [
        [[0, name]] for name in (colour, EYE_COLOUR[0], EYE_COLOUR[0], MOUTH_COLOUR[0])
    ]
    meta["audio"] = {
        "sample_rate": SAMPLE_RATE,
        "reference_rms": REFERENCE_RMS,
        "mouth_gamma": MOUTH_GAMMA,
    }
    truth = build_truth(comp, layers, meta, mouth_open=mouth_open)
    return Episode(
        "talking",
        seed,
        config,
        comp.frames,
        prompts[0],
        prompts,
        truth,
        audio=audio,
        audio_envelope=envelope,
    )


def _prompts(
    colour: str,
    spec: BackgroundSpec,
    style: int,
    envelope: np.ndarray,
    clips: int,
    config: WorldConfig,
) -> list[str]:
    rng = np.random.default_rng([style, 3])
    background = describe_background(spec, rng)
    variant = int(rng.integers(len(_TALK)))
    prompts = []
    for k in range(clips):
        loud = float(envelope[k * config.clip_frames : (k + 1) * config.clip_frames].max())
        template = (_TALK if loud >= 0.15 else _QUIET)[variant]
        prompts.append(template.format(c=colour, a=article(colour), bg=background))
    return prompts
