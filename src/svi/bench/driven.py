"""Driven generation (SVI-Talk / SVI-Dance) on held-out world scenes, per clip.

Protocol (the house protocol of :mod:`svi.bench.drift`, docs/benchmarks.md): ``val``
scenes are for tuning, ``test`` scenes for published figures; a report is
*publishable* only on ``test`` with at least ``MIN_PUBLISHED_SCENES`` scenes.

Per contender (a conditional adapter: a LoRA file carrying the audio or pose modules)
and scene (world ``talking`` episodes for ``audio``, ``dancing`` for ``pose``): the
episode is rendered for the N clips (N (F - M) + M frames), the rollout starts from its
first M frames with its prompt stream and the scene's noise (clip seeds derive from the
scene seed, :func:`svi.bench.runner.benchmark_config` settings), driven by the episode's
own stream - ``AudioDrive(audio_features(audio))`` or ``PoseDrive(pose_frames)`` (the
exact pose frames, no video round trip) - through :func:`svi.pipeline.rollout`. The
stitched video is cached per (contender, scene, clips) and scored against the truth
(:mod:`svi.bench.conditioned`).

Clip k owns the stitched frames ``[k (F - M), (k + 1) (F - M))`` (the last clip also the
final M frames): the frames it appended, aligned with the truth and the stream.

- talking: ``sync`` is the Pearson correlation of the measured mouth opening with the
  audio envelope over the ``SYNC_WINDOW`` (16) stitched frames ending with the clip
  (:func:`~svi.bench.conditioned.sync_scores`; a world clip adds only 3 frames); a
  window of silence is NaN and flagged ``sync_degenerate`` (nothing to follow), so horizon
  means average the other clips only; a frozen mouth over audio that moves scores 0 (it
  did not follow; driven-v1 left it out, so a frozen video had no lip-sync score). Over
  the whole video: ``sync_overall`` and the best lag (:func:`~svi.bench.conditioned.sync_lag`).
- dancing: ``joint_error``, ``chamfer``, ``iou`` of the figure vs the driving skeleton.
- both: ``psnr`` and ``ssim`` against the true frames.

Every table also has the reference rows of the drift benchmark, scored by the same code:
the truth (the rendered frames) on top, the start frame and the last given frame held
at the bottom (:data:`svi.bench.runner.REFERENCES`).

Summaries are taken at horizons 1, 10 and the last clip: the mean over the last
``window(h)`` clips up to h per scene (as in drift), then a mean over scenes with a 95 %
bootstrap interval; the first contender is compared with each other one on the same
scenes (paired bootstrap, win counts).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from svi.bench import conditioned, stats
from svi.bench.drift import MIN_PUBLISHED_SCENES, DriftRun, window
from svi.bench.report import _cell, _pair_cell
from svi.bench.runner import (
    REFERENCES,
    Contender,
    cached_video,
    check_contenders,
    config_for,
    contender_key,
    key_hash,
    model_fingerprint,
    reference_contenders,
    reference_video,
    render_scene,
    run_tasks,
    save_video,
    scene_prompts,
    worker_pipeline,
)
from svi.errors import SviError
from svi.fingerprint import code_commit

METRICS_VERSION = "driven-v2"
HORIZONS = (1, 10)  # and the last clip
# Lip sync of clip k: correlation over the SYNC_WINDOW stitched frames ending with the
# clip (2 s at the world's 8 fps): a world clip adds only 3 frames, too few for a
# correlation of its own.
SYNC_WINDOW = 16
KIND_OF = {"audio": "talking", "pose": "dancing"}  # condition -> world kind

# name -> (which way is better, what it measures), per condition; per clip
CLIP_METRICS: dict[str, dict[str, tuple[str, str]]] = {
    "audio": {
        "sync": ("higher", "Pearson r of the mouth opening with the audio envelope over the "
                 f"{SYNC_WINDOW} frames ending with the clip (non-degenerate windows only)"),
        "psnr": ("higher", "PSNR (dB) against the true frames"),
        "ssim": ("higher", "SSIM against the true frames"),
    },
    "pose": {
        "joint_error": ("lower", "mean distance (px) of the skeleton's joints to the figure"),
        "chamfer": ("lower", "symmetric chamfer distance (px) of figure and skeleton masks"),
        "iou": ("higher", "IoU of the detected figure with the driven figure mask"),
        "psnr": ("higher", "PSNR (dB) against the true frames"),
        "ssim": ("higher", "SSIM against the true frames"),
    },
}  # fmt: skip
# per scene, over the whole video
VIDEO_METRICS: dict[str, dict[str, tuple[str, str]]] = {
    "audio": {
        "sync_overall": ("higher", "Pearson r of mouth opening and envelope over the video"),
        "sync_lag": (
            "lower",
            "|lag| (frames) of the best lagged correlation (0: in sync; "
            "undefined when no lag correlates positively)",
        ),
        "sync_lag_r": ("higher", "correlation at the best lag (-4..4 frames)"),
    },
    "pose": {},
}
SHORT = {"sync": "lip sync r", "psnr": "PSNR", "ssim": "SSIM", "joint_error": "joint err",
         "chamfer": "chamfer", "iou": "IoU", "sync_overall": "sync r (video)",
         "sync_lag": "abs. lag", "sync_lag_r": "r at lag"}  # fmt: skip


# -- one scene ------------------------------------------------------------------------
def scene_drive(episode, condition: str, temporal_factor: int):
    """The episode's own stream as a drive: its audio features or its pose frames."""
    from svi.conditions.audio import audio_features
    from svi.conditions.drive import AudioDrive, PoseDrive
    from svi.world.config import SAMPLE_RATE

    if condition == "audio":
        feats = audio_features(episode.audio, SAMPLE_RATE, episode.config.fps,
                               num_frames=episode.num_frames)  # fmt: skip
        return AudioDrive(feats, temporal_factor=temporal_factor)
    return PoseDrive(episode.pose_frames, temporal_factor)


