"""The training loop: image-to-video flow matching on a Wan DiT (base or LoRA).

One loop for every variant (base training, clean LoRA, ERFT LoRA, handcrafted-
augmentation LoRA): the variants are settings of :class:`svi.config.TrainConfig`.
Checkpoints carry the optimizer, EMA, step, RNG states and data position, so
``resume=True`` continues bit-exactly.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from svi import flow, interrupts, locks, parallel
from svi.atomic import write_atomic
from svi.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    optimizer_from_tensors,
    save_checkpoint,
    save_rank_extra,
)
from svi.clips import ClipBatch, FolderClips, WorldClips
from svi.conditioning import MASK_CHANNELS, build_y, build_y_anchor_first
from svi.config import TrainConfig, from_dict
from svi.ema import EMA
from svi.erft.augment import augment_y
from svi.errors import SviError
from svi.interrupts import Interrupted
from svi.models.bundle import ModelBundle, build_world_transformer, save_world_model
from svi.models.codec import PixelCodec
from svi.models.presets import ModelPreset, get_preset
from svi.sampling import Experts
from svi.train_setup import check_dataset, motion_latents, resolve_config, world_preset

log = logging.getLogger(__name__)


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then constant or cosine decay to ``min_lr_ratio * lr``."""
    o = config.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    progress = (step - o.warmup_steps) / max(1, config.steps - o.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * cosine)


def make_bundle(config: TrainConfig) -> ModelBundle:
    """The model to train: a fresh world DiT, or loaded weights to fine-tune, with the
    config's clip geometry (Wan)."""
    config = resolve_config(config)
    preset = world_preset(config) if config.init is None else get_preset(config.preset)
    if config.init is None:
        from svi.models.bundle import world_text_encoder

        transformer = build_world_transformer(preset, seed=config.seed)
        return ModelBundle(preset, transformer, PixelCodec(), world_text_encoder(preset), "random")
    from svi.models.bundle import load_bundle

    bundle = load_bundle(preset.name if config.init == "embedded" else config.init, preset.name)
    bundle.preset = replace(bundle.preset, height=config.height, width=config.width,
                            num_frames=config.num_frames)  # fmt: skip
    return bundle


def make_clips(
    config: TrainConfig, preset: ModelPreset, progress: bool = False
) -> WorldClips | FolderClips:
    """The clip source: the procedural world, or a dataset folder of real videos, at the
    clip size of ``preset``."""
    d = config.data
    if d.source == "world":
        return WorldClips(d.kinds, d.pool_size, d.episode_frames, preset.num_frames,
                          preset.height, seed=config.seed, show_progress=progress,
                          condition=d.condition)  # fmt: skip
    crop = d.crop_min_scale if d.random_crop else None
    return FolderClips(Path(d.source), preset.num_frames, preset.height, preset.width,
                       random_crop=crop)  # fmt: skip


