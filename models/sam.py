"""Segment Anything (SAM): a registry of configurations and builders on segment_anything's own modules.

The official ``sam_vit_{h,l,b}_*.pth`` files load unchanged (strict key check, ``weights_only=True``).
``micro`` is a small configuration of the same classes (256 px input, width 192, 4 blocks) for tests:
its image encoder, prompt encoder and mask decoder are the real SAM modules, only smaller (the mask
decoder is exactly the full-size one; the embedding grid is 16x16 instead of 64x64).

segment_anything's own ``build_sam*`` functions call ``torch.load`` without ``weights_only``; they
are not used here. Every model is built with random weights and the state dict is loaded by
:func:`load_sam`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from models.checkpoints import sha256_file
from models.registry import ConfigRegistry

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 scale
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
SAM_MASK_THRESHOLD = 0.0

_COMMON: dict[str, Any] = {
    "image_size": 1024,  # the padded square input of the image encoder
    "patch_size": 16,
    "window_size": 14,
    "prompt_embed_dim": 256,
    "mask_in_chans": 16,
    "decoder_depth": 2,
    "decoder_mlp_dim": 2048,
    "decoder_heads": 8,
    "num_multimask_outputs": 3,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
    "pixel_mean": SAM_PIXEL_MEAN,
    "pixel_std": SAM_PIXEL_STD,
    "mask_threshold": SAM_MASK_THRESHOLD,
}

SAM_CONFIGS: dict[str, dict[str, Any]] = {
    "vit_h": {
        **_COMMON,
        "encoder_embed_dim": 1280,
        "encoder_depth": 32,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": (7, 15, 23, 31),
        "checkpoint": "sam_vit_h_4b8939.pth",
    },
    "vit_l": {
        **_COMMON,
        "encoder_embed_dim": 1024,
        "encoder_depth": 24,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": (5, 11, 17, 23),
        "checkpoint": "sam_vit_l_0b3195.pth",
    },
    "vit_b": {
        **_COMMON,
        "encoder_embed_dim": 768,
        "encoder_depth": 12,
        "encoder_num_heads": 12,
        "encoder_global_attn_indexes": (2, 5, 8, 11),
        "checkpoint": "sam_vit_b_01ec64.pth",
    },
    # Test configuration: same classes, 256 px input -> 16x16 embedding grid, full-size decoder.
    "micro": {
        **_COMMON,
        "image_size": 256,
        "window_size": 8,
        "encoder_embed_dim": 192,
        "encoder_depth": 4,
        "encoder_num_heads": 3,
        "encoder_global_attn_indexes": (1, 3),
        "checkpoint": None,
    },
}

SAM_ALIASES = {"default": "vit_h"}
SAM = ConfigRegistry("SAM", SAM_CONFIGS, SAM_ALIASES)


def list_configs() -> list[str]:
    """Names of every registered SAM configuration."""
    return SAM.list_configs()


def get_config(name: str) -> dict[str, Any]:
    """A deep copy of the named SAM configuration (``default`` = ``vit_h``) plus its derived fields
    ``name`` (the registered name) and ``embedding_size`` (image_size // patch_size); unknown names
    raise UnknownConfigError (a KeyError) listing the known ones."""
    cfg = SAM.get_config(name)
    cfg["name"] = SAM.resolve(name)
    cfg["embedding_size"] = cfg["image_size"] // cfg["patch_size"]
    return cfg


get_sam_config = get_config  # the name the tests (and older callers) use


def build_sam(name_or_config: str | dict[str, Any]) -> Sam:
    """A ``segment_anything.modeling.Sam`` with random weights, in eval mode.

    ``name_or_config`` is a registry name or a config dict as returned by :func:`get_config`.
    Randomness comes from torch's global generator; use :func:`load_sam` for a seeded build.
    """
    cfg = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    img = int(cfg["image_size"])
    patch = int(cfg["patch_size"])
    if img % patch:
        raise ValueError(f"image_size {img} must be a multiple of patch_size {patch}")
    grid = img // patch
    dim = int(cfg["prompt_embed_dim"])
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=int(cfg["encoder_depth"]),
            embed_dim=int(cfg["encoder_embed_dim"]),
            img_size=img,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=int(cfg["encoder_num_heads"]),
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(cfg["encoder_global_attn_indexes"]),
            window_size=int(cfg["window_size"]),
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(img, img),
            mask_in_chans=int(cfg["mask_in_chans"]),
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=int(cfg["num_multimask_outputs"]),
            transformer=TwoWayTransformer(
                depth=int(cfg["decoder_depth"]),
                embedding_dim=dim,
                mlp_dim=int(cfg["decoder_mlp_dim"]),
                num_heads=int(cfg["decoder_heads"]),
            ),
            transformer_dim=dim,
            iou_head_depth=int(cfg["iou_head_depth"]),
            iou_head_hidden_dim=int(cfg["iou_head_hidden_dim"]),
        ),
        pixel_mean=list(cfg["pixel_mean"]),
        pixel_std=list(cfg["pixel_std"]),
    )
    return sam.eval()


def _resolve_checkpoint(cfg: dict[str, Any], checkpoint: str | Path) -> Path:
    path = Path(checkpoint)
    if path.is_dir():
        if not cfg.get("checkpoint"):
            raise ValueError(
                f"SAM config {cfg['name']!r} has no official checkpoint file name; "
                f"pass the .pth file itself, not the folder {path}"
            )
        path = path / cfg["checkpoint"]
    if not path.is_file():
        raise FileNotFoundError(f"SAM checkpoint not found: {path}")
    return path


def _check_keys(model_keys: set[str], ckpt_keys: set[str], path: Path) -> None:
    missing = sorted(model_keys - ckpt_keys)
    unexpected = sorted(ckpt_keys - model_keys)
    if missing or unexpected:

        def show(keys: list[str]) -> str:
            head = ", ".join(keys[:8])
            return head + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        raise KeyError(f"{path.name} does not match the SAM architecture; " + "; ".join(parts))


def load_sam(name: str, checkpoint: str | Path | None = None, seed: int = 0) -> Sam:
    """Build the named SAM configuration and load its weights; returns a ``Sam`` in eval mode (CPU).

    ``checkpoint``: an official ``sam_vit_*.pth`` file, or a folder holding the registry's file name
    for ``name``; ``None`` keeps a random initialisation drawn with ``seed`` (the global torch RNG
    state is left untouched). The file is read with ``torch.load(weights_only=True)`` and its keys
    must match the model exactly (errors name the missing / unexpected keys). ``pixel_mean`` /
    ``pixel_std`` entries, if a file carries them, must equal the registry's constants.

    The returned module has a ``provenance`` dict attribute for bundle manifests:
    ``{"config": name, "weights": "random-init, seed N"}`` or
    ``{"config": name, "weights": path, "sha256": hex}``.
    """
    cfg = get_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        sam = build_sam(cfg)
    if checkpoint is None:
        sam.provenance = {"config": cfg["name"], "weights": f"random-init, seed {int(seed)}"}
        return sam
    path = _resolve_checkpoint(cfg, checkpoint)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(
            f"{path.name}: expected a state dict (mapping of tensors), got {type(state).__name__}"
        )
    state = dict(state)
    for key, expected in (("pixel_mean", cfg["pixel_mean"]), ("pixel_std", cfg["pixel_std"])):
        if key in state:
            got = state.pop(key).flatten().tolist()
            if not torch.allclose(torch.tensor(got), torch.tensor(expected, dtype=torch.float32)):
                raise ValueError(f"{path.name}: {key} = {got}, the registry says {list(expected)}")
    _check_keys(set(sam.state_dict().keys()), set(state.keys()), path)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path.name} does not fit SAM config {cfg['name']!r}: {e}") from e
    sam.eval()
    sam.provenance = {"config": cfg["name"], "weights": str(path), "sha256": sha256_file(path)}
    return sam