def clip_segments(clips: int, num_frames: int, motion: int) -> list[slice]:
    """The stitched frames each clip owns (the last clip also the final M frames)."""
    step = num_frames - motion
    out = [slice(k * step, (k + 1) * step) for k in range(clips)]
    out[-1] = slice(out[-1].start, clips * step + motion)
    return out


def score_driven(video: np.ndarray, episode, condition: str, segments: list[slice]) -> dict:
    """``{"rows": [per-clip dict], "video": {...}}`` of a stitched rollout vs its truth."""
    true = episode.frames[: len(video)]
    psnr, ssim = conditioned.psnr_ssim(video, true)
    rows: list[dict] = [{"psnr": float(psnr[s].mean()), "ssim": float(ssim[s].mean())}
                        for s in segments]  # fmt: skip
    whole: dict = {}
    if condition == "audio":
        from svi.world.palette import MOUTH_COLOUR

        face = episode.truth.colours[0, 0]
        opening = conditioned.mouth_opening(video, np.asarray(MOUTH_COLOUR[1], np.uint8), face)
        envelope = episode.audio_envelope[: len(video)]
        for row, s in zip(rows, segments, strict=True):
            w = slice(max(0, s.stop - SYNC_WINDOW), s.stop)  # the clip and the ones before
            one = conditioned.sync_scores(opening[w], envelope[w], w.stop - w.start)
            quiet = conditioned.silent(envelope[w])
            row["sync"] = float("nan") if quiet else one.overall  # 0 for a frozen mouth
            row["sync_degenerate"] = bool(quiet)
            row["mouth_opening"] = float(opening[s].mean())
        total = conditioned.sync_scores(opening, envelope, segments[0].stop)
        lag, r = conditioned.sync_lag(opening, envelope)
        # no positive correlation at any lag: the lag is undefined
        quiet = conditioned.silent(envelope)
        whole = {"sync_overall": float("nan") if quiet else total.overall,
                 "sync_overall_degenerate": bool(quiet),
                 "sync_lag_signed": int(lag) if r > 0 else None,
                 "sync_lag": float(abs(lag)) if r > 0 else float("nan"),
                 "sync_lag_r": float(r)}  # fmt: skip
    else:
        colour = episode.truth.colours[0, 0]
        errors = conditioned.pose_error(video, episode.truth.joints[: len(video)], colour)
        for row, s in zip(rows, segments, strict=True):
            row.update(joint_error=float(errors.joint[s].mean()),
                       chamfer=float(errors.chamfer[s].mean()), iou=float(errors.iou[s].mean()),
                       figure_found=float(errors.found[s].mean()))  # fmt: skip
    return {"rows": rows, "video": whole}


