"""The ``svi`` command line: thin typer commands over the library.

Commands hold no logic: they parse arguments, call the library and report.
User errors (:class:`svi.errors.SviError`, bad arguments) become one line
``error: ...`` on stderr and exit code 2; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

try:  # typer >= 0.26 vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer with click as a dependency
    from click import exceptions as click_exc

from svi.errors import SviError, escape_controls, one_line

log = logging.getLogger("svi")
_THREAD_POLICY: str | None = None  # what svi.threads decided at start-up, for the log

app = typer.Typer(
    name="svi",
    help="Stable Video Infinity: any-length video from a Wan video DiT, made stable by ERFT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (robust to redirection)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _PrintableFormatter(logging.Formatter):
    """Log lines never carry terminal control codes (a prompt file may hold any)."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))


def setup_logging(verbose: bool) -> None:
    """Route library logging to stderr: warnings by default, everything with ``--verbose``."""
    level = logging.DEBUG if verbose else logging.WARNING
    handler = _StderrHandler()
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("svi")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging and tracebacks."),
) -> None:
    setup_logging(verbose)
    if _THREAD_POLICY:
        log.info("%s", _THREAD_POLICY)


@app.command()
def info(
    memory: bool = typer.Option(
        False, "--memory", help="Predicted peak GPU memory of a Wan model (docs/memory.md)."
    ),
    model: str | None = typer.Option(
        None, help="--memory: a Wan folder or wan2.1-i2v-14b-480p | -720p | wan2.2-i2v-a14b."
    ),
    offload: str | None = typer.Option(None, help="--memory: one offload mode (default: all)."),
    weights_dtype: str | None = typer.Option(None, help="--memory: bf16 (default) | fp8."),
    vae_tiling: bool | None = typer.Option(None, "--vae-tiling/--no-vae-tiling"),
    height: int | None = typer.Option(None, help="--memory: clip height (default: preset)."),
    width: int | None = typer.Option(None, help="--memory: clip width (default: preset)."),
    frames: int | None = typer.Option(None, help="--memory: frames per clip, 4k+1 (81)."),
    cfg: float | None = typer.Option(None, help="--memory: guidance (1: no CFG batch)."),
) -> None:
    """Versions, presets, threads and devices; with --memory, a model's predicted memory."""
    import torch

    from svi import __version__

    if memory:
        from svi.memory import report
        from svi.models.offload import OFFLOAD_MODES

        if model is None:
            raise SviError("--memory needs --model (a Wan folder or a Wan preset name)")
        modes = (offload,) if offload else OFFLOAD_MODES
        typer.echo(report(model, modes, weights_dtype, vae_tiling, height=height, width=width,
                          frames=frames, cfg=cfg))  # fmt: skip
        return
    rows = [("svi", __version__), ("python", sys.version.split()[0]), ("torch", torch.__version__)]
    for name in ("diffusers", "peft", "accelerate", "transformers", "av", "numpy"):
        try:
            module = __import__(name)
            rows.append((name, getattr(module, "__version__", "?")))
        except ImportError:
            rows.append((name, "not installed"))
    rows.append(("torch threads", str(torch.get_num_threads())))
    rows.append(("cpu cores", str(os.cpu_count())))
    cuda = torch.cuda.is_available()
    rows.append(("gpu", torch.cuda.get_device_name(0) if cuda else "none visible"))
    rows.append(("presets", ", ".join(_preset_names())))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


