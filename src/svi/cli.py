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

from svi.errors import SviError

log = logging.getLogger("svi")

app = typer.Typer(
    name="svi",
    help="Stable Video Infinity: any-length video from a Wan video DiT, made stable by ERFT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"verbose": False}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (robust to redirection)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(verbose: bool) -> None:
    """Route library logging to stderr: warnings by default, everything with ``--verbose``."""
    level = logging.DEBUG if verbose else logging.WARNING
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("svi")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging and tracebacks."),
) -> None:
    _state["verbose"] = verbose
    setup_logging(verbose)


@app.command()
def info() -> None:
    """Versions, presets, threads and devices."""
    import torch

    from svi import __version__

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
    recipe: Path | None = typer.Option(None, help="TOML recipe (see recipes/)."),
    preset: str | None = typer.Option(None, help="Model preset (default: the recipe's)."),
    steps: int | None = typer.Option(None, help="Total optimizer steps."),
    batch_size: int | None = typer.Option(None, help="Clips per step per process."),
    seed: int | None = typer.Option(None, help="Seed of weights, data and noise."),
    resume: bool = typer.Option(False, help="Continue exactly from the newest checkpoint."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a world model (flow matching, image-to-video) or an SVI LoRA."""
    from svi.config import TrainConfig, load_recipe, with_overrides
    from svi.train import train as run_training

    config = load_recipe(recipe) if recipe else TrainConfig()
    config = with_overrides(config, preset=preset, steps=steps, batch_size=batch_size, seed=seed)
    final = run_training(config, out, resume=resume, progress=progress)
    typer.echo(f"model written to {final}")


@app.command()
def generate(
    out: Path = typer.Option(Path("svi.mp4"), help="Output mp4 (written as it grows)."),
    model: str | None = typer.Option(None, help="Preset name, world model dir or Wan folder."),
    preset: str | None = typer.Option(None, help="Preset of a Wan folder (default: detected)."),
    lora: list[Path] = typer.Option([], help="LoRA file (any key form); repeatable."),
    lora_scale: list[float] = typer.Option([], help="Strength per --lora (default 1.0)."),
    no_lora: bool = typer.Option(False, help="Do not load the embedded model's default LoRA."),
    image: Path | None = typer.Option(None, help="Start image (any picture; fitted to size)."),
    prompt: str | None = typer.Option(None, help="One prompt for every clip."),
    prompts: Path | None = typer.Option(None, help="Prompt stream file: one prompt per clip."),
    first_prompt_only: bool = typer.Option(False, help="Use only the stream's first prompt."),
    clips: int | None = typer.Option(None, help="Number of clips (0 = until Ctrl-C)."),
    seconds: float | None = typer.Option(None, help="Length in seconds."),
    frames: int | None = typer.Option(None, help="Length in frames."),
    forever: bool = typer.Option(False, help="Run until interrupted; Ctrl-C finalises."),
    motion_frames: int | None = typer.Option(None, help="Frames carried to the next clip."),
    padding: str | None = typer.Option(None, help="anchor | zeros | last."),
    handoff: str = typer.Option("pixel", help="pixel (SVI 1.0) | latent (SVI 2.0 Pro)."),
    steps: int | None = typer.Option(None, help="Sampler steps per clip."),
    cfg: float | None = typer.Option(None, help="Text guidance scale."),
    height: int | None = typer.Option(None, help="Clip height (Wan models; default preset)."),
    width: int | None = typer.Option(None, help="Clip width (Wan models; default preset)."),
    num_frames: int | None = typer.Option(None, help="Frames per clip, 4k+1 (Wan models)."),
    negative_prompt: str | None = typer.Option(None, help="Negative prompt for CFG."),
    seed: int = typer.Option(0, help="Base seed; clip k uses seed + k * 7919."),
    fps: int | None = typer.Option(None, help="Output frame rate (default: the model's)."),
    world_kind: str = typer.Option("consistent", help="World scene kind of the default start."),
    world_seed: int | None = typer.Option(None, help="World scene seed of the default start."),
    clips_dir: Path | None = typer.Option(None, help="Also write every clip as its own mp4."),
    lossless: bool = typer.Option(False, help="Lossless video (crf 0, yuv444p): exact frames."),
    resume: bool = typer.Option(False, help="Continue an interrupted run of the same command."),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Generate a long video clip by clip (no arguments: a 32 s world video)."""
    args = dict(locals())
    from svi.session import GenerateRequest, run_generate

    manifest = run_generate(GenerateRequest(**args))
    typer.echo(f"{out}: {manifest['frames_written']} frames, {len(manifest['clips'])} clips, "
               f"{manifest['status']}")  # fmt: skip


@app.command()
def sample(
    out: Path = typer.Option(Path("clip.mp4"), help="Output mp4 of one clip."),
    image: Path | None = typer.Option(None, help="Start image (default: a world scene)."),
    prompt: str | None = typer.Option(None, help="Prompt (default: the world scene's)."),
    model: str | None = typer.Option(None, help="Preset name, world model dir or Wan folder."),
    seed: int = typer.Option(0, help="Noise seed."),
    steps: int | None = typer.Option(None, help="Sampler steps."),
    cfg: float | None = typer.Option(None, help="Text guidance scale."),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
) -> None:
    """Generate ONE clip (the single-clip sampler of the base model, no chaining)."""
    from svi.session import GenerateRequest, run_generate

    request = GenerateRequest(out=out, image=image, prompt=prompt, model=model, seed=seed,
                              steps=steps, cfg=cfg, clips=1, overwrite=overwrite, no_lora=True,
                              progress=False)  # fmt: skip
    manifest = run_generate(request)
    typer.echo(f"{out}: {manifest['frames_written']} frames")


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
    out: Path = typer.Option(Path("docs/figures/learning_curve.png"), help="Plot path."),
) -> None:
    """Learning curve of a run: gate figures of every checkpoint vs training minutes."""
    import json

    from svi.bench.curves import learning_curve, plot_curve

    rows = learning_curve(run, scenes=scenes, steps=steps, use_ema=not raw)
    out.with_suffix(".json").parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    plot_curve(rows, out, f"{run.name}: first clip on {scenes} validation scenes")
    typer.echo(f"{len(rows)} checkpoints -> {out}")