# -- contenders x scenes, cached ------------------------------------------------------
@dataclass
class DrivenJob:
    """One (contender, scene): its cached video and what scoring needs."""

    model: str | None
    contender: Contender
    condition: str
    seed: int
    clips: int
    config: object  # GenerationConfig
    cache: Path  # the stitched rollout (.npz)
    num_frames: int
    motion: int
    size: int
    temporal_factor: int


def run_driven_job(job: DrivenJob, on_clip=None) -> dict:
    """Scores of one (contender, scene); the video is generated unless cached.
    ``generated_seconds`` holds the per-clip wall time when it was generated now."""
    from svi.conditions.drive import check_model_drive
    from svi.pipeline import rollout

    kind = KIND_OF[job.condition]
    ep = render_scene(kind, job.seed, job.clips, job.num_frames, job.size, job.motion)
    segments = clip_segments(job.clips, job.num_frames, job.motion)
    if job.contender.reference:  # a bound of the table: no model
        video = reference_video(job.contender.reference, ep, segments[-1].stop, job.motion)
        return {**score_driven(video, ep, job.condition, segments), "generated_seconds": None}
    drive = scene_drive(ep, job.condition, job.temporal_factor)
    video, _ = cached_video(job.cache)
    seconds = None
    if video is None:
        pipe = worker_pipeline(job.model, job.contender)
        for dit in filter(None, (pipe.bundle.transformer, pipe.bundle.transformer_2)):
            check_model_drive(dit, drive)
        config = replace(config_for(job.contender, job.config), clips=job.clips, seed=job.seed)
        plan = pipe.plan(config, ["a", "b"])  # per-clip prompts, one each (as drift)
        drive.check_clips(job.clips, plan.num_frames, plan.motion_frames)
        prompts = scene_prompts(ep, job.clips, plan.num_frames, plan.motion_frames)
        video, clips = rollout(pipe, ep.frames[: plan.motion_frames], prompts, plan, drive=drive)
        save_video(job.cache, video, clips[-1].carry)
        seconds = [c.seconds for c in clips]
    if len(video) != segments[-1].stop:
        raise SviError(f"cached rollout {job.cache} has {len(video)} frames, expected "
                       f"{segments[-1].stop}; delete it")  # fmt: skip
    out = score_driven(video, ep, job.condition, segments)
    out["generated_seconds"] = seconds
    return out


@dataclass
class DrivenRun(DriftRun):
    """Per-clip rows (``rows[name][i]``: scene i) and per-scene whole-video values."""

    condition: str = "audio"
    video: dict[str, list[dict]] = field(default_factory=dict)

    def horizons(self) -> list[int]:
        return sorted({h for h in HORIZONS if h <= self.clips} | {self.clips})

    def clip_metrics(self) -> dict[str, tuple[str, str]]:
        return CLIP_METRICS[self.condition]

    def video_metrics(self) -> dict[str, tuple[str, str]]:
        return VIDEO_METRICS[self.condition]

    def video_values(self, name: str, metric: str) -> np.ndarray:
        return np.asarray([v[metric] for v in self.video[name]], dtype=float)

    def at_horizon(self, name: str, metric: str, h: int) -> np.ndarray:
        """(scenes,) mean of the last ``window(h)`` clips up to clip ``h``; an infinite
        PSNR (identical frames) is left out."""
        c = self.curve(name, metric)[:, max(0, h - window(h)) : h]
        c[~np.isfinite(c)] = np.nan
        return _quiet_nanmean(c, 1)

    def degenerate(self, name: str, h: int) -> tuple[int, int]:
        """(degenerate clips, clips) in the horizon window of every scene (talking)."""
        c = self.curve(name, "sync_degenerate")[:, max(0, h - window(h)) : h]
        return int(c.sum()), int(c.size)


def check_adapter(contender: Contender, condition: str) -> None:
    """Every contender needs a LoRA file with the modules of ``condition``."""
    from svi.conditions.adapters import condition_of_paths
    from svi.lora import lora_files, read_lora

    found = []
    for path, _ in contender.loras:
        for f in lora_files(path):
            found.append(condition_of_paths(list(read_lora(f).extras)))
    if condition not in found:
        other = sorted({f for f in found if f})
        what = f"an adapter for {', '.join(other)}" if other else "no condition modules"
        flag = {"audio": "SVI-Talk", "pose": "SVI-Dance"}[condition]
        raise SviError(f"contender {contender.name!r}: --condition {condition} needs an "
                       f"{flag} adapter (a LoRA trained with the {condition} condition); "
                       f"its LoRA has {what}")  # fmt: skip


