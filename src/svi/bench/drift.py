"""Drift of long rollouts on held-out world scenes, per clip, against exact ground truth.

Protocol (docs/benchmarks.md): ``val`` scenes are for tuning, ``test`` scenes for
published figures; a report is *publishable* only on ``test`` with at least
``MIN_PUBLISHED_SCENES`` scenes. Every contender (base chaining or a LoRA) starts each
scene from the scene's first real frames and its prompt stream, with the same noise
(clip seeds derive from the scene seed), through :meth:`SVIPipeline.generate` - the
loop of ``svi generate``. Each clip's new frames are scored against the truth at the
same frames (:data:`CLIP_METRICS`); the per-clip rows of every (contender, scene) are
cached, so an interrupted benchmark resumes and a longer one reuses shorter rollouts.
Every run also scores the reference rows (the truth, the start frame held, the last
given frame held; :mod:`svi.bench.runner`) and gives every clip its headline
(:mod:`svi.bench.headline`: 0 = the start frame held, 1 = the truth). ``--batch N``
rolls N scenes of a contender out in one DiT batch (:func:`rollout_scenes`).

Summaries are taken at horizons (clip 1, 10, 50, 200): the mean over the last
``window(h)`` clips up to ``h``, per scene, then a mean over scenes with a bootstrap
interval (:mod:`svi.bench.stats`).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from svi.atomic import write_atomic
from svi.bench import events, headline, metrics
from svi.bench.runner import (
    _WORKER,
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

log = logging.getLogger(__name__)

METRICS_VERSION = "drift-v3"
MIN_PUBLISHED_SCENES = 32
HORIZONS = (1, 10, 50, 200)

# name -> which way is better (see svi.bench.stats.BETTER) and what it measures
CLIP_METRICS: dict[str, tuple[str, str]] = {
    "headline": ("higher", "0 = the start frame held, 1 = the truth (svi.bench.headline)"),
    "identity": ("higher", "share of true objects found as one blob of their colour and size"),
    "identity_located": ("higher", "same, and the blob covers the object's true position"),
    "background_error": ("lower", "median |frame - true background| off the true objects"),
    "colour_drift": ("lower", "distance of the mean colour to the true frames' (0..1)"),
    "grid_energy": (
        "truth",
        "excess luminance steps on the patch grid (x1000); nearer the truth's",
    ),
    "motion": ("truth", "mean |frame-to-frame change|; nearer the truth's is better"),
    "seam": ("lower", "change across the clip boundary unlike the truth's there (0 = alike)"),
    "flicker": ("truth", "mean |2nd temporal difference| of the mean colour; nearer the truth's"),
    "feature_clip1": ("higher", "world-feature cosine similarity to clip 1"),
    "feature_truth": ("higher", "world-feature cosine similarity to the true frames"),
    "event_following": ("higher", "share of prompted creative events that happened"),
}
TRUTH_VALUES = {
    "motion": "motion_truth",
    "grid_energy": "grid_truth",
    "flicker": "flicker_truth",
}  # per-clip truth value of a "truth" metric
# how far a "truth" metric is from the truth's value: a ratio for changes (4x too still
# is as bad as 4x too jittery: svi.bench.headline.ratio_error), a difference otherwise
RATIO_DISTANCE = ("motion", "flicker")


def window(h: int) -> int:
    """Clips averaged at horizon ``h``: clip 1 alone, else the last max(5, h/5) clips."""
    return 1 if h == 1 else max(5, h // 5)


# -- one scene ------------------------------------------------------------------------
@dataclass
class SceneSpec:
    kind: str
    seed: int
    clips: int


class ClipScorer:
    """Scores the clips of one rollout in order, against the scene's truth."""

    def __init__(self, episode, grid_period: int, encoder=None) -> None:
        self.ep, self.truth, self.encoder = episode, episode.truth, encoder
        self.period = grid_period
        self.video = np.zeros_like(episode.frames)  # generated, aligned with the truth
        self.pos = 0
        self.clip1 = None  # mean feature of clip 1

    def __call__(self, new: np.ndarray) -> dict[str, float]:
        t, ep, s = self.truth, self.ep, slice(self.pos, self.pos + len(new))
        prev = self.video[max(0, self.pos - 2) : self.pos]
        self.video[s] = new
        true_new, true_prev = ep.frames[s], ep.frames[max(0, self.pos - 2) : self.pos]
        found, found_loc, scored = metrics.identity_counts(
            new, t.colours[s], t.masks[s], t.background[s]
        )
        within = metrics.motion_energy(new)
        change, true_change = float("nan"), float("nan")
        if len(prev):
            change = metrics.motion_energy(np.stack([prev[-1], new[0]]))
            true_change = metrics.motion_energy(np.stack([true_prev[-1], true_new[0]]))
        row = {
            "identity": found / scored if scored else float("nan"),
            "identity_located": found_loc / scored if scored else float("nan"),
            "background_error": metrics.robust_background_error(new, t.background[s], t.masks[s]),
            "colour_drift": metrics.colour_drift(new, true_new),
            "grid_energy": 1000 * metrics.grid_energy(new, self.period),
            "grid_truth": 1000 * metrics.grid_energy(true_new, self.period),
            "motion": within,
            "motion_truth": metrics.motion_energy(true_new),
            "seam": headline.ratio_error(change, true_change),
            "seam_change": change,
            "seam_change_truth": true_change,
            "flicker": metrics.flicker(np.concatenate([prev, new])),
            "flicker_truth": metrics.flicker(np.concatenate([true_prev, true_new])),
        }
        row.update(self._features(new, true_new))
        row["event_following"] = self._events(s)
        self.pos += len(new)
        return row

    def _features(self, new: np.ndarray, true_new: np.ndarray) -> dict[str, float]:
        if self.encoder is None:
            return {"feature_clip1": float("nan"), "feature_truth": float("nan")}
        emb = self.encoder.embed(np.concatenate([new, true_new]))  # (2n, D), unit rows
        gen, true = emb[: len(new)], emb[len(new) :]
        if self.clip1 is None:
            mean = gen.mean(0)
            self.clip1 = mean / max(float(np.linalg.norm(mean)), 1e-8)
        return {"feature_clip1": float((gen @ self.clip1).mean()),
                "feature_truth": float((gen * true).sum(1).mean())}  # fmt: skip

    def _events(self, s: slice) -> float:
        if self.ep.kind != "creative":
            return float("nan")
        cf = self.ep.config.clip_frames
        scores = [events.follow_event(self.video, self.ep.frames, self.truth, e, cf)
                  for e in events.events_in(self.truth, s.start, s.stop, cf)]  # fmt: skip
        scores = [x for x in scores if x is not None]
        return float(np.mean(scores)) if scores else float("nan")


