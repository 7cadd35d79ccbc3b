"""Few-step settings: the sampler numbers published with distillation LoRAs, one table.

A step- and CFG-distillation LoRA (LightX2V's for Wan 2.1 I2V and Wan 2.2 A14B) lets
Wan sample a clip in a few steps without classifier-free guidance. People merge it
beside the SVI LoRA, each at its own strength; on Wan 2.2 A14B one file per expert::

    svi generate --model Wan2.1-I2V-14B-480P-Diffusers --variant shot --few-step lightx2v-4step \\
      --lora svi-shot.safetensors --lora wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors ...
    svi generate --model Wan2.2-I2V-A14B-Diffusers --variant 2.0-pro --few-step lightx2v-4step \\
      --lora SVI_..._high_noise_lora_v2.0_pro.safetensors \\
      --lora wan2.2_i2v_A14b_high_noise_lora_rank64_lightx2v_4step_1022.safetensors \\
      --lora-low SVI_..._low_noise_lora_v2.0_pro.safetensors \\
      --lora-low wan2.2_i2v_A14b_low_noise_lora_rank64_lightx2v_4step_1022.safetensors ...

``--few-step NAME`` makes the row's steps, CFG and shift the defaults (over a
variant's); ``--steps`` / ``--cfg`` still override (:func:`svi.plan.resolve_plan`). The
plan records the name. It does not load the LoRA: the files are the user's.

Source of ``lightx2v-4step`` (ModelTC/LightX2V, the distillation LoRAs' authors):
``configs/distill/wan21/wan_i2v_distill_lora_4step_cfg.json`` (Wan 2.1 I2V 480P with
``lightx2v/Wan2.1-Distill-Loras/wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors`` at
strength 1.0) and ``configs/distill/wan22/wan_moe_i2v_distill_with_lora.json`` (Wan 2.2
I2V A14B with the ``..._high_noise_...`` / ``..._low_noise_..._4step_1022`` pair at
strength 1.0): ``infer_steps`` 4, ``sample_shift`` 5, ``enable_cfg`` false (so CFG 1:
one DiT pass per step), ``denoising_step_list`` [1000, 750, 500, 250]. Their scheduler
(``lightx2v/models/schedulers/wan/step_distill/scheduler.py``) takes those entries of
the shifted ``linspace(1, 0, 1001)`` grid - u = 1, 0.75, 0.5, 0.25, exactly svi's
4-step grid at shift 5 (:func:`svi.flow.inference_sigmas`), sigmas 1, 0.9375, 0.8333,
0.625, then 0. On A14B their ``boundary_step_index`` 2 switches experts after two steps;
svi's boundary (0.875-0.9) does the same on this grid. One difference stays: for Wan 2.1
their step re-noises the predicted clean latent with fresh noise (``step_post``), where
svi takes Euler steps, as their Wan 2.2 scheduler does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from svi.errors import SviError

__all__ = ["FEW_STEP", "FewStep", "get_few_step", "markdown_table"]


@dataclass(frozen=True)
class FewStep:
    """One distillation LoRA's published sampler numbers."""

    name: str
    description: str
    source: str
    steps: int
    cfg: float
    shift: float
    loras: tuple[str, ...]  # the files it was published with (strength 1.0 each)

    def to_dict(self) -> dict:
        return asdict(self)


_LIGHTX2V = "ModelTC/LightX2V configs/distill/wan21/wan_i2v_distill_lora_4step_cfg.json, "
_LIGHTX2V += "configs/distill/wan22/wan_moe_i2v_distill_with_lora.json"

FEW_STEP: dict[str, FewStep] = {
    f.name: f
    for f in (
        FewStep(
            "lightx2v-4step",
            "LightX2V step + CFG distillation LoRA: 4 steps, no guidance",
            _LIGHTX2V,
            steps=4,
            cfg=1.0,
            shift=5.0,
            loras=(
                "lightx2v/Wan2.1-Distill-Loras/wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors",
                "lightx2v/Wan2.2-Distill-Loras/"
                "wan2.2_i2v_A14b_{high,low}_noise_lora_rank64_lightx2v_4step_1022.safetensors",
            ),
        ),
    )
}


def get_few_step(name: str) -> FewStep:
    """The few-step setting ``name``; a clear error lists the known ones."""
    try:
        return FEW_STEP[name]
    except KeyError:
        raise SviError(f"unknown few-step setting {name!r}; known: {', '.join(FEW_STEP)}") from None


def markdown_table() -> str:
    """Every few-step setting, one row each (docs)."""
    rows = ["| setting | steps | CFG | shift | LoRA files | source |", "|---|---|---|---|---|---|"]
    for f in FEW_STEP.values():
        files = "<br>".join(f"`{x}`" for x in f.loras)
        rows.append(f"| {f.name} | {f.steps} | {f.cfg:g} | {f.shift:g} | {files} | {f.source} |")
    return "\n".join(rows)