def run_driven(
    model: str | None,
    contenders: list[Contender],
    seeds: list[int],
    clips: int,
    *,
    condition: str,
    split: str,
    config,
    cache_dir: Path,
    jobs: int = 1,
    progress: bool = True,
) -> DrivenRun:
    """Roll out every contender on every scene, driven (cached per scene; ``jobs``
    processes)."""
    from svi.models.bundle import load_bundle
    from svi.pipeline import SVIPipeline

    if condition not in KIND_OF:
        raise SviError(f"--condition must be audio or pose, got {condition!r}")
    if clips < 1:
        raise SviError(f"--clips must be >= 1, got {clips}")
    if not seeds:
        raise SviError("at least one scene is needed (--scenes >= 1)")
    if jobs < 1:
        raise SviError(f"--jobs must be >= 1, got {jobs}")
    if not contenders:
        raise SviError("no contenders: give --lora NAME=PATH or --contenders")
    bundle = load_bundle(model)
    contenders = [_resolve_bundled(c, bundle) for c in contenders]
    check_contenders(contenders)
    for c in contenders:
        if not c.loras:
            raise SviError(f"contender {c.name!r} has no LoRA: driven generation needs a "
                           "conditional adapter")  # fmt: skip
        check_adapter(c, condition)
    commit = code_commit()  # the code that rolls out, not the one checked out at the end
    model_hash = model_fingerprint(bundle)
    p = bundle.preset
    motion = SVIPipeline(bundle).plan(config, ["a", "b"]).carried_frames
    kind = KIND_OF[condition]
    todo, meta_contenders = [], {}
    refs = reference_contenders()
    contenders = [refs[0], *contenders, *refs[1:]]  # the truth on top, the freezes below
    for c in contenders:
        if c.reference:
            key = {"reference": c.reference, "driven": METRICS_VERSION, "condition": condition}
        else:
            key = driven_key(c, model_hash, config, condition)
        meta_contenders[c.name] = {**asdict(c), "key": key, "key_hash": key_hash(key)}
        for seed in seeds:
            path = cache_dir / key_hash(key) / f"{kind}-{seed}-{clips}clips.npz"
            todo.append(DrivenJob(model, c, condition, seed, clips, config, path, p.num_frames,
                                  motion, p.height, bundle.codec.temporal_factor))  # fmt: skip
    del bundle
    results = run_tasks(run_driven_job, todo, jobs=jobs, clips=clips,
                        label=f"driven ({condition}, {split})", progress=progress)  # fmt: skip
    rows: dict[str, list[list[dict]]] = {c.name: [] for c in contenders}
    video: dict[str, list[dict]] = {c.name: [] for c in contenders}
    timing: dict[str, list[float]] = {c.name: [] for c in contenders}
    for job, res in zip(todo, results, strict=True):
        rows[job.contender.name].append(res["rows"])
        video[job.contender.name].append(res["video"])
        timing[job.contender.name] += res["generated_seconds"] or []
    meta = {"commit": commit, "model_hash": model_hash, "contenders": meta_contenders,
            "motion_frames": motion,
            "num_frames": p.num_frames, "new_frames_per_clip": p.num_frames - motion,
            "seconds_per_clip": {n: (float(np.mean(t)) if t else None)
                                 for n, t in timing.items()},
            "clips_generated": {n: len(t) for n, t in timing.items()}}  # fmt: skip
    return DrivenRun(kind, split, list(seeds), clips, list(contenders), rows, meta,
                     condition=condition, video=video)  # fmt: skip


def driven_key(contender: Contender, model_hash: str, config, condition: str) -> dict:
    """The video cache key of a driven rollout: the drift key, the metrics, the condition."""
    return {**contender_key(contender, model_hash, config), "driven": METRICS_VERSION,
            "condition": condition}  # fmt: skip


def _resolve_bundled(contender: Contender, bundle) -> Contender:
    """A LoRA path that is no file but a short name shipped with the model (``talk``)."""
    loras = []
    for path, scale in contender.loras:
        shipped = None if Path(path).exists() else bundle.bundled_lora(str(path))
        loras.append((str(shipped) if shipped else path, scale))
    return replace(contender, loras=tuple(loras))


