"""Load real Wan 2.1 / 2.2 image-to-video models from local diffusers-format folders.

Layouts (``model_index.json`` at the root, one subfolder per component), as written by
diffusers' ``scripts/convert_wan_to_diffusers.py`` and ``pipe.save_pretrained``:

===================== ======================================================= ============
variant               components                                              conditioning
===================== ======================================================= ============
wan2.1-i2v-14b-480p   transformer, vae, text_encoder, tokenizer,              concat
wan2.1-i2v-14b-720p   image_encoder (CLIP vision), image_processor            concat
wan2.2-i2v-a14b       transformer (high noise), transformer_2 (low noise),    concat
                      vae, text_encoder, tokenizer; boundary_ratio 0.9
wan2.2-ti2v-5b        transformer, vae (z_dim 48, 16x spatial), text_encoder, latent_replace
                      tokenizer; saved as ``WanPipeline`` with expand_timesteps
===================== ======================================================= ============

Facts taken from diffusers 0.42 (``pipelines/wan/pipeline_wan_i2v.py``):

- two experts: ``boundary_timestep = boundary_ratio * num_train_timesteps``; the step
  uses ``transformer`` when ``t >= boundary_timestep`` (high noise) and ``transformer_2``
  below it (``__call__``, denoising loop). :class:`svi.sampling.Experts` switches so.
- ``concat``: the DiT input is ``cat([noisy latent, mask(4) + VAE latent of the
  conditioning video], dim=1)`` (``prepare_latents``), 16 + 20 = 36 channels.
- ``latent_replace`` (``expand_timesteps=True``, TI2V 5B): only the image is encoded
  (one latent frame); the DiT input is ``(1 - m) * image_latent + m * noisy`` with
  ``m = 0`` on latent frame 0, and the timestep becomes per token (0 on frame 0's
  tokens, ``t`` elsewhere: shape ``(B, seq_len)``). The same replacement is applied to
  the final latents before decoding.
- Only a transformer with ``image_dim`` set (Wan 2.1 I2V) takes CLIP image tokens:
  ``hidden_states[-2]`` of the CLIP vision model (``encode_image``). Such a transformer
  assumes exactly 512 text tokens. The frame reaches CLIP as the authors' code prepares
  it (whole frame, bicubic, no crop) unless ``"diffusers"`` preprocessing is asked for
  (the pipeline's ``CLIPImageProcessor``: centre crop) - :mod:`svi.models.clip`.

The 480p and 720p Wan 2.1 checkpoints share one architecture; :func:`detect_wan_variant`
tells them apart only by a "720" in the folder name.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from svi.errors import SviError
from svi.models.codec import WanVAECodec
from svi.models.text import UMT5TextEncoder

logger = logging.getLogger(__name__)

__all__ = [
    "WAN_LAYOUTS",
    "WanComponents",
    "WanLayout",
    "detect_wan_variant",
    "load_wan_folder",
    "read_model_index",
    "validate_wan_folder",
]

A14B_BOUNDARY_RATIO = 0.9  # diffusers' convert script, Wan 2.2 I2V A14B
WAN_TEXT_TOKENS = 512

_CLIP_CLASSES = ("CLIPVisionModel", "CLIPVisionModelWithProjection")


@dataclass(frozen=True)
class WanLayout:
    """What a Wan variant's folder must hold and how its DiT is conditioned."""

    name: str
    structure: str  # variants with one structure differ only in weights (480p / 720p)
    components: tuple[str, ...]
    conditioning: str  # "concat" | "latent_replace"
    two_experts: bool = False
    clip: bool = False


_CORE = ("transformer", "vae", "text_encoder", "tokenizer")
WAN_LAYOUTS: dict[str, WanLayout] = {
    layout.name: layout
    for layout in (
        WanLayout(
            "wan2.1-i2v-14b-480p",
            "wan2.1-i2v",
            (*_CORE, "image_encoder", "image_processor"),
            "concat",
            clip=True,
        ),
        WanLayout(
            "wan2.1-i2v-14b-720p",
            "wan2.1-i2v",
            (*_CORE, "image_encoder", "image_processor"),
            "concat",
            clip=True,
        ),
        WanLayout(
            "wan2.2-i2v-a14b",
            "wan2.2-i2v-a14b",
            (*_CORE, "transformer_2"),
            "concat",
            two_experts=True,
        ),
        WanLayout("wan2.2-ti2v-5b", "wan2.2-ti2v-5b", _CORE, "latent_replace"),
    )
}


