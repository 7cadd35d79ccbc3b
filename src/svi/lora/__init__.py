"""LoRAs on diffusers' ``WanTransformer3DModel``: load, merge, attach, train, save.

Three key forms exist in the wild (SVI_SPEC section 6) and one more is common:

- ``diffusers``: ``transformer.blocks.0.attn1.to_q.lora_A.weight`` (prefix optional);
  ``peft`` is the same with an adapter segment (``lora_A.default.weight``);
- ``wan`` (original Wan / ComfyUI): ``diffusion_model.blocks.0.self_attn.q.lora_A.weight``
  or ``lora_down`` / ``lora_up``, with optional ``.alpha`` scalars (scale = alpha / rank);
- ``svi`` (SVI's released files, a peft-wrapped original-Wan DiT):
  ``blocks.0.self_attn.q.lora_A.default.weight``, bare or under ``pipe.dit.`` / ``model.``;
- ``musubi`` (kohya-style): ``lora_unet_blocks_0_self_attn_q.lora_down.weight``.

Few-step distillation LoRAs (LightX2V, CausVid) also carry full-weight deltas -
``X.diff``, ``X.diff_b``, ``blocks.N.diff_m``, peft's ``lora_B.bias`` - added to a base
parameter at the LoRA's strength (:mod:`svi.lora.keys` cites the loaders they come
from); they are read into ``LoraContents.deltas`` and merged exactly.

Training wrappers are stripped in one place (:func:`svi.lora.keys._strip_prefixes`):
DeepSpeed / Lightning's ``_forward_module.``, DDP's ``module.``, ``torch.compile``'s
``_orig_mod.`` and FSDP's wrapper segments, in front of or inside the path.

Everything is normalised to ``{diffusers module path: LoraTensors(down, up, scale)}``.
diffusers' own Wan loader converts only ``diffusion_model.`` keys and loads nothing,
with a mere warning, for the SVI form; here every key must land on a module of the
model or the call fails with an :class:`SviError`.

A LoRA "file" is one safetensors file or a folder of ``*.safetensors`` shards, read as
one state dict (:func:`lora_files`). Besides LoRA pairs it may hold plain weights of
modules that the base DiT lacks, e.g. SVI-Dance's pose encoder ``dwpose_embedding.*``:
:func:`read_lora` returns them apart as ``extras`` and :func:`apply_lora` loads them
into the model's module of that name, or refuses the file when there is none.

- :mod:`~svi.lora.keys`: the key forms, :func:`parse_lora_key`, :func:`wan_module_name`
  and the plain weights of extra modules told apart from LoRA keys;
- :mod:`~svi.lora.normalize`: a state dict of any form to ``LoraTensors`` per module
  (:func:`normalize_lora_state_dict`), alphas from keys or a LoraConfig, and
  ``WeightDelta`` per parameter;
- :mod:`~svi.lora.files`: files and folders of shards, their header metadata and
  fingerprint (:func:`read_lora`, :func:`read_lora_metadata`, :func:`lora_fingerprint`,
  :func:`save_lora` in diffusers and Wan forms);
- :mod:`~svi.lora.apply`: :func:`apply_lora` (merge or peft adapter, extra modules'
  weights), :func:`set_lora_scale`, :func:`remove_lora`;
- :mod:`~svi.lora.training`: :func:`add_training_lora` on :data:`WAN_LORA_TARGETS`,
  :func:`lora_parameters`, :func:`lora_state_dict`.
"""

from __future__ import annotations

from svi.lora.apply import LoraReport, apply_lora, remove_lora, set_lora_scale
from svi.lora.files import (
    LoraContents,
    lora_files,
    lora_fingerprint,
    read_lora,
    read_lora_metadata,
    save_lora,
)
from svi.lora.keys import LoraKey, parse_lora_key, wan_module_name
from svi.lora.normalize import LoraTensors, WeightDelta, normalize_lora_state_dict
from svi.lora.training import (
    WAN_LORA_TARGETS,
    add_training_lora,
    lora_parameters,
    lora_state_dict,
)

__all__ = [
    "WAN_LORA_TARGETS",
    "LoraContents",
    "LoraKey",
    "LoraReport",
    "LoraTensors",
    "WeightDelta",
    "add_training_lora",
    "apply_lora",
    "lora_files",
    "lora_fingerprint",
    "lora_parameters",
    "lora_state_dict",
    "normalize_lora_state_dict",
    "parse_lora_key",
    "read_lora",
    "read_lora_metadata",
    "remove_lora",
    "save_lora",
    "set_lora_scale",
    "wan_module_name",
]