def prepare_batch(
    batch: ClipBatch, bundle: ModelBundle, config: TrainConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean latents x0, conditioning y and text states for one batch."""
    d, p = config.data, bundle.preset  # unset data fields: the preset's (resolve_config)
    single = torch.rand((), generator=gen).item() < d.p_single_frame
    m = 1 if single else d.motion_frames or p.motion_frames
    frames = batch.frames  # (B, 3, F, H, W)
    x0 = bundle.codec.encode(frames)  # (B, C, f, h, w)
    padding = d.padding or p.padding
    if d.padding_mix:  # a layout per batch, drawn after the coin above (resume: same draws)
        padding = d.padding_mix[int(torch.randint(len(d.padding_mix), (), generator=gen))]
    if padding == "anchor-first":  # SVI 2.0 Pro; a single-frame sample: the first clip's y
        y = anchor_first_y(bundle, batch.anchors, x0, None if single else m)
    else:
        y = build_y(bundle.codec, frames[:, :, :m], frames.shape[2], padding=padding,
                    mask=d.mask or p.mask, anchor=batch.anchors)  # fmt: skip
    drop = torch.rand(len(batch.prompts), generator=gen) < d.text_dropout
    prompts = ["" if dropped else p for p, dropped in zip(batch.prompts, drop, strict=True)]
    text = bundle.text_encoder.encode(prompts)  # (B, L, D)
    return x0, y, text


def anchor_first_y(
    bundle: ModelBundle, anchors: torch.Tensor, x0: torch.Tensor, motion_frames: int | None
) -> torch.Tensor:
    """SVI 2.0 Pro's training ``y``: ``[VAE(anchor), motion latents, zero latents]``, mask
    on latent frame 0 (:func:`~svi.conditioning.build_y_anchor_first`, as generation).

    ``anchors`` (B, 3, H, W) are encoded alone; the motion latents are the clip's own
    latents ``x0`` (B, C, f, h, w) of its first ``motion_frames`` pixel frames (the
    latents generation carries over); ``None`` (a single-frame sample): the first clip's
    ``[anchor, zeros]``.
    """
    codec = bundle.codec
    anchor_latent = codec.encode(anchors[:, :, None])  # (B, C, 1, h, w)
    motion = None
    if motion_frames is not None:
        motion = x0[:, :, : motion_latents(motion_frames, codec.temporal_factor)]
    return build_y_anchor_first(anchor_latent, motion, x0.shape[2], codec.temporal_factor)


LOCK_NAME = ".lock"


def train(config: TrainConfig, out: Path, *, resume: bool = False, progress: bool = True) -> Path:
    """Train per ``config`` into ``out``; returns the exported model folder ``out/final``.

    The run holds ``out/.lock`` (:mod:`svi.locks`): a second run into ``out`` fails at
    once. SIGINT/SIGTERM stop it after the current step with a checkpoint there (one
    process; several: at the last checkpoint) by raising
    :class:`~svi.interrupts.Interrupted`; ``resume=True`` continues. The config is
    resolved and checked (:func:`resolve_config`, the dataset's CSVs) before anything
    is written or loaded.
    """
    config = resolve_config(config)
    if config.data.source != "world":
        check_dataset(Path(config.data.source))
    if out.exists() and not out.is_dir():
        raise SviError(f"--out {out} is a file; training writes a folder")
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    parallel.check_training_engine(accelerator.distributed_type.value)
    main = accelerator.is_main_process
    with locks.exclusive(out / LOCK_NAME, out) if main else nullcontext():
        return _train(config, out, accelerator, resume, progress)


def _train(
    config: TrainConfig, out: Path, accelerator: Accelerator, resume: bool, progress: bool
) -> Path:
    rank, main = accelerator.process_index, accelerator.is_main_process
    if main:
        _write_config(out, config, resume)
    accelerator.wait_for_everyone()
    bundle = make_bundle(config)
    preset = bundle.preset
    models = _trained_models(bundle, config)  # {"": the DiT} or {"high"/"low": expert}
    named = _trainable(models, config, bundle)
    opt = torch.optim.AdamW(
        named.values(), lr=config.optim.lr, betas=config.optim.betas,
        weight_decay=config.optim.weight_decay,
    )  # fmt: skip
    ema = EMA(named, config.ema_decay) if config.ema_decay else None
    data = make_clips(config, preset, progress)
    gen = torch.Generator().manual_seed(config.seed * 1000 + rank)  # noise, sigmas, coins
    rng = np.random.default_rng(config.seed * 1000 + rank)  # data position
    shift = config.shift or preset.shift
    injector = _make_injector(config, preset.shift, gen)
    start, window = 0, []  # window: losses since the last log line
    if resume and list_checkpoints(out):
        start, window = _restore(
            list_checkpoints(out)[-1], named, opt, ema, gen, rng, injector, rank,
            accelerator.num_processes,
        )  # fmt: skip
        log.info("resumed from step %d", start)
    if main:  # the logs describe this run up to its start: drop lines of steps to redo
        _truncate_logs(out, start)
    *prepared, opt = accelerator.prepare(*models.values(), opt)
    models = dict(zip(models, prepared, strict=True))
    velocity, dev = _velocity(bundle, models, accelerator.device), accelerator.device
    t0 = time.perf_counter()
    # one process stops cleanly between steps; several stop where they are (no collective)
    stops = interrupts.deferred() if accelerator.num_processes == 1 else nullcontext(None)
    with _progress(progress) as bar, stops as pending:
        task = bar.add_task("train", total=config.steps, completed=start, loss=float("nan"))
        for step in range(start, config.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, config)
            batch = data.sample(config.batch_size, rng, config.data.motion_frames)
            # on the model's device; noise and sigmas drawn on the CPU (checkpointed generator)
            x0, y, text = (t.to(dev) for t in prepare_batch(batch, bundle, config, gen))
            if injector is not None and injector.image_bank is not None:  # clean y, as generated
                _harvest(injector, velocity, bundle, batch, x0, y, text, step, gen)
            noise = torch.randn(x0.shape, generator=gen).to(dev)
            sigma = draw_sigmas(x0.shape[0], gen, shift, config, step, bundle.boundary).to(dev)
            if injector is None:  # clean flow matching (y maybe degraded by hand, target clean)
                x_t, target = flow.interpolate(x0, noise, sigma), flow.velocity_target(x0, noise)
                if config.augment is not None:  # blur / noise / colour on y[:, 4:, :k]
                    y = _augment(y, config, gen)
            else:  # ERFT: errors in noise, latent and y; target eps~ - x0 (clean x0)
                inj = _inject(injector, x0, noise, y, sigma, config)
                x_t, target, y = flow.interpolate(inj.x0_in, inj.noise, sigma), inj.target, inj.y
            v = _driven(_with_image_tokens(velocity, bundle, batch), batch, config, gen)(
                x_t, sigma, y, text
            )
            loss = _loss(v, target, sigma, y, config)
            if injector is not None:  # one-step errors -> replay memory (no extra forward)
                errors = injector.errors(inj, x_t, sigma, v.detach())
                if _share_errors(config, step, accelerator.num_processes):
                    errors = _gather_errors(accelerator, errors)
                injector.add(*errors)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(list(named.values()), config.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update()
            window.append(loss.item())
            bar.update(task, advance=1, loss=loss.item())
            done = step + 1
            if main and (done % config.log_every == 0 or done == config.steps):
                _log(out, done, window, lr_at(step, config), t0, start)
                if injector is not None:
                    _log_banks(out, done, injector)
            if done % config.log_every == 0:
                window.clear()
            stopping = pending is not None and pending.signum is not None  # SIGINT/SIGTERM
            if stopping or done % config.checkpoint_every == 0 or done == config.steps:
                _checkpoint(accelerator, out, done, config, named, opt, ema, gen, rng, injector,
                            window)  # fmt: skip
            if stopping:
                interrupts.ignore_signals()
                raise Interrupted(pending.signum).with_message(
                    f"checkpoint at step {done} in {out}; --resume continues"
                )
    final = out / "final"
    if main:
        unwrapped = {k: accelerator.unwrap_model(m) for k, m in models.items()}
        final = _export(out, unwrapped, ema, bundle, config)
        if injector is not None:
            from svi.erft.plot import plot_banks

            plot_banks(out)
    accelerator.wait_for_everyone()
    return final


def _trained_models(bundle: ModelBundle, config: TrainConfig) -> dict[str, torch.nn.Module]:
    """The DiT(s) the run trains, in train mode: ``{"": transformer}``, or with ``expert``
    (Wan 2.2 A14B) ``"high"`` (``transformer``) and/or ``"low"`` (``transformer_2``)."""
    if config.expert is None:
        models = {"": bundle.transformer}
    else:
        pair = {"high": bundle.transformer, "low": bundle.transformer_2}
        models = {k: m for k, m in pair.items() if config.expert in (k, "both")}
    for model in models.values():
        model.train()
    return models


def _trainable(
    models: dict[str, torch.nn.Module], config: TrainConfig, bundle: ModelBundle
) -> dict[str, torch.nn.Parameter]:
    """Attach the LoRA(s) (a LoRA run; else the whole DiT trains) and the condition
    modules (SVI-Talk / SVI-Dance, trained whole) and return the trained parameters by
    name, prefixed ``high.`` / ``low.`` per expert."""
    if config.lora_rank:
        from svi.lora import add_training_lora

        torch.manual_seed(config.seed)  # the LoRAs' random A init (high's, then low's)
        for model in models.values():
            model.requires_grad_(False)
            add_training_lora(model, config.lora_rank, config.lora_alpha or config.lora_rank)
            if config.data.condition is not None:  # after the LoRA: peft leaves them whole
                from svi.conditions.adapters import attach_condition, condition_parameters

                attach_condition(model, config.data.condition, bundle.codec,
                                 bundle.preset.family)  # fmt: skip
                for _, param in condition_parameters(model):
                    param.requires_grad_(True)
    return {f"{name}.{k}" if name else k: p for name, model in models.items()
            for k, p in model.named_parameters() if p.requires_grad}  # fmt: skip


def _velocity(bundle: ModelBundle, models: dict[str, torch.nn.Module], device) -> Experts:
    """The training DiT call; with ``expert`` both A14B experts switched at the boundary
    (an untrained one frozen, used only by rollouts)."""
    if "" in models:
        return Experts(models[""], prediction=bundle.preset.prediction)
    high = models["high"] if "high" in models else bundle.transformer.to(device)
    low = models["low"] if "low" in models else bundle.transformer_2.to(device)
    return Experts(high, low, bundle.boundary)


def draw_sigmas(
    batch: int,
    gen: torch.Generator,
    shift: float,
    config: TrainConfig,
    step: int,
    boundary: float | None,
) -> torch.Tensor:
    """Training sigmas (B,) from the shifted grid, drawn with ``gen``.

    Without ``expert``: the whole grid. ``"high"``: the grid's sigmas >= ``boundary``,
    ``"low"``: those below (the shifted distribution conditioned on the expert's range,
    as Wan 2.2 trains each expert). ``"both"``: the step's expert is drawn with the
    probability of its range (from ``seed`` and ``step`` alone, so every process picks
    the same expert and resume is exact), then its range as above - per sample the
    usual distribution, each batch routed to the expert of its sigmas.
    """
    if config.expert is None or boundary is None:
        return flow.sample_training_sigmas(batch, gen, shift)
    grid = flow.training_sigmas(shift=shift)
    n = flow.NUM_TRAIN_TIMESTEPS
    high = grid * n >= boundary * n  # as Experts.model_for decides
    expert = config.expert
    if expert == "both":
        coin = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        expert = "high" if torch.rand((), generator=coin) < high.float().mean() else "low"
    allowed = grid[high if expert == "high" else ~high]
    return allowed[torch.randint(0, allowed.numel(), (batch,), generator=gen)]


def _inject(injector, x0, noise, y, sigma, config: TrainConfig):
    """ERFT's injection; in the anchor-first layout (2.0 Pro) the image-error window
    skips latent frame 0 - the anchor, encoded clean at generation too - and starts at
    the motion latents (``image_offset`` then counts from frame 1)."""
    if config.data.padding != "anchor-first":
        return injector.inject(x0, noise, y, sigma)
    inj = injector.inject(x0, noise, y[:, :, 1:], sigma)
    return replace(inj, y=torch.cat([y[:, :, :1], inj.y], dim=2))


def _augment(y: torch.Tensor, config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """The handcrafted degradations of ``y``; anchor-first: from latent frame 1 on, as
    ERFT's image errors (:func:`_inject`)."""
    if config.data.padding != "anchor-first":
        return augment_y(y, config.augment, gen).y
    return torch.cat([y[:, :, :1], augment_y(y[:, :, 1:], config.augment, gen).y], dim=2)


def _harvest(injector, velocity, bundle, batch, x0, y, text, step: int, gen) -> None:
    """Every ``rollout_every`` steps: bank the error of one clip generated from the
    batch's first sample (clean y and text) with the inference sampler."""
    from svi.erft.rollout import rollout_error

    cfg, preset = injector.config, bundle.preset
    if step % cfg.rollout_every:
        return
    neg = bundle.text_encoder.encode([preset.negative_prompt]) if preset.cfg != 1.0 else None
    one = ClipBatch(batch.frames[:1], batch.anchors[:1], batch.prompts[:1])
    error = rollout_error(_with_image_tokens(velocity, bundle, one), x0[:1], y[:1], text[:1],
                          neg, steps=cfg.rollout_steps, shift=preset.shift, cfg=preset.cfg,
                          generator=gen)  # fmt: skip
    injector.image_bank.add(error, torch.zeros(1))


def _driven(velocity: Experts, batch: ClipBatch, config: TrainConfig, gen) -> Experts:
    """The call with the batch's audio / pose (SVI-Talk / SVI-Dance); each sample's
    condition is dropped (the zeros of the null condition) with ``condition_dropout``."""
    kind = config.data.condition
    if kind is None:
        return velocity
    from functools import partial

    from svi.conditions.drive import ClipDrive

    keep = torch.rand(len(batch.prompts), generator=gen) >= config.data.condition_dropout
    return partial(replace(velocity, drive=ClipDrive(kind, batch.condition)), keep=keep)


def _with_image_tokens(velocity: Experts, bundle: ModelBundle, batch: ClipBatch) -> Experts:
    """Wan 2.1 I2V also sees CLIP tokens of the first motion frame; others: unchanged."""
    if bundle.image_encoder is None:
        return velocity
    with torch.no_grad():
        states = bundle.image_encoder(batch.frames[:, :, 0])  # (B, N, D)
    return replace(velocity, image_states=states)


def _loss(
    v: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor,
    config: TrainConfig,
) -> torch.Tensor:  # fmt: skip
    """Flow-matching MSE per sample (over every latent frame, or with ``loss_frames =
    "generated"`` over those y's mask channels do not mark as given), then weighted."""
    err = F.mse_loss(v, target, reduction="none").mean(dim=(1, 3, 4))  # (B, f)
    if config.loss_frames == "generated":
        given = y[:, :MASK_CHANNELS].amax(dim=(1, 3, 4)) > 0.5  # (B, f)
        keep = (~given).to(err.dtype)
        per_sample = (err * keep).sum(1) / keep.sum(1).clamp_min(1.0)
    else:
        per_sample = err.mean(1)  # (B,)
    if config.weighting == "bell":
        weight = flow.timestep_weight(sigma * flow.NUM_TRAIN_TIMESTEPS)
        per_sample = per_sample * weight.to(per_sample.device)
    elif config.weighting == "x0":  # sigma^2 |v - v*|^2 = |x0_hat - x0|^2, x0_hat = x_t - sigma v
        per_sample = per_sample * sigma.to(per_sample.device) ** 2
    return per_sample.mean()


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.speed} it/s"),
        TimeRemainingColumn(), disable=not enabled,
    )  # fmt: skip