@dataclass
class WanComponents:
    """Everything :func:`load_wan_folder` loaded, ready for our own sampler/trainer."""

    variant: str
    folder: Path
    transformer: Any  # diffusers.WanTransformer3DModel (high-noise expert for A14B)
    transformer_2: Any | None  # low-noise expert (A14B only)
    boundary_ratio: float | None
    vae: WanVAECodec  # the codec; the raw AutoencoderKLWan is ``vae.vae``
    text_encoder: UMT5TextEncoder
    image_encoder: Any | None  # transformers CLIP vision model (Wan 2.1 only)
    image_processor: Any | None
    conditioning: str  # "concat" | "latent_replace"
    model_index: dict[str, Any] = field(repr=False)
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def codec(self) -> WanVAECodec:
        """Alias of :attr:`vae` (a :class:`WanVAECodec`)."""
        return self.vae

    @property
    def experts(self) -> list[Any]:
        return [t for t in (self.transformer, self.transformer_2) if t is not None]

    @torch.no_grad()
    def encode_image(
        self, images: torch.Tensor, preprocess: str = "official"
    ) -> torch.Tensor | None:
        """CLIP image tokens ``(B, N, image_dim)`` of frames ``(B, 3, H, W)`` in [-1, 1].

        Returns None for variants without an image encoder. Frames are quantised to uint8
        first (the authors' pipeline and diffusers' both start from 8-bit images), then
        prepared for CLIP by ``preprocess``: ``"official"`` (the whole frame squashed to
        the encoder's size, bicubic, as the authors' code) or ``"diffusers"`` (the
        folder's processor: short side resized, centre crop) - :mod:`svi.models.clip`.
        """
        from svi.models.clip import clip_pixels, clip_tokens

        if self.image_encoder is None:
            return None
        if images.ndim != 4 or images.shape[1] != 3:
            raise SviError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        frames = pixels.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
        values = clip_pixels(
            frames, preprocess, encoder=self.image_encoder, processor=self.image_processor
        )
        return clip_tokens(self.image_encoder, values)


# ----------------------------------------------------------------------------- validation


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SviError(f"cannot read {path}: {_line(exc)}") from exc
    except json.JSONDecodeError as exc:
        raise SviError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SviError(f"{path} must hold a JSON object")
    return data


def read_model_index(folder: Path) -> dict[str, Any]:
    """The folder's ``model_index.json`` (SviError when absent or not valid JSON)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SviError(f"wan folder {folder} does not exist")
    path = folder / "model_index.json"
    if not path.is_file():
        raise SviError(
            f"wan folder {folder} has no model_index.json (expected a diffusers-format folder)"
        )
    return _read_json(path)


def _listed(index: dict[str, Any], name: str) -> bool:
    entry = index.get(name)
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None


def _config(folder: Path, component: str) -> dict[str, Any]:
    path = folder / component / "config.json"
    return _read_json(path) if path.is_file() else {}


def detect_wan_variant(folder: Path) -> str:
    """Infer the variant from ``model_index.json`` and the component configs."""
    folder = Path(folder)
    index = read_model_index(folder)
    tcfg = _config(folder, "transformer")
    vcfg = _config(folder, "vae")
    if tcfg.get("in_channels") == 16:
        raise SviError(
            f"wan folder {folder} holds a text-to-video model; svi needs an image-to-video one"
        )
    if _listed(index, "transformer_2") or (folder / "transformer_2").is_dir():
        return "wan2.2-i2v-a14b"
    if index.get("expand_timesteps") or vcfg.get("z_dim") == 48:
        return "wan2.2-ti2v-5b"
    if _listed(index, "image_encoder") or tcfg.get("image_dim") is not None:
        return "wan2.1-i2v-14b-720p" if "720" in folder.resolve().name else "wan2.1-i2v-14b-480p"
    raise SviError(
        f"cannot tell which Wan variant {folder} holds (no transformer_2, no image_encoder, "
        f"vae z_dim {vcfg.get('z_dim')})"
    )


def _check_safetensors(path: Path) -> None:
    """Header sanity check: readable JSON header, data not truncated. Reads no weights."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("file shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                raise ValueError(f"header length {n} does not fit in a {size}-byte file")
            header = json.loads(fh.read(n))
        ends = [
            v["data_offsets"][1]
            for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict)
        ]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise SviError(f"corrupt safetensors file {path}: {_line(exc)}") from exc
    if 8 + n + max(ends, default=0) > size:
        raise SviError(f"corrupt safetensors file {path}: truncated ({size} bytes)")


