"""Pipeline performance (issue 5): overhead, ours vs a naive diffusers loop, memory, real time.

Usage: ``.venv/bin/python benchmarks/pipeline_bench.py [--quick] [--out FILE]``

Four measurements, each a ratio taken within one run (so a busy machine slows both
sides alike), written as JSON (default ``benchmarks/results/pipeline_bench.json``) and
logged as a markdown table:

1. overhead - per-clip wall time of ``SVIPipeline.generate`` / the bare
   ``sample_latents`` call of the same clip (same velocity fn, noise, y, text, steps),
   world model, default settings, clips interleaved (median of per-clip ratios);
2. wan_loop - our ``SVIPipeline`` vs the loop a user would write around diffusers'
   ``WanImageToVideoPipeline`` (re-conditioned on the last frame of each clip), the same
   tiny Wan 2.2 A14B folder, steps, frames, size and CFG; plus a per-component profile
   of both;
3. memory - peak RSS of ``generate_to_file`` for many vs few clips, each in a fresh
   subprocess;
4. realtime - frames written per wall second by ``generate_to_file`` (world model,
   default settings) / the preset's playback fps.

The world model is the embedded ``world-tiny`` checkpoint when present, else a random
model of the same config (speed does not depend on training). The Wan folder is built
by ``tests/wan_fixtures.py`` (tiny real-class components).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svi.conditioning import build_y
from svi.models.bundle import (
    MODEL_FILE,
    build_world_transformer,
    embedded_dir,
    save_world_model,
)
from svi.models.presets import get_preset
from svi.pipeline import GenerationConfig, SVIPipeline
from svi.pixels import to_signed, to_uint8
from svi.sampling import clip_noise, sample_latents
from svi.session import generate_to_file
from svi.starts import world_start

log = logging.getLogger("pipeline_bench")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "pipeline_bench.json"
WAN_VARIANT = "wan2.2-i2v-a14b"  # two experts, no CLIP: runs in both pipelines
WAN_PROMPT = "a red disc moves left over a blue checkerboard"
TARGETS = {"overhead": 1.02, "wan_loop": 0.8, "memory": 1.1, "realtime": 1.0}

# full run / --quick
SIZES = {
    "full": {
        "overhead_clips": 11,
        "wan": {"size": 64, "frames": 17, "steps": 20, "cfg": 5.0, "clips": 4, "repeats": 3},
        "memory_clips": (10, 200),
        "memory_steps": 2,
        "realtime_clips": 20,
        "realtime_repeats": 3,
    },
    "quick": {
        "overhead_clips": 5,
        "wan": {"size": 32, "frames": 9, "steps": 4, "cfg": 5.0, "clips": 2, "repeats": 1},
        "memory_clips": (3, 12),
        "memory_steps": 2,
        "realtime_clips": 5,
        "realtime_repeats": 1,
    },
}


# ----------------------------------------------------------------------------- helpers


def world_model_dir(tmp: Path) -> tuple[Path, str]:
    """The embedded world-tiny checkpoint, or a random world-tiny model saved under ``tmp``."""
    embedded = embedded_dir("world-tiny")
    if (embedded / MODEL_FILE).exists():
        return embedded, "embedded world-tiny checkpoint"
    preset = get_preset("world-tiny")
    path = save_world_model(
        tmp / "world-tiny-random",
        build_world_transformer(preset),
        preset,
        {"note": "random world-tiny model for pipeline_bench"},
    )
    return path, "random world-tiny model (no embedded checkpoint found)"


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float | None:
    """Current resident set size from /proc (None where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


@contextmanager
def call_timers(targets: dict[str, list[tuple[Any, str]]]) -> Iterator[dict[str, list]]:
    """Time every call of ``getattr(obj, attr)`` per group name; restores them on exit.

    Yields ``{name: [seconds, calls]}``. Attributes are wrapped on the instance (or
    module), so only the objects listed are timed.
    """
    acc: dict[str, list] = {name: [0.0, 0] for name in targets}
    patched: list[tuple[Any, str, Any, bool]] = []

    def wrap(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[name][0] += time.perf_counter() - start
                acc[name][1] += 1

        return wrapper

    try:
        for name, pairs in targets.items():
            for obj, attr in pairs:
                own = attr in vars(obj)
                original = getattr(obj, attr)
                setattr(obj, attr, wrap(name, original))
                patched.append((obj, attr, original, own))
        yield acc
    finally:
        for obj, attr, original, own in reversed(patched):
            if own:
                setattr(obj, attr, original)
            else:
                delattr(obj, attr)


# ----------------------------------------------------------------------------- 1. overhead


def measure_overhead(pipe: SVIPipeline, start: np.ndarray, prompt: str, clips: int) -> dict:
    """Per clip: ``generate`` wall time / bare ``sample_latents`` time on the same inputs.

    Clip k of the generator and the sampler call for clip k run back to back, in
    alternating order; one warm-up clip is not counted. The bare latents are decoded
    afterwards and must give the clip's frames exactly (the same work was timed).
    """
    b, p = pipe.bundle, pipe.bundle.preset
    config = pipe.plan(GenerationConfig(clips=clips + 1), [prompt])
    m = config.motion_frames
    anchor = to_signed(start[0])[None]
    carried = start[-p.num_frames + 1 :]
    gen = pipe.generate(start, [prompt], config)
    ours, bare, identical = [], [], True
    for k in range(clips + 1):
        motion = to_signed(carried).movedim(0, 1)[None]
        y = build_y(b.codec, motion, p.num_frames, padding=p.padding, mask=p.mask, anchor=anchor)
        text = b.text_encoder.encode([prompt])
        neg = b.text_encoder.encode([p.negative_prompt])
        noise = clip_noise((1, *b.latent_shape), config.clip_seed(k))

        def run_bare(y=y, text=text, neg=neg, noise=noise):
            return sample_latents(
                b.experts, noise, y, text, neg, steps=p.steps, shift=p.shift, cfg=p.cfg
            )

        if k % 2 == 0:
            t_ours, clip = timed(lambda: next(gen))
            t_bare, latents = timed(run_bare)
        else:
            t_bare, latents = timed(run_bare)
            t_ours, clip = timed(lambda: next(gen))
        identical &= bool(np.array_equal(to_uint8(b.codec.decode(latents))[0], clip.frames))
        carried = clip.frames[-m:]
        if k > 0:  # clip 0 warms up both
            ours.append(t_ours)
            bare.append(t_bare)
    ratios = [o / s for o, s in zip(ours, bare, strict=True)]
    return {
        "clips": clips,
        "steps": p.steps,
        "generate_s_median": statistics.median(ours),
        "sampler_s_median": statistics.median(bare),
        "ratio_median": statistics.median(ratios),
        "ratio_of_medians": statistics.median(ours) / statistics.median(bare),
        "ratios": ratios,
        "identical_output": identical,
        "target": TARGETS["overhead"],
    }


# ----------------------------------------------------------------------------- 2. Wan loop


def build_wan(tmp: Path, size: int, frames: int, steps: int):
    """The tiny Wan folder, our pipeline on it (preset resized) and diffusers' pipeline."""
    from diffusers import WanImageToVideoPipeline

    sys.path.insert(0, str(ROOT / "tests"))
    from svi.models.bundle import load_bundle
    from wan_fixtures import build_tiny_wan_folder

    folder = build_tiny_wan_folder(tmp, WAN_VARIANT)
    bundle = load_bundle(folder)
    # the Wan presets fix 480x832x81 and 50 steps; a tiny model needs a tiny clip
    bundle.preset = replace(bundle.preset, height=size, width=size, num_frames=frames, steps=steps)
    naive = WanImageToVideoPipeline.from_pretrained(folder)
    naive.set_progress_bar_config(disable=True)
    return folder, SVIPipeline(bundle), naive


def naive_loop(
    pipe, image: np.ndarray, prompt: str, negative: str, clips: int, wan: dict, seed: int = 0
) -> Iterator[np.ndarray]:
    """What a user writes: call the I2V pipeline on the last frame of the previous clip.

    Yields each clip's new uint8 frames (all of clip 0, then frames 1: of each next one).
    """
    from PIL import Image

    start = Image.fromarray(image)
    for k in range(clips):
        out = pipe(
            image=start,
            prompt=prompt,
            negative_prompt=negative,
            height=wan["size"],
            width=wan["size"],
            num_frames=wan["frames"],
            num_inference_steps=wan["steps"],
            guidance_scale=wan["cfg"],
            generator=torch.Generator().manual_seed(seed + 7919 * k),
            output_type="np",
        ).frames[0]
        frames = (out * 255).round().clip(0, 255).astype(np.uint8)
        start = Image.fromarray(frames[-1])
        yield frames if k == 0 else frames[1:]


def ours_config(naive, wan: dict, clips: int) -> GenerationConfig:
    """Same steps and guidance as the naive loop; the shift of the folder's scheduler."""
    shift = float(naive.scheduler.config.get("flow_shift") or 1.0)
    return GenerationConfig(clips=clips, steps=wan["steps"], cfg=wan["cfg"], shift=shift)


def measure_wan(ours: SVIPipeline, naive, image: np.ndarray, wan: dict) -> dict:
    """N clips per contender, clip by clip interleaved (rotating order); median over repeats.

    Contenders: ``ours`` (default pixel hand-off), ``ours_latent`` (latent hand-off, no
    re-encode of the carried frames) and ``naive`` (the diffusers loop).
    """
    negative = ours.bundle.preset.negative_prompt
    text = ours.bundle.text_encoder
    config = ours_config(naive, wan, wan["clips"])
    configs = {"ours": config, "ours_latent": replace(config, handoff="latent")}

    def start(name: str) -> Iterator[np.ndarray]:
        if name == "naive":
            return naive_loop(naive, image, WAN_PROMPT, negative, wan["clips"], wan)
        clips = ours.generate(image[None], [WAN_PROMPT], configs[name])
        return (c.new_frames for c in clips)

    names = ["ours", "ours_latent", "naive"]
    for name in names:  # warm-up: first calls pay for kernel selection and lazy init
        next(start(name))
    totals: dict[str, list[float]] = {name: [] for name in names}
    clip_ratios: dict[str, list[float]] = {"ours": [], "ours_latent": []}
    frames: dict[str, int] = {}
    for r in range(wan["repeats"]):
        gens = {name: start(name) for name in names}
        spent = dict.fromkeys(names, 0.0)
        frames = dict.fromkeys(names, 0)
        for k in range(wan["clips"]):
            shift = (r + k) % len(names)
            t = {}
            for name in names[shift:] + names[:shift]:
                if k == 0 and name != "naive":
                    text.clear_cache()  # each generation encodes its prompt once
                t[name], new = timed(lambda gen=gens[name]: next(gen))
                frames[name] += len(new)
                spent[name] += t[name]
            for name in clip_ratios:
                clip_ratios[name].append(t[name] / t["naive"])
        for name in names:
            totals[name].append(spent[name])
    ratios = {
        name: [o / n for o, n in zip(totals[name], totals["naive"], strict=True)]
        for name in clip_ratios
    }
    return {
        "variant": WAN_VARIANT,
        **{k: wan[k] for k in ("size", "frames", "steps", "cfg", "clips", "repeats")},
        "shift": config.shift,
        "frames_per_generation": frames,  # ours holds back the last clip's tail frames
        "s_median": {name: statistics.median(v) for name, v in totals.items()},
        "ratio_median": statistics.median(ratios["ours"]),
        "ratios": ratios["ours"],
        "latent_ratio_median": statistics.median(ratios["ours_latent"]),
        "latent_ratios": ratios["ours_latent"],
        "clip_ratio_median": {n: statistics.median(v) for n, v in clip_ratios.items()},
        "target": TARGETS["wan_loop"],
    }


def _dit_targets(transformers: list) -> list[tuple[Any, str]]:
    return [(t, "forward") for t in transformers if t is not None]


def profile_wan(ours: SVIPipeline, naive, image: np.ndarray, wan: dict) -> dict:
    """Seconds per clip in each component: one instrumented generation per contender."""
    import svi.pipeline as svi_pipeline

    b = ours.bundle
    negative = b.preset.negative_prompt
    config = ours_config(naive, wan, wan["clips"])
    n = wan["clips"]
    ours_targets = {
        "text_encoder": [(b.text_encoder, "encode")],
        "vae_encode": [(b.codec.vae, "encode")],
        "vae_decode": [(b.codec.vae, "decode")],
        "dit": _dit_targets([b.transformer, b.transformer_2]),
        "sampler_call": [(svi_pipeline, "sample_latents")],
    }
    naive_targets = {
        "text_encoder": [(naive, "encode_prompt")],
        "vae_encode": [(naive.vae, "encode")],
        "vae_decode": [(naive.vae, "decode")],
        "dit": _dit_targets([naive.transformer, naive.transformer_2]),
        "scheduler_step": [(naive.scheduler, "step")],
        "video_processor": [
            (naive.video_processor, "preprocess"),
            (naive.video_processor, "postprocess_video"),
        ],
    }
    latent = replace(config, handoff="latent")
    runs = {
        "ours": (ours_targets, lambda: list(ours.generate(image[None], [WAN_PROMPT], config))),
        "ours_latent": (
            ours_targets,
            lambda: list(ours.generate(image[None], [WAN_PROMPT], latent)),
        ),
        "naive": (
            naive_targets,
            lambda: list(naive_loop(naive, image, WAN_PROMPT, negative, n, wan)),
        ),
    }
    profile = {}
    for name, (targets, run) in runs.items():
        b.text_encoder.clear_cache()
        with call_timers(targets) as acc:
            total, _ = timed(run)
        out = {k: {"s_per_clip": s / n, "calls_per_clip": c / n} for k, (s, c) in acc.items()}
        if "sampler_call" in out:  # time in sample_latents beyond the DiT: CFG combine, Euler
            sampler = out.pop("sampler_call")["s_per_clip"]
            out["sampler_overhead"] = {
                "s_per_clip": sampler - out["dit"]["s_per_clip"],
                "calls_per_clip": 1.0,
            }
        counted = sum(v["s_per_clip"] for v in out.values())
        out["other"] = {"s_per_clip": total / n - counted, "calls_per_clip": None}
        out["total"] = {"s_per_clip": total / n, "calls_per_clip": None}
        profile[name] = out
    return profile


# ----------------------------------------------------------------------------- 3. memory


def memory_child(model: Path, clips: int, steps: int, out_dir: Path) -> dict:
    """One streaming generation of ``clips`` clips; this process's RSS before/after and peak."""
    pipe = SVIPipeline.from_pretrained(model)
    start, prompts = world_start(pipe.bundle.preset)
    before = rss_mib()
    manifest = generate_to_file(
        pipe,
        start,
        prompts,
        GenerationConfig(clips=clips, steps=steps),
        out_dir / f"memory-{clips}.mp4",
        progress=False,
        overwrite=True,
    )
    return {
        "clips": clips,
        "frames_written": manifest["frames_written"],
        "rss_before_generation_mib": before,
        "rss_after_generation_mib": rss_mib(),
        "peak_rss_mib": peak_rss_mib(),
    }


def measure_memory(model: Path, clip_counts: tuple[int, int], steps: int, tmp: Path) -> dict:
    """Run :func:`memory_child` in a fresh interpreter per clip count; compare the peaks."""
    runs = []
    for clips in clip_counts:
        result = tmp / f"memory-{clips}.json"
        script = str(Path(__file__).resolve())
        cmd = [sys.executable, script, "--memory-child", str(clips), "--model", str(model)]
        cmd += ["--steps", str(steps), "--result", str(result)]
        cmd += ["--threads", str(torch.get_num_threads())]
        wall, _ = timed(lambda cmd=cmd: subprocess.run(cmd, check=True))
        runs.append({**json.loads(result.read_text()), "wall_s": wall})
        log.info("memory: %d clips, peak RSS %.1f MiB", clips, runs[-1]["peak_rss_mib"])
    few, many = runs
    return {
        "steps": steps,
        "runs": runs,
        "ratio": many["peak_rss_mib"] / few["peak_rss_mib"],
        "peak_growth_kib_per_clip": 1024
        * (many["peak_rss_mib"] - few["peak_rss_mib"])
        / (many["clips"] - few["clips"]),
        "rss_after_ratio": many["rss_after_generation_mib"] / few["rss_after_generation_mib"],
        "target": TARGETS["memory"],
    }


# ----------------------------------------------------------------------------- 4. real time


def measure_realtime(pipe: SVIPipeline, clips: int, repeats: int, tmp: Path) -> dict:
    """Frames written per wall second by ``generate_to_file``, default settings."""
    p = pipe.bundle.preset
    start, prompts = world_start(p)
    pipe.bundle.text_encoder.encode(["warm-up"])  # load the encoder outside the timing
    fps = []
    frames = 0
    for r in range(repeats):
        out = tmp / f"realtime-{r}.mp4"
        config = GenerationConfig(clips=clips)
        wall, manifest = timed(
            lambda out=out, config=config: generate_to_file(
                pipe, start, prompts, config, out, progress=False, overwrite=True
            )
        )
        frames = manifest["frames_written"]
        fps.append(frames / wall)
    return {
        "clips": clips,
        "repeats": repeats,
        "steps": p.steps,
        "frames_written": frames,
        "fps_median": statistics.median(fps),
        "fps_runs": fps,
        "playback_fps": p.fps,
        "ratio": statistics.median(fps) / p.fps,
        "target": TARGETS["realtime"],
    }


# ----------------------------------------------------------------------------- report


def markdown_table(results: dict) -> str:
    """The four headline figures as a markdown table."""
    rows = ["| measurement | value | target | met |", "|---|---|---|---|"]

    def row(name: str, value: float, target: float, higher_is_better: bool = False) -> None:
        met = value > target if higher_is_better else value <= target
        sign = ">" if higher_is_better else "<="
        rows.append(f"| {name} | {value:.3f} | {sign} {target:g} | {'yes' if met else 'no'} |")

    if "overhead" in results:
        r = results["overhead"]
        name = "pipeline overhead: generate / bare sampler (median per clip)"
        row(name, r["ratio_median"], r["target"])
    if "wan_loop" in results:
        r = results["wan_loop"]
        row(f"Wan {r['clips']} clips: ours / naive diffusers loop", r["ratio_median"], r["target"])
        name = f"Wan {r['clips']} clips: ours, latent hand-off / naive loop"
        row(name, r["latent_ratio_median"], r["target"])
    if "memory" in results:
        r = results["memory"]
        few, many = r["runs"]
        row(f"peak RSS {many['clips']} / {few['clips']} clips", r["ratio"], r["target"])
    if "realtime" in results:
        r = results["realtime"]
        name = f"real time: {r['fps_median']:.1f} frames/s / {r['playback_fps']} fps playback"
        row(name, r["ratio"], r["target"], higher_is_better=True)
    return "\n".join(rows)


def profile_table(profile: dict) -> str:
    """Seconds per clip per component (calls per clip), one column per contender."""
    sides = list(profile)
    names = list(dict.fromkeys(name for side in sides for name in profile[side]))
    names = [n for n in names if n not in ("other", "total")] + ["other", "total"]
    rows = [
        "| component | " + " | ".join(f"{side} s/clip (calls)" for side in sides) + " |",
        "|---" * (len(sides) + 1) + "|",
    ]
    for name in names:
        cells = []
        for side in sides:
            entry = profile[side].get(name)
            if entry is None:
                cells.append("-")
            elif entry["calls_per_clip"] is None:
                cells.append(f"{entry['s_per_clip']:.3f}")
            else:
                cells.append(f"{entry['s_per_clip']:.3f} ({entry['calls_per_clip']:g})")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def environment() -> dict:
    import diffusers

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }


def quiet_libraries() -> None:
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def run_all(sizes: dict, tmp: Path, only: set[str] | None = None) -> dict:
    """Every measurement (or those named in ``only``) with the given sizes."""
    only = only or {"overhead", "wan_loop", "memory", "realtime"}
    results: dict[str, Any] = {"environment": environment()}
    model, model_note = world_model_dir(tmp)
    results["world_model"] = model_note
    pipe = SVIPipeline.from_pretrained(model)
    if "overhead" in only:
        start, prompts = world_start(pipe.bundle.preset)
        log.info("1/4 overhead: %d clips, each beside a bare sampler call", sizes["overhead_clips"])
        results["overhead"] = measure_overhead(pipe, start, prompts[0], sizes["overhead_clips"])
    if "wan_loop" in only:
        wan = sizes["wan"]
        log.info("2/4 Wan: ours vs naive diffusers loop, %s", wan)
        _, ours, naive = build_wan(tmp, wan["size"], wan["frames"], wan["steps"])
        from svi.world import WorldConfig, render_episode

        image = render_episode("consistent", 90_024, 1, WorldConfig(size=wan["size"])).frames[0]
        results["wan_loop"] = measure_wan(ours, naive, image, wan)
        log.info("2/4 Wan: profiling one generation of each")
        results["wan_profile"] = profile_wan(ours, naive, image, wan)
    if "memory" in only:
        log.info("3/4 memory: %s clips in fresh processes", sizes["memory_clips"])
        results["memory"] = measure_memory(model, sizes["memory_clips"], sizes["memory_steps"], tmp)
    if "realtime" in only:
        log.info("4/4 real time: %d clips x %d", sizes["realtime_clips"], sizes["realtime_repeats"])
        results["realtime"] = measure_realtime(
            pipe, sizes["realtime_clips"], sizes["realtime_repeats"], tmp
        )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON file ({DEFAULT_OUT})")
    parser.add_argument("--only", nargs="*", choices=["overhead", "wan_loop", "memory", "realtime"])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: unchanged)"
    )
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        with tempfile.TemporaryDirectory() as tmp:
            result = memory_child(args.model, args.memory_child, args.steps, Path(tmp))
        args.result.write_text(json.dumps(result))
        return
    out = args.out or (DEFAULT_OUT.with_suffix(".quick.json") if args.quick else DEFAULT_OUT)
    sizes = SIZES["quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory() as tmp:
        wall, results = timed(lambda: run_all(sizes, Path(tmp), set(args.only or [])))
    results["environment"]["quick"] = args.quick
    results["environment"]["wall_s"] = wall
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    log.info("\n%s", markdown_table(results))
    if "wan_profile" in results:
        log.info("\nWan profile (seconds per clip):\n%s", profile_table(results["wan_profile"]))
    log.info("\nwrote %s (%.0f s)", out, wall)


if __name__ == "__main__":
    main()
