"""The few-step setting of a distillation LoRA (``--few-step lightx2v-4step``): its
numbers, its place among the defaults, its cost, and a run end to end on a tiny Wan
folder with an SVI LoRA and a LightX2V-style LoRA stacked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

from lora_fixtures import lightx2v_lora, svi_lora
from svi import flow
from svi.cli import main
from svi.errors import SviError
from svi.fewstep import FEW_STEP, get_few_step, markdown_table
from svi.manifest import manifest_path
from svi.models.presets import get_preset
from svi.pipeline import SVIPipeline
from svi.plan import GenerationConfig, resolve_plan
from svi.sampling import Experts, dit_passes
from wan_fixtures import build_tiny_wan_folder

WAN21 = "wan2.1-i2v-14b-480p"


def _plan(preset: str = WAN21, **config):
    return resolve_plan(GenerationConfig(**config), get_preset(preset), temporal_factor=4,
                        grid=16, multi_prompt=False)  # fmt: skip


def test_lightx2v_4step_is_what_its_authors_publish() -> None:
    f = get_few_step("lightx2v-4step")
    assert (f.steps, f.cfg, f.shift) == (4, 1.0, 5.0)
    assert "configs/distill/wan21/wan_i2v_distill_lora_4step_cfg.json" in f.source
    assert "lightx2v-4step" in markdown_table()
    with pytest.raises(SviError, match="unknown few-step setting 'lcm'; known: lightx2v-4step"):
        get_few_step("lcm")


def test_svis_grid_is_lightx2vs_denoising_step_list() -> None:
    """LightX2V's step-distill scheduler: the shifted ``linspace(1, 0, 1001)[:-1]`` grid at
    ``1000 - t`` for t in ``denoising_step_list`` [1000, 750, 500, 250], then 0."""
    shift = get_few_step("lightx2v-4step").shift
    grid = torch.linspace(1.0, 0.0, 1001)[:-1]
    grid = shift * grid / (1 + (shift - 1) * grid)
    theirs = grid[[1000 - t for t in (1000, 750, 500, 250)]]
    ours = flow.inference_sigmas(4, shift)
    torch.testing.assert_close(ours[:-1], theirs, atol=1e-7, rtol=0)
    assert ours[-1] == 0.0


@pytest.mark.parametrize("boundary", [0.875, 0.9])
def test_a14b_switches_expert_after_two_steps_as_lightx2v(boundary: float) -> None:
    """Their Wan 2.2 config: ``boundary_step_index`` 2 (high, high, low, low)."""
    high, low = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    experts = Experts(high, low, boundary)
    sigmas = flow.inference_sigmas(4, get_few_step("lightx2v-4step").shift)[:-1]
    assert [experts.model_for(s.expand(1)) for s in sigmas] == [high, high, low, low]


def test_it_sets_steps_cfg_shift_over_a_variant_and_flags_override_it() -> None:
    base = _plan(variant="shot")
    assert (base.steps, base.cfg, base.shift, base.few_step) == (50, 5.0, 5.0, None)
    fast = _plan(variant="shot", few_step="lightx2v-4step")
    assert (fast.steps, fast.cfg, fast.shift, fast.few_step) == (4, 1.0, 5.0, "lightx2v-4step")
    assert (fast.motion_frames, fast.padding) == (base.motion_frames, base.padding)
    assert _plan(few_step="lightx2v-4step", steps=6).steps == 6
    assert _plan("wan2.2-i2v-a14b", variant="2.0-pro", few_step="lightx2v-4step").cfg == 1.0
    with pytest.raises(SviError, match="unknown few-step setting"):
        _plan(few_step="8step")


def test_dit_work_per_clip_is_at_most_a_tenth_of_the_default() -> None:
    default = _plan(variant="shot")  # 50 steps, CFG 5: two branches per step
    fast = _plan(variant="shot", few_step="lightx2v-4step")  # 4 steps, CFG 1: one
    assert dit_passes(default.steps, default.cfg) == 100
    assert dit_passes(fast.steps, fast.cfg) == 4
    assert dit_passes(fast.steps, fast.cfg) <= dit_passes(default.steps, default.cfg) / 10
    assert all(f.cfg == 1.0 for f in FEW_STEP.values())


def test_a_few_step_run_end_to_end(tmp_path: Path, monkeypatch, capsys) -> None:
    """``svi generate --few-step`` on a tiny Wan 2.1 folder with an SVI LoRA and a
    LightX2V-style LoRA (pairs + full-weight deltas) stacked: the DiT runs exactly the
    predicted passes and the manifest records the setting and both LoRAs."""
    from PIL import Image

    folder = build_tiny_wan_folder(tmp_path, WAN21)
    dit = SVIPipeline.from_pretrained(folder).bundle.transformer
    files = {}
    for name, (sd, _, _) in (("svi", svi_lora(dit, 1)), ("lx", lightx2v_lora(dit, 2))):
        files[name] = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(files[name]))
    image = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), np.uint8)).save(image)
    rows: list[int] = []
    forward = WanTransformer3DModel.forward

    def counting(self, hidden_states, *args, **kwargs):
        rows.append(hidden_states.shape[0])
        return forward(self, hidden_states, *args, **kwargs)

    monkeypatch.setattr(WanTransformer3DModel, "forward", counting)
    out = tmp_path / "fast.mp4"
    argv = ["generate", "--model", str(folder), "--image", str(image), "--prompt", "a red disc",
            "--height", "32", "--width", "32", "--num-frames", "9", "--clips", "2",
            "--few-step", "lightx2v-4step", "--lora", str(files["svi"]), "--lora-scale", "0.8",
            "--lora", str(files["lx"]), "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    inputs = json.loads(manifest_path(out).read_text())["inputs"]
    plan = inputs["plan"]
    assert (plan["steps"], plan["cfg"], plan["shift"]) == (4, 1.0, 5.0)
    assert plan["few_step"] == "lightx2v-4step" and plan["clip_preprocess"] == "official"
    assert [(r["path"], r["scale"]) for r in inputs["loras"]] == [
        (str(files["svi"]), 0.8),
        (str(files["lx"]), 1.0),
    ]
    assert sum(rows) == 2 * dit_passes(4, 1.0) == 8  # 2 clips x 4 steps x 1 branch