def _check_weights(cdir: Path, needed_by: str) -> None:
    indexes = sorted(cdir.glob("*.safetensors.index.json"))
    files = sorted(cdir.glob("*.safetensors"))
    if not indexes and not files:
        pickled = [p.name for p in cdir.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}]
        hint = f" (found only {pickled[0]}: svi loads safetensors only)" if pickled else ""
        raise SviError(f"{cdir}/ has no .safetensors weights (needed by {needed_by}){hint}")
    for index_path in indexes:
        shards = set(_read_json(index_path).get("weight_map", {}).values())
        if not shards:
            raise SviError(f"{index_path} lists no weight shards")
        for shard in sorted(shards):
            if not (cdir / shard).is_file():
                raise SviError(f"{cdir}/ is missing shard {shard} listed in {index_path.name}")
    for path in files:
        _check_safetensors(path)


def _check_component(folder: Path, component: str, variant: str) -> None:
    cdir = folder / component
    if not cdir.is_dir():
        raise SviError(f"wan folder {folder} is missing {component}/ (needed by {variant})")
    if component == "tokenizer":
        names = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
        if not any((cdir / n).is_file() for n in names):
            raise SviError(f"{cdir}/ has no tokenizer files (tokenizer.json or spiece.model)")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if (cdir / name).is_file():
                _read_json(cdir / name)
        return
    if component == "image_processor":
        if not (cdir / "preprocessor_config.json").is_file():
            raise SviError(
                f"wan folder {folder} is missing image_processor/preprocessor_config.json"
            )
        _read_json(cdir / "preprocessor_config.json")
        return
    if not (cdir / "config.json").is_file():
        raise SviError(f"wan folder {folder} is missing {component}/config.json")
    _read_json(cdir / "config.json")
    _check_weights(cdir, variant)


def _check_shapes(folder: Path, layout: WanLayout) -> None:
    """Config-level consistency between components, before any weight is read."""
    vae = _config(folder, "vae")
    z = int(vae.get("z_dim", 16))
    text_dim = _config(folder, "text_encoder").get("d_model")
    want_in = 2 * z + 4 if layout.conditioning == "concat" else z
    for name in ("transformer", "transformer_2") if layout.two_experts else ("transformer",):
        cfg = _config(folder, name)
        got_in, got_out = cfg.get("in_channels", 16), cfg.get("out_channels", 16)
        if (got_in, got_out) != (want_in, z):
            raise SviError(
                f"{folder / name}/config.json has in/out channels {got_in}/{got_out}; "
                f"{layout.name} with vae z_dim {z} needs {want_in}/{z}"
            )
        if text_dim is not None and cfg.get("text_dim", 4096) != text_dim:
            raise SviError(
                f"{folder / name} expects text_dim {cfg.get('text_dim', 4096)} but "
                f"text_encoder d_model is {text_dim}"
            )
        if layout.clip:
            clip_dim = _config(folder, "image_encoder").get("hidden_size")
            if cfg.get("image_dim") is None or cfg.get("image_dim") != clip_dim:
                raise SviError(
                    f"{folder / name} image_dim {cfg.get('image_dim')} does not match the "
                    f"image encoder's hidden size {clip_dim}"
                )


def validate_wan_folder(folder: Path, expect: str | None = None) -> WanLayout:
    """Check a folder without loading weights; returns the layout it matches.

    With ``expect``, the expected layout's components are checked first (so the error
    names what that variant is missing), then the folder must detect as that variant.
    """
    folder = Path(folder)
    if expect is not None and expect not in WAN_LAYOUTS:
        raise SviError(f"unknown Wan variant {expect!r}; known: {', '.join(WAN_LAYOUTS)}")
    read_model_index(folder)
    if expect is not None:
        layout = WAN_LAYOUTS[expect]
        for component in layout.components:
            _check_component(folder, component, layout.name)
        detected = WAN_LAYOUTS[detect_wan_variant(folder)]
        if detected.structure != layout.structure:
            raise SviError(f"wan folder {folder} holds {detected.name}, not {expect}")
    else:
        layout = WAN_LAYOUTS[detect_wan_variant(folder)]
        for component in layout.components:
            _check_component(folder, component, layout.name)
    _check_shapes(folder, layout)
    return layout


# ----------------------------------------------------------------------------- loading


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load(what: str, path: Path, loader, **kwargs):
    try:
        return loader(path, use_safetensors=True, local_files_only=True, **kwargs)
    except SviError:
        raise
    except Exception as exc:  # any library failure becomes one actionable line
        raise SviError(f"cannot load {what} from {path}: {_line(exc)}") from exc


