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
from svi.bench import events, headline, metrics
from svi.config import tomllib
from svi.errors import SviError
from svi.fingerprint import code_commit, sha256_file

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
REFERENCES = {
    "truth": "the world's own frames (through the same uint8 path as a generated video)",
    "freeze": "the start frame held for the whole video",
    "hold-last": "the last given frame held for the whole video (a model that only copies)",
}


def window(h: int) -> int:
    """Clips averaged at horizon ``h``: clip 1 alone, else the last max(5, h/5) clips."""
    return 1 if h == 1 else max(5, h // 5)


@dataclass(frozen=True)
class Contender:
    """One entry of the benchmark: base chaining (no LoRA) or LoRA(s) on the base model.

    ``group`` pools contenders that differ only in their training seed; ``shipped``
    names the file a user gets (``svi generate``'s default LoRA, ``--lora clean``) for
    the report's comparison of shipped files; ``reference`` (one of :data:`REFERENCES`)
    makes it a bound of the table that needs no model.
    """

    name: str
    group: str = ""
    loras: tuple[tuple[str, float], ...] = ()
    padding: str | None = None
    recipe: str | None = None
    train_seed: int | None = None
    note: str = ""
    shipped: str | None = None
    reference: str | None = None

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
    allowed = {"lora", "group", "padding", "recipe", "train_seed", "note", "shipped"}
    out = []
    for name, entry in table.items():
        if name in REFERENCES:
            raise SviError(f"{path}: {name!r} is a reference row every table has; rename it")
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
                             entry.get("note", ""), entry.get("shipped")))  # fmt: skip
    return out


def reference_contenders() -> list[Contender]:
    """The bounds of every table: the truth, the start frame held, the last given frame held."""
    return [Contender(name, note=note, reference=name) for name, note in REFERENCES.items()]


def reference_video(name: str, episode, length: int, motion: int) -> np.ndarray:
    """(length, H, W, 3) uint8 new frames of a reference row, aligned with the truth as a
    rollout's are: the truth's own frames (through the uint8 <-> signed-float path of a
    generated frame), its first frame held, or its last given frame (``motion - 1``) held."""
    from svi.pixels import to_signed, to_uint8

    frames = episode.frames[:length]
    if len(frames) < length:
        raise SviError(f"the scene has {len(frames)} frames, {length} needed")
    if name == "truth":
        return to_uint8(to_signed(frames).movedim(0, 1)[None])[0]
    if name == "freeze":
        return np.repeat(frames[:1], length, axis=0)
    if name == "hold-last":
        return np.repeat(frames[motion - 1 : motion], length, axis=0)
    raise SviError(f"unknown reference {name!r}; known: {', '.join(REFERENCES)}")


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


def score_with_references(video: np.ndarray, episode, per_clip: int, motion: int,
                          grid_period: int, encoder=None) -> dict[str, list[dict]]:  # fmt: skip
    """Per-clip rows, headline included, of ``video`` (new frames aligned with the
    episode's, as a rollout's) under ``"video"`` and of every reference row of the same
    length, all scored by the same code."""
    videos = {"video": video}
    videos.update({n: reference_video(n, episode, len(video), motion) for n in REFERENCES})
    rows = {n: [score_video(v, episode, per_clip, grid_period, encoder)]  # one scene
            for n, v in videos.items()}  # fmt: skip
    add_headlines(rows)
    return {n: scenes[0] for n, scenes in rows.items()}


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
    batch: int = 1  # scenes rolled out together (one DiT batch); 1 = alone


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
        video, carry = _cached_video(job.cache)
        scored = job.cache.with_suffix(f".{job.score_key}.json").is_file()
        if not (scored or job.contender.reference) and (
            video is None or len(video) < job.scene.clips * per_clip
        ):
            need.append(job)
            done.append(None if video is None else (video, carry))
    if need:
        if len({None if d is None else len(d[0]) for d in done}) > 1:
            done = [None] * len(need)  # cached at different lengths: all from the start
        pipe = _worker_pipeline(need[0])
        config = _config_for(need[0].contender, need[0].config)
        made = rollout_scenes(pipe, [j.scene for j in need], config, jobs[0].batch, done,
                              on_clip)  # fmt: skip
        for job, (video, carry) in zip(need, made, strict=True):
            _save_video(job.cache, video, carry)
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
    video, carry = _cached_video(job.cache)
    if video is None or len(video) < job.scene.clips * (job.num_frames - job.motion):
        pipe = _worker_pipeline(job)
        config = _config_for(job.contender, job.config)
        done = None if video is None else (video, carry)
        video, carry = rollout_scene(pipe, job.scene, config, on_clip, done)
        _save_video(job.cache, video, carry)
    return video


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

    def seeds_at_horizon(self, group: str, metric: str, h: int) -> np.ndarray:
        """(training seeds, scenes) :meth:`at_horizon` of each member of ``group``."""
        return np.stack([self.at_horizon(n, metric, h) for n in self.groups()[group]])

    def group_at_horizon(self, group: str, metric: str, h: int) -> np.ndarray:
        """(scenes,) mean over the group's training seeds of :meth:`at_horizon`."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(self.seeds_at_horizon(group, metric, h), axis=0)

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
    from rich.progress import Progress

    from svi.bench.features import FEATURE_VERSION
    from svi.models.bundle import load_bundle
    from svi.pipeline import SVIPipeline

    if clips < 1:
        raise SviError(f"--clips must be >= 1, got {clips}")
    if batch < 1:
        raise SviError(f"--batch must be >= 1, got {batch}")
    if not seeds:
        raise SviError("at least one scene is needed")
    if len({c.name for c in contenders}) != len(contenders):
        raise SviError("contender names must be unique")
    if taken := sorted({c.name for c in contenders} & set(REFERENCES)):
        raise SviError(f"contender name(s) {', '.join(taken)} are the reference rows' names")
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
    results: list = [None] * len(todo)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"drift ({kind}, {split})", total=len(seeds) * len(contenders) * clips)
        if jobs <= 1:
            for i, tasks in enumerate(todo):
                before = bar.tasks[0].completed
                results[i] = run_batch(tasks, on_clip=lambda n=len(tasks): bar.advance(task, n))
                bar.update(task, completed=before + clips * len(tasks))
        else:
            results = run_parallel(run_batch, todo, jobs,
                                   lambda tasks: bar.advance(task, clips * len(tasks)))  # fmt: skip
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


def run_parallel(run: Callable, todo: list, jobs: int, done: Callable[[object], None]) -> list:
    """``run(job)`` for every job in ``jobs`` spawned worker processes (threads split
    between them, :func:`_worker_init`), results in ``todo``'s order; ``done(job)`` after
    each. ``run`` must be a module-level function (it is pickled)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                             initargs=(threads,)) as pool:  # fmt: skip
        futures = [pool.submit(run, job) for job in todo]
        out = []
        for job, fut in zip(todo, futures, strict=True):
            out.append(fut.result())
            done(job)
    return out
