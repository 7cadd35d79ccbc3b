"""GPU check of the memory modes (issue 25): full-size Wan DiTs with random weights.

Usage::

    python benchmarks/gpu_memory_check.py [--out FILE] [--budget-s 420]
        [--models wan2.1-i2v-14b-480p,wan2.2-i2v-a14b] [--modes none,model,group,...]
    python benchmarks/gpu_memory_check.py --tiny --out /tmp/check.json   # CPU, seconds

For each model and memory mode the DiT is built from the stored official config
(``svi/assets/wan-configs``) with random weights in the compute dtype (bf16 on a GPU),
once, as a host copy that every mode starts from; the mode is applied by
``svi.models.offload.place`` - the code path of ``svi generate`` - and the real sampler
(``svi.sampling.sample_latents``) takes Euler steps at 480 x 832, 81 frames (32760
tokens): ``--steps`` with CFG (batch 2: one step of the 50-step, CFG-5 default) and
``--steps`` without (batch 1: one step of ``lightx2v-4step``, 4 steps at CFG 1).

Recorded per mode: peak allocated and reserved GPU memory (from before the weights are
placed to the last step), seconds per step (median of the steps after the first with
CFG, of all steps without), the first step's extra time (onloading; tracing of the
prefetch order with streams), the largest difference of the final latents from mode
``none`` (offloading must leave them as they are; fp8 changes them), and the DiT-phase
memory ``svi.memory.predict`` predicts (weights + activations). Then the DiT seconds
per clip of the 50-step CFG-5 default and of the few-step setting: steps x seconds per
step, plus - with ``model`` offloading, which moves the whole DiT in once per clip (twice
on A14B, one expert each) - the first step's extra time.

Only the DiT runs (no text encoder, CLIP or VAE): the figures are the DiT phase of
``svi info --memory``. Before them, a quick pipeline check runs two clips of the tiny
real-class Wan folders of the tests through svi's whole clip loop under every mode on the
same device (frames equal to ``none``'s for offloading; fp8's difference).

Modes that would not finish inside ``--budget-s`` (the slowest mode so far as the
estimate) are skipped and listed. Written as JSON to ``--out``, else
``$OUT/gpu_memory_check.json``, else ``benchmarks/results/gpu_memory_check.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from svi.fewstep import get_few_step
from svi.memory import CONFIG_DIR, GIB, MODELS, predict
from svi.models.offload import MemoryMode, execution_device, place
from svi.sampling import Experts, sample_latents

log = logging.getLogger("gpu_memory_check")

MODELS_DEFAULT = ("wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b")
DEFAULT_STEPS = 50  # the Wan presets' steps at CFG 5 (svi.models.presets)
DEFAULT_CFG = 5.0
FEW_STEP = "lightx2v-4step"
MODES = {  # name -> MemoryMode; fp8 checked where the 22 GB target is
    "none": MemoryMode(),
    "model": MemoryMode(offload="model"),
    "group": MemoryMode(offload="group"),
    "sequential": MemoryMode(offload="sequential"),
    "group-fp8": MemoryMode(offload="group", weights_dtype="fp8"),
}
SIZE = {"height": 480, "width": 832, "frames": 81}
# --tiny: the same class at a CPU size (the DiT of tests/wan_fixtures.py, with CLIP)
TINY_CONFIG = {"patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 8,
               "in_channels": 36, "out_channels": 16, "text_dim": 32, "freq_dim": 16,
               "ffn_dim": 32, "num_layers": 2, "image_dim": 16, "added_kv_proj_dim": 16,
               "rope_max_seq_len": 32, "qk_norm": "rms_norm_across_heads",
               "cross_attn_norm": True}  # fmt: skip
TINY_SIZE = {"height": 32, "width": 32, "frames": 9}


def dit_config(model: str) -> dict:
    spec = MODELS[model]
    data = json.loads((CONFIG_DIR / f"{spec.transformer}.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def master_weights(config: dict, dtype: torch.dtype, device: torch.device) -> tuple[dict, int]:
    """Random weights of the DiT as a host copy, and its parameter count: built on
    ``device`` in ``dtype`` (fast on a GPU), the keep-in-fp32 modules in float32, as
    loading a checkpoint gives them."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            dit = WanTransformer3DModel.from_config(config)
    finally:
        torch.set_default_dtype(default)
    keep = set(dit._keep_in_fp32_modules or ())
    tensors = {}
    for name, t in dit.named_parameters():
        tensors[name] = t.detach().to(
            "cpu", torch.float32 if keep & set(name.split(".")) else dtype
        )
    params = sum(p.numel() for p in dit.parameters())
    del dit
    _free()
    return tensors, params