@bench_app.command("drift")
def bench_drift(
    model: str | None = typer.Option(None, help="Base model (default: embedded world-tiny)."),
    lora: list[str] = typer.Option([], help="LABEL=PATH[:SCALE] LoRA variant; repeatable."),
    base: bool = typer.Option(True, help="Include the base model without LoRA."),
    clips: int = typer.Option(50, help="Clips per rollout."),
    scenes: int = typer.Option(8, help="Held-out scenes."),
    split: str = typer.Option("val", help="val | test."),
    kind: str = typer.Option("consistent", help="World kind."),
    padding: str | None = typer.Option(None, help="anchor | zeros | last (default: preset)."),
    out: Path = typer.Option(Path("docs/figures/drift"), help="Output stem (.json, .png, .md)."),
) -> None:
    """Drift of long rollouts per clip: base model vs LoRA variants, on held-out scenes."""
    import json

    from svi.bench.drift import compare, markdown_table, plot_drift
    from svi.pipeline import GenerationConfig
    from svi.world import split_seeds

    variants: dict[str, tuple[str | None, float]] = {"base": (None, 1.0)} if base else {}
    for item in lora:
        label, sep, rest = item.partition("=")
        if not sep:
            raise SviError(f"--lora {item!r} must be LABEL=PATH[:SCALE]")
        path, _, scale = rest.partition(":")
        variants[label] = (path, float(scale) if scale else 1.0)
    config = GenerationConfig(padding=padding)
    results = compare(model, variants, split_seeds(split, scenes), clips, kind=kind, config=config)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = [{"name": r.name, "summary": r.summary(), "curves": r.curves,
                "last_per_scene": r.per_scene_last} for r in results]  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    plot_drift(results, out.with_suffix(".png"))
    table = markdown_table(results)
    out.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    typer.echo(table)


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
    """Console entry point: run the app, map errors to one line and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv or "-v" in argv
    try:
        app(args=argv, prog_name="svi", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 130
    except click_exc.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "")
        return 0
    except click_exc.ClickException as exc:  # bad arguments or options
        if verbose:
            raise
        typer.echo(f"error: {exc.format_message()}", err=True)
        return 2
    except SviError as exc:
        if verbose:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