def rollout_scene(pipe, scene: SceneSpec, config, on_clip=None, done=None):
    """The new frames of ``scene.clips`` clips (clips * (F - M), H, W, 3) uint8, started
    from the scene's first real frames with its prompt stream and the scene's noise, and
    the :class:`Carry` of the last clip. ``done`` = (frames, carry) of a shorter rollout
    of the same scene continues it (as ``svi generate --resume`` does: exact)."""
    plan = pipe.plan(replace(config, clips=scene.clips, seed=scene.seed), ["a", "b"])
    f, m = plan.num_frames, plan.carried_frames
    ep = render_scene(scene.kind, scene.seed, scene.clips, f, plan.height, m)
    prompts = scene_prompts(ep, scene.clips, f, m)
    parts, carry, first = [], None, 0
    if done is not None:
        parts, carry = [done[0]], done[1]
        first = (len(done[0]) - plan.stitch_head) // plan.new_frames
    for clip in pipe.generate(ep.frames[:m], prompts, plan, first_clip=first, carry=carry):
        parts.append(clip.new_frames)
        carry = clip.carry
        if on_clip is not None:
            on_clip()
    return np.concatenate(parts), carry


def score_video(video: np.ndarray, episode, per_clip: int, grid_period: int, encoder=None):
    """Per-clip rows of a rollout's new frames against the episode's truth."""
    scorer = ClipScorer(episode, grid_period, encoder)
    return [scorer(video[i : i + per_clip]) for i in range(0, len(video), per_clip)]