# -- report ---------------------------------------------------------------------------
CURVE_BOOT = 1000


def _round(x) -> list:
    return [None if not np.isfinite(v) else float(f"{v:.5g}") for v in np.asarray(x, float)]


def _quiet_nanmean(x: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN stays NaN
        return np.nanmean(x, axis=axis)


def curve_bands(run: DrivenRun, name: str) -> dict:
    """{metric: {"mean", "lo", "hi"}} per clip, bootstrapped over scenes."""
    rng = np.random.default_rng(0)
    out = {}
    for m in run.clip_metrics():
        c = run.curve(name, m)
        c[~np.isfinite(c)] = np.nan
        idx = rng.integers(0, len(run.seeds), size=(CURVE_BOOT, len(run.seeds)))
        boots = _quiet_nanmean(c[idx], axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(boots, [2.5, 97.5], axis=0)
        out[m] = {"mean": _round(_quiet_nanmean(c, 0)), "lo": _round(lo), "hi": _round(hi)}
    return out


def build_report(run: DrivenRun, config, command: str = "") -> dict:
    from svi import __version__

    names = [c.name for c in run.contenders]
    models = [c.name for c in run.contenders if not c.reference]  # paired: models only
    hs = run.horizons()
    cm, vm = run.clip_metrics(), run.video_metrics()
    at = run.at_horizon
    first = models[0]
    reasons = []
    if run.split != "test":
        reasons.append(f"split {run.split!r} is for tuning; publish on 'test'")
    if len(run.seeds) < MIN_PUBLISHED_SCENES:
        reasons.append(f"{len(run.seeds)} scenes < {MIN_PUBLISHED_SCENES}")
    report = {
        "protocol": {
            "benchmark": "driven", "condition": run.condition, "kind": run.kind,
            "split": run.split, "scenes": len(run.seeds), "seeds": run.seeds,
            "clips": run.clips, "publishable": run.publishable,
            "not_publishable_because": reasons, "horizons": hs,
            "horizon_windows": {str(h): window(h) for h in hs},
            "clip_metrics": {m: {"better": b, "meaning": d} for m, (b, d) in cm.items()},
            "video_metrics": {m: {"better": b, "meaning": d} for m, (b, d) in vm.items()},
            "reference": first,
            "references": {c.name: REFERENCES[c.reference] for c in run.contenders
                           if c.reference},
        },
        "provenance": {
            "command": command, "argv": list(sys.argv), "commit": run.meta.get("commit", "unknown"),
            "svi_version": __version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "metrics_version": METRICS_VERSION,
            "sampler": {k: v for k, v in asdict(config).items() if k not in ("clips", "seed")},
            **run.meta,
        },
        "summary": {n: {m: {str(h): stats.mean_ci(at(n, m, h)).to_dict() for h in hs}
                        for m in cm} for n in names},
        "video_summary": {n: {m: stats.mean_ci(run.video_values(n, m)).to_dict() for m in vm}
                          for n in names},
        "paired": {f"{first} vs {o}": {
            m: {str(h): stats.paired(at(first, m, h), at(o, m, h), b).to_dict()
                for h in hs} for m, (b, _) in cm.items()} for o in models[1:]},
        "video_paired": {f"{first} vs {o}": {
            m: stats.paired(run.video_values(first, m), run.video_values(o, m), b).to_dict()
            for m, (b, _) in vm.items()} for o in models[1:]},
        "per_scene": {n: {m: {str(h): _round(at(n, m, h)) for h in hs} for m in cm}
                      for n in names},
        "per_scene_video": {n: {m: _round(run.video_values(n, m)) for m in vm} for n in names},
        "curves": {n: curve_bands(run, n) for n in names},
    }  # fmt: skip
    if run.condition == "audio":
        report["degenerate_clips"] = {
            n: {str(h): dict(zip(("degenerate", "clips"), run.degenerate(n, h), strict=True))
                for h in hs} for n in names}  # fmt: skip
    return report


def markdown(report: dict) -> str:
    p, prov = report["protocol"], report["provenance"]
    state = ("publishable" if p["publishable"]
             else "NOT publishable: " + "; ".join(p["not_publishable_because"]))  # fmt: skip
    what = {"audio": "SVI-Talk (audio-driven)", "pose": "SVI-Dance (pose-driven)"}[p["condition"]]
    lines = [f"Driven benchmark, {what}, {p['kind']} scenes, **{p['split']} split**, "
             f"{p['scenes']} scenes x {p['clips']} clips ({state}).", "",
             f"Command: `{prov['command']}` (commit `{prov['commit'][:12]}`, "
             f"{prov['metrics_version']}).",
             "Cells: mean over scenes [95 % bootstrap CI]; a horizon h averages the last "
             "max(5, h/5) clips up to h (clip 1 alone)."]  # fmt: skip
    refs = p.get("references", {})
    if refs:
        lines.append("Bounds, scored by the same code: "
                     + "; ".join(f"`{n}` = {d}" for n, d in refs.items()) + ".")  # fmt: skip
    if p["condition"] == "audio":
        lines.append(
            "Lip sync: per-clip correlation, averaged over the clips whose audio moves "
            "(windows of silence counted as degenerate per horizon); a frozen mouth scores 0."
        )
    metrics = list(p["clip_metrics"])
    for h in [str(h) for h in p["horizons"]]:
        extra = ["degenerate"] if p["condition"] == "audio" else []
        lines += ["", f"**Clip {h}**", "", *_header("contender", metrics, tuple(extra))]
        for name, ms in report["summary"].items():
            cells = [_cell(ms[m][h]) for m in metrics]
            if extra:
                d = report["degenerate_clips"][name][h]
                cells.append(f"{d['degenerate']}/{d['clips']}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    video = list(p["video_metrics"])
    if video:
        lines += ["", "**Whole video**", "", *_header("contender", video)]
        for name, ms in report["video_summary"].items():
            lines.append(f"| {name} | " + " | ".join(_cell(ms[m]) for m in video) + " |")
    if report["paired"]:
        lines += [
            "",
            f"**Paired: {p['reference']} vs each other contender** (difference A - B "
            "[95 % CI], scenes where A is better / scenes; bold: CI excludes 0)",
        ]
        for h in [str(h) for h in p["horizons"]]:
            lines += ["", f"Clip {h}:", "", *_header("comparison", metrics)]
            for pair, ms in report["paired"].items():
                lines.append(f"| {pair} | " + " | ".join(_pair_cell(ms[m][h]) for m in metrics)
                             + " |")  # fmt: skip
        if video:
            lines += ["", "Whole video:", "", *_header("comparison", video)]
            for pair, ms in report["video_paired"].items():
                lines.append(f"| {pair} | " + " | ".join(_pair_cell(ms[m]) for m in video) + " |")
    return "\n".join(lines) + "\n"


def _header(first: str, metrics: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    names = [SHORT[m] for m in metrics] + list(extra)
    return [f"| {first} | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]


def plot(report: dict, path: Path) -> None:
    """One panel per clip metric: mean per clip with its 95 % band, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, curves = report["protocol"], report["curves"]
    metrics = list(p["clip_metrics"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3), squeeze=False)
    for ax, m in zip(axes.flat, metrics, strict=True):
        for name, bands in curves.items():
            mean = np.asarray(bands[m]["mean"], dtype=float)
            x = np.arange(1, len(mean) + 1)
            (line,) = ax.plot(x, mean, label=name, lw=1.2, marker="." if len(x) < 20 else None)
            lo = np.asarray(bands[m]["lo"], dtype=float)
            hi = np.asarray(bands[m]["hi"], dtype=float)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(f"{SHORT[m]} ({p['clip_metrics'][m]['better']} is better)", fontsize=9)
        ax.set_xlabel("clip")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{p['condition']}-driven, {p['kind']}, {p['split']} split, {p['scenes']} "
                 "scenes (mean, 95 % band over scenes)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(run: DrivenRun, config, stem: Path, command: str = "") -> dict:
    """Write ``stem.json``, ``stem.md`` and ``stem.png``; returns the report."""
    report = build_report(run, config, command)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    plot(report, stem.with_suffix(".png"))
    return report


def command_line(**options) -> str:
    """``svi bench driven ...`` of the given options (None / False left out), quoted."""
    words = ["svi", "bench", "driven"]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is None or v is False:
                continue
            words += [flag] if v is True else [flag, str(v)]
    return shlex.join(words)
