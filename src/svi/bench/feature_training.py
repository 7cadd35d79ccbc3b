"""Training of the world-feature encoder on free labels, and its sanity figures.

Frames come from TRAIN-split seeds only (consistent + creative kinds); validation
uses VAL-split seeds. Every label is exact ground truth of the world:

- ``colours``: multi-label, palette colour k is carried by an object with at least
  :data:`MIN_VISIBLE_PIXELS` visible pixels (11 object colours, unlit names);
- ``shapes``: multi-label, shape kind visible the same way (disc, square, triangle, ring);
- ``background_family``: checkerboard, gradient, stripes, noise or plain;
- ``background_colours``: multi-label, the background palette colours used;
- ``lighting``: which of the world's lighting levels is on (5 classes).

Heads are linear maps of the trunk's embedding, so the embedding carries all of it.
Augmentation: random flips/transposes (labels unchanged) and relighting of fully lit
frames with the world's own lookup table (label changed to the new level).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from svi.bench.features import (
    EncoderConfig,
    FeatureEncoder,
    FeatureTrunk,
    feature_consistency,
    frames_to_tensor,
    save_feature_encoder,
)
from svi.world import WorldConfig, render_episode, split_seeds
from svi.world.backgrounds import FAMILIES
from svi.world.episode import Episode
from svi.world.palette import BACKGROUND_COLOURS, OBJECT_COLOURS
from svi.world.raster import light_table
from svi.world.scenes import LIGHT_LEVELS
from svi.world.shapes import SHAPES

log = logging.getLogger(__name__)

MIN_VISIBLE_PIXELS = 4  # at 32 px: fewer visible pixels do not count as "present"
TRAIN_KINDS = ("consistent", "creative")
COLOUR_NAMES = list(OBJECT_COLOURS)
BACKGROUND_NAMES = list(BACKGROUND_COLOURS)
HEADS: dict[str, int] = {
    "colours": len(COLOUR_NAMES),
    "shapes": len(SHAPES),
    "background_family": len(FAMILIES),
    "background_colours": len(BACKGROUND_NAMES),
    "lighting": len(LIGHT_LEVELS),
}
MULTI_LABEL = ("colours", "shapes", "background_colours")
FULL_LIGHT = LIGHT_LEVELS.index(1.0)


# ---- labels ---------------------------------------------------------------------


@dataclass
class FrameSet:
    frames: np.ndarray  # (N, 32, 32, 3) uint8
    labels: dict[str, np.ndarray]  # multi-label (N, C) float32; classes (N,) int64

    def __len__(self) -> int:
        return len(self.frames)

    def take(self, index: np.ndarray) -> FrameSet:
        return FrameSet(self.frames[index], {k: v[index] for k, v in self.labels.items()})


def _expand(points: list[list], num_frames: int) -> list:
    """[[frame, value], ...] change points -> one value per frame."""
    values = []
    for i, (start, value) in enumerate(points):
        end = points[i + 1][0] if i + 1 < len(points) else num_frames
        values.extend([value] * (end - start))
    return values[:num_frames]


def episode_labels(episode: Episode) -> dict[str, np.ndarray]:
    """Per-frame labels of a consistent or creative episode (see the module doc)."""
    truth, t_all = episode.truth, episode.num_frames
    meta = truth.meta
    visible = truth.masks.sum(axis=(2, 3)) >= MIN_VISIBLE_PIXELS  # (T, K)
    colours = np.zeros((t_all, len(COLOUR_NAMES)), np.float32)
    shapes = np.zeros((t_all, len(SHAPES)), np.float32)
    for k, timeline in enumerate(meta["colours"]):
        names = _expand(timeline, t_all)
        shape = SHAPES.index(truth.shapes[k])
        for t in np.flatnonzero(visible[:, k]):
            colours[t, COLOUR_NAMES.index(names[t])] = 1.0
            shapes[t, shape] = 1.0
    specs = meta["backgrounds"]
    which = _expand(meta["background_index"], t_all)
    family = np.array([FAMILIES.index(specs[b]["family"]) for b in which], np.int64)
    back = np.zeros((t_all, len(BACKGROUND_NAMES)), np.float32)
    for t, b in enumerate(which):
        back[t, [BACKGROUND_NAMES.index(name) for name in specs[b]["colours"]]] = 1.0
    light = np.array([LIGHT_LEVELS.index(v) for v in _expand(meta["lighting"], t_all)])
    return {
        "colours": colours,
        "shapes": shapes,
        "background_family": family,
        "background_colours": back,
        "lighting": light.astype(np.int64),
    }


def render_frames(split: str, num_episodes: int, num_frames: int, stride: int = 1) -> FrameSet:
    """Frames of ``num_episodes`` seeds of ``split`` (kinds alternate), every ``stride``-th."""
    frames, labels = [], []
    for i, seed in enumerate(split_seeds(split, num_episodes)):
        episode = render_episode(TRAIN_KINDS[i % 2], seed, num_frames, WorldConfig(size=32))
        frames.append(episode.frames[::stride])
        labels.append({k: v[::stride] for k, v in episode_labels(episode).items()})
    stacked = {name: np.concatenate([lab[name] for lab in labels]) for name in HEADS}
    return FrameSet(np.concatenate(frames), stacked)


# ---- augmentation -----------------------------------------------------------------


def relight(batch: FrameSet, rng: np.random.Generator, prob: float = 0.5) -> FrameSet:
    """Fully lit frames get, with probability ``prob``, another world lighting level."""
    frames, light = batch.frames.copy(), batch.labels["lighting"].copy()
    for i in np.flatnonzero((light == FULL_LIGHT) & (rng.random(len(light)) < prob)):
        level = int(rng.integers(len(LIGHT_LEVELS)))
        frames[i] = light_table(LIGHT_LEVELS[level])[frames[i]]
        light[i] = level
    return FrameSet(frames, {**batch.labels, "lighting": light})


def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random per-sample horizontal/vertical flips and transposes of (B, 3, H, W)."""
    for op in (
        lambda t: t.flip(-1),
        lambda t: t.flip(-2),
        lambda t: t.transpose(-1, -2),
    ):
        pick = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(pick[:, None, None, None], op(x), x)
    return x