def score_with_references(video: np.ndarray, episode, per_clip: int, motion: int,
                          grid_period: int, encoder=None,
                          references: dict[str, np.ndarray] | None = None,
                          ) -> dict[str, list[dict]]:  # fmt: skip
    """Per-clip rows, headline included, of ``video`` (new frames aligned with the
    episode's, as a rollout's) under ``"video"`` and of every reference row of the same
    length, all scored by the same code. ``references`` gives the reference videos as
    they came through another path (an mp4 round trip); default: made from the episode."""
    videos = {"video": video}
    videos.update(references or {n: reference_video(n, episode, len(video), motion)
                                 for n in REFERENCES})  # fmt: skip
    rows = {n: [score_video(v, episode, per_clip, grid_period, encoder)]  # one scene
            for n, v in videos.items()}  # fmt: skip
    add_headlines(rows)
    return {n: scenes[0] for n, scenes in rows.items()}


# -- contenders x scenes, cached ------------------------------------------------------


@dataclass
class Job:
    """One (contender, scene): where its rollout video and scores are cached, and the
    clip geometry needed to score it without loading the model."""

    model: str | None
    contender: Contender
    scene: SceneSpec
    config: object  # GenerationConfig
    cache: Path  # the rollout video (.npz); scores beside it
    score_key: str
    num_frames: int
    motion: int
    size: int
    grid_period: int
    use_features: bool
    batch: int = 1  # scenes rolled out together (one DiT batch); 1 = alone


def run_job(job: Job, on_clip: Callable[[], None] | None = None) -> list[dict]:
    """Rows of one (contender, scene). The rollout video is cached (``.npz``; longer
    rollouts serve shorter ones) and so are its scores (``.json``, per metrics version)."""
    rows = _cached_rows(job)
    if rows is not None:
        return rows
    scores = job.cache.with_suffix(f".{job.score_key}.json")
    per_clip = job.num_frames - job.motion
    ep = render_scene(job.scene.kind, job.scene.seed, job.scene.clips, job.num_frames,
                      job.size, job.motion)  # fmt: skip
    if job.contender.reference:
        video = reference_video(job.contender.reference, ep, job.scene.clips * per_clip,
                                job.motion)  # fmt: skip
    else:
        video = _job_video(job, on_clip)[: job.scene.clips * per_clip]
    encoder = None
    if job.use_features:
        from svi.bench.features import load_feature_encoder

        encoder = _WORKER.setdefault("encoder", load_feature_encoder())
    rows = score_video(video, ep, per_clip, job.grid_period, encoder)
    scores.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(scores, json.dumps({"scene": asdict(job.scene), "rows": rows}).encode())
    return rows


def _cached_rows(job: Job) -> list[dict] | None:
    """The job's scores when a cached scoring covers its clips (per metrics version)."""
    scores = job.cache.with_suffix(f".{job.score_key}.json")
    if scores.is_file():
        rows = json.loads(scores.read_text(encoding="utf-8"))["rows"]
        if len(rows) >= job.scene.clips:
            return rows[: job.scene.clips]
    return None


def run_batch(jobs: list[Job], on_clip: Callable[[], None] | None = None) -> list[list[dict]]:
    """Rows of several scenes of one contender whose rollouts are made together, in one
    DiT batch of ``jobs[0].batch`` rows (padded with copies of the last scene, so that a
    scene's frames never depend on how many others share its batch), then scored and
    cached one by one as :func:`run_job` does."""
    if len(jobs) == 1 and jobs[0].batch == 1:
        return [run_job(jobs[0], on_clip)]
    per_clip = jobs[0].num_frames - jobs[0].motion
    need, done = [], []
    for job in jobs:
        if job.contender.reference or _cached_rows(job) is not None:
            continue
        video, carry = cached_video(job.cache)
        if video is None or len(video) < job.scene.clips * per_clip:
            need.append(job)
            done.append(None if video is None else (video, carry))
    if need:
        if len({None if d is None else len(d[0]) for d in done}) > 1:
            done = [None] * len(need)  # cached at different lengths: all from the start
        pipe = worker_pipeline(need[0].model, need[0].contender)
        config = config_for(need[0].contender, need[0].config)
        made = rollout_scenes(pipe, [j.scene for j in need], config, jobs[0].batch, done,
                              on_clip)  # fmt: skip
        for job, (video, carry) in zip(need, made, strict=True):
            save_video(job.cache, video, carry)
    return [run_job(job) for job in jobs]


