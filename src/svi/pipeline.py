"""Any-length video, clip by clip (SVI_SPEC section 4).

Clip k+1 is conditioned on the last M frames of clip k (plus the anchor, with anchor
padding) and regenerates them; stitching keeps clip k's first F - M frames and the
final clip's last M, so N clips give exactly ``N * (F - M) + M`` frames.

Hand-off: ``"pixel"`` (SVI 1.0) decodes clip k, quantises to uint8 and re-encodes the
carried frames; ``"latent"`` (SVI 2.0 Pro) carries the last latent frames as they
are. With a codec of temporal factor t, M carried latent frames stand for
``1 + t * (M - 1)`` pixel frames (Wan's causal first frame), and that number takes
the place of M in the frame count; for the world model (t = 1) both counts agree.

Clip k uses noise seed ``seed + k * seed_stride`` (SVI: a fresh seed per clip).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from svi.clips import to_signed, to_uint8
from svi.conditioning import build_y, build_y_from_latents
from svi.errors import SviError
from svi.models.bundle import ModelBundle, load_bundle
from svi.sampling import clip_noise, sample_latents

log = logging.getLogger(__name__)

HANDOFFS = ("pixel", "latent")


@dataclass(frozen=True)
class GenerationConfig:
    """Settings of one long generation; None means the model preset's default."""

    clips: int = 10  # 0 = until interrupted
    motion_frames: int | None = None
    padding: str | None = None
    handoff: str = "pixel"
    steps: int | None = None
    cfg: float | None = None
    shift: float | None = None
    seed: int = 0
    seed_stride: int = 7919
    negative_prompt: str | None = None
    first_prompt_only: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Carry:
    """What clip k hands to clip k+1 (and what a resume restores)."""

    frames: np.ndarray  # (M, H, W, 3) uint8: the last decoded frames (pixel hand-off)
    latents: torch.Tensor | None = None  # (1, C, m, h, w): the last latents (latent hand-off)


@dataclass
class Clip:
    index: int
    prompt: str
    seed: int
    frames: np.ndarray  # (F, H, W, 3) uint8, the whole decoded clip
    new_frames: np.ndarray  # what stitching appends now: frames[:F - M]
    tail: np.ndarray  # frames[F - M:], appended only if this clip turns out to be the last
    carry: Carry
    seconds: float
    info: dict = field(default_factory=dict)


def clip_seed(config: GenerationConfig, k: int) -> int:
    return config.seed + k * config.seed_stride