# ---- model and losses -------------------------------------------------------------


class MultiTaskEncoder(nn.Module):
    """The feature trunk plus one linear head per label group."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.trunk = FeatureTrunk(config)
        self.heads = nn.ModuleDict({n: nn.Linear(config.embed_dim, c) for n, c in HEADS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(x)  # (B, D)
        return {name: head(z) for name, head in self.heads.items()}


def head_losses(
    logits: dict[str, torch.Tensor], labels: dict[str, np.ndarray]
) -> dict[str, torch.Tensor]:
    """Binary cross-entropy for multi-label heads, cross-entropy for class heads."""
    losses = {}
    for name, out in logits.items():
        target = torch.from_numpy(labels[name])
        if name in MULTI_LABEL:
            losses[name] = F.binary_cross_entropy_with_logits(out, target)
        else:
            losses[name] = F.cross_entropy(out, target)
    return losses


def learning_rate(step: int, steps: int, peak: float, warmup: int = 50) -> float:
    """Linear warm-up, then cosine decay to 5 % of ``peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


# ---- validation -------------------------------------------------------------------


def roc_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged); NaN with one class only."""
    pos = targets.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def predict(model: MultiTaskEncoder, frames: np.ndarray, batch: int = 512) -> dict[str, np.ndarray]:
    outs: dict[str, list[np.ndarray]] = {name: [] for name in HEADS}
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(frames), batch):
            logits = model(frames_to_tensor(frames[start : start + batch]))
            for name, out in logits.items():
                outs[name].append(out.numpy())
    return {name: np.concatenate(parts) for name, parts in outs.items()}


def evaluate_heads(model: MultiTaskEncoder, data: FrameSet) -> dict[str, dict[str, float | None]]:
    """Per head: macro AUC, label accuracy and exact match (multi-label) or accuracy."""
    logits = predict(model, data.frames)
    figures: dict[str, dict[str, float | None]] = {}
    for name, out in logits.items():
        target = data.labels[name]
        if name in MULTI_LABEL:
            aucs = [roc_auc(out[:, c], target[:, c]) for c in range(out.shape[1])]
            defined = [a for a in aucs if not math.isnan(a)]
            hits = (out > 0) == (target > 0.5)
            figures[name] = {
                "macro_auc": float(np.mean(defined)) if defined else None,
                "label_accuracy": float(hits.mean()),
                "exact_match": float(hits.all(axis=1).mean()),
            }
        else:
            figures[name] = {"accuracy": float((out.argmax(axis=1) == target).mean())}
    return figures


# ---- sanity figures ---------------------------------------------------------------


def speckle_objects(
    frames: np.ndarray,
    masks: np.ndarray,
    colours: np.ndarray,
    background: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Dissolve objects into same-coloured speckle: object pixels become background and
    as many pixels of each object's colour are scattered at random over the frame.

    frames/background (T, H, W, 3) uint8, masks (T, K, H, W) bool, colours (T, K, 3).
    """
    out = frames.copy()
    covered = masks.any(axis=1)  # (T, H, W)
    out[covered] = background[covered]
    t_all, k_all, h, w = masks.shape
    flat = out.reshape(t_all, h * w, 3)
    for t in range(t_all):
        for k in range(k_all):
            count = int(masks[t, k].sum())
            if count:
                flat[t, rng.choice(h * w, size=count, replace=False)] = colours[t, k]
    return out


def dim_frames(frames: np.ndarray, level: float) -> np.ndarray:
    """The world's own lighting change (multiply, round, clip) applied to every frame."""
    return light_table(level)[frames]


def _summary(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "min": float(arr.min())}