def rollout_scenes(pipe, scenes: list[SceneSpec], config, batch: int, done=None, on_clip=None):
    """:func:`rollout_scene` for scenes of one length together, ``batch`` rows per DiT
    call; ``done`` (per scene None or a cached (frames, carry) of one common shorter
    length) continues them. Returns [(new frames, carry)] in ``scenes``' order."""
    if len({sc.clips for sc in scenes}) != 1 or batch < len(scenes):
        raise SviError(f"a batch of {batch} holds up to {batch} scenes of one length")
    plan = pipe.plan(replace(config, clips=scenes[0].clips, seed=0), ["a", "b"])
    f, m = plan.num_frames, plan.carried_frames
    padded = scenes + [scenes[-1]] * (batch - len(scenes))
    done = list(done or [None] * len(scenes))
    done += [done[-1]] * (batch - len(scenes))
    eps = [render_scene(sc.kind, sc.seed, sc.clips, f, plan.height, m) for sc in padded]
    parts = [[] if d is None else [d[0]] for d in done]
    carries = None if done[0] is None else [d[1] for d in done]
    first = 0 if done[0] is None else (len(done[0][0]) - plan.stitch_head) // plan.new_frames
    prompts = [scene_prompts(ep, sc.clips, f, m) for ep, sc in zip(eps, padded, strict=True)]
    for out in pipe.generate_batch([ep.frames[:m] for ep in eps], prompts, plan,
                                   [sc.seed for sc in padded], first_clip=first,
                                   carries=carries, on_clip=on_clip):  # fmt: skip
        for part, clip in zip(parts, out, strict=True):
            part.append(clip.new_frames)
        carries = [clip.carry for clip in out]
    return [(np.concatenate(parts[i]), carries[i]) for i in range(len(scenes))]


def _job_video(job: Job, on_clip: Callable[[], None] | None = None) -> np.ndarray:
    """The rollout's new frames: cached, continued from a shorter cached one, or made."""
    video, carry = cached_video(job.cache)
    if video is None or len(video) < job.scene.clips * (job.num_frames - job.motion):
        pipe = worker_pipeline(job.model, job.contender)
        config = config_for(job.contender, job.config)
        done = None if video is None else (video, carry)
        video, carry = rollout_scene(pipe, job.scene, config, on_clip, done)
        save_video(job.cache, video, carry)
    return video


@dataclass
class DriftRun:
    """Per-clip rows of every (contender, scene): ``rows[name][i]`` is scene i's list."""

    kind: str
    split: str
    seeds: list[int]
    clips: int
    contenders: list[Contender]
    rows: dict[str, list[list[dict]]]
    meta: dict = field(default_factory=dict)

    @property
    def publishable(self) -> bool:
        return self.split == "test" and len(self.seeds) >= MIN_PUBLISHED_SCENES

    def curve(self, name: str, metric: str) -> np.ndarray:
        """(scenes, clips) values of one metric (NaN where undefined)."""
        return np.asarray([[r[metric] for r in rows] for rows in self.rows[name]], dtype=float)

    def at_horizon(self, name: str, metric: str, h: int) -> np.ndarray:
        """(scenes,) mean of the last ``window(h)`` clips up to clip ``h``."""
        c = self.curve(name, metric)[:, max(0, h - window(h)) : h]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
            return np.nanmean(c, axis=1)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for c in self.contenders:
            out.setdefault(c.group, []).append(c.name)
        return out

    def seeds_at_horizon(self, group: str, metric: str, h: int) -> np.ndarray:
        """(training seeds, scenes) :meth:`at_horizon` of each member of ``group``."""
        return np.stack([self.at_horizon(n, metric, h) for n in self.groups()[group]])

    def references(self) -> list[str]:
        return [c.name for c in self.contenders if c.reference]

    def model_groups(self) -> dict[str, list[str]]:
        """:meth:`groups` without the reference rows."""
        refs = set(self.references())
        return {g: names for g, names in self.groups().items() if not set(names) & refs}

    def shipped(self) -> dict[str, str]:
        """{shipped file label: contender name} of the contenders a user gets."""
        return {c.shipped: c.name for c in self.contenders if c.shipped}

    def horizons(self) -> list[int]:
        return sorted({h for h in HORIZONS if h <= self.clips} | {self.clips})


