"""Any-length video, clip by clip (SVI_SPEC section 4).

Clip k+1 is conditioned on the last M frames of clip k (plus the anchor, with anchor
padding) and regenerates them; stitching keeps clip k's first F - M frames and the
final clip's last M, so N clips give exactly ``N * (F - M) + M`` frames. The Wan 2.2
scripts of SVI 2.0 / 2.0 Pro stitch the other way (``stitch="head"``): every clip is
kept but the first ``overlap`` frames of each later clip.

Hand-off: ``"pixel"`` (SVI 1.0) decodes clip k, quantises to uint8 and re-encodes the
carried frames; ``"latent"`` (SVI 2.0 Pro) carries the last latent frames as they
are (frame counts: :mod:`svi.plan`); with ``padding="anchor-first"`` (2.0 Pro) y is
``[anchor latent, carried latents, zero latents]``.

Every setting is resolved and validated once, into a :class:`GenerationPlan`
(:meth:`SVIPipeline.plan`), before the first clip. Clip k uses noise seed
``seed + k * seed_stride`` (SVI: a fresh seed per clip).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from svi.conditioning import build_y, build_y_anchor_first, build_y_from_latents
from svi.errors import SviError
from svi.models.bundle import ModelBundle, load_bundle
from svi.models.offload import MemoryMode, Placement, execution_device, place
from svi.pixels import to_signed, to_uint8
from svi.plan import GenerationConfig, GenerationPlan, resolve_plan
from svi.sampling import clip_noise, sample_latents
from svi.steering import PromptSource, Stream

if TYPE_CHECKING:
    from svi.conditions.drive import Drive

log = logging.getLogger(__name__)


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
    new_frames: np.ndarray  # what stitching appends now: frames[plan.kept(index)]
    tail: np.ndarray  # frames[F - tail:], appended only if this clip turns out to be the last
    carry: Carry
    seconds: float
    info: dict = field(default_factory=dict)
    stream: Stream | None = None  # the prompt stream clip k followed (svi.steering)
    loras: dict[str, float] = field(default_factory=dict)  # attached LoRAs' strengths


def lora_names(entry: dict) -> set[str]:
    """The names a prompt stream calls a loaded LoRA by: its file's stem, also without a
    trailing ``_lora`` (the shipped ``svi_lora.safetensors`` is ``svi``)."""
    stem = Path(entry["path"]).name.removesuffix(".safetensors")
    return {stem, stem.removesuffix("_lora")}


EXPERTS = ("high", "low")  # LoRA targets: Wan 2.2 A14B's high- / low-noise expert
_OTHER_EXPERT = {  # expert -> (file name of the other expert's LoRA, what to say)
    "high": (re.compile(r"low[_-]?noise", re.I), "is named for the low-noise expert but "
             "--lora merges it into the high-noise expert (or the only DiT); the low-noise "
             "expert of Wan 2.2 A14B takes --lora-low"),
    "low": (re.compile(r"high[_-]?noise", re.I), "is named for the high-noise expert but "
            "--lora-low merges it into the low-noise expert; the high-noise one takes --lora"),
}  # fmt: skip


def _warn_other_expert(path: str | Path, expert: str) -> None:
    """One WARNING when a LoRA's file name names the other expert (the classic mix-up of
    a Wan 2.2 pair; not an error, since users rename files)."""
    pattern, message = _OTHER_EXPERT[expert]
    if pattern.search(Path(path).name):
        log.warning("LoRA %s %s", Path(path).name, message)


class SVIPipeline:
    """A loaded model plus the clip loop. ``generate`` yields clips as they finish."""

    def __init__(self, bundle: ModelBundle, memory: MemoryMode | None = None) -> None:
        self.bundle = bundle
        self.loras: list[dict] = []
        self.memory = memory or MemoryMode()  # applied at the first clip (svi.models.offload)
        self._placement: Placement | None = None
        self._scales: dict[str, float] = {}  # attached LoRAs' strengths as last set

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        preset: str | None = None,
        memory: MemoryMode | None = None,
        **clip: int,
    ) -> SVIPipeline:
        """Load by preset name, world model dir or Wan folder; ``clip`` overrides the
        preset's clip geometry and sampler defaults (``height``, ``width``,
        ``num_frames``, ``steps``) - e.g. a 480p Wan run at 33 frames. A Wan folder's
        weights load on the host in ``memory``'s compute dtype; ``memory`` places them
        at the first clip, after any LoRA is merged (:mod:`svi.models.offload`)."""
        memory = memory or MemoryMode()
        dtype = memory.compute_dtype(execution_device())
        bundle = load_bundle(model, preset, device="cpu", dtype=dtype)
        allowed = {"height", "width", "num_frames", "steps"}
        if set(clip) - allowed:
            raise SviError(f"unknown clip settings {sorted(set(clip) - allowed)}")
        given = {k: v for k, v in clip.items() if v is not None}
        if given and bundle.preset.family == "world" and set(given) - {"steps"}:
            raise SviError("the world model's clip size is fixed by its training")
        bundle.preset = replace(bundle.preset, **given)
        bundle.codec.latent_frames(bundle.preset.num_frames)  # checks the F = 4k + 1 rule
        return cls(bundle, memory)

    @property
    def device(self) -> torch.device:
        """Where clips are computed: a real Wan model's on the accelerator when there is
        one; the embedded world models stay on the CPU they were made for."""
        if self._placement is not None:
            return self._placement.device
        return execution_device() if self.bundle.preset.family == "wan" else torch.device("cpu")

    def memory_record(self) -> dict:
        """The memory mode as the manifest records it."""
        return self.memory.record(self.device)

    def _ready(self, streams: list[list[str]], plan: GenerationPlan) -> torch.device:
        """At the first clip: encode every prompt the run uses (and the negative prompt)
        with the text encoder, release it, then place the other weights by the memory
        mode. Returns the device clips run on."""
        if self._placement is None:
            used = [s[:1] if plan.first_prompt_only else s for s in streams]
            texts = list(dict.fromkeys([*(p for s in used for p in s), plan.negative_prompt]))
            encode = self.bundle.text_encoder.encode
            self._placement = place(self.bundle, self.memory, self.device,
                                    encode=lambda: encode(texts))  # fmt: skip
        return self._placement.device

    def expert_dit(self, expert: str) -> torch.nn.Module:
        """The DiT of ``expert``: ``"high"`` = the high-noise expert of Wan 2.2 A14B (the
        only DiT of single-expert models), ``"low"`` = its low-noise expert."""
        if expert not in EXPERTS:
            raise SviError(f"LoRA expert must be one of {', '.join(EXPERTS)}, got {expert!r}")
        if expert == "high":
            return self.bundle.transformer
        if self.bundle.transformer_2 is None:
            raise SviError(f"the model {self.bundle.preset.name} has no low-noise expert; "
                           "--lora-low needs Wan 2.2 A14B")  # fmt: skip
        return self.bundle.transformer_2

    def load_lora(
        self,
        path: str | Path,
        scale: float = 1.0,
        expert: str = "high",
        adapter: bool | Collection[str] = False,
    ) -> dict:
        """Merge a LoRA file (any known key form) into the DiT of ``expert`` (see
        :meth:`expert_dit`) at strength ``scale``; the entry is kept in ``self.loras``.
        On the embedded model a short name picks a shipped LoRA: ``"clean"`` (the
        clean-data baseline of the default ``"svi"`` ERFT LoRA). ``adapter`` (True, or
        names of which one is this LoRA's, :func:`lora_names`): attach it as a peft
        adapter instead, whose strength a prompt stream may change between clips
        (:meth:`set_lora_scales`) without reloading weights."""
        from svi.conditions.adapters import attach_for_file
        from svi.lora import apply_lora, lora_fingerprint, read_lora_metadata

        if not Path(path).exists():  # a short name of a LoRA shipped with the model
            path = self.bundle.bundled_lora(str(path)) or path
        dit = self.expert_dit(expert)  # a missing expert fails before anything is merged
        hooked = self.memory.offload != "none" or self.memory.weights_dtype == "fp8"
        if self._placement is not None and hooked:
            raise SviError(f"LoRA {path}: with --offload {self.memory.offload} / --weights-dtype "
                           f"{self.memory.weights_dtype} LoRAs merge before the first clip; "
                           "load them first")  # fmt: skip
        _warn_other_expert(path, expert)
        digest = lora_fingerprint(path)
        for other in self.loras:  # the same file twice would merge at the summed strength
            if other["sha256"] == digest and other["expert"] == expert:
                raise SviError(f"LoRA {path} is the same file as {other['path']}, already "
                               f"merged at strength {other['scale']:g}; give it once, with "
                               "the strength you want")  # fmt: skip
        condition = attach_for_file(dit, path, self.bundle.codec, self.bundle.preset.family)
        names = lora_names({"path": str(path)})
        if not isinstance(adapter, bool):
            adapter = bool(names & set(adapter))
        name = min(names, key=len) if adapter else None
        report = apply_lora(dit, path, scale=scale, merge=not adapter, adapter_name=name)
        entry = {"path": str(path), "expert": expert, "scale": scale,
                 "sha256": digest, "modules": report.n_modules}  # fmt: skip
        if adapter:  # absent for merged ones: the records of older manifests unchanged
            entry["adapter"] = report.adapter_name
        if condition is not None:
            entry["condition"] = condition
        training = read_lora_metadata(path).get("training")
        if isinstance(training, dict) and isinstance(training.get("data"), dict):
            entry["padding"] = training["data"].get("padding")  # the format it was trained on
        self.loras.append(entry)
        return entry

    def lora_named(self, name: str) -> dict | None:
        """The loaded LoRA a prompt stream calls ``name`` (:func:`lora_names`)."""
        return next((e for e in self.loras if name in lora_names(e)), None)

    def set_lora_scales(self, scales: dict[str, float]) -> dict[str, float]:
        """Give every attached LoRA its strength for the next clip: ``scales[name]``,
        else the one it was loaded with. Returns ``{name: strength}`` of the attached
        ones (``{}`` when every LoRA is merged)."""
        from svi.lora import set_lora_scale

        self.check_lora_names(scales)
        used = {}
        for entry in (e for e in self.loras if "adapter" in e):
            name = entry["adapter"]
            scale = next((s for n, s in scales.items() if n in lora_names(entry)), entry["scale"])
            if self._scales.get(name) != scale:
                set_lora_scale(self.expert_dit(entry["expert"]), name, scale)
                self._scales[name] = scale
            used[name] = scale
        return used

    def check_lora_names(self, names: Collection[str]) -> None:
        """SviError unless every name is a LoRA attached as an adapter."""
        loaded = sorted(min(lora_names(e), key=len) for e in self.loras)
        for name in sorted(names):
            entry = self.lora_named(name)
            if entry is None:
                raise SviError(f"the prompt stream sets LoRA {name!r}, which is not loaded "
                               f"(loaded: {', '.join(loaded) or 'none'}; give it with "
                               "--lora)")  # fmt: skip
            if "adapter" not in entry:
                raise SviError(f"LoRA {name!r} is merged into the weights: its strength "
                               "cannot change per clip")  # fmt: skip

    def lora_padding(self) -> str | None:
        """The conditioning padding the loaded LoRAs were trained with (first one wins)."""
        for entry in self.loras:
            if entry.get("padding"):
                return entry["padding"]
        return None

    # -- the clip loop ---------------------------------------------------------------
    def plan(
        self, config: GenerationConfig, prompts: list[str], fps: int | None = None
    ) -> GenerationPlan:
        """Resolve and validate every setting of ``config`` for this model and ``prompts``
        (:func:`svi.plan.resolve_plan`; the LoRAs' trained padding is the default)."""
        b = self.bundle
        patch = getattr(getattr(b.transformer, "config", None), "patch_size", None) or (1, 1, 1)
        return resolve_plan(config, b.preset, temporal_factor=b.codec.temporal_factor,
                            grid=b.codec.spatial_factor * int(patch[-1]),
                            multi_prompt=len(set(prompts)) > 1 and not config.first_prompt_only,
                            lora_padding=self.lora_padding(), fps=fps,
                            image_tokens=b.image_encoder is not None)  # fmt: skip

    def prompt_for(self, prompts: list[str], k: int, plan: GenerationPlan) -> str:
        """Prompt k of the stream (each used ``prompt_repeat`` times); the last one holds
        once the stream runs out."""
        if plan.first_prompt_only:
            return prompts[0]
        return prompts[min(k // plan.prompt_repeat, len(prompts) - 1)]

    def generate(
        self,
        start: np.ndarray,
        prompts: list[str] | Stream | PromptSource,
        config: GenerationConfig | GenerationPlan,
        *,
        first_clip: int = 0,
        carry: Carry | None = None,
        on_step: Callable[[int], None] | None = None,
        drive: Drive | None = None,
    ) -> Iterator[Clip]:
        """Yield clips ``first_clip, first_clip + 1, ...`` (``clips`` in all; 0 = forever).

        ``start`` (M0, H, W, 3) uint8 holds the start frames; ``start[0]`` is the anchor.
        ``config`` is resolved by :meth:`plan` unless it already is a plan. To resume,
        pass the ``carry`` of clip ``first_clip - 1``. ``drive`` (audio or pose stream,
        :mod:`svi.conditions.drive`) conditions clip k on its part of the stream.
        ``prompts``: a list, a :class:`~svi.steering.Stream` (with per-entry LoRA
        strengths) or a :class:`~svi.steering.PromptSource` the caller may change
        between clips: clip k follows the stream in effect when it starts.
        """
        if not prompts:
            raise SviError("at least one prompt is needed")
        source = PromptSource.wrap(prompts)
        first = list(source.first.prompts)
        plan = config if isinstance(config, GenerationPlan) else self.plan(config, first)
        b, m = self.bundle, plan.motion_frames
        device = self._ready([list(s.prompts) for s in source.streams()], plan)
        anchor = to_signed(start[0])[None]  # (1, 3, H, W)
        carry = carry or self.first_carry(start, plan)
        k = first_clip
        while plan.clips == 0 or k < plan.clips:
            t0 = time.perf_counter()
            stream = source.stream_for(k)
            entry = stream.entry(k, plan)
            prompt, loras = stream.prompts[entry], self.set_lora_scales(stream.loras[entry])
            y, text, neg, experts = self._clip_inputs([carry], [anchor], [prompt], plan)
            if drive is not None:  # clip k's part of the audio / pose stream
                experts = replace(experts, drive=drive.clip(k, plan.num_frames, m))

            def sample(seed: int, k: int = k, experts=experts, y=y, text=text, neg=neg):
                noise = clip_noise((1, *b.latent_shape), seed, device)
                latents = sample_latents(experts, noise, y, text, neg, steps=plan.steps,
                                         shift=plan.shift, cfg=plan.cfg,
                                         cond_cfg=drive.guidance if drive else 1.0,
                                         on_step=on_step)  # fmt: skip
                return latents, to_uint8(_decode_finite(b.codec, latents, k))[0]  # (F, H, W, 3)

            seed, latents, frames, tries = _sample_with_rerolls(sample, plan, k, carry.frames)
            latent_carry = latents[:, :, -m:].clone() if plan.handoff == "latent" else None
            carry = Carry(frames=frames[-m:], latents=latent_carry)
            kept = plan.kept(k)
            yield Clip(k, prompt, seed, frames, frames[kept], frames[kept.stop :], carry,
                       time.perf_counter() - t0, {"tries": tries} if tries else {},
                       stream, loras)  # fmt: skip
            k += 1

    def generate_batch(
        self,
        starts: list[np.ndarray],
        prompts: list[list[str]],
        plan: GenerationPlan,
        seeds: list[int],
        *,
        first_clip: int = 0,
        carries: list[Carry] | None = None,
        on_clip: Callable[[], None] | None = None,
    ) -> Iterator[list[Clip]]:
        """Several videos at once, one DiT batch per sampler step: video i starts from
        ``starts[i]`` with prompt stream ``prompts[i]`` and clip seeds ``seeds[i] + k *
        seed_stride``; yields, per clip k, the list of the videos' clips. ``plan`` must
        give a number of clips. Its frames equal :meth:`generate`'s up to float rounding
        (a batched matrix product may round differently; measured in
        benchmarks/batch_bench.py); re-roll and audio / pose drives run one video at a time."""
        n = len(starts)
        if not n or len(prompts) != n or len(seeds) != n or (carries and len(carries) != n):
            raise SviError("generate_batch needs as many prompt streams, seeds (and carries) "
                           "as start videos, and at least one")  # fmt: skip
        if plan.clips < 1 or plan.reroll is not None:
            raise SviError("a batch of videos needs a number of clips and no re-roll")
        if any(not p for p in prompts):
            raise SviError("at least one prompt is needed for every video")
        b = self.bundle
        device = self._ready(prompts, plan)
        anchors = [to_signed(s[0])[None] for s in starts]  # (1, 3, H, W) each
        carries = list(carries or [Carry(frames=s[-plan.num_frames + 1 :]) for s in starts])
        for k in range(first_clip, plan.clips):
            t0 = time.perf_counter()
            texts = [self.prompt_for(p, k, plan) for p in prompts]
            y, text, neg, experts = self._clip_inputs(carries, anchors, texts, plan)
            clip_seeds = [replace(plan, seed=s).clip_seed(k) for s in seeds]
            noise = torch.cat([clip_noise((1, *b.latent_shape), s, device) for s in clip_seeds])
            latents = sample_latents(experts, noise, y, text, neg, steps=plan.steps,
                                     shift=plan.shift, cfg=plan.cfg)  # fmt: skip
            frames = to_uint8(_decode_finite(b.codec, latents, k))  # (B, F, H, W, 3)
            m, kept = plan.motion_frames, plan.kept(k)
            seconds = (time.perf_counter() - t0) / n
            out = []
            for i in range(n):
                lat = latents[i : i + 1, :, -m:].clone() if plan.handoff == "latent" else None
                carries[i] = Carry(frames=frames[i][-m:], latents=lat)
                out.append(Clip(k, texts[i], clip_seeds[i], frames[i], frames[i][kept],
                                frames[i][kept.stop :], carries[i], seconds))  # fmt: skip
            yield out
            if on_clip is not None:
                on_clip()

    def first_carry(self, start: np.ndarray, plan: GenerationPlan) -> Carry:
        """Clip 0's conditioning: the start frames; an extension (``plan.skip_first``)
        carries the extended video's last ``carried_frames`` frames as a finished clip
        would - pixels, or their latents for the latent hand-off."""
        if not plan.skip_first:
            return Carry(frames=start[-plan.num_frames + 1 :])
        frames = start[-plan.carried_frames :]  # (carried, H, W, 3)
        if plan.handoff != "latent":
            return Carry(frames=frames)
        video = to_signed(frames).movedim(0, 1)[None]  # (1, 3, carried, H, W)
        with torch.no_grad():
            latents = self.bundle.codec.encode(video)  # (1, C, M, h, w)
        return Carry(frames=frames[-plan.motion_frames :], latents=latents.detach().cpu())

    def _clip_inputs(self, carries: list[Carry], anchors: list[torch.Tensor],
                     prompts: list[str], plan: GenerationPlan):  # fmt: skip
        """y (B, ...), text and negative text states and the DiT call of one clip of each
        video (CLIP image tokens of its first carried frame on Wan 2.1), on the device
        clips run on."""
        b, device = self.bundle, self.device
        text = b.text_encoder.encode(prompts).to(device)
        neg = b.text_encoder.encode([plan.negative_prompt] * len(prompts)).to(device)
        if self._placement is not None:  # a prompt met after the first clip was encoded now
            self._placement.release_text()
        y = torch.cat([self._conditioning(c, a, plan) for c, a in zip(carries, anchors,
                                                                       strict=True)])  # fmt: skip
        first_motion = torch.cat([to_signed(c.frames[0])[None] for c in carries])
        return y.to(device), text, neg, b.experts_for(first_motion, plan.clip_preprocess)

    def _anchor_latent(self, anchor: torch.Tensor) -> torch.Tensor:
        """The anchor's latent, encoded once per generation (latent hand-off)."""
        cached = getattr(self, "_anchor_cache", None)
        if cached is None or not torch.equal(cached[0], anchor):
            cached = (anchor, self.bundle.codec.encode(anchor[:, :, None]))
            self._anchor_cache = cached
        return cached[1]

    def _conditioning(self, carry: Carry, anchor: torch.Tensor, plan: GenerationPlan):
        """y for the next clip: from the carried pixels (or start frames) or latents."""
        b, padding = self.bundle, plan.padding
        # carried latents restored by a resume come from the host
        latents = None if carry.latents is None else carry.latents.to(self.device)
        if padding == "anchor-first":  # SVI 2.0 Pro: [anchor, carried latents, zeros]
            return build_y_anchor_first(self._anchor_latent(anchor), latents,
                                        b.latent_shape[1], b.codec.temporal_factor)  # fmt: skip
        if latents is not None and plan.handoff == "latent":
            lat_f = b.latent_shape[1]
            anchor_lat = self._anchor_latent(anchor) if padding == "anchor" else None
            return build_y_from_latents(latents, lat_f, b.codec.temporal_factor,
                                        padding=padding, mask=plan.mask,
                                        anchor_latent=anchor_lat)  # fmt: skip
        motion = to_signed(carry.frames).movedim(0, 1)[None]  # (1, 3, M, H, W)
        return build_y(b.codec, motion, plan.num_frames, padding=padding, mask=plan.mask,
                       anchor=anchor)  # fmt: skip


def _decode_finite(codec, latents: torch.Tensor, k: int) -> torch.Tensor:
    """Clip k's decoded pixels; NaN / inf anywhere is an error, never a black video."""
    decoded = codec.decode(latents)
    if not (torch.isfinite(latents).all() and torch.isfinite(decoded).all()):
        raise SviError(f"clip {k}: the sampler produced NaN/inf; check --cfg, the LoRA "
                       "weights and their strengths")  # fmt: skip
    return decoded


def _sample_with_rerolls(sample, plan: GenerationPlan, k: int, carried: np.ndarray):
    """Clip k from seed ``plan.clip_seed(k)``; with ``plan.reroll``, again from the next
    seeds while its score exceeds the threshold (:mod:`svi.reroll`). Returns the kept
    try's seed, latents and frames and the record of every try (empty without re-roll)."""
    seed = plan.clip_seed(k)
    if plan.reroll is None:
        return (seed, *sample(seed), [])
    from svi.reroll import clip_scores, score

    tries, best = [], None
    for r in range(plan.max_rerolls + 1):
        latents, frames = sample(seed + r)
        scores = clip_scores(frames, carried)
        tries.append({"seed": seed + r, **{n: round(v, 6) for n, v in scores.items()}})
        if best is None or score(scores) < best[0]:
            best = (score(scores), seed + r, latents, frames, r)
        if score(scores) <= plan.reroll:
            break
    for i, t in enumerate(tries):
        t["kept"] = i == best[4]
    if best[4] > 0:
        log.info("clip %d: re-rolled %d time(s), kept seed %d (score %.4f)", k,
                 len(tries) - 1, best[1], best[0])  # fmt: skip
    return best[1], best[2], best[3], tries


def rollout(
    pipe: SVIPipeline,
    start: np.ndarray,
    prompts: list[str],
    config: GenerationConfig | GenerationPlan,
    drive: Drive | None = None,
) -> tuple[np.ndarray, list[Clip]]:
    """N clips without a writer (for benchmarks): the stitched video and per-clip info."""
    parts, clips = [], []
    for clip in pipe.generate(start, prompts, config, drive=drive):
        parts.append(clip.new_frames)
        clips.append(clip)
    if clips:
        parts.append(clips[-1].tail)
    return np.concatenate(parts), clips
