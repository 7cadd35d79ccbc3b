"""Drift of long rollouts on held-out world scenes, per clip, against exact ground truth.

Protocol (docs/benchmarks.md): ``val`` scenes are for tuning, ``test`` scenes for
published figures; a report is *publishable* only on ``test`` with at least
``MIN_PUBLISHED_SCENES`` scenes. Every contender (base chaining or a LoRA) starts each
scene from the scene's first real frames and its prompt stream, with the same noise
(clip seeds derive from the scene seed), through :meth:`SVIPipeline.generate` - the
loop of ``svi generate``. Each clip's new frames are scored against the truth at the
same frames (:data:`CLIP_METRICS`); the per-clip rows of every (contender, scene) are
cached, so an interrupted benchmark resumes and a longer one reuses shorter rollouts.

Summaries are taken at horizons (clip 1, 10, 50, 200): the mean over the last
``window(h)`` clips up to ``h``, per scene, then a mean over scenes with a bootstrap
interval (:mod:`svi.bench.stats`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from svi.atomic import write_atomic
from svi.bench import events, metrics
from svi.config import tomllib
from svi.errors import SviError
from svi.fingerprint import code_commit, sha256_file

log = logging.getLogger(__name__)

METRICS_VERSION = "drift-v2.3"
MIN_PUBLISHED_SCENES = 32
HORIZONS = (1, 10, 50, 200)

# name -> which way is better (see svi.bench.stats.BETTER) and what it measures
CLIP_METRICS: dict[str, tuple[str, str]] = {
    "identity": ("higher", "share of true objects found as one blob of their colour and size"),
    "identity_located": ("higher", "same, and the blob covers the object's true position"),
    "background_error": ("lower", "median |frame - true background| off the true objects"),
    "colour_drift": ("lower", "distance of the mean colour to the true frames' (0..1)"),
    "grid_energy": (
        "truth",
        "excess luminance steps on the patch grid (x1000); nearer the truth's",
    ),
    "motion": ("truth", "mean |frame-to-frame change|; nearer the truth's is better"),
    "seam": ("lower", "change across the clip boundary minus within-clip change"),
    "flicker": ("lower", "mean |2nd temporal difference| of the mean colour"),
    "feature_clip1": ("higher", "world-feature cosine similarity to clip 1"),
    "feature_truth": ("higher", "world-feature cosine similarity to the true frames"),
    "event_following": ("higher", "share of prompted creative events that happened"),
}
TRUTH_VALUES = {
    "motion": "motion_truth",
    "grid_energy": "grid_truth",
}  # per-clip truth value of a "truth" metric


def window(h: int) -> int:
    """Clips averaged at horizon ``h``: clip 1 alone, else the last max(5, h/5) clips."""
    return 1 if h == 1 else max(5, h // 5)


@dataclass(frozen=True)
class Contender:
    """One entry of the benchmark: base chaining (no LoRA) or LoRA(s) on the base model.

    ``group`` pools contenders that differ only in their training seed.
    """

    name: str
    group: str = ""
    loras: tuple[tuple[str, float], ...] = ()
    padding: str | None = None
    recipe: str | None = None
    train_seed: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.name)


def load_contenders(path: Path) -> list[Contender]:
    """Contenders from a TOML file: ``[contender.NAME]`` tables with ``lora`` (a path, or
    ``[[path, scale], ...]``; relative to the file), ``group``, ``padding``, ``recipe``,
    ``train_seed``, ``note``."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SviError(f"cannot read contenders file {path}: {exc}") from exc
    table = data.get("contender")
    if not isinstance(table, dict) or not table:
        raise SviError(f"{path}: no [contender.NAME] tables")
    allowed = {"lora", "group", "padding", "recipe", "train_seed", "note"}
    out = []
    for name, entry in table.items():
        unknown = set(entry) - allowed
        if unknown:
            raise SviError(f"{path}: contender {name!r} has unknown keys {sorted(unknown)}")
        lora = entry.get("lora", [])
        pairs = [[lora, 1.0]] if isinstance(lora, str) else lora
        loras = []
        for item in pairs:
            if not (isinstance(item, list) and len(item) == 2):
                raise SviError(f"{path}: {name!r}: lora must be a path or [[path, scale], ...]")
            file = Path(item[0]) if Path(item[0]).is_absolute() else Path(path).parent / item[0]
            loras.append((str(file), float(item[1])))  # existence: checked by run_drift
        out.append(Contender(name, entry.get("group", ""), tuple(loras), entry.get("padding"),
                             entry.get("recipe"), entry.get("train_seed"),
                             entry.get("note", "")))  # fmt: skip
    return out


def parse_lora_option(item: str) -> Contender:
    """``LABEL=PATH[:SCALE]`` (the ``--lora`` option of ``svi bench drift``)."""
    label, sep, rest = item.partition("=")
    path, _, scale = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not sep or not label or not path:
        raise SviError(f"--lora {item!r} must be LABEL=PATH[:SCALE]")
    try:
        value = float(scale) if scale else 1.0
    except ValueError:
        raise SviError(f"--lora {item!r}: scale {scale!r} is not a number") from None
    return Contender(label, loras=((path, value),))


