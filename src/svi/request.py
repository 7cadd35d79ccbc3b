"""One request of ``svi generate`` (or the app) resolved into what a session runs:
the model and its LoRAs loaded, the start (a picture, a world scene or a video to
extend), the prompt stream, the drive (audio / pose) and the plan - every setting
validated before :func:`svi.session.generate_to_file` touches a file.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from svi import parallel
from svi.errors import SviError
from svi.manifest import array_sha256
from svi.parallel import Group
from svi.pipeline import SVIPipeline
from svi.plan import GenerationConfig, GenerationPlan
from svi.session import Hooks, generate_to_file
from svi.steering import Stream

if TYPE_CHECKING:
    from svi.conditions.drive import Drive

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateRequest:
    """Everything ``svi generate`` accepts (the CLI only fills this in). Generation
    settings live in ``config`` (their defaults: :class:`GenerationConfig`); its
    ``clips`` is replaced by the length asked for here."""

    out: Path = Path("svi.mp4")
    model: str | None = None
    preset: str | None = None
    lora: list[Path] = field(default_factory=list)  # high-noise expert (or the only DiT)
    lora_scale: list[float] = field(default_factory=list)
    lora_low: list[Path] = field(default_factory=list)  # low-noise expert (Wan 2.2 A14B)
    lora_low_scale: list[float] = field(default_factory=list)
    no_lora: bool = False
    image: Path | None = None
    extend: Path | None = None  # a video to continue: its last frames carry into clip 0
    new_only: bool = False  # with extend: write the new frames alone
    steerable: bool = False  # every LoRA attached as an adapter: any strength may be steered
    prompt: str | None = None
    prompts: Path | None = None
    config: GenerationConfig = field(default_factory=GenerationConfig)
    clips: int | None = None
    seconds: float | None = None
    frames: int | None = None
    forever: bool = False
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    world_kind: str | None = None  # default: consistent; talking / dancing with audio / pose
    world_seed: int | None = None
    audio: Path | None = None  # SVI-Talk: the driving wav
    audio_cfg: float | None = None  # audio guidance (default 1: no audio CFG pass)
    audio_encoder: Path | None = None  # wav2vec2 folder (Wan); world: log-mel features
    pose: Path | None = None  # SVI-Dance: the driving pose video
    clips_dir: Path | None = None
    lossless: bool = False
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    offload: str | None = None  # memory mode (svi.models.offload; None: its default)
    weights_dtype: str | None = None
    vae_tiling: bool | None = None
    parallel: str | None = None  # context parallelism across launched processes (svi.parallel)


DEFAULT_SECONDS = 32.0


def _fit_clip_to_image(pipe: SVIPipeline, image_size: tuple[int, int], variant) -> None:
    """A Wan clip takes the start image's aspect (svi.starts.clip_size): a variant's
    width cap (its script's rule; a fixed-size variant keeps the preset's size), else
    the preset's longer side as the cap. The world model's size is fixed."""
    from svi.starts import clip_size

    preset = pipe.bundle.preset
    if preset.family != "wan" or (variant is not None and variant.max_width is None):
        return
    h0, w0 = image_size
    if variant is not None:
        h, w = clip_size(h0, w0, max_width=variant.max_width)
    else:
        h, w = clip_size(h0, w0, max_side=max(preset.height, preset.width))
    if (h, w) != (preset.height, preset.width):
        log.info("clip size %dx%d from the %dx%d start image", w, h, w0, h0)
        pipe.bundle.preset = replace(preset, height=h, width=w)


def _load_loras(
    pipe: SVIPipeline, req: GenerateRequest, adapters: bool | set[str] = frozenset()
) -> None:
    """Merge ``--lora`` files into the high-noise expert (or the only DiT) and
    ``--lora-low`` files into the low-noise one, each at its scale (default 1.0); with
    neither (and no ``--no-lora``), the embedded model's default LoRA. The ones named in
    ``adapters`` (by a prompt stream's segments; True: all) are attached as peft
    adapters."""
    if req.lora_low:
        pipe.expert_dit("low")  # no low-noise expert: refused before anything is merged
    for expert, paths, scales in (("high", req.lora, req.lora_scale),
                                  ("low", req.lora_low, req.lora_low_scale)):  # fmt: skip
        for i, path in enumerate(paths):
            pipe.load_lora(path, scales[i] if i < len(scales) else 1.0, expert=expert,
                           adapter=adapters)  # fmt: skip
    if req.lora or req.lora_low or req.no_lora:
        return
    if req.audio is not None or req.pose is not None:  # the shipped Talk / Dance adapter
        name = "talk" if req.audio is not None else "dance"
        if pipe.bundle.bundled_lora(name) is None:
            raise SviError(f"no {name} adapter ships with {pipe.bundle.preset.name}; give the "
                           "conditional adapter with --lora")  # fmt: skip
        pipe.load_lora(name, adapter=adapters)
    elif pipe.bundle.default_lora is not None:
        pipe.load_lora(pipe.bundle.default_lora, adapter=adapters)


@dataclass
class Prepared:
    """A request resolved: the loaded pipeline and everything ``generate_to_file`` takes."""

    pipe: SVIPipeline
    start: np.ndarray
    prompts: Stream  # prompts and per-entry LoRA strengths (svi.steering)
    plan: GenerationPlan
    drive: Drive | None
    prefix: np.ndarray | None = None  # an extension's input frames, written first
    extend: dict | None = None  # ... and their record in the manifest's inputs
    group: Group | None = None  # context parallelism (svi.parallel)


def run_generate(req: GenerateRequest, hooks: Hooks | None = None) -> dict[str, Any]:
    """Resolve a request (:func:`prepare_generation`), then generate (``hooks``: an app's
    callbacks, :class:`Hooks`)."""
    p = prepare_generation(req)
    if p.group is not None and not p.group.is_main:
        return _follow(p)
    return generate_to_file(
        p.pipe, p.start, p.prompts, p.plan, Path(req.out), lossless=req.lossless,
        resume=req.resume, overwrite=req.overwrite, clips_dir=req.clips_dir,
        progress=req.progress, drive=p.drive, hooks=hooks, prefix=p.prefix, extend=p.extend,
        group=p.group,
    )  # fmt: skip


def _follow(p: Prepared) -> dict[str, Any]:
    """A rank other than 0 of a context-parallel run: the same clip loop from where rank
    0 starts (:func:`svi.parallel.share_start`), every DiT forward shared; no file."""
    shared = parallel.share_start(p.group, None)
    frames = clips = 0
    if not shared["done"]:
        for clip in p.pipe.generate(p.start, p.prompts, p.plan, first_clip=shared["first"],
                                    carry=shared["carry"], drive=p.drive):  # fmt: skip
            frames, clips = frames + len(clip.new_frames), clips + 1
    return {"status": f"rank {p.group.rank}", "frames_written": frames, "clips": [None] * clips}


def prepare_generation(req: GenerateRequest) -> Prepared:
    """Resolve a request: model, LoRAs, start, prompts, plan, length and stream.

    Every setting is resolved and validated into a :class:`GenerationPlan` before the
    output or its manifest is touched.
    """
    from svi.crop import fit_frames
    from svi.models.offload import MemoryMode
    from svi.plan import clips_for_length
    from svi.prompt_stream import read_prompt_entries
    from svi.starts import DEFAULT_WORLD_SEED, image_start, world_start
    from svi.variants import get_variant, variant_clips
    from svi.video import read_image

    if req.prompt is not None and req.prompts is not None:
        raise SviError("give --prompt or --prompts, not both")
    if req.image is not None and not Path(req.image).is_file():
        raise SviError(f"image {req.image} does not exist")
    if req.new_only and req.extend is None:
        raise SviError("--new-only needs --extend VIDEO")
    _check_drive_request(req)
    if len(req.lora_scale) > len(req.lora):
        raise SviError("more --lora-scale values than --lora files")
    if len(req.lora_low_scale) > len(req.lora_low):
        raise SviError("more --lora-low-scale values than --lora-low files")
    for side, value in (("--height", req.height), ("--width", req.width)):
        if value is not None and (value < 16 or value % 16):
            raise SviError(f"{side} must be a positive multiple of 16 (Wan's token size), "
                           f"got {value}")  # fmt: skip
    memory = MemoryMode.from_options(req.offload, req.weights_dtype, req.vae_tiling)
    group = None if req.parallel is None else parallel.start(req.parallel)
    picture = None if req.image is None else read_image(req.image)  # read once, before weights
    source = None if req.extend is None else read_extend_source(req.extend)
    pipe = SVIPipeline.from_pretrained(req.model, req.preset, memory, height=req.height,
                                       width=req.width, num_frames=req.num_frames)  # fmt: skip
    variant = get_variant(req.config.variant, pipe.bundle.preset) if req.config.variant else None
    fitted = picture if source is None else source.frames[0]
    if fitted is not None and req.height is None and req.width is None:
        _fit_clip_to_image(pipe, fitted.shape[:2], variant)
    preset = pipe.bundle.preset
    config = replace(req.config, clips=0)
    fps = req.fps
    if source is not None:
        config = replace(config, extend=len(source.frames), new_only=req.new_only)
        fps = fps or source.fps
    segment_loras = None
    if req.prompts is not None:
        per_clip = pipe.plan(config, ["a", "b"], fps)  # a stream's clip length (LoRAs: none)
        prompts, segment_loras = read_prompt_entries(
            req.prompts, seconds_per_clip=per_clip.new_frames / per_clip.fps
        )
    elif req.prompt is not None:
        if not req.prompt.strip():
            raise SviError("--prompt is empty")
        prompts = [req.prompt]
    elif req.image is None and (req.extend is None or preset.family == "world"):
        prompts = None
    else:
        raise SviError(f"give --prompt or --prompts with --{'image' if req.image else 'extend'}")
    named = {name for table in segment_loras or [] for name in table}
    _load_loras(pipe, req, True if req.steerable else named)  # adapters: the ones named
    pipe.check_lora_names(named)
    prefix = extend = None
    if source is not None:
        video = fit_frames(source.frames, preset.height, preset.width)  # (F', H, W, 3)
        anchor = video[:1] if picture is None else image_start(picture, preset)
        plan = pipe.plan(config, prompts or ["a"], fps)  # checks the length; carried frames
        start = np.concatenate([anchor, video[-plan.carried_frames :]])
        prefix = None if req.new_only else video
        extend = {**source.record, "frames_sha256": array_sha256(video)}
        if prompts is None:
            prompts = world_start(preset)[1]  # the world scene's prompt on a world model
    elif req.image is not None:
        start = image_start(picture, preset, stretch=variant is not None)
    else:
        kind = req.world_kind or ("talking" if req.audio else "dancing" if req.pose else None)
        start, world_prompts = world_start(
            preset, kind or "consistent", req.world_seed or DEFAULT_WORLD_SEED
        )
        prompts = prompts or world_prompts
    plan = pipe.plan(config, prompts, fps)
    drive = _read_drive(req, pipe, plan, variant)
    n_prompts = 1 if plan.first_prompt_only else len(prompts) * plan.prompt_repeat
    given = any(x is not None for x in (req.clips, req.seconds, req.frames)) or req.forever
    if drive is not None and not given:  # the video follows the audio / pose stream
        n = drive.default_clips(plan.num_frames, plan.motion_frames)
    else:
        n = clips_for_length(
            clips=req.clips, seconds=req.seconds, frames=req.frames, forever=req.forever,
            fps=plan.fps, num_frames=plan.num_frames, new_frames=plan.new_frames,
            n_prompts=n_prompts, default_seconds=DEFAULT_SECONDS,
            default_clips=variant_clips(plan, n_prompts),
        )  # fmt: skip
    if drive is not None:
        drive.check_clips(n, plan.num_frames, plan.motion_frames)
    plan = pipe.plan(replace(config, clips=n), prompts, fps)
    if group is not None:
        _enable_parallel(pipe, group)
    stream = Stream.of(prompts, segment_loras if named else None)
    return Prepared(pipe, start, stream, plan, drive, prefix, extend, group)


@dataclass(frozen=True)
class ExtendSource:
    """A video to continue, as read: its frames, frame rate and record (path, hash)."""

    frames: np.ndarray  # (F', h, w, 3) uint8
    fps: int | None
    record: dict


def read_extend_source(path: Path) -> ExtendSource:
    """The frames of ``--extend`` (any video or image the reader takes) with its frame
    rate (rounded; a still image: None) and the file's sha256; SviError if unreadable."""
    from svi.video import read_video, video_fps
    from svi.video.reader import check_input_file

    file = check_input_file(path)
    frames = read_video(file)
    fps = round(video_fps(file)) or None  # a still image has none: the model's
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return ExtendSource(frames, fps, {"sha256": digest, "frames": len(frames)})


def _enable_parallel(pipe: SVIPipeline, group: Group) -> None:
    """Split every DiT forward of a Wan model over the launched processes."""
    b = pipe.bundle
    if b.preset.family != "wan":
        raise SviError("--parallel splits a Wan model's DiT; the embedded world model runs "
                       "in one process")  # fmt: skip
    _, ph, pw = b.transformer.config.patch_size
    side = b.codec.spatial_factor
    tokens = (b.codec.latent_frames(b.preset.num_frames) * (b.preset.height // (side * ph))
              * (b.preset.width // (side * pw)))  # fmt: skip
    parallel.check_tokens(tokens, group)
    parallel.enable([d for d in (b.transformer, b.transformer_2) if d is not None], group)


def _check_drive_request(req: GenerateRequest) -> None:
    """Audio / pose inputs are files and not both (before any weight loads)."""
    if req.audio is not None and req.pose is not None:
        raise SviError("give --audio or --pose, not both")
    for flag, path in (("--audio", req.audio), ("--pose", req.pose),
                       ("--audio-encoder", req.audio_encoder)):  # fmt: skip
        if path is not None and not Path(path).exists():
            raise SviError(f"{flag} {path} does not exist")
    if req.audio is None and (req.audio_cfg is not None or req.audio_encoder is not None):
        raise SviError("--audio-cfg and --audio-encoder need --audio")


def _read_drive(req: GenerateRequest, pipe: SVIPipeline, plan: GenerationPlan, variant=None):
    """The audio / pose stream of the request at the plan's frame rate and clip size,
    checked against the loaded adapter and the variant (None without --audio / --pose).
    Audio guidance: ``--audio-cfg``, else the variant's on Wan (Talk: 5), else 1."""
    from svi.conditions.drive import check_model_drive, read_audio_drive, read_pose_drive

    b = pipe.bundle
    if variant is not None and variant.condition is not None:
        given = "audio" if req.audio is not None else "pose" if req.pose is not None else None
        if given != variant.condition:
            raise SviError(f"--variant {variant.name} is driven by --{variant.condition}")
    tf = b.codec.temporal_factor
    drive = None
    if req.audio is not None:
        encoder = None
        if req.audio_encoder is not None:
            from svi.conditions.wav2vec import Wav2Vec2Features

            encoder = Wav2Vec2Features.from_folder(req.audio_encoder)
        elif b.preset.family != "world":
            raise SviError("--audio on a Wan model needs --audio-encoder (a local wav2vec2 "
                           "folder, e.g. chinese-wav2vec2-base)")  # fmt: skip
        guidance = 1.0 if variant is None or b.preset.family == "world" else variant.audio_cfg
        guidance = guidance if req.audio_cfg is None else req.audio_cfg
        drive = read_audio_drive(req.audio, fps=plan.fps, temporal_factor=tf,
                                 guidance=guidance, encoder=encoder)  # fmt: skip
    elif req.pose is not None:
        drive = read_pose_drive(req.pose, height=b.preset.height, width=b.preset.width,
                                temporal_factor=tf)  # fmt: skip
    for dit in filter(None, (b.transformer, b.transformer_2)):
        check_model_drive(dit, drive)
    return drive