class SVIPipeline:
    """A loaded model plus the clip loop. ``generate`` yields clips as they finish."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.loras: list[dict] = []

    @classmethod
    def from_pretrained(
        cls, model: str | Path | None = None, preset: str | None = None, **clip: int
    ) -> SVIPipeline:
        """Load by preset name, world model dir or Wan folder; ``clip`` overrides the
        preset's clip geometry and sampler defaults (``height``, ``width``,
        ``num_frames``, ``steps``) - e.g. a 480p Wan run at 33 frames."""
        bundle = load_bundle(model, preset)
        allowed = {"height", "width", "num_frames", "steps"}
        if set(clip) - allowed:
            raise SviError(f"unknown clip settings {sorted(set(clip) - allowed)}")
        given = {k: v for k, v in clip.items() if v is not None}
        if given and bundle.preset.family == "world" and set(given) - {"steps"}:
            raise SviError("the world model's clip size is fixed by its training")
        bundle.preset = replace(bundle.preset, **given)
        bundle.codec.latent_frames(bundle.preset.num_frames)  # checks the F = 4k + 1 rule
        return cls(bundle)

    def load_lora(self, path: str | Path, scale: float = 1.0) -> dict:
        """Merge a LoRA file (any known key form) into the DiT at strength ``scale``."""
        from svi.lora import apply_lora, lora_fingerprint, read_lora_metadata

        report = apply_lora(self.bundle.transformer, path, scale=scale, merge=True)
        entry = {"path": str(path), "scale": scale, "sha256": lora_fingerprint(path),
                 "modules": report.n_modules}  # fmt: skip
        training = read_lora_metadata(path).get("training")
        if isinstance(training, dict) and isinstance(training.get("data"), dict):
            entry["padding"] = training["data"].get("padding")  # the format it was trained on
        self.loras.append(entry)
        return entry

    def lora_padding(self) -> str | None:
        """The conditioning padding the loaded LoRAs were trained with (first one wins)."""
        for entry in self.loras:
            if entry.get("padding"):
                return entry["padding"]
        return None

    # -- the clip loop ---------------------------------------------------------------
    def motion_frames_for(self, config: GenerationConfig, prompts: list[str]) -> int:
        p = self.bundle.preset
        default = p.stream_motion_frames if len(set(prompts)) > 1 else p.motion_frames
        m = config.motion_frames or default
        if not 1 <= m < p.num_frames:
            raise SviError(f"--motion-frames must be in 1..{p.num_frames - 1}, got {m}")
        return m

    def prompt_for(self, prompts: list[str], k: int, config: GenerationConfig) -> str:
        """Prompt k of the stream; the last one holds once the stream runs out."""
        if config.first_prompt_only:
            return prompts[0]
        return prompts[min(k, len(prompts) - 1)]

    def generate(
        self,
        start: np.ndarray,
        prompts: list[str],
        config: GenerationConfig,
        *,
        first_clip: int = 0,
        carry: Carry | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> Iterator[Clip]:
        """Yield clips ``first_clip, first_clip + 1, ...`` (``config.clips`` in all; 0 = forever).

        ``start`` (M0, H, W, 3) uint8 holds the start frames; ``start[0]`` is the anchor.
        To resume, pass the ``carry`` of clip ``first_clip - 1``.
        """
        b, p = self.bundle, self.bundle.preset
        if config.handoff not in HANDOFFS:
            raise SviError(f"unknown hand-off {config.handoff!r}; use 'pixel' or 'latent'")
        if not prompts:
            raise SviError("at least one prompt is needed")
        m = self.motion_frames_for(config, prompts)
        kept = p.num_frames - self._carried_pixels(m, config)
        anchor = to_signed(start[0])[None]  # (1, 3, H, W)
        carry = carry or Carry(frames=start[-p.num_frames + 1 :])
        neg_prompt = p.negative_prompt if config.negative_prompt is None else config.negative_prompt
        k = first_clip
        while config.clips == 0 or k < config.clips:
            t0 = time.perf_counter()
            prompt = self.prompt_for(prompts, k, config)
            text = b.text_encoder.encode([prompt])
            neg = b.text_encoder.encode([neg_prompt])
            y = self._conditioning(carry, anchor, config)
            noise = clip_noise((1, *b.latent_shape), clip_seed(config, k))
            first_motion = to_signed(carry.frames[0])[None]  # CLIP input of Wan 2.1 only
            latents = sample_latents(
                b.experts_for(first_motion), noise, y, text, neg, steps=config.steps or p.steps,
                shift=config.shift or p.shift, cfg=p.cfg if config.cfg is None else config.cfg,
                on_step=on_step,
            )  # fmt: skip
            frames = to_uint8(b.codec.decode(latents))[0]  # (F, H, W, 3)
            carry = Carry(frames=frames[-m:], latents=self._carry_latents(latents, m, config))
            yield Clip(k, prompt, clip_seed(config, k), frames, frames[:kept], frames[kept:],
                       carry, time.perf_counter() - t0)  # fmt: skip
            k += 1

    def _carried_pixels(self, m: int, config: GenerationConfig) -> int:
        if config.handoff == "pixel":
            return m
        return 1 + self.bundle.codec.temporal_factor * (m - 1)

    def _carry_latents(self, latents: torch.Tensor, m: int, config: GenerationConfig):
        return latents[:, :, -m:].clone() if config.handoff == "latent" else None

    def _anchor_latent(self, anchor: torch.Tensor) -> torch.Tensor:
        """The anchor's latent, encoded once per generation (latent hand-off)."""
        cached = getattr(self, "_anchor_cache", None)
        if cached is None or not torch.equal(cached[0], anchor):
            cached = (anchor, self.bundle.codec.encode(anchor[:, :, None]))
            self._anchor_cache = cached
        return cached[1]

    def _conditioning(
        self, carry: Carry, anchor: torch.Tensor, config: GenerationConfig
    ) -> torch.Tensor:
        """y for the next clip: from the carried pixels (or start frames) or latents."""
        b, p = self.bundle, self.bundle.preset
        padding = config.padding or p.padding
        if carry.latents is not None and config.handoff == "latent":
            lat_f = b.latent_shape[1]
            anchor_lat = self._anchor_latent(anchor) if padding == "anchor" else None
            return build_y_from_latents(carry.latents, lat_f, b.codec.temporal_factor,
                                        padding=padding, mask=p.mask,
                                        anchor_latent=anchor_lat)  # fmt: skip
        motion = to_signed(carry.frames).movedim(0, 1)[None]  # (1, 3, M, H, W)
        return build_y(b.codec, motion, p.num_frames, padding=padding, mask=p.mask,
                       anchor=anchor)  # fmt: skip


def clips_for_length(
    *,
    clips: int | None,
    seconds: float | None,
    frames: int | None,
    forever: bool,
    fps: int,
    num_frames: int,
    carried: int,
    n_prompts: int,
    default_seconds: float,
) -> int:
    """Number of clips for the requested length (0 = forever).

    N clips give ``N * (F - M) + M`` frames, so F frames need
    ``ceil((F - M) / (F - M_clip))`` clips. Without any length: one clip per prompt of
    a stream, else ``default_seconds``.
    """
    given = [x is not None for x in (clips, seconds, frames)] + [forever]
    if sum(given) > 1:
        raise SviError("give only one of --clips, --seconds, --frames, --forever")
    if forever or clips == 0:
        return 0
    if clips is not None:
        if clips < 0:
            raise SviError(f"--clips must be >= 0, got {clips}")
        return clips
    if seconds is None and frames is None:
        if n_prompts > 1:
            return n_prompts
        seconds = default_seconds
    if seconds is not None:
        if seconds <= 0:
            raise SviError(f"--seconds must be positive, got {seconds}")
        frames = math.ceil(seconds * fps)
    assert frames is not None
    if frames < num_frames:
        return 1
    return math.ceil((frames - carried) / (num_frames - carried))


def rollout(
    pipe: SVIPipeline, start: np.ndarray, prompts: list[str], config: GenerationConfig
) -> tuple[np.ndarray, list[Clip]]:
    """N clips without a writer (for benchmarks): the stitched video and per-clip info."""
    parts, clips = [], []
    for clip in pipe.generate(start, prompts, config):
        parts.append(clip.new_frames)
        clips.append(clip)
    if clips:
        parts.append(clips[-1].tail)
    return np.concatenate(parts), clips