def fresh_dit(config: dict, master: dict):
    """A DiT whose weights are the host copy's (each mode replaces, never edits them);
    its rotary buffers are computed as loading computes them (float32, on the host)."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from diffusers import WanTransformer3DModel

    with init_empty_weights():
        dit = WanTransformer3DModel.from_config(config)
    for name, tensor in master.items():
        set_module_tensor_to_device(dit, name, "cpu", value=tensor, dtype=tensor.dtype)
    return dit.eval().requires_grad_(False)


def inputs(config: dict, size: dict, device: torch.device) -> dict:
    f = (size["frames"] - 1) // 4 + 1
    h, w = size["height"] // 8, size["width"] // 8
    g = torch.Generator().manual_seed(1)

    def randn(*shape):
        return torch.randn(shape, generator=g).to(device)

    image = randn(1, 257, config["image_dim"]) if config.get("image_dim") else None
    return {"noise": randn(1, 16, f, h, w), "y": randn(1, 20, f, h, w),
            "text": randn(1, 512, config["text_dim"]), "neg": randn(1, 512, config["text_dim"]),
            "image": image}  # fmt: skip


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_steps(dit, x: dict, steps: int, cfg: float) -> tuple[list[float], torch.Tensor]:
    """Seconds of each Euler step of the real sampler, and the final latents."""
    times, t0 = [], [0.0]

    def tick(_i: int) -> None:
        _sync()
        now = time.perf_counter()
        times.append(now - t0[0])
        t0[0] = now

    _sync()
    t0[0] = time.perf_counter()
    latents = sample_latents(Experts(dit, image_states=x["image"]), x["noise"], x["y"],
                             x["text"], x["neg"], steps=steps, shift=5.0, cfg=cfg,
                             on_step=tick)  # fmt: skip
    return times, latents.float().cpu()


def check_mode(name: str, config: dict, master: dict, x: dict, steps: int, experts: int,
               device: torch.device, predicted: float | None):  # fmt: skip
    """One memory mode: place the DiT, take steps with and without CFG, measure."""
    mode = MODES[name]
    dit = fresh_dit(config, master)
    bundle = SimpleNamespace(transformer=dit, transformer_2=None, text_encoder=None,
                             codec=SimpleNamespace(), image_model=None)  # fmt: skip
    _free()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    place(bundle, mode, device)
    placed = time.perf_counter() - start
    cfg_times, latents = run_steps(dit, x, steps, DEFAULT_CFG)
    plain_times, _ = run_steps(dit, x, steps, 1.0)
    step_cfg = statistics.median(cfg_times[1:] or cfg_times)
    step_plain = statistics.median(plain_times)
    extra = max(cfg_times[0] - step_cfg, 0.0)
    record = {"mode": name, **mode.record(device), "place_s": round(placed, 3),
              "seconds_per_step": {"cfg": round(step_cfg, 4), "no_cfg": round(step_plain, 4)},
              "first_step_extra_s": round(extra, 4),
              "step_times_s": {"cfg": [round(t, 4) for t in cfg_times],
                               "no_cfg": [round(t, 4) for t in plain_times]},
              "predicted_dit_gib": predicted}  # fmt: skip
    if device.type == "cuda":
        record["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
        record["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
    onload = extra * experts if mode.offload == "model" else 0.0  # the DiT moved in per clip
    few = get_few_step(FEW_STEP)
    default = onload + DEFAULT_STEPS * step_cfg
    fast = onload + few.steps * (step_plain if few.cfg == 1.0 else step_cfg)
    record["dit_seconds_per_clip"] = {f"{DEFAULT_STEPS} steps CFG {DEFAULT_CFG:g}":
                                      round(default, 3), FEW_STEP: round(fast, 3),
                                      "ratio": round(fast / default, 4)}  # fmt: skip
    del dit, bundle
    _free()
    return record, latents


def check_model(model: str, config: dict, size: dict, steps: int, modes: list[str],
                device: torch.device, deadline: float, slowest: list[float]) -> dict:  # fmt: skip
    if slowest and time.perf_counter() + 2 * max(slowest) > deadline:  # build + one mode
        log.warning("%s skipped: the time budget would be exceeded", model)
        return {"model": model, "size": size, "modes": [], "skipped": list(modes)}
    dtype = MemoryMode().compute_dtype(device)
    t0 = time.perf_counter()
    master, params = master_weights(config, dtype, device)
    log.info("%s: %.2f B parameters built in %.1f s", model, params / 1e9,
             time.perf_counter() - t0)  # fmt: skip
    x = inputs(config, size, device)
    experts = MODELS[model].experts if model in MODELS else 1
    result = {"model": model, "size": size, "dit_params": params, "modes": [], "skipped": []}
    reference = None
    for name in modes:
        estimate = max(slowest, default=0.0)
        if time.perf_counter() + estimate > deadline:
            log.warning("%s %s skipped: the time budget would be exceeded", model, name)
            result["skipped"].append(name)
            continue
        predicted = None
        if model in MODELS:
            p = predict(model, MODES[name], **size, cfg=DEFAULT_CFG)
            phase = next(ph for ph in p.phases if ph.component.startswith("DiT"))
            predicted = round((phase.weights + phase.activations) / GIB, 3)
        t = time.perf_counter()
        record, latents = check_mode(name, config, master, x, steps, experts, device, predicted)
        if reference is None and MODES[name] == MemoryMode():
            reference = latents
        if reference is not None:
            record["max_abs_diff_vs_none"] = float((latents - reference).abs().max())
        slowest.append(time.perf_counter() - t)
        log.info("%s %s: %s", model, name, json.dumps({k: record.get(k) for k in (
            "peak_allocated_gib", "predicted_dit_gib", "seconds_per_step",
            "max_abs_diff_vs_none")}))  # fmt: skip
        result["modes"].append(record)
    del master, x
    _free()
    return result


def pipeline_check(modes: list[str]) -> list[dict]:
    """Two clips of the tiny real-class Wan folders (``tests/wan_fixtures.py``) through
    svi's whole clip loop - text encoder, CLIP, DiT(s), VAE - under each memory mode, where
    svi runs them (the GPU when there is one): the uint8 frames' largest and mean
    difference from mode ``none``'s (0 for offloading), or the error."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from svi.pipeline import GenerationConfig, SVIPipeline, rollout
    from wan_fixtures import build_tiny_wan_folder

    records = []
    start = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    config = GenerationConfig(clips=2, motion_frames=1, cfg=2.0)
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b"):
            folder, reference = build_tiny_wan_folder(Path(tmp), variant), None
            for name in ["none", *(m for m in modes if m != "none")]:
                record = {"variant": variant, "mode": name}
                try:
                    pipe = SVIPipeline.from_pretrained(folder, memory=MODES[name], height=32,
                                                       width=32, num_frames=9, steps=2)  # fmt: skip
                    video, _ = rollout(pipe, start, ["a red disc", "a blue square"], config)
                except Exception as exc:  # recorded: the DiT checks still run
                    record["error"] = f"{type(exc).__name__}: {exc}"[:800]
                    log.exception("pipeline check %s %s failed", variant, name)
                else:
                    reference = video if reference is None else reference
                    diff = np.abs(video.astype(np.int16) - reference.astype(np.int16))
                    record.update(device=pipe.device.type, max_levels=int(diff.max()),
                                  mean_levels=round(float(diff.mean()), 4))  # fmt: skip
                records.append(record)
                log.info("pipeline check: %s", json.dumps(record))
    _free()
    return records


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--models", default=",".join(MODELS_DEFAULT))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--steps", type=int, default=3, help="Steps per batch size (>= 2).")
    parser.add_argument("--budget-s", type=float, default=420.0, help="Stop starting modes.")
    parser.add_argument("--tiny", action="store_true", help="A tiny DiT on the CPU (tests).")
    parser.add_argument("--no-pipeline-check", action="store_true",
                        help="Skip the tiny Wan folders' clip loop under every mode.")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    device = torch.device("cpu") if args.tiny else execution_device()
    if device.type != "cuda" and not args.tiny:
        raise SystemExit("no GPU visible: run with --tiny for the CPU check")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or args.steps < 2:
        raise SystemExit(f"unknown modes {unknown} (known: {', '.join(MODES)}) or --steps < 2")
    if args.tiny:
        jobs = [("tiny", TINY_CONFIG, TINY_SIZE)]
    else:
        jobs = [(m.strip(), dit_config(m.strip()), SIZE) for m in args.models.split(",")]
    deadline = start + args.budget_s
    slowest: list[float] = []
    pipeline = [] if args.no_pipeline_check else pipeline_check(modes)
    results = [check_model(name, config, size, args.steps, modes, device, deadline, slowest)
               for name, config, size in jobs]  # fmt: skip
    import diffusers

    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "diffusers": diffusers.__version__,
              "steps": args.steps, "wall_s": round(time.perf_counter() - start, 1),
              "pipeline_check": pipeline, "results": results}  # fmt: skip
    default = Path(__file__).parent / "results" / "gpu_memory_check.json"
    if os.environ.get("OUT"):
        default = Path(os.environ["OUT"]) / "gpu_memory_check.json"
    out = args.out or default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    log.info("written %s (%.0f s)", out, report["wall_s"])
    return report


if __name__ == "__main__":
    main()