def _write_config(out: Path, config: TrainConfig, resume: bool) -> None:
    path = out / "config.json"
    payload = json.dumps(config.to_dict(), indent=1)
    if resume and path.exists() and not _same_config(path, config):
        raise SviError(f"{path} differs from this run's config; resume needs the same config")
    if not resume and list_checkpoints(out):
        raise SviError(f"{out} already holds checkpoints; pass --resume or use a new --out")
    path.write_text(payload, encoding="utf-8")


def _same_config(path: Path, config: TrainConfig) -> bool:
    """Whether the run's stored config is ``config``; keys added to the config since the
    run started (e.g. ``augment``) take their defaults, so older runs still resume."""
    try:
        stored = from_dict(TrainConfig, json.loads(path.read_text(encoding="utf-8")))
        return resolve_config(stored) == resolve_config(config)
    except (SviError, ValueError, TypeError):  # unknown keys, a malformed file
        return False


def _log(out: Path, step: int, window: list[float], lr: float, t0: float, start: int) -> None:
    elapsed = time.perf_counter() - t0
    rec = {
        "step": step,
        "loss": float(np.mean(window)) if window else float("nan"),
        "lr": lr,
        "steps_per_s": (step - start) / max(elapsed, 1e-9),
        "elapsed_s": elapsed,
    }
    with (out / "log.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
    log.debug("step %d loss %.4f", step, rec["loss"])


def _rng_state(gen: torch.Generator, rng: np.random.Generator) -> tuple[dict, dict]:
    return {"torch_generator": gen.get_state()}, {"numpy_rng": rng.bit_generator.state}


def _make_injector(config: TrainConfig, inference_shift: float, gen: torch.Generator):
    """The ERFT error injector with its two banks, or None for clean training.

    Banks are seeded alike on every process, so with shared errors they stay identical;
    ``spatial_pool`` and ``max_bytes`` (per bank) bound every bank's memory.
    """
    if config.erft is None:
        return None
    from svi.erft import ErrorBank, ErrorInjector, make_banks

    erft = config.erft
    bounds = {"max_bytes": erft.max_bytes, "spatial_pool": erft.spatial_pool}
    noise_bank, video_bank = make_banks(erft, inference_shift, seed=config.seed * 1000 + 7,
                                        **bounds)  # fmt: skip
    image_bank = None
    if erft.image_errors == "rollout":  # one bin: errors of whole generated clips
        image_bank = ErrorBank(torch.zeros(1), capacity=erft.capacity,
                               replacement=erft.replacement, seed=config.seed * 1000 + 9,
                               **bounds)  # fmt: skip
    return ErrorInjector(config.erft, noise_bank, video_bank, gen, image_bank)  # fmt: skip


def _share_errors(config: TrainConfig, step: int, processes: int) -> bool:
    """Whether this step's errors are all-gathered into every process's banks."""
    erft = config.erft
    if processes == 1 or erft is None or erft.share_errors == "never":
        return False
    if erft.share_errors == "always":
        return True
    if erft.share_errors == "warmup":
        return step < erft.share_warmup_steps
    raise SviError(f"unknown share_errors {erft.share_errors!r}; use warmup, always or never")


def _gather_errors(accelerator: Accelerator, errors: tuple) -> tuple:
    """All-gather (e_noise, e_video, sigma, keep) of every process, in rank order."""
    e_noise, e_video, sigma, keep = errors
    dev = accelerator.device
    gathered = accelerator.gather(
        (e_noise.to(dev), e_video.to(dev), sigma.to(dev), keep.to(dev, torch.float32))
    )
    e_noise, e_video, sigma, keep = (t.cpu() for t in gathered)
    return e_noise, e_video, sigma, keep > 0.5


def _log_banks(out: Path, step: int, injector) -> None:
    """Bank fill and RMS error per bin (``banks.jsonl``; plotted by ``plot_banks``)."""
    rec = {"step": step}
    for name, bank in _banks(injector):
        stats = bank.stats()
        rec[name] = {
            "sigma": [round(b.sigma, 4) for b in stats],
            "count": [b.count for b in stats],
            "rms": [round(b.mean_norm, 6) for b in stats],
            "bytes": bank.nbytes,
        }
    with (out / "banks.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")


def _banks(injector) -> list[tuple[str, object]]:
    """The injector's error banks by name (the rollout bank only where it is used)."""
    banks = [("noise", injector.noise_bank), ("video", injector.video_bank)]
    return banks + ([("image", injector.image_bank)] if injector.image_bank is not None else [])


def _bank_tensors(injector) -> dict[str, torch.Tensor]:
    if injector is None:
        return {}
    out = {}
    for name, bank in _banks(injector):
        out.update({f"bank.{name}.{k}": v for k, v in bank.state_dict().items()})
    return out


def _checkpoint(
    accelerator, out, step, config, named, opt, ema, gen, rng, injector, window=()
) -> None:
    """The main process writes the checkpoint; every other rank then adds its own RNG,
    data position and banks as ``extra-rank<r>.safetensors`` (+ json) to it. The losses
    not yet logged (``window``) go along, so a resumed run logs what this one would."""
    tensors, json_state = _rng_state(gen, rng)
    tensors.update(_bank_tensors(injector))
    if accelerator.is_main_process:
        layout = parallel.training_layout(accelerator.distributed_type.value,
                                          accelerator.num_processes)  # fmt: skip
        state = {"config": config.to_dict(), "log_window": list(window), "processes": layout,
                 **json_state}  # fmt: skip
        save_checkpoint(
            out, step, model={k: p.detach() for k, p in named.items()}, optimizer=opt,
            ema=ema.state_dict() if ema else None, extra=tensors, state=state,
            keep_last=config.keep_last,
        )  # fmt: skip
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        save_rank_extra(list_checkpoints(out)[-1], accelerator.process_index, tensors, json_state)
    accelerator.wait_for_everyone()


def _restore(
    path: Path, named, opt, ema, gen, rng, injector=None, rank: int = 0, processes: int = 1
) -> tuple[int, list[float]]:
    """Load checkpoint ``path`` into the run; returns its step and unlogged losses. Every
    process resumes its own RNG, data position and banks: the number of processes must
    be the one the checkpoint records (older checkpoints record none)."""
    saved = _processes_of(path) or processes
    if saved != processes:
        raise SviError(f"checkpoint {path} was written by {saved} processes and this run has "
                       f"{processes}: each process resumes its own RNG, data position and "
                       f"error banks; launch {saved} processes to resume")  # fmt: skip
    ck = load_checkpoint(path, rank)
    missing = set(named) - set(ck["model"])
    if missing:
        raise SviError(f"checkpoint {path} lacks {sorted(missing)[0]} (different model?)")
    with torch.no_grad():
        for k, p in named.items():
            p.copy_(ck["model"][k])
    optimizer_from_tensors(opt, ck["optimizer"], ck["state"]["optimizer"])
    if ema is not None and ck["ema"] is not None:
        ema.load_state_dict(ck["ema"])
    gen.set_state(ck["extra"]["torch_generator"])
    rng.bit_generator.state = ck["extra_json"]["numpy_rng"]
    if injector is not None:
        for name, bank in _banks(injector):
            prefix = f"bank.{name}."
            bank.load_state_dict(
                {k[len(prefix) :]: v for k, v in ck["extra"].items() if k.startswith(prefix)}
            )
    return int(ck["state"]["step"]), [float(x) for x in ck["state"].get("log_window", [])]


def _processes_of(path: Path) -> int | None:
    """The number of processes that wrote checkpoint ``path`` (None: not recorded, or a
    state file that :func:`load_checkpoint` will report)."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        return int(state["processes"]["world_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _truncate_logs(out: Path, step: int) -> None:
    """Keep the lines of ``log.jsonl`` and ``banks.jsonl`` up to ``step`` (the resumed
    checkpoint, 0 for a fresh start): the run logs the later steps again."""
    for name in ("log.jsonl", "banks.jsonl"):
        path = out / name
        if not path.exists():
            continue
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                record = json.loads(line)
            except ValueError:  # a line cut off by a crash
                continue
            ours = isinstance(record, dict) and isinstance(record.get("step"), int)
            if ours and record["step"] <= step and line.endswith("\n"):
                kept.append(line)
        write_atomic(path, "".join(kept).encode("utf-8"))


def _export(
    out: Path, models: dict[str, Any], ema: EMA | None, bundle: ModelBundle, config: TrainConfig
) -> Path:
    """Write ``out/final``: the EMA weights (if any) as a world model folder, or for a
    LoRA run the LoRA alone, in diffusers form and in the original-Wan/ComfyUI form;
    per expert (A14B) ``svi_lora_high`` / ``svi_lora_low`` (+ ``_wan``), metadata
    ``expert`` naming it."""
    if ema is not None:
        ema.copy_to_params()
    final = out / "final"
    if config.lora_rank:
        from svi.conditions.adapters import condition_config, condition_state_dict
        from svi.lora import lora_state_dict, save_lora

        final.mkdir(parents=True, exist_ok=True)
        meta = {"base_preset": bundle.preset.name, "base_model": bundle.source,
                "rank": config.lora_rank, "alpha": config.lora_alpha or config.lora_rank,
                "erft": config.erft is not None, "training": config.to_dict()}  # fmt: skip
        for name, model in models.items():
            stem = f"svi_lora_{name}" if name else "svi_lora"
            about = {**meta, "expert": name, "boundary": bundle.boundary} if name else meta
            sd, extras = lora_state_dict(model), condition_state_dict(model)
            if extras:  # a conditional adapter: its modules' weights and shapes go along
                about = {**about, "condition": condition_config(model)}
            for form, suffix in (("diffusers", ""), ("wan", "_wan")):
                save_lora(final / f"{stem}{suffix}.safetensors", sd, form=form, metadata=about,
                          extras=extras)  # fmt: skip
    else:
        info: dict[str, Any] = {"training": config.to_dict(), "steps": config.steps}
        save_world_model(final, models[""], bundle.preset, info)
    log.info("exported %s", final)
    return final


def checkpoint_model(ckpt: Path, use_ema: bool = True) -> ModelBundle:
    """A world-model bundle with the (EMA) weights of a base-training checkpoint."""
    from svi.models.bundle import world_text_encoder

    loaded = load_checkpoint(ckpt)
    config = loaded["state"]["config"]
    if config.get("lora_rank"):
        raise SviError(f"{ckpt} is a LoRA checkpoint; load its base model and the LoRA instead")
    preset = world_preset(from_dict(TrainConfig, config))
    model = build_world_transformer(preset)
    weights = loaded["ema"] if use_ema and loaded["ema"] is not None else loaded["model"]
    model.load_state_dict(weights)
    model.eval().requires_grad_(False)
    return ModelBundle(preset, model, PixelCodec(), world_text_encoder(preset), str(ckpt))
