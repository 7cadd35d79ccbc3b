"""What the drift and driven benchmarks share: contenders (trained, or the reference rows
that bound every table), the world scenes they run on, cache keys and cached rollouts,
one pipeline per worker process, and running jobs serially or in worker processes with
a progress bar. Each benchmark keeps only its own rollout and scoring
(:mod:`svi.bench.drift`, :mod:`svi.bench.driven`)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from svi.atomic import write_atomic
from svi.config import tomllib
from svi.errors import SviError
from svi.fingerprint import sha256_file

REFERENCES = {
    "truth": "the world's own frames (through the same uint8 path as a generated video)",
    "freeze": "the start frame held for the whole video",
    "hold-last": "the last given frame held for the whole video (a model that only copies)",
}


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


def scene_prompts(episode, clips: int, num_frames: int, motion: int) -> list[str]:
    """Prompt of model clip k: the world prompt of its first new frame (as in training)."""
    step = num_frames - motion
    cf = episode.config.clip_frames
    return [episode.prompts[min((k * step + motion) // cf, len(episode.prompts) - 1)]
            for k in range(clips)]  # fmt: skip


def render_scene(kind: str, seed: int, clips: int, num_frames: int, size: int, motion: int):
    """The world episode a rollout of ``clips`` clips of ``num_frames`` is scored against."""
    from svi.world import WorldConfig, render_episode

    total = clips * (num_frames - motion) + motion
    return render_episode(kind, seed, total, WorldConfig(size=size))


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


def config_for(contender: Contender, config):
    """The contender's padding, else the config's, else (in the plan) its LoRA's."""
    return replace(config, padding=contender.padding or config.padding)


_WORKER: dict = {}


def worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def save_video(path: Path, video: np.ndarray, carry) -> None:
    arrays = {"frames": video, "carry_frames": carry.frames}
    if carry.latents is not None:
        arrays["carry_latents"] = carry.latents.numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())


def cached_video(path: Path):
    """(new frames, carry of the last clip) of a cached rollout, or (None, None)."""
    from svi.pipeline import Carry

    if not path.is_file():
        return None, None
    import torch

    with np.load(path, allow_pickle=False) as data:
        latents = data["carry_latents"] if "carry_latents" in data.files else None
        carry = Carry(data["carry_frames"], None if latents is None else torch.from_numpy(latents))
        return data["frames"], carry


def run_parallel(run: Callable, todo: list, jobs: int, done: Callable[[object], None]) -> list:
    """``run(job)`` for every job in ``jobs`` spawned worker processes (threads split
    between them, :func:`worker_init`), results in ``todo``'s order; ``done(job)`` after
    each. ``run`` must be a module-level function (it is pickled)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=worker_init,
                             initargs=(threads,)) as pool:  # fmt: skip
        futures = [pool.submit(run, job) for job in todo]
        out = []
        for job, fut in zip(todo, futures, strict=True):
            out.append(fut.result())
            done(job)
    return out


def check_contenders(contenders: list[Contender]) -> None:
    """Names unique and not a reference row's; every LoRA file there, every scale finite."""
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


def worker_pipeline(model: str | None, contender: Contender):
    """The pipeline of ``contender`` in this process: loaded once, kept for its next
    scenes (jobs come contender by contender), replaced for the next contender."""
    key = (model, contender)
    if _WORKER.get("key") != key:
        _WORKER.pop("pipe", None)
        _WORKER.update(key=key, pipe=load_pipeline(model, contender))
    return _WORKER["pipe"]


def run_tasks(run: Callable, todo: list, *, jobs: int, clips: int, label: str,
              progress: bool, size: Callable[[object], int] = lambda _task: 1) -> list:  # fmt: skip
    """``run(task)`` for every task, in order, serially (with ``on_clip`` progress) or in
    ``jobs`` worker processes; a progress bar of ``clips`` per scene, ``size(task)``
    scenes per task."""
    from rich.progress import Progress

    results: list = [None] * len(todo)
    with Progress(disable=not progress, transient=True) as bar:
        task_id = bar.add_task(label, total=sum(size(t) for t in todo) * clips)
        if jobs <= 1:
            for i, task in enumerate(todo):
                before = bar.tasks[0].completed
                results[i] = run(task, on_clip=lambda n=size(task): bar.advance(task_id, n))
                bar.update(task_id, completed=before + clips * size(task))
        else:

            def done(task) -> None:
                bar.advance(task_id, clips * size(task))

            results = run_parallel(run, todo, jobs, done)
    return results
