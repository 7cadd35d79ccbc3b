"""The released SVI variants as settings, one table (sources: docs/variants-sources.md).

A variant is what the authors' script for one released LoRA passes to the clip loop:
conditioning layout (padding, carried frames, hand-off), prompt handling, clip seeds,
stitching, and - on real Wan models - the sampler numbers, negative prompt, output fps
and resolution rule. ``--variant NAME`` makes these the defaults; every explicit flag
still overrides them (:func:`svi.plan.resolve_plan`). On the embedded world model only
the structural settings apply (its clip size, sampler and fps are its own).

Where the scripts differ by base model, the row names the model: SVI 2.0 runs through
the Wan 2.1 script (5 carried frames, each prompt twice) and through its own Wan 2.2
A14B script (1 carried frame, 15 fps, the new clip's first frame dropped).
Deliberate deviation: the Talk and Dance scripts draw unseeded noise (``seed=None``),
which cannot be reproduced; here every variant uses ``seed + 42 * k``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from svi.errors import SviError

# The negative prompts of the released scripts, verbatim: SVI 1.0 and 2.0 on Wan 2.1
# (test_svi.py) use an English rendering of Wan's standard list; the Wan 2.2 scripts
# use Wan's Chinese original.
NEGATIVE_EN = (
    "bright tones, overexposed, static, blurred details, subtitles, style, works, "
    "paintings, images, static, overall gray, worst quality, low quality, JPEG compression "
    "residue, ugly, incomplete, extra fingers, poorly drawn hands, poorly drawn faces, "
    "deformed, disfigured, misshapen limbs, fused fingers, still picture, messy background, "
    "three legs, many people in the background, walking backwards"
)
NEGATIVE_ZH = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，"
    "最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，"
    "画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
    "三条腿，背景人很多，倒着走"
)
SEED_STRIDE = 42  # clip k of every released script: seed 42 * k


@dataclass(frozen=True)
class Variant:
    """One released variant (see the module doc); ``wan`` holds the settings that apply
    to real Wan models only."""

    name: str
    description: str
    source: str
    motion_frames: int  # carried frames (pixel) or latent frames (latent hand-off)
    padding: str
    handoff: str = "pixel"
    first_prompt_only: bool = False
    prompt_repeat: int = 1  # each prompt of a stream is used for this many clips
    stitch: str = "tail"  # "tail": drop each clip's carried tail; "head": a later clip's head
    overlap: int = 0  # "head": pixel frames dropped from the start of every later clip
    default_clips: int = 10  # clips when no length is given
    cap_clips: bool = True  # ... at most one per prompt (x prompt_repeat) of a stream
    steps: int = 50
    shift: float = 5.0
    cfg: float = 5.0
    negative_prompt: str = NEGATIVE_EN
    fps: int = 24
    max_width: int | None = 832  # keep the image's aspect, width capped (None: fixed size)
    models: tuple[str, ...] = ("wan2.1",)  # model prefixes it was released for
    condition: str | None = None  # "audio" | "pose": needs the conditional modules
    audio_cfg: float = 1.0  # audio guidance (Wan only; the world model's is its own)

    def to_dict(self) -> dict:
        return asdict(self)


_SVI1 = "test_svi.py + scripts/test/svi_{}.sh (SVI 1.0, Wan 2.1 I2V 14B 480P)"
_W22 = "inference_svi_{}.py, branch svi_wan22 (Wan 2.2 I2V A14B)"

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("shot", "one scene, one prompt: the anchor pads every clip",
                _SVI1.format("shot"), motion_frames=1, padding="anchor",
                first_prompt_only=True, cap_clips=False),
        Variant("film", "a prompt stream, 5 carried frames, zero padding",
                _SVI1.format("film"), motion_frames=5, padding="zeros"),
        Variant("tom", "cartoon prompt streams, 1 carried frame, zero padding",
                _SVI1.format("tom"), motion_frames=1, padding="zeros"),
        Variant("2.0", "SVI 2.0 on Wan 2.1: anchor padding, 5 carried frames, each prompt twice",
                "test_svi.py + scripts/test/svi_2.0.sh", motion_frames=5, padding="anchor",
                prompt_repeat=2, default_clips=999),
        Variant("2.0-a14b", "SVI 2.0 on Wan 2.2 A14B: 1 carried frame, anchor padding",
                _W22.format("2.0"), motion_frames=1, padding="anchor", stitch="head",
                overlap=1, cap_clips=False, negative_prompt=NEGATIVE_ZH, fps=15,
                max_width=None, models=("wan2.2-i2v-a14b",)),
        Variant("2.0-pro", "SVI 2.0 Pro: anchor latent first, the last latent carried",
                _W22.format("2.0_pro"), motion_frames=1, padding="anchor-first",
                handoff="latent", stitch="head", overlap=4, default_clips=15,
                cap_clips=False, negative_prompt=NEGATIVE_ZH, fps=15, max_width=None,
                models=("wan2.2-i2v-a14b",)),
        Variant("talk", "audio-driven talking head (needs the audio modules)",
                "test_svi_talk.py + scripts/test/svi_talk.sh", motion_frames=1,
                padding="anchor", cfg=2.0, fps=25, max_width=640, default_clips=50,
                cap_clips=False, condition="audio", audio_cfg=5.0),
        Variant("dance", "skeleton-driven dancing (needs the pose encoder)",
                "test_svi_dance.py + scripts/test/svi_dance.sh", motion_frames=1,
                padding="anchor", cfg=2.0, fps=25, max_width=640, cap_clips=False,
                condition="pose"),
    )
}  # fmt: skip

# ``--variant 2.0`` on an A14B model runs the Wan 2.2 script's settings.
_BY_MODEL = {("2.0", "wan2.2-i2v-a14b"): "2.0-a14b"}


def get_variant(name: str, preset) -> Variant:
    """The variant ``name`` for a model of ``preset``: checked against the model it was
    released for (the world model runs every variant's structure)."""
    name = _BY_MODEL.get((name, preset.name), name)
    if name not in VARIANTS:
        known = ", ".join(n for n in VARIANTS if n != "2.0-a14b")
        raise SviError(f"unknown variant {name!r}; known: {known}")
    variant = VARIANTS[name]
    if preset.family == "wan" and not any(preset.name.startswith(m) for m in variant.models):
        raise SviError(f"variant {name} was released for {', '.join(variant.models)}, "
                       f"not {preset.name}")  # fmt: skip
    return variant


def variant_clips(plan, n_prompts: int) -> int | None:
    """Clips of a plan's variant when no length is asked for: its default, at most one
    per prompt entry where the script caps it (None without a variant)."""
    if plan.variant is None:
        return None
    v = VARIANTS[plan.variant]
    return min(v.default_clips, n_prompts) if v.cap_clips else v.default_clips


def markdown_table() -> str:
    """Every variant's settings, one row each (docs and ``svi generate --help``)."""
    head = ("| variant | M | hand-off | padding | prompts | stitch | clips | CFG | negative "
            "| fps | size | source |")  # fmt: skip
    rows = [head, "|" + "---|" * 12]
    for v in VARIANTS.values():
        prompts = ("first only" if v.first_prompt_only
                   else "each x2" if v.prompt_repeat == 2 else "one per clip")  # fmt: skip
        stitch = f"drop {v.overlap} head" if v.stitch == "head" else "drop carried tail"
        clips = f"{v.default_clips}" + (" (<= prompts)" if v.cap_clips else "")
        size = f"aspect, w <= {v.max_width}" if v.max_width else "preset size"
        neg = "zh" if v.negative_prompt == NEGATIVE_ZH else "en"
        rows.append(
            f"| {v.name} | {v.motion_frames} | {v.handoff} | {v.padding} | {prompts} "
            f"| {stitch} | {clips} | {v.cfg:g} | {neg} | {v.fps} | {size} | {v.source} |"
        )
    return "\n".join(rows)