def _check_weights_match_config(path: Path) -> None:
    """Refuse a DiT whose weight files and config disagree (a layer the config does not
    build would be dropped silently; a missing one would stay uninitialised)."""
    import json

    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel
    from safetensors import safe_open

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        with init_empty_weights():
            model = WanTransformer3DModel.from_config(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        stored: dict[str, tuple[int, ...]] = {}
        for file in sorted(path.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                stored.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118
    except Exception as exc:  # reported by the loader with the file named
        logger.debug("weight/config check skipped for %s: %s", path, exc)
        return
    extra = sorted(set(stored) - set(expected))
    missing = sorted(set(expected) - set(stored))
    wrong = sorted(k for k in set(stored) & set(expected) if stored[k] != expected[k])
    found = (("weights the config does not build", extra), ("weights missing", missing),
             ("shapes that differ from the config", wrong))  # fmt: skip
    problems = [f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for what, keys in found if keys]  # fmt: skip
    if problems:
        raise SviError(f"{path}: config.json and the weights disagree - " + "; ".join(problems))


def _load_clip(folder: Path, index: dict[str, Any], dtype: torch.dtype):
    import transformers

    entry = index.get("image_encoder")
    name = entry[1] if _listed(index, "image_encoder") else "CLIPVisionModel"
    if name not in _CLIP_CLASSES:
        raise SviError(f"image_encoder class {name!r} is not one of {', '.join(_CLIP_CLASSES)}")
    encoder = _load(
        "the image encoder",
        folder / "image_encoder",
        getattr(transformers, name).from_pretrained,
        dtype=dtype,
    )
    # The PIL backend: the default CLIP processor would need torchvision.
    proc_cls = (
        getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    )
    try:
        processor = proc_cls.from_pretrained(folder / "image_processor", local_files_only=True)
    except Exception as exc:
        raise SviError(f"cannot load {folder / 'image_processor'}: {_line(exc)}") from exc
    return encoder.eval().requires_grad_(False), processor


def load_wan_folder(
    folder: Path,
    *,
    expect: str | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    vae_dtype: torch.dtype = torch.float32,
    text_max_length: int = WAN_TEXT_TOKENS,
) -> WanComponents:
    """Validate, then load a local diffusers-format Wan I2V folder.

    Args:
        folder: the folder holding ``model_index.json``.
        expect: a name from :data:`WAN_LAYOUTS`; the folder must match it.
        dtype: transformer / text / image encoder dtype; default bf16 on CUDA, fp32 on CPU.
        device: default ``cuda`` when available, else ``cpu``.
        vae_dtype: the VAE's dtype (the diffusers examples keep the Wan VAE in fp32).
        text_max_length: umT5 tokens per prompt (Wan uses 512; a CLIP-conditioned
            transformer requires 512).
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(folder)
    layout = validate_wan_folder(folder, expect)
    variant = expect or detect_wan_variant(folder)
    index = read_model_index(folder)
    device = torch.device(device) if device is not None else _default_device()
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if layout.clip and text_max_length != WAN_TEXT_TOKENS:
        raise SviError(f"{variant} uses CLIP tokens and needs text_max_length {WAN_TEXT_TOKENS}")

    def transformer(name: str):
        _check_weights_match_config(folder / name)
        model = _load(name, folder / name, WanTransformer3DModel.from_pretrained, torch_dtype=dtype)
        return model.to(device).eval().requires_grad_(False)

    transformer_1 = transformer("transformer")
    transformer_2 = transformer("transformer_2") if layout.two_experts else None
    boundary = index.get("boundary_ratio")
    if layout.two_experts and boundary is None:
        logger.warning("%s has no boundary_ratio; using %s", folder, A14B_BOUNDARY_RATIO)
        boundary = A14B_BOUNDARY_RATIO
    if boundary is not None:
        ok = isinstance(boundary, int | float) and not isinstance(boundary, bool)
        if not (ok and 0.0 < float(boundary) < 1.0):
            raise SviError(f"{folder / 'model_index.json'}: boundary_ratio must be a number in "
                           f"(0, 1) (Wan 2.2: 0.875-0.9), got {boundary!r}")  # fmt: skip
    vae = _load("the vae", folder / "vae", AutoencoderKLWan.from_pretrained, torch_dtype=vae_dtype)
    codec = WanVAECodec(vae.to(device))
    text = UMT5TextEncoder.from_folder(
        folder / "text_encoder",
        folder / "tokenizer",
        max_length=text_max_length,
        dtype=dtype,
        device=device,
    )
    image_encoder = image_processor = None
    if layout.clip:
        image_encoder, image_processor = _load_clip(folder, index, dtype)
        image_encoder = image_encoder.to(device)
    logger.info("loaded %s from %s (%s on %s)", variant, folder, dtype, device)
    return WanComponents(
        variant=variant,
        folder=folder,
        transformer=transformer_1,
        transformer_2=transformer_2,
        boundary_ratio=None if boundary is None else float(boundary),
        vae=codec,
        text_encoder=text,
        image_encoder=image_encoder,
        image_processor=image_processor,
        conditioning=layout.conditioning,
        model_index=index,
        dtype=dtype,
        device=device,
    )