def sanity_figures(
    encoder: FeatureEncoder,
    num_episodes: int = 48,
    num_frames: int = 32,
    reference_frames: int = 8,
    dim_levels: tuple[float, ...] = (0.8, 0.6),
    seed: int = 0,
) -> dict[str, Any]:
    """Consistency of perturbed clips vs the first ``reference_frames`` of VAL scenes.

    Clip = frames after the reference of a consistent episode. ``different_scene``
    uses the next seed's clip; ``frozen_first_frame`` repeats frame 0;
    ``creative_own_start`` scores a creative episode against its own first clip (its
    events change colours, objects, background or lights at every clip boundary).
    ``below_same`` is the share of episodes where the variant scores below the intact clip.
    """
    rng = np.random.default_rng(seed)
    seeds = split_seeds("val", num_episodes + 1)
    world = WorldConfig(size=32)
    episodes = [render_episode("consistent", s, num_frames, world) for s in seeds]
    scores: dict[str, list[float]] = {}
    for i, episode in enumerate(episodes[:-1]):
        ref, clip = episode.frames[:reference_frames], episode.frames[reference_frames:]
        truth = episode.truth
        r = reference_frames
        creative = render_episode("creative", seeds[i], num_frames, world)
        variants = {
            "same_scene": clip,
            "different_scene": episodes[i + 1].frames[r:],
            "frozen_first_frame": np.repeat(episode.frames[:1], len(clip), axis=0),
            "speckle_objects": speckle_objects(
                clip, truth.masks[r:], truth.colours[r:], truth.background[r:], rng
            ),
            **{f"dimmed_{level}": dim_frames(clip, level) for level in dim_levels},
        }
        for name, frames in variants.items():
            scores.setdefault(name, []).append(feature_consistency(frames, ref, encoder))
        own = feature_consistency(creative.frames[r:], creative.frames[:r], encoder)
        scores.setdefault("creative_own_start", []).append(own)
    same = np.asarray(scores["same_scene"])
    figures: dict[str, Any] = {
        "episodes": num_episodes,
        "kind": "consistent",
        "split": "val",
        "reference_frames": reference_frames,
        "clip_frames": num_frames - reference_frames,
    }
    for name, values in scores.items():
        figures[name] = _summary(values)
        if name != "same_scene":
            figures[name]["below_same"] = float((np.asarray(values) < same).mean())
    return figures


# ---- training ---------------------------------------------------------------------


def train_feature_encoder(
    out_dir: str | Path,
    steps: int,
    seed: int = 0,
    *,
    config: EncoderConfig = EncoderConfig(),
    batch_size: int = 128,
    lr: float = 3e-3,
    train_episodes: int = 1200,
    val_episodes: int = 160,
    num_frames: int = 64,
    frame_stride: int = 2,
    sanity_episodes: int = 48,
    command: str | None = None,
    log_every: int = 100,
) -> dict[str, Any]:
    """Train the encoder on world labels, validate, measure sanity figures and save.

    Writes ``encoder.safetensors`` + ``encoder.json`` to ``out_dir`` and returns what
    the json records besides config and hash (training figures, val and sanity).
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    train = render_frames("train", train_episodes, num_frames, frame_stride)
    val = render_frames("val", val_episodes, num_frames, frame_stride)
    log.info("world frames: %d train, %d val", len(train), len(val))
    model = MultiTaskEncoder(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    recent: list[float] = []
    for step in range(steps):
        model.train()
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup=min(50, steps))
        batch = relight(train.take(rng.integers(len(train), size=batch_size)), rng)
        x = flip(frames_to_tensor(batch.frames), generator)  # (B, 3, 32, 32)
        losses = head_losses(model(x), batch.labels)
        loss = torch.stack(list(losses.values())).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        recent = [*recent[-(log_every - 1) :], loss.item()]
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log.info("step %d/%d  loss %.4f", step + 1, steps, float(np.mean(recent)))
    train_seconds = time.perf_counter() - start
    model.eval()
    encoder = FeatureEncoder(model.trunk, config, {})
    info = {
        "training": {
            "command": command,
            "steps": steps,
            "seed": seed,
            "batch_size": batch_size,
            "lr": lr,
            "train_split": "train",
            "kinds": list(TRAIN_KINDS),
            "train_episodes": train_episodes,
            "train_frames": len(train),
            "num_frames": num_frames,
            "frame_stride": frame_stride,
            "final_loss": float(np.mean(recent)) if recent else None,
            "train_seconds": round(train_seconds, 1),
            "heads": HEADS,
            "min_visible_pixels": MIN_VISIBLE_PIXELS,
        },
        "val": {
            "split": "val",
            "episodes": val_episodes,
            "frames": len(val),
            "heads": evaluate_heads(model, val),
        },
        "sanity": sanity_figures(encoder, num_episodes=sanity_episodes),
        "labels": {
            "colours": COLOUR_NAMES,
            "shapes": list(SHAPES),
            "background_family": list(FAMILIES),
            "background_colours": BACKGROUND_NAMES,
            "lighting": list(LIGHT_LEVELS),
        },
    }
    save_feature_encoder(model.trunk, config, out_dir, info)
    log.info("saved feature encoder to %s (%.0f s)", out_dir, time.perf_counter() - start)
    return info
