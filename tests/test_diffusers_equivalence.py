"""svi's first clip equals diffusers' ``WanImageToVideoPipeline`` on the same inputs.

A first clip with M = 1 and zero padding is exactly Wan I2V: ``y`` = [image, 8 zero
frames] encoded + a mask on latent frame 0. Both sides run on the tiny folders of
``wan_fixtures`` with the same seed, prompt, negative prompt, steps, guidance and shift;
diffusers is given:

- the sampler: ``FlowMatchEulerDiscreteScheduler(shift=plan.shift)`` (static shift,
  not ``use_dynamic_shifting``) whose ``set_timesteps`` passes the uniform grid
  ``u = linspace(1, 0, steps + 1)[:-1]`` as ``sigmas`` (the scheduler shifts it and
  appends the final 0). The folder's own scheduler is UniPC (order 2, ``flow_shift``
  3), not Euler, and the default Euler ``set_timesteps`` grid is not svi's either: it
  spaces ``linspace(1, shift(1/1000), steps)`` - already shifted by ``__init__`` - and
  shifts it again (4 steps at shift 5: 1, 0.910, 0.717, 0.024 vs svi's 1, 0.9375,
  0.833, 0.625);
- the noise: ``latents=`` svi's ``clip_noise((1, *latent_shape), seed)``;
- the image as a PIL image of the clip size (``VideoProcessor`` does not resample it;
  its ``x / 255 * 2 - 1`` equals svi's ``x / 127.5 - 1`` to 1 float32 ulp);
- ``max_sequence_length=512`` (svi's umT5 length), ``num_frames=9``, 32x32.

Measured (CPU, float32, diffusers 0.42.1; Wan 2.1 at 4 / 20 steps, A14B at 14 / 20):

- decoded uint8 frames: max abs difference 0, once 1 (A14B, 14 steps: a value at a
  rounding edge); asserted <= 1;
- final latents: max abs difference 2.4e-6 .. 3.8e-6 (values up to ~4.4); asserted
  < 1e-4;
- DiT inputs: noisy latents at step 0 and the mask identical, later steps <= 2.3e-6;
  condition latents 6e-8 (the pixel scaling above); text states 4.8e-7 (diffusers
  runs umT5 on the prompt padded to 512 tokens under an attention mask, svi on the
  prompt alone); CLIP tokens identical;
- timesteps: ``1000 * sigma`` in float32 on both sides, equal up to 1.2e-4 (2 float32
  ulps, from the grids below); the same expert at every step; both run CFG as
  ``uncond + cfg * (cond - uncond)`` (svi batches the two branches into one DiT call,
  diffusers makes two calls).

Known differences that the settings here avoid:

- sigma grids: svi shifts ``u`` in float64 and rounds once, diffusers shifts in float32;
  the grids differ by up to 1.2e-7. Where a grid sigma equals an A14B boundary exactly
  (e.g. shift 3, 10k steps, boundary 0.875: svi 0.875, diffusers 0.87499994) the two
  then pick different experts for that step;
- the expert switch itself used to differ: svi compared the float32 sigma with the
  float64 ratio (``0.9f < 0.9``: low-noise expert), diffusers compares ``t = 1000 *
  sigma`` in float32 with ``ratio * 1000`` (``900.0 >= 900.0``: high-noise expert) -
  e.g. shift 5 at 14 / 28 / 42 steps, shift 3 at 4k steps, shift 1 at 10k steps.
  ``Experts.model_for`` now compares as diffusers does; the A14B test runs 14 steps at
  shift 5, where grid sigma 5 is exactly the boundary 0.9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
from PIL import Image

import svi.pipeline as svi_pipeline
from svi import flow
from svi.pipeline import GenerationConfig, SVIPipeline, rollout
from svi.pixels import to_signed
from svi.sampling import clip_noise
from wan_fixtures import build_tiny_wan_folder

WAN21, A14B = "wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b"
SIZE, FRAMES = 32, 9
PROMPT = "a red disc moves left over a blue checkerboard"


class SviGridEuler(FlowMatchEulerDiscreteScheduler):
    """diffusers' flow-matching Euler on svi's grid: the uniform ``u`` is passed as
    ``sigmas`` and shifted by the scheduler itself (``shift``, static)."""

    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
        u = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
        super().set_timesteps(sigmas=u.tolist(), device=device)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diffusers-eq")
    return {v: build_tiny_wan_folder(root, v) for v in (WAN21, A14B)}


def _experts(high: torch.nn.Module, low: torch.nn.Module | None) -> dict[str, torch.nn.Module]:
    return {"high": high} if low is None else {"high": high, "low": low}


def _record_dit(modules: dict[str, torch.nn.Module], log: list) -> list:
    """Forward pre-hooks logging (expert name, kwargs) of every DiT call."""

    def hook(name):
        def record(_module, _args, kwargs):
            tensors = {k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)}
            log.append((name, tensors))

        return record

    return [m.register_forward_pre_hook(hook(n), with_kwargs=True) for n, m in modules.items()]


def _run_both(folder: Path, steps: int, cfg: float, seed: int, monkeypatch) -> dict:
    """One first clip from svi and from diffusers; frames, latents and DiT calls of both."""
    pipe = SVIPipeline.from_pretrained(folder, height=SIZE, width=SIZE, num_frames=FRAMES)
    config = GenerationConfig(  # CLIP input as the diffusers pipeline prepares it
        clips=1, motion_frames=1, padding="zeros", steps=steps, cfg=cfg, seed=seed,
        clip_preprocess="diffusers",
    )  # fmt: skip
    plan = pipe.plan(config, [PROMPT])
    image = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    b = pipe.bundle

    sampled, real = [], svi_pipeline.sample_latents

    def sample_latents(*args, **kwargs):  # keeps svi's final latents
        sampled.append(real(*args, **kwargs))
        return sampled[-1]

    monkeypatch.setattr(svi_pipeline, "sample_latents", sample_latents)
    svi_calls: list = []
    hooks = _record_dit(_experts(b.transformer, b.transformer_2), svi_calls)
    try:
        _, clips = rollout(pipe, image[None], [PROMPT], plan)
    finally:
        for h in hooks:
            h.remove()

    ref = WanImageToVideoPipeline.from_pretrained(folder, scheduler=SviGridEuler(shift=plan.shift))
    ref.set_progress_bar_config(disable=True)
    ref_calls: list = []
    hooks = _record_dit(_experts(ref.transformer, ref.transformer_2), ref_calls)
    ref_latents = []
    try:
        out = ref(
            image=Image.fromarray(image),
            prompt=PROMPT,
            negative_prompt=plan.negative_prompt,
            height=SIZE,
            width=SIZE,
            num_frames=FRAMES,
            num_inference_steps=plan.steps,
            guidance_scale=plan.cfg,
            latents=clip_noise((1, *b.latent_shape), plan.clip_seed(0)),
            max_sequence_length=b.text_encoder.max_length,
            output_type="np",
            callback_on_step_end=lambda p, i, t, kw: ref_latents.append(kw["latents"]) or {},
            callback_on_step_end_tensor_inputs=["latents"],
        ).frames[0]
    finally:
        for h in hooks:
            h.remove()
    return {
        "plan": plan,
        "image": image,
        "ref": ref,
        "frames": clips[0].frames,
        "ref_frames": (out * 255).round().clip(0, 255).astype(np.uint8),  # svi's to_uint8
        "latents": sampled[0],
        "ref_latents": ref_latents[-1],
        "calls": svi_calls,
        "ref_calls": ref_calls,
    }


def _max_diff(a, b) -> float:
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


def _check_equivalent(r: dict) -> None:
    plan, calls, ref_calls = r["plan"], r["calls"], r["ref_calls"]
    # the same DiT calls: svi batches [cond, uncond], diffusers calls cond then uncond
    assert len(ref_calls) == 2 * len(calls) == 2 * plan.steps
    first, cond, uncond = calls[0][1], ref_calls[0][1], ref_calls[1][1]
    x, y = first["hidden_states"], cond["hidden_states"]  # (B, 16 + 4 + 16, f, h, w)
    assert torch.equal(x[:1, :20], y[:, :20])  # noisy latents and the mask
    assert _max_diff(x[:1, 20:], y[:, 20:]) < 1e-6  # condition latents
    assert torch.equal(x[:1], x[1:])  # y identical in both CFG branches
    assert _max_diff(first["encoder_hidden_states"][:1], cond["encoder_hidden_states"]) < 1e-5
    assert _max_diff(first["encoder_hidden_states"][1:], uncond["encoder_hidden_states"]) < 1e-5
    if "encoder_hidden_states_image" in cond:  # Wan 2.1: CLIP tokens of the image
        image_states = first["encoder_hidden_states_image"]
        assert _max_diff(image_states[:1], cond["encoder_hidden_states_image"]) < 1e-6
    # timesteps and experts, step by step
    for i, (name, kw) in enumerate(calls):
        for ref_name, ref_kw in ref_calls[2 * i : 2 * i + 2]:
            assert ref_name == name, f"step {i}: svi ran the {name} expert, diffusers {ref_name}"
            # the grids differ by float32 ulps (see the module doc): 6.1e-5 at t in [512, 1024)
            assert _max_diff(kw["timestep"], ref_kw["timestep"].expand(2)) <= 2.5e-4
    # the result
    assert _max_diff(r["latents"], r["ref_latents"]) < 1e-4
    diff = np.abs(r["frames"].astype(int) - r["ref_frames"].astype(int))
    assert r["frames"].shape == r["ref_frames"].shape == (FRAMES, SIZE, SIZE, 3)
    assert diff.max() <= 1, f"uint8 frames differ by up to {diff.max()}"


@pytest.mark.parametrize(("steps", "shift"), [(4, 5.0), (14, 5.0), (50, 3.0), (40, 1.0)])
def test_the_diffusers_scheduler_runs_svis_sigma_grid(steps: int, shift: float) -> None:
    sched = SviGridEuler(shift=shift)
    sched.set_timesteps(steps)
    ours = flow.inference_sigmas(steps, shift)
    assert sched.sigmas.shape == ours.shape == (steps + 1,) and sched.sigmas[-1] == 0.0
    assert _max_diff(sched.sigmas, ours) <= 1.2e-7  # float32 vs float64-then-rounded shift
    assert torch.equal(sched.timesteps, sched.sigmas[:-1] * flow.NUM_TRAIN_TIMESTEPS)
    default = FlowMatchEulerDiscreteScheduler(shift=shift)
    default.set_timesteps(steps)  # spaced in already-shifted sigmas, then shifted again
    assert _max_diff(default.sigmas, ours) > 0.02


def test_video_processor_keeps_a_clip_sized_image(folders) -> None:
    ref = WanImageToVideoPipeline.from_pretrained(folders[A14B])
    image = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    got = ref.video_processor.preprocess(Image.fromarray(image), height=SIZE, width=SIZE)
    assert _max_diff(got[0], to_signed(image)) <= 1.2e-7


def test_wan21_first_clip_equals_diffusers(folders, monkeypatch) -> None:
    r = _run_both(folders[WAN21], steps=4, cfg=5.0, seed=7, monkeypatch=monkeypatch)
    assert r["plan"].shift == 5.0 and r["ref"].transformer.config.image_dim is not None
    _check_equivalent(r)


def test_a14b_first_clip_equals_diffusers(folders, monkeypatch) -> None:
    # 14 steps at shift 5: grid sigma 5 is exactly the boundary 0.9 (high-noise expert)
    r = _run_both(folders[A14B], steps=14, cfg=3.5, seed=11, monkeypatch=monkeypatch)
    assert r["plan"].shift == 5.0 and r["ref"].config.boundary_ratio == 0.9
    names = [name for name, _ in r["calls"]]
    assert names == ["high"] * 6 + ["low"] * 8
    _check_equivalent(r)