@app.command()
def train(
    out: Path = typer.Option(
        ..., "--out", help="Run folder: config, log, checkpoints, final model."
    ),
    recipe: Path | None = typer.Option(
        None,
        help="TOML recipe (see recipes/); flags override it. Default with --model: a "
        "rank-16 LoRA (docs/training.md).",
    ),
    model: str | None = typer.Option(
        None, help="Weights to fine-tune: a Wan diffusers folder, a world model dir or preset."
    ),
    data: Path | None = typer.Option(
        None, file_okay=False, help="Dataset folder (<category>/<category>.csv + videos)."
    ),
    erft: bool | None = typer.Option(
        None, "--erft/--no-erft", help="Error-Recycling Fine-Tuning (default: the recipe's)."
    ),
    preset: str | None = typer.Option(None, help="Model preset (default: detected)."),
    height: int | None = typer.Option(None, help="Clip height (Wan: multiple of 16)."),
    width: int | None = typer.Option(None, help="Clip width (Wan: multiple of 16)."),
    num_frames: int | None = typer.Option(None, help="Frames per clip (Wan: 4k+1)."),
    lora_rank: int | None = typer.Option(None, help="LoRA rank (alpha: the recipe's or rank)."),
    expert: str | None = typer.Option(
        None, help="Wan 2.2 A14B: high | low | both - per-expert LoRAs on their sigma ranges."
    ),
    steps: int | None = typer.Option(None, help="Total optimizer steps."),
    batch_size: int | None = typer.Option(None, help="Clips per step per process."),
    lr: float | None = typer.Option(None, help="Peak learning rate."),
    seed: int | None = typer.Option(None, help="Seed of weights, data and noise."),
    condition: str | None = typer.Option(
        None,
        help="SVI-Talk / SVI-Dance: audio | pose - train the condition modules with the "
        "LoRA on the world's talking / dancing episodes (docs/conditions.md).",
    ),
    resume: bool = typer.Option(False, help="Continue exactly from the newest checkpoint."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a world model (flow matching, image-to-video) or an SVI LoRA."""
    from svi.config import TrainConfig, load_recipe, lora_defaults, with_overrides
    from svi.train import train as run_training

    if recipe:
        config = load_recipe(recipe)
    else:
        config = lora_defaults(bool(erft)) if model is not None else TrainConfig()
    settings = {"init": model, "data.source": str(data) if data else None, "optim.lr": lr}
    if condition is not None:  # the world kind that carries the condition's stream
        kinds = {"audio": ("talking",), "pose": ("dancing",)}.get(condition)
        settings.update({"data.condition": condition, "data.kinds": kinds})
    config = with_overrides(config, settings, erft=erft, preset=preset, height=height,
                            width=width, num_frames=num_frames, lora_rank=lora_rank, expert=expert,
                            steps=steps, batch_size=batch_size, seed=seed)  # fmt: skip
    final = run_training(config, out, resume=resume, progress=progress)
    from accelerate import PartialState

    if PartialState().is_main_process:  # one line, not one per process
        typer.echo(f"model written to {final}")


@app.command()
def generate(
    out: Path = typer.Option(Path("svi.mp4"), help="Output mp4 (written as it grows)."),
    model: str | None = typer.Option(None, help="Preset name, world model dir or Wan folder."),
    preset: str | None = typer.Option(None, help="Preset of a Wan folder (default: detected)."),
    lora: list[Path] = typer.Option(
        [],
        help="LoRA file (any key form) for the high-noise expert of Wan 2.2 A14B or the "
        "only DiT; repeatable. On the embedded model, 'clean' is the shipped clean-data "
        "baseline of the default ERFT LoRA.",
    ),
    lora_scale: list[float] = typer.Option([], help="Strength per --lora (default 1.0)."),
    lora_low: list[Path] = typer.Option(
        [], help="LoRA file for the low-noise expert (Wan 2.2 A14B only); repeatable."
    ),
    lora_low_scale: list[float] = typer.Option([], help="Strength per --lora-low (default 1.0)."),
    no_lora: bool = typer.Option(
        False, "--no-lora", help="Do not load the embedded model's default LoRA."
    ),
    image: Path | None = typer.Option(
        None, dir_okay=False, help="Start image (any picture; fitted to size)."
    ),
    extend: Path | None = typer.Option(
        None,
        help="Continue this video (mp4 / webm / gif / ...): its last frames carry into the "
        "first clip, its first frame (or --image) is the anchor, its size and fps the "
        "clip's; the output is the video followed by the new frames.",
    ),
    new_only: bool = typer.Option(
        False, "--new-only", help="With --extend: write the new frames alone."
    ),
    prompt: str | None = typer.Option(None, help="One prompt for every clip."),
    prompts: Path | None = typer.Option(None, help="Prompt stream file: one prompt per clip."),
    first_prompt_only: bool | None = typer.Option(
        None, "--first-prompt-only", help="Use only the stream's first prompt."
    ),
    clips: int | None = typer.Option(None, help="Number of clips (0 = until Ctrl-C)."),
    seconds: float | None = typer.Option(None, help="Length in seconds."),
    frames: int | None = typer.Option(None, help="Length in frames."),
    forever: bool = typer.Option(False, help="Run until interrupted; Ctrl-C finalises."),
    motion_frames: int | None = typer.Option(None, help="Frames carried to the next clip."),
    variant: str | None = typer.Option(
        None,
        help="Released SVI variant as defaults: shot | film | tom | 2.0 | 2.0-pro "
        "(docs/variants.md; explicit flags override).",
    ),
    padding: str | None = typer.Option(
        None, help="anchor | zeros | last | anchor-first (2.0 Pro)."
    ),
    handoff: str | None = typer.Option(None, help="pixel (SVI 1.0, default) | latent (2.0 Pro)."),
    overlap: int | None = typer.Option(
        None, help="Frames dropped from the start of every later clip (--variant 2.0-pro: 4)."
    ),
    steps: int | None = typer.Option(None, help="Sampler steps per clip."),
    cfg: float | None = typer.Option(None, help="Text guidance scale."),
    few_step: str | None = typer.Option(
        None,
        help="Steps, CFG and shift of a distillation LoRA given with --lora: lightx2v-4step "
        "(4 steps, CFG 1, shift 5; docs/variants.md). --steps / --cfg override.",
    ),
    clip_preprocess: str | None = typer.Option(
        None,
        help="Wan 2.1 CLIP input: official (default: whole frame to 224x224, bicubic, as "
        "the authors) | diffusers (the pipeline's processor: centre crop).",
    ),
    height: int | None = typer.Option(None, help="Clip height (Wan models; default preset)."),
    width: int | None = typer.Option(None, help="Clip width (Wan models; default preset)."),
    num_frames: int | None = typer.Option(None, help="Frames per clip, 4k+1 (Wan models)."),
    negative_prompt: str | None = typer.Option(None, help="Negative prompt for CFG."),
    seed: int | None = typer.Option(None, help="Base seed (default 0); clip k: seed + 42 k."),
    seed_stride: int | None = typer.Option(None, help="Clip k's seed: seed + k * this (42)."),
    reroll: float | None = typer.Option(
        None,
        help="Regenerate a clip (next seed) whose seam jump or colour shift, 0-1, "
        "exceeds this (docs: svi/reroll.py); every try goes into the manifest.",
    ),
    max_rerolls: int | None = typer.Option(None, help="Most re-rolls per clip (default 3)."),
    fps: int | None = typer.Option(None, help="Output frame rate (default: the model's)."),
    world_kind: str | None = typer.Option(
        None,
        help="World scene kind of the default start (consistent; with --audio "
        "talking, with --pose dancing).",
    ),
    world_seed: int | None = typer.Option(None, help="World scene seed of the default start."),
    audio: Path | None = typer.Option(
        None,
        dir_okay=False,
        help="SVI-Talk: driving wav (any rate / channels); the video "
        "follows its length. Embedded model: the shipped talk adapter unless --lora.",
    ),
    audio_cfg: float | None = typer.Option(
        None, help="Audio guidance (an extra pass when != 1; the released Talk uses 5)."
    ),
    audio_encoder: Path | None = typer.Option(
        None, file_okay=False, help="wav2vec2 folder for --audio on Wan models."
    ),
    pose: Path | None = typer.Option(
        None,
        dir_okay=False,
        help="SVI-Dance: driving pose video, one pose frame per frame; "
        "fitted to the clip size. Embedded model: the shipped dance adapter unless --lora.",
    ),
    offload: str | None = typer.Option(
        None,
        help="Memory mode: none (default) | model (one component on the GPU at a time) | "
        "group (one DiT block at a time) | sequential (one layer at a time); same frames "
        "(docs/memory.md, svi info --memory).",
    ),
    weights_dtype: str | None = typer.Option(
        None,
        help="DiT weights: bf16 | fp8 (stored in fp8, computed in bf16; frames differ "
        "slightly). Default: bf16 on a GPU, float32 on CPU.",
    ),
    vae_tiling: bool | None = typer.Option(
        None,
        "--vae-tiling/--no-vae-tiling",
        help="Decode in 256-px tiles (less memory; frames differ slightly at larger sizes).",
    ),
    parallel: str | None = typer.Option(
        None,
        help="Under torchrun / accelerate launch: split every clip's DiT over the processes "
        "with diffusers' context parallelism: ulysses | ring (GPU) | usp (ulysses in a node "
        "x ring across nodes); rank 0 writes the files (docs/scaling.md).",
    ),
    clips_dir: Path | None = typer.Option(None, help="Also write every clip as its own mp4."),
    lossless: bool = typer.Option(False, help="Lossless video (crf 0, yuv444p): exact frames."),
    resume: bool = typer.Option(False, help="Continue an interrupted run of the same command."),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Generate a long video clip by clip (no arguments: a 32 s world video)."""
    args = dict(locals())
    from svi.plan import GenerationConfig
    from svi.request import GenerateRequest, run_generate

    setting_names = ("variant", "motion_frames", "padding", "handoff", "overlap", "steps", "cfg",
                     "seed", "seed_stride", "negative_prompt", "first_prompt_only",
                     "reroll", "max_rerolls", "few_step", "clip_preprocess")  # fmt: skip
    settings = {k: args.pop(k) for k in setting_names}
    config = GenerationConfig(**{k: v for k, v in settings.items() if v is not None})
    manifest = run_generate(GenerateRequest(**args, config=config))
    if parallel is not None and manifest["status"].startswith("rank "):
        return  # one line, from rank 0
    typer.echo(f"{out}: {manifest['frames_written']} frames, {len(manifest['clips'])} clips, "
               f"{manifest['status']}")  # fmt: skip


@app.command()
def sample(
    out: Path = typer.Option(Path("clip.mp4"), help="Output mp4 of one clip."),
    image: Path | None = typer.Option(
        None, dir_okay=False, help="Start image (default: a world scene)."
    ),
    prompt: str | None = typer.Option(None, help="Prompt (default: the world scene's)."),
    model: str | None = typer.Option(None, help="Preset name, world model dir or Wan folder."),
    seed: int | None = typer.Option(None, help="Noise seed (default 0)."),
    steps: int | None = typer.Option(None, help="Sampler steps."),
    cfg: float | None = typer.Option(None, help="Text guidance scale."),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
) -> None:
    """Generate ONE clip (the single-clip sampler of the base model, no chaining)."""
    from svi.plan import GenerationConfig
    from svi.request import GenerateRequest, run_generate

    settings = {"seed": seed, "steps": steps, "cfg": cfg}
    config = GenerationConfig(**{k: v for k, v in settings.items() if v is not None})
    request = GenerateRequest(out=out, image=image, prompt=prompt, model=model, config=config,
                              clips=1, overwrite=overwrite, no_lora=True,
                              progress=False)  # fmt: skip
    manifest = run_generate(request)
    typer.echo(f"{out}: {manifest['frames_written']} frames")


@app.command()
def ui(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (others: only if asked)."),
    port: int = typer.Option(7860, help="Port of the page."),
    model: str | None = typer.Option(None, help="Default model: preset, world model or Wan dir."),
    sessions: Path = typer.Option(Path("svi-sessions"), help="Folder of the sessions."),
    max_jobs: int = typer.Option(1, help="Generations running at once (others queue)."),
) -> None:
    """Local web app: live preview, prompt streams, branch, re-roll, drift monitor."""
    from svi.ui.app import serve

    serve(host=host, port=port, model=model, sessions=sessions, max_jobs=max_jobs)


bench_app = typer.Typer(help="Measurements: quality gates, learning curves, drift.")
app.add_typer(bench_app, name="bench")


@bench_app.command("first-clip")
def bench_first_clip(
    model: str | None = typer.Option(None, help="Preset name or model dir (default embedded)."),
    scenes: int = typer.Option(64, help="Held-out validation scenes."),
    split: str = typer.Option("val", help="val | test."),
    kind: str = typer.Option("consistent", help="World kind."),
    steps: int | None = typer.Option(None, help="Sampler steps."),
    shift: float | None = typer.Option(None, help="Sampler sigma shift (default: preset)."),
    cfg: float | None = typer.Option(None, help="Text guidance scale (default: preset)."),
    out: Path | None = typer.Option(None, help="Write the report as JSON here."),
) -> None:
    """The base-model gate: first clip on held-out scenes vs ground truth and copying."""
    import json

    from svi.bench.first_clip import evaluate_first_clip
    from svi.models.bundle import load_bundle
    from svi.world import split_seeds

    _bench_split(split)
    _bench_counts(scenes=scenes)
    if out is not None and (out.is_dir() or not out.parent.is_dir()):
        raise SviError(f"--out {out}: not a file in an existing folder")
    report = evaluate_first_clip(load_bundle(model), split_seeds(split, scenes), kind=kind,
                                 steps=steps, shift=shift, cfg=cfg).to_dict()  # fmt: skip
    text = json.dumps(report, indent=1)
    if out:
        out.write_text(text, encoding="utf-8")
    typer.echo(text)


@bench_app.command("curve")
def bench_curve(
    run: Path = typer.Option(..., help="Training run folder (with checkpoints/ and log.jsonl)."),
    scenes: int = typer.Option(32, help="Validation scenes per checkpoint."),
    steps: int | None = typer.Option(None, help="Sampler steps."),
    raw: bool = typer.Option(False, help="Evaluate raw weights instead of the EMA."),
    out: Path = typer.Option(Path("svi-bench/learning_curve.png"), help="Plot path (+ .json)."),
) -> None:
    """Learning curve of a run: gate figures of every checkpoint vs training minutes."""
    import json

    from svi.bench.curves import learning_curve, plot_curve

    _bench_counts(scenes=scenes)
    if steps is not None and steps < 1:
        raise SviError(f"--steps must be >= 1, got {steps}")
    if not (run / "log.jsonl").is_file():
        raise SviError(f"--run {run} is not a training run folder (no log.jsonl)")
    rows = learning_curve(run, scenes=scenes, steps=steps, use_ema=not raw)
    out.with_suffix(".json").parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    plot_curve(rows, out, f"{run.name}: first clip on {scenes} validation scenes")
    typer.echo(f"{len(rows)} checkpoints -> {out}")


@bench_app.command("drift")
def bench_drift(
    model: str | None = typer.Option(None, help="Base model (default: embedded world-tiny)."),
    contenders: Path | None = typer.Option(
        None, help="TOML file of contenders (see benchmarks/contenders.toml)."
    ),
    only: str | None = typer.Option(None, help="Comma-separated contender names to run."),
    lora: list[str] = typer.Option([], help="LABEL=PATH[:SCALE] LoRA contender; repeatable."),
    base: bool = typer.Option(True, help="Include base chaining (no LoRA) when no file is given."),
    clips: int = typer.Option(50, help="Clips per rollout."),
    scenes: int = typer.Option(8, help="Held-out scenes (32+ on test for published figures)."),
    split: str = typer.Option("val", help="val (tuning) | test (published figures)."),
    kind: str = typer.Option("consistent", help="consistent | creative."),
    padding: str | None = typer.Option(
        None, help="Padding for every contender (default: each LoRA's own, else the model's)."
    ),
    jobs: int = typer.Option(1, help="Worker processes (threads are split between them)."),
    batch: int = typer.Option(
        1, help="Scenes of a contender rolled out in one DiT batch (1: alone; own cache)."
    ),
    features: bool = typer.Option(True, help="Score world-feature consistency."),
    focus: str | None = typer.Option(None, help="Group compared against the others."),
    out: Path | None = typer.Option(
        None, help="Output stem (.json .md .png); default svi-bench/drift-SPLIT-KIND."
    ),
    cache: Path | None = typer.Option(None, help="Per-scene cache dir (default: beside out)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Drift of long rollouts per clip vs ground truth, with CIs over scenes."""
    from svi.bench.drift import run_drift
    from svi.bench.report import markdown, write_report
    from svi.bench.runner import (
        Contender,
        benchmark_config,
        load_contenders,
        parse_lora_option,
    )
    from svi.world import split_seeds

    _bench_split(split)
    if kind not in ("consistent", "creative"):
        raise SviError(f"--kind must be consistent or creative, got {kind!r}")
    _bench_counts(scenes=scenes, clips=clips, jobs=jobs, batch=batch)
    entries = load_contenders(contenders) if contenders else []
    if not contenders and base:
        entries.append(Contender("base"))
    entries += [parse_lora_option(item) for item in lora]
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        missing = sorted(set(wanted) - {c.name for c in entries})
        if missing:
            raise SviError(f"--only names unknown contenders: {', '.join(missing)}")
        entries = [c for c in entries if c.name in wanted]
    if not entries:
        raise SviError("no contenders: give --contenders, --lora or --base")
    if focus is not None and focus not in {c.group for c in entries}:
        raise SviError(f"--focus {focus!r} is no contender group; groups: "
                       + ", ".join(sorted({c.group for c in entries})))  # fmt: skip
    out = out or Path("svi-bench") / f"drift-{split}-{kind}"
    config = benchmark_config(padding)
    run = run_drift(model, entries, split_seeds(split, scenes), clips, kind=kind, split=split,
                    config=config, cache_dir=cache or out.parent / "cache", jobs=jobs,
                    batch=batch, use_features=features, progress=progress)  # fmt: skip
    report = write_report(run, config, out, focus)
    typer.echo(markdown(report, focus))
    typer.echo(f"written: {out.with_suffix('.json')}, .md, .png")


@bench_app.command("errors")
def bench_errors(
    checkpoint: Path = typer.Option(..., help="An ERFT run's checkpoint folder (with banks)."),
    model: str | None = typer.Option(None, help="Base model (default: embedded world-tiny)."),
    lora: Path | None = typer.Option(None, help="LoRA of the rollouts (default: none)."),
    scenes: int = typer.Option(8, help="Validation scenes."),
    clips: int = typer.Option(20, help="Clips per rollout."),
    split: str = typer.Option("val", help="val | test."),
    kind: str = typer.Option("consistent", help="consistent | creative."),
    padding: str | None = typer.Option(None, help="Conditioning padding (default: the LoRA's)."),
    out: Path = typer.Option(Path("svi-bench/errors"), help="Output stem (.json .md .png)."),
) -> None:
    """Recycled errors (the banks) vs the errors met at generation time (rollouts)."""
    import json

    from svi.bench.errors import bank_table, markdown, plot, rollout_table
    from svi.pipeline import GenerationConfig, SVIPipeline
    from svi.plan import PADDINGS
    from svi.world import split_seeds

    _bench_split(split)
    if kind not in ("consistent", "creative"):
        raise SviError(f"--kind must be consistent or creative, got {kind!r}")
    if padding is not None and padding not in PADDINGS:
        raise SviError(f"unknown padding {padding!r}; use one of {', '.join(PADDINGS)}")
    _bench_counts(scenes=scenes, clips=clips)
    bank = bank_table(checkpoint)
    pipe = SVIPipeline.from_pretrained(model)
    if lora is not None:
        pipe.load_lora(lora)
    config = GenerationConfig(padding=padding or pipe.lora_padding())
    rollout = rollout_table(pipe, split_seeds(split, scenes), clips, config, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(checkpoint), "lora": str(lora), "split": split,
              "bank": bank, "rollout": rollout}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    table = markdown(bank, rollout)
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    plot(bank, rollout, out.with_suffix(".png"))
    typer.echo(table)


@bench_app.command("video")
def bench_video(
    file: Path = typer.Argument(..., help="Any video file (mp4, webm, gif, ...)."),
    stride: int | None = typer.Option(
        None, help="New frames per clip (F - M for svi output); default: detect seams."
    ),
    grid: int = typer.Option(16, help="Patch-grid period in pixels (Wan: 16; world: 4)."),
    features: bool = typer.Option(True, help="World-feature consistency (world content)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    truth_scene: int | None = typer.Option(
        None, help="Score against this world scene's truth (its seed), with the headline."
    ),
    kind: str = typer.Option("consistent", help="World kind of --truth-scene."),
    motion: int | None = typer.Option(
        None, help="--truth-scene: given frames at the start (default: the world model's M)."
    ),
    truth_path: str = typer.Option(
        "auto", help="--truth-scene: references through an svi mp4 (mp4), raw, or auto."
    ),
) -> None:
    """Metrics of any video: without ground truth (drift, grid, motion, seams, flicker),
    or with --truth-scene against a world scene's truth (per-clip metrics, headline)."""
    import json

    from svi.bench.video import analyse_against_truth, analyse_video, text_table, truth_table

    if truth_scene is not None:
        report = analyse_against_truth(file, truth_scene, kind=kind, stride=stride,
                                       motion=motion, truth_path=truth_path)  # fmt: skip
        typer.echo(json.dumps(report, indent=1) if json_out else truth_table(report))
        return
    report = analyse_video(file, stride=stride, grid=grid, features=features)
    typer.echo(json.dumps(report, indent=1) if json_out else text_table(report))


@bench_app.command("reproduce")
def bench_reproduce(
    result: Path = typer.Argument(
        ..., help="A drift or driven result JSON (benchmarks/results/*.json)."
    ),
    scenes: int = typer.Option(2, help="The result's first N scenes to re-run."),
    clips: int | None = typer.Option(
        None,
        help="Clips per rollout: one of a drift result's horizons (default 10); a "
        "driven result is re-run at its own length.",
    ),
    only: str | None = typer.Option(None, help="Comma-separated contenders (default: all)."),
    model: str | None = typer.Option(None, help="Base model (default: embedded world-tiny)."),
    jobs: int = typer.Option(1, help="Worker processes (threads are split between them)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Re-run part of a benchmark result from scratch and compare it per scene (exit 1:
    differs)."""
    from svi.bench.reproduce import markdown, reproduce

    _bench_counts(jobs=jobs)  # --scenes and --clips: checked against the result's
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    checks = reproduce(result, scenes=scenes, clips=clips, only=names, model=model, jobs=jobs,
                       progress=progress)  # fmt: skip
    typer.echo(markdown(checks))
    values = sum(c.scenes for c in checks)
    same = sum(c.identical for c in checks)
    bad = [c for c in checks if not c.ok]
    typer.echo(f"{same}/{values} per-scene values identical; "
               + (f"{len(bad)} of {len(checks)} checks differ beyond float noise"
                  if bad else "every value as recorded (up to float noise)"))  # fmt: skip
    if bad:
        raise typer.Exit(1)


@bench_app.command("driven")
def bench_driven(
    condition: str = typer.Option(..., help="audio (SVI-Talk, talking scenes) | pose (Dance)."),
    lora: list[str] = typer.Option(
        [], help="NAME=PATH[:SCALE] conditional adapter (embedded: talk, dance); repeatable."
    ),
    contenders: Path | None = typer.Option(None, help="TOML file of contenders (as drift)."),
    model: str | None = typer.Option(None, help="Base model (default: embedded world-tiny)."),
    split: str = typer.Option("test", help="test (published figures) | val (tuning)."),
    scenes: int = typer.Option(32, help="Held-out scenes (32+ on test for published figures)."),
    clips: int = typer.Option(10, help="Clips per rollout."),
    seed_offset: int = typer.Option(0, help="First world seed searched for the split's scenes."),
    jobs: int = typer.Option(1, help="Worker processes (threads are split between them)."),
    cache: Path = typer.Option(Path("runs/driven-cache"), help="Per-scene video cache dir."),
    out: Path | None = typer.Option(
        None, help="Output stem (.json .md .png); default svi-bench/driven-CONDITION-SPLIT."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Driven generation (audio / pose) per clip: lip sync or pose error, PSNR, SSIM."""
    from svi.bench.driven import command_line, markdown, run_driven, write_report
    from svi.bench.runner import benchmark_config, load_contenders, parse_lora_option
    from svi.world import split_seeds

    if condition not in ("audio", "pose"):
        raise SviError(f"--condition must be audio or pose, got {condition!r}")
    _bench_split(split)
    _bench_counts(scenes=scenes, clips=clips, jobs=jobs)
    if seed_offset < 0:
        raise SviError(f"--seed-offset must be >= 0, got {seed_offset}")
    entries = load_contenders(contenders) if contenders else []
    entries += [parse_lora_option(item) for item in lora]
    out = out or Path("svi-bench") / f"driven-{condition}-{split}"
    command = command_line(condition=condition, model=model, lora=lora, contenders=contenders,
                           split=split, scenes=scenes, clips=clips, seed_offset=seed_offset or None,
                           jobs=jobs, cache=cache, out=out, no_progress=not progress)  # fmt: skip
    config = benchmark_config()
    run = run_driven(model, entries, split_seeds(split, scenes, seed_offset), clips,
                     condition=condition, split=split, config=config, cache_dir=cache, jobs=jobs,
                     progress=progress)  # fmt: skip
    report = write_report(run, config, out, command)
    typer.echo(markdown(report))
    typer.echo(f"written: {out.with_suffix('.json')}, .md, .png")


# Upper bounds of benchmark counts: far past any published table; beyond, a typo.
BENCH_LIMITS = {"scenes": 10_000, "clips": 10_000, "jobs": 256, "batch": 10_000}


def _bench_counts(**counts: int) -> None:
    """Each ``--NAME`` count within 1..its limit (:data:`BENCH_LIMITS`)."""
    for name, value in counts.items():
        if not 1 <= value <= BENCH_LIMITS[name]:
            raise SviError(f"--{name} must be in 1..{BENCH_LIMITS[name]}, got {value}")


def _bench_split(split: str) -> None:
    """Benchmarks run on held-out scenes: val (tuning) or test (published figures)."""
    if split not in ("val", "test"):
        raise SviError(f"--split must be 'val' (tuning) or 'test' (published), got {split!r}")


def _preset_names() -> list[str]:
    try:
        from svi.models.presets import PRESETS
    except ImportError:
        return []
    return sorted(PRESETS)


def _register_subcommands() -> None:
    """Attach the command groups of the sub-packages that exist."""
    try:
        from svi.world.cli import app as world_app
    except ImportError:
        return
    app.add_typer(world_app, name="world")


_register_subcommands()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app; every failure ends as ONE line on stderr.

    ``error: ...`` and exit 2 for bad input or the environment (:class:`SviError`, bad
    options, OS errors such as a full disk, damaged JSON/TOML/safetensors files), exit 1
    for a bug (with a request to report it), 130/143 for SIGINT/SIGTERM (the run
    finalised what it had). ``--verbose`` re-raises for the traceback.
    """
    from svi import threads
    from svi.interrupts import Interrupted, ignore_signals, raising
    from svi.limits import address_space_error, thread_settings_error

    global _THREAD_POLICY
    _THREAD_POLICY = threads.configure()  # before anything imports torch
    argv = list(sys.argv[1:] if argv is None else argv)
    # a limit it would hang under in an import; OpenMP settings libgomp would reject
    if (limit := address_space_error() or thread_settings_error()) is not None:
        _error(limit)
        return 2
    verbose = "--verbose" in argv or "-v" in argv
    stopped = False
    try:
        with raising():
            try:
                code = app(args=argv, prog_name="svi", standalone_mode=False)
            except Interrupted as exc:
                ignore_signals()
                _error(str(exc))
                stopped = True
                return exc.exit_code
            except click_exc.NoArgsIsHelpError as exc:
                typer.echo(exc.ctx.get_help() if exc.ctx else "")
                return 0
            except typer.Abort:
                _error("aborted")
                return 130
            except Exception as exc:
                if verbose:
                    raise
                code, message = _failure(exc)
                _error(message)
                return code
    except Interrupted as exc:  # a second signal while the first was being reported
        stopped = True
        return exc.exit_code
    finally:
        if stopped:  # the process ends: a late Ctrl-C must not become a traceback at exit
            ignore_signals()
    return code if isinstance(code, int) else 0  # typer returns the code of a typer.Exit


def _error(message: str) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)


def _failure(exc: Exception) -> tuple[int, str]:
    """Exit code and message of an exception: 2 for input or environment, 1 for a bug."""
    import json

    from safetensors import SafetensorError

    from svi.config import tomllib  # the stdlib module, or tomli on Python 3.10

    if isinstance(exc, SviError):
        return 2, str(exc)
    if isinstance(exc, click_exc.ClickException):  # bad arguments or options
        return 2, exc.format_message()
    if isinstance(exc, OSError):  # no such file, permission denied, disk full, ...
        names = [os.fsdecode(n) for n in (exc.filename, exc.filename2) if n is not None]
        return 2, ": ".join([exc.strerror or str(exc), *names])
    if isinstance(exc, json.JSONDecodeError):
        return 2, f"damaged JSON ({exc})"
    if isinstance(exc, tomllib.TOMLDecodeError):
        return 2, f"damaged TOML ({exc})"
    if isinstance(exc, UnicodeDecodeError):
        return 2, f"a text file is not UTF-8 ({exc})"
    if isinstance(exc, SafetensorError):
        return 2, f"damaged safetensors file ({exc})"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return 2, f"out of memory ({exc})" if str(exc) else "out of memory"
    return 1, (f"internal error ({type(exc).__name__}: {exc}); "
               "please report it with --verbose output")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