# -- one scene ------------------------------------------------------------------------
@dataclass
class SceneSpec:
    kind: str
    seed: int
    clips: int


def scene_prompts(episode, clips: int, num_frames: int, motion: int) -> list[str]:
    """Prompt of model clip k: the world prompt of its first new frame (as in training)."""
    step = num_frames - motion
    cf = episode.config.clip_frames
    return [episode.prompts[min((k * step + motion) // cf, len(episode.prompts) - 1)]
            for k in range(clips)]  # fmt: skip


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
        true_new = ep.frames[s]
        found, found_loc, scored = metrics.identity_counts(
            new, t.colours[s], t.masks[s], t.background[s]
        )
        within = metrics.motion_energy(new)
        row = {
            "identity": found / scored if scored else float("nan"),
            "identity_located": found_loc / scored if scored else float("nan"),
            "background_error": metrics.robust_background_error(new, t.background[s], t.masks[s]),
            "colour_drift": metrics.colour_drift(new, true_new),
            "grid_energy": 1000 * metrics.grid_energy(new, self.period),
            "grid_truth": 1000 * metrics.grid_energy(true_new, self.period),
            "motion": within,
            "motion_truth": metrics.motion_energy(true_new),
            "seam": metrics.seam_jump(prev[-1], new[0], within) if len(prev) else float("nan"),
            "flicker": metrics.flicker(np.concatenate([prev, new])),
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


def render_scene(kind: str, seed: int, clips: int, num_frames: int, size: int, motion: int):
    """The world episode a rollout of ``clips`` clips of ``num_frames`` is scored against."""
    from svi.world import WorldConfig, render_episode

    total = clips * (num_frames - motion) + motion
    return render_episode(kind, seed, total, WorldConfig(size=size))


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


# -- contenders x scenes, cached ------------------------------------------------------
def model_fingerprint(bundle) -> str:
    """The model's weights by content (:func:`weights_fingerprint` of its folder)."""
    return weights_fingerprint(Path(bundle.source))


def weights_fingerprint(root: Path) -> str:
    """A model folder's weights by content: every safetensors file in its component
    folders (not the LoRAs that an embedded model ships beside them), in path order."""
    weights = sorted(p for p in root.rglob("*.safetensors") if p.parent != root)
    digest = hashlib.sha256()
    for path in weights:
        digest.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()[:16]


# Settings in every cache key since drift-v2 (their values, default or not). A setting
# added to GenerationConfig later enters a key only when it differs from its default,
# so that adding one keeps earlier cached rollouts valid.
_KEY_SETTINGS = ("motion_frames", "padding", "handoff", "steps", "cfg", "shift",
                 "seed_stride", "negative_prompt", "first_prompt_only")  # fmt: skip
# The clip-seed stride of every published drift table (svi's default before it became
# the released scripts' 42): pinned, so cached rollouts and tables stay comparable.
DRIFT_SEED_STRIDE = 7919


def benchmark_config(padding: str | None = None):
    """The generation settings of the drift benchmark (the model's defaults otherwise)."""
    from svi.plan import GenerationConfig

    # handoff and first_prompt_only: the values the published keys hold
    return GenerationConfig(padding=padding, seed_stride=DRIFT_SEED_STRIDE, handoff="pixel",
                            first_prompt_only=False)  # fmt: skip


def contender_key(contender: Contender, model_hash: str, config) -> dict:
    """Everything that determines a contender's rollouts (the video cache key): weights
    by content (a renamed or moved LoRA file keeps its rollouts), padding, settings."""
    from svi.lora import lora_files  # a LoRA may be a folder of shards

    defaults = asdict(type(config)())
    settings = {k: v for k, v in asdict(config).items() if k not in ("clips", "seed")}
    return {
        "model": model_hash,
        "loras": [[[sha256_file(f) for f in lora_files(p)], s] for p, s in contender.loras],
        "padding": contender.padding,
        "config": {k: v for k, v in settings.items() if k in _KEY_SETTINGS or v != defaults[k]},
    }


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def load_pipeline(model: str | None, contender: Contender):
    from svi.pipeline import SVIPipeline

    pipe = SVIPipeline.from_pretrained(model)
    for path, scale in contender.loras:
        pipe.load_lora(path, scale)
    return pipe


def _config_for(contender: Contender, config):
    """The contender's padding, else the config's, else (in the plan) its LoRA's."""
    return replace(config, padding=contender.padding or config.padding)


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


_WORKER: dict = {}


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_job(job: Job, on_clip: Callable[[], None] | None = None) -> list[dict]:
    """Rows of one (contender, scene). The rollout video is cached (``.npz``; longer
    rollouts serve shorter ones) and so are its scores (``.json``, per metrics version)."""
    scores = job.cache.with_suffix(f".{job.score_key}.json")
    if scores.is_file():
        rows = json.loads(scores.read_text(encoding="utf-8"))["rows"]
        if len(rows) >= job.scene.clips:
            return rows[: job.scene.clips]
    per_clip = job.num_frames - job.motion
    video, carry = _cached_video(job.cache)
    if video is None or len(video) < job.scene.clips * per_clip:
        pipe = _worker_pipeline(job)
        config = _config_for(job.contender, job.config)
        done = None if video is None else (video, carry)
        video, carry = rollout_scene(pipe, job.scene, config, on_clip, done)
        _save_video(job.cache, video, carry)
    video = video[: job.scene.clips * per_clip]
    ep = render_scene(job.scene.kind, job.scene.seed, job.scene.clips, job.num_frames,
                      job.size, job.motion)  # fmt: skip
    encoder = None
    if job.use_features:
        from svi.bench.features import load_feature_encoder

        encoder = _WORKER.setdefault("encoder", load_feature_encoder())
    rows = score_video(video, ep, per_clip, job.grid_period, encoder)
    write_atomic(scores, json.dumps({"scene": asdict(job.scene), "rows": rows}).encode())
    return rows


def _save_video(path: Path, video: np.ndarray, carry) -> None:
    arrays = {"frames": video, "carry_frames": carry.frames}
    if carry.latents is not None:
        arrays["carry_latents"] = carry.latents.numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())


def _cached_video(path: Path):
    """(new frames, carry of the last clip) of a cached rollout, or (None, None)."""
    from svi.pipeline import Carry

    if not path.is_file():
        return None, None
    import torch

    with np.load(path, allow_pickle=False) as data:
        latents = data["carry_latents"] if "carry_latents" in data.files else None
        carry = Carry(data["carry_frames"], None if latents is None else torch.from_numpy(latents))
        return data["frames"], carry


def _worker_pipeline(job: Job):
    key = (job.model, job.contender)
    if _WORKER.get("key") != key:
        _WORKER.pop("pipe", None)
        _WORKER.update(key=key, pipe=load_pipeline(job.model, job.contender))
    return _WORKER["pipe"]


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

    def group_at_horizon(self, group: str, metric: str, h: int) -> np.ndarray:
        """(scenes,) mean over the group's training seeds of :meth:`at_horizon`."""
        vals = np.stack([self.at_horizon(n, metric, h) for n in self.groups()[group]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(vals, axis=0)

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
    use_features: bool = True,
    progress: bool = True,
) -> DriftRun:
    """Roll out every contender on every scene (cached per scene; ``jobs`` processes)."""
    from rich.progress import Progress

    from svi.bench.features import FEATURE_VERSION
    from svi.models.bundle import load_bundle
    from svi.pipeline import SVIPipeline

    if clips < 1:
        raise SviError(f"--clips must be >= 1, got {clips}")
    if not seeds:
        raise SviError("at least one scene is needed")
    if len({c.name for c in contenders}) != len(contenders):
        raise SviError("contender names must be unique")
    for c in contenders:
        for lora, scale in c.loras:
            if not Path(lora).exists():
                raise SviError(f"contender {c.name!r}: LoRA file not found: {lora}")
            if not np.isfinite(scale):
                raise SviError(f"contender {c.name!r}: LoRA scale must be finite, got {scale}")
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
    for c in contenders:
        key = contender_key(c, model_hash, config)
        meta_contenders[c.name] = {**asdict(c), "key": key, "key_hash": key_hash(key)}
        for seed in seeds:
            path = cache_dir / key_hash(key) / f"{kind}-{seed}.npz"
            todo.append(Job(model, c, SceneSpec(kind, seed, clips), config, path, score_key,
                            p.num_frames, motion, p.height, grid, use_features))  # fmt: skip
    results: list[list[dict] | None] = [None] * len(todo)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"drift ({kind}, {split})", total=len(todo) * clips)
        if jobs <= 1:
            for i, job in enumerate(todo):
                before = bar.tasks[0].completed
                results[i] = run_job(job, on_clip=lambda: bar.advance(task))
                bar.update(task, completed=before + clips)
        else:
            results = run_parallel(run_job, todo, jobs, lambda: bar.advance(task, clips))
    rows: dict[str, list[list[dict]]] = {c.name: [] for c in contenders}
    for job, res in zip(todo, results, strict=True):
        rows[job.contender.name].append(res)
    meta = {"commit": commit, "model_hash": model_hash, "contenders": meta_contenders,
            "features": features, "grid_period": grid, "motion_frames": motion}  # fmt: skip
    return DriftRun(kind, split, list(seeds), clips, list(contenders), rows, meta)


def run_parallel(run: Callable, todo: list, jobs: int, done: Callable[[], None]) -> list:
    """``run(job)`` for every job in ``jobs`` spawned worker processes (threads split
    between them, :func:`_worker_init`), results in ``todo``'s order; ``done()`` after
    each. ``run`` must be a module-level function (it is pickled)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                             initargs=(threads,)) as pool:  # fmt: skip
        futures = [pool.submit(run, job) for job in todo]
        out = []
        for fut in futures:
            out.append(fut.result())
            done()
    return out
