"""Tiny Wan folders of every supported layout, built offline from configs.

``build_tiny_wan_folder(tmp_path, variant)`` assembles a real diffusers pipeline
(``WanImageToVideoPipeline`` or, for TI2V 5B, ``WanPipeline(expand_timesteps=True)``, as
diffusers' convert script does) from tiny random components and ``save_pretrained``s it,
so the folder has exactly the layout and ``model_index.json`` of a real checkpoint.

Sizes: text dim 32 (umT5, 1 layer), DiT 1 layer x 2 heads x 8, VAE base_dim 8 with Wan's
compression (8x space / 4x time, or 16x / 4x and z_dim 48 for TI2V), CLIP 16-d with 17
image tokens (32x32 images, 8x8 patches). Latent channels are the real ones (16 / 48).
"""

from __future__ import annotations

from pathlib import Path

import torch

TEXT_DIM = 32
CLIP_DIM = 16
CLIP_IMAGE_SIZE = 32
CLIP_TOKENS = (CLIP_IMAGE_SIZE // 8) ** 2 + 1
HEADS, HEAD_DIM = 2, 8
# the tiny tokenizer's whole vocabulary (anything else maps to <unk>)
TINY_WORDS = """
a an the and over under of in on to is red blue green
yellow purple white black disc square circle triangle bounces moves turns enters leaves left
right lights dim bright checkerboard background scene face mouth opens dancer figure stick dances
""".split()  # noqa: SIM905

VARIANTS = ("wan2.1-i2v-14b-480p", "wan2.1-i2v-14b-720p", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b")


def tiny_tokenizer():
    """A word-level tokenizer with umT5's specials (<pad>=0, </s>=1 appended, <unk>=2)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in TINY_WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_umt5(vocab_size: int = 64):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        pad_token_id=0,
        eos_token_id=1,
    )
    return UMT5EncoderModel(config).eval()


def tiny_wan_vae(*, ti2v: bool = False):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    z = 48 if ti2v else 16
    mean = [0.05 * ((i % 7) - 3) for i in range(z)]
    std = [0.6 + 0.1 * (i % 5) for i in range(z)]
    extra = (
        {"in_channels": 12, "out_channels": 12, "is_residual": True, "patch_size": 2}
        if ti2v
        else {}
    )
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=z,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        latents_mean=mean,
        latents_std=std,
        scale_factor_spatial=16 if ti2v else 8,
        scale_factor_temporal=4,
        **extra,
    ).eval()


def tiny_wan_transformer(in_channels: int, out_channels: int, *, clip: bool, seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=TEXT_DIM,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
        image_dim=CLIP_DIM if clip else None,
        added_kv_proj_dim=HEADS * HEAD_DIM if clip else None,
        rope_max_seq_len=32,
    ).eval()


def tiny_clip():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=CLIP_DIM,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=CLIP_IMAGE_SIZE,
        patch_size=8,
        projection_dim=CLIP_DIM,
    )
    return CLIPVisionModel(config).eval()


def tiny_clip_processor():
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(crop_size=CLIP_IMAGE_SIZE, size={"shortest_edge": CLIP_IMAGE_SIZE})


def build_tiny_wan_folder(tmp_path: Path, variant: str) -> Path:
    """Save a tiny ``variant`` folder under ``tmp_path`` (its name carries the variant)."""
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant}")
    out = Path(tmp_path) / f"tiny-{variant}"
    tokenizer = tiny_tokenizer()
    common = {
        "tokenizer": tokenizer,
        "text_encoder": tiny_umt5(vocab_size=len(tokenizer)),
        "scheduler": UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        ),
    }
    if variant == "wan2.2-ti2v-5b":
        pipe = WanPipeline(
            vae=tiny_wan_vae(ti2v=True),
            transformer=tiny_wan_transformer(48, 48, clip=False),
            expand_timesteps=True,
            **common,
        )
    elif variant == "wan2.2-i2v-a14b":
        pipe = WanImageToVideoPipeline(
            vae=tiny_wan_vae(),
            transformer=tiny_wan_transformer(36, 16, clip=False, seed=0),
            transformer_2=tiny_wan_transformer(36, 16, clip=False, seed=1),
            boundary_ratio=0.9,
            **common,
        )
    else:
        pipe = WanImageToVideoPipeline(
            vae=tiny_wan_vae(),
            transformer=tiny_wan_transformer(36, 16, clip=True),
            image_encoder=tiny_clip(),
            image_processor=tiny_clip_processor(),
            **common,
        )
    pipe.save_pretrained(out, safe_serialization=True)
    return out