def run_drift(
    model: str | None,
    contenders: list[Contender],
    seeds: list[int],
    clips: int,
    *,
    kind: str,
    split: str,
    config,
    cache_dir: Path,
    jobs: int = 1,
    batch: int = 1,
    use_features: bool = True,
    progress: bool = True,
) -> DriftRun:
    """Roll out every contender on every scene (cached per scene; ``jobs`` processes;
    ``batch`` scenes of a contender in one DiT batch - another cache, see
    :func:`run_batch`), with the reference rows and the headline."""
    from svi.bench.features import FEATURE_VERSION
    from svi.models.bundle import load_bundle
    from svi.pipeline import SVIPipeline

    if clips < 1:
        raise SviError(f"--clips must be >= 1, got {clips}")
    if batch < 1:
        raise SviError(f"--batch must be >= 1, got {batch}")
    if not seeds:
        raise SviError("at least one scene is needed")
    check_contenders(contenders)
    commit = code_commit()  # the code that rolls out, not the one checked out when it ends
    bundle = load_bundle(model)
    model_hash = model_fingerprint(bundle)
    p = bundle.preset
    motion = SVIPipeline(bundle).plan(config, ["a", "b"]).carried_frames
    grid = bundle.codec.spatial_factor * p.transformer["patch_size"][-1]
    features = FEATURE_VERSION if use_features else None
    score_key = key_hash({"metrics": METRICS_VERSION, "features": features, "grid": grid})
    todo = []
    meta_contenders = {}
    contenders = [*reference_contenders(), *contenders]
    for c in contenders:
        if c.reference:  # depends on the scene and the clip geometry only
            key = {"reference": c.reference, "num_frames": p.num_frames, "motion": motion,
                   "size": p.height}  # fmt: skip
        else:
            key = contender_key(c, model_hash, config)
            if batch > 1:  # batched rollouts round differently: their own cache
                key = {**key, "batch": batch}
        meta_contenders[c.name] = {**asdict(c), "key": key, "key_hash": key_hash(key)}
        group = [Job(model, c, SceneSpec(kind, seed, clips), config,
                     cache_dir / key_hash(key) / f"{kind}-{seed}.npz", score_key, p.num_frames,
                     motion, p.height, grid, use_features, 1 if c.reference else batch)
                 for seed in seeds]  # fmt: skip
        size = 1 if c.reference else batch
        todo += [group[i : i + size] for i in range(0, len(group), size)]
    results = run_tasks(run_batch, todo, jobs=jobs, clips=clips, label=f"drift ({kind}, {split})",
                        progress=progress, size=len)  # fmt: skip
    rows: dict[str, list[list[dict]]] = {c.name: [] for c in contenders}
    for tasks, res in zip(todo, results, strict=True):
        for job, scene_rows in zip(tasks, res, strict=True):
            rows[job.contender.name].append(scene_rows)
    add_headlines(rows)
    meta = {"commit": commit, "model_hash": model_hash, "contenders": meta_contenders,
            "features": features, "grid_period": grid, "motion_frames": motion,
            "batch": batch}  # fmt: skip
    return DriftRun(kind, split, list(seeds), clips, list(contenders), rows, meta)


def add_headlines(rows: dict[str, list[list[dict]]]) -> None:
    """Add the per-clip headline (:mod:`svi.bench.headline`) to every row, from the
    ``truth`` and ``freeze`` rows of the same scene."""
    for videos in rows.values():
        for i, scene_rows in enumerate(videos):
            headline.headline_rows(scene_rows, rows["truth"][i], rows["freeze"][i])
