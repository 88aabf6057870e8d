"""GroundingDINO built from its own classes (PyPI ``rf-groundingdino``), offline, and its detector form.

The classes are the original code's (``groundingdino.models.GroundingDINO``: Swin backbone, sine
position encoding, deformable transformer with text enhancer and fusion layers, contrastive class
head). Two things differ from ``groundingdino.util.inference.load_model``:

* BERT is built from :data:`BERT_BASE_UNCASED_CONFIG` (a config written here) instead of
  ``BertModel.from_pretrained('bert-base-uncased')``; the official checkpoint fills its weights.
  The tokenizer comes from a user folder or the local Hugging Face cache and must pass
  :func:`models.clap.check_tokenizer` (the 5-token offline fallback is refused).
* The text side is split off. The reference only ever captions one label at a time
  (``"<label>."``), so :func:`encode_caption` computes, at build time, everything the rest of the
  network needs from the text (the projected BERT features, the token mask, the position ids and
  the sub-sentence attention mask); :class:`GroundingDinoDetector` is the rest of the forward pass
  with those tensors as inputs. The runtime then needs neither BERT nor a tokenizer.

Official checkpoints: ``groundingdino_swinb_cogcoor.pth`` (config ``swinb``, the reference's) and
``groundingdino_swint_ogc.pth`` (``swint``), loaded unchanged with a strict key check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from models.checkpoints import CheckpointError, load_checkpoint, load_strict, sha256_file
from models.clap import TokenizerError, check_tokenizer
from models.registry import ConfigRegistry

GDINO_IMAGE_MEAN = (0.485, 0.456, 0.406)
GDINO_IMAGE_STD = (0.229, 0.224, 0.225)
GDINO_SHORT_SIDE = 800
GDINO_MAX_SIZE = 1333
GDINO_MAX_TEXT_LEN = 256

BERT_BASE_UNCASED_CONFIG: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}

# The official configs (GroundingDINO_SwinB_cfg.py / GroundingDINO_SwinT_OGC.py), written here.
_COMMON: dict[str, Any] = {
    "position_embedding": "sine",
    "pe_temperatureH": 20,
    "pe_temperatureW": 20,
    "return_interm_indices": [1, 2, 3],
    "enc_layers": 6,
    "dec_layers": 6,
    "pre_norm": False,
    "dim_feedforward": 2048,
    "hidden_dim": 256,
    "dropout": 0.0,
    "nheads": 8,
    "num_queries": 900,
    "query_dim": 4,
    "num_patterns": 0,
    "num_feature_levels": 4,
    "enc_n_points": 4,
    "dec_n_points": 4,
    "two_stage_type": "standard",
    "two_stage_bbox_embed_share": False,
    "two_stage_class_embed_share": False,
    "transformer_activation": "relu",
    "dec_pred_bbox_embed_share": True,
    "dn_box_noise_scale": 1.0,
    "dn_label_noise_ratio": 0.5,
    "dn_label_coef": 1.0,
    "dn_bbox_coef": 1.0,
    "embed_init_tgt": True,
    "dn_labelbook_size": 2000,
    "max_text_len": GDINO_MAX_TEXT_LEN,
    "text_encoder_type": "bert-base-uncased",
    "use_text_enhancer": True,
    "use_fusion_layer": True,
    "use_checkpoint": False,
    "use_transformer_ckpt": False,
    "use_text_cross_attention": True,
    "text_dropout": 0.0,
    "fusion_dropout": 0.0,
    "fusion_droppath": 0.1,
    "sub_sentence_present": True,
}
GDINO_CONFIGS: dict[str, dict[str, Any]] = {
    "swinb": {
        **_COMMON,
        "backbone": "swin_B_384_22k",
        "checkpoint": "groundingdino_swinb_cogcoor.pth",
    },
    "swint": {**_COMMON, "backbone": "swin_T_224_1k", "checkpoint": "groundingdino_swint_ogc.pth"},
    # Tests: the same classes, small. 'swin' overrides the Swin-T backbone's sizes. hidden_dim stays
    # 256: the text enhancer's sine position embedding is hard-wired to 256 features.
    "test-tiny": {
        **_COMMON,
        "backbone": "swin_T_224_1k",
        "checkpoint": None,
        "swin": {
            "embed_dim": 16,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 2, 2],
            "window_size": 7,
        },
        "enc_layers": 1,
        "dec_layers": 2,
        "dim_feedforward": 64,
        "hidden_dim": 256,
        "nheads": 8,
        "num_queries": 20,
        "num_feature_levels": 4,
        "fusion_droppath": 0.0,
        "bert": {
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
        },
    },
}
GROUNDING_DINO = ConfigRegistry("GroundingDINO", GDINO_CONFIGS)
# name -> deep copy; UnknownConfigError (a KeyError and ValueError) lists the known names
get_config = GROUNDING_DINO.get_config
list_configs = GROUNDING_DINO.list_configs
GDINO_CHECKPOINTS = {
    c["checkpoint"]: name for name, c in GDINO_CONFIGS.items() if c.get("checkpoint")
}


def _visualizer_placeholder() -> None:
    """``groundingdino.models...groundingdino`` imports its plotting helper (``util.visualizer``:
    OpenCV, matplotlib, pycocotools) at module level, though the network never uses it. When those
    plotting libraries are absent, a placeholder module stands in for it (using it raises)."""
    import importlib
    import sys
    import types

    name = "groundingdino.util.visualizer"
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ImportError:
        mod = types.ModuleType(name)

        class COCOVisualizer:  # noqa: D401 - placeholder
            def __init__(self, *a, **k):
                raise ImportError("GroundingDINO's visualizer needs opencv-python and matplotlib")

        mod.COCOVisualizer = COCOVisualizer
        sys.modules[name] = mod


def _modules():
    try:
        _visualizer_placeholder()
        from groundingdino.models.GroundingDINO import groundingdino as gd
        from groundingdino.models.GroundingDINO.backbone import backbone as bb
        from groundingdino.models.GroundingDINO.backbone import position_encoding as pe
        from groundingdino.models.GroundingDINO.backbone import swin_transformer as sw
        from groundingdino.models.GroundingDINO.transformer import build_transformer
        from groundingdino.util import get_tokenlizer, misc
    except ImportError as e:
        raise ImportError(
            "GroundingDINO is not installed: pip install --no-deps rf-groundingdino, plus "
            "addict yapf timm transformers (see docs/box-prompt.md)"
        ) from e
    return SimpleNamespace(
        gd=gd,
        bb=bb,
        pe=pe,
        sw=sw,
        build_transformer=build_transformer,
        get_tokenlizer=get_tokenlizer,
        misc=misc,
    )


def bert_config(**overrides: Any):
    """A ``transformers.BertConfig``: bert-base-uncased's architecture with ``overrides`` applied."""
    from transformers import BertConfig

    return BertConfig(**{**BERT_BASE_UNCASED_CONFIG, **overrides})


@contextlib.contextmanager
def _offline_text(mods, tokenizer, bcfg):
    from transformers import BertModel

    gt = mods.get_tokenlizer
    old = gt.get_tokenlizer, gt.get_pretrained_language_model
    gt.get_tokenlizer = lambda *_a, **_k: tokenizer
    gt.get_pretrained_language_model = lambda *_a, **_k: BertModel(bcfg)
    try:
        yield
    finally:
        gt.get_tokenlizer, gt.get_pretrained_language_model = old


def build_grounding_dino(config: str = "swinb", tokenizer=None, *, seed: int = 0) -> nn.Module:
    """A ``GroundingDINO`` of the named configuration with seeded random weights, built offline.

    config: "swinb" (the reference's), "swint" or "test-tiny". tokenizer: a bert-base-uncased
    tokenizer (see :func:`models.clap.load_tokenizer`); it becomes ``model.tokenizer``, and BERT's
    vocabulary is sized to it for "test-tiny" (the official configs need the real 30522 tokens).
    Returns the model in eval mode.
    """
    cfg = get_config(config)
    if tokenizer is None:
        raise TokenizerError(
            "a bert-base-uncased tokenizer is needed (models.clap.load_tokenizer('bert', DIR))"
        )
    bert_over = dict(cfg.pop("bert", {}))
    if config == "test-tiny":
        bert_over["vocab_size"] = len(tokenizer)
    bcfg = bert_config(**bert_over)
    check_tokenizer(tokenizer, expected_vocab=bcfg.vocab_size, what="GroundingDINO text (bert)")
    args = SimpleNamespace(**cfg)
    mods = _modules()
    torch.manual_seed(seed)
    position = mods.pe.build_position_encoding(args)
    swin_kw = dict(
        out_indices=tuple(args.return_interm_indices), dilation=False, use_checkpoint=False
    )
    size = int(args.backbone.split("_")[-2])
    if "swin" in cfg:
        swin = mods.sw.SwinTransformer(pretrain_img_size=size, **cfg["swin"], **swin_kw)
    else:
        swin = mods.sw.build_swin_transformer(args.backbone, pretrain_img_size=size, **swin_kw)
    backbone = mods.bb.Joiner(swin, position)
    backbone.num_channels = swin.num_features[4 - len(args.return_interm_indices) :]
    transformer = mods.build_transformer(args)
    with _offline_text(mods, tokenizer, bcfg):
        model = mods.gd.GroundingDINO(
            backbone,
            transformer,
            num_queries=args.num_queries,
            aux_loss=True,
            iter_update=True,
            query_dim=4,
            num_feature_levels=args.num_feature_levels,
            nheads=args.nheads,
            dec_pred_bbox_embed_share=args.dec_pred_bbox_embed_share,
            two_stage_type=args.two_stage_type,
            two_stage_bbox_embed_share=args.two_stage_bbox_embed_share,
            two_stage_class_embed_share=args.two_stage_class_embed_share,
            num_patterns=args.num_patterns,
            dn_number=0,
            dn_box_noise_scale=args.dn_box_noise_scale,
            dn_label_noise_ratio=args.dn_label_noise_ratio,
            dn_labelbook_size=args.dn_labelbook_size,
            text_encoder_type=args.text_encoder_type,
            sub_sentence_present=args.sub_sentence_present,
            max_text_len=args.max_text_len,
        )
    model.gdino_config = config
    return model.eval()


def gdino_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of an official GroundingDINO checkpoint (``{'model': state_dict}``), ``module.`` stripped."""
    sd = load_checkpoint(path)
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_grounding_dino(
    path: str | Path | None, tokenizer, *, config: str | None = None, seed: int = 0
) -> tuple[nn.Module, dict[str, Any]]:
    """GroundingDINO with an official checkpoint (strict key check) or seeded random weights.

    path: ``groundingdino_swinb_cogcoor.pth`` / ``groundingdino_swint_ogc.pth`` (None: random).
    config: default from the file name (else "swinb"). BERT's ``position_ids`` buffer, which older
    transformers versions stored in the checkpoint, is the only key tolerated beyond the model's.
    Returns (model in eval mode, provenance for the manifest).
    """
    if path is None:
        name = config or "swinb"
        return build_grounding_dino(name, tokenizer, seed=seed), {
            "source": "random-init",
            "seed": seed,
            "config": name,
        }
    path = Path(path)
    name = config or GDINO_CHECKPOINTS.get(path.name, "swinb")
    model = build_grounding_dino(name, tokenizer, seed=seed)
    sd = gdino_state_dict(path)
    own = model.state_dict()
    ignore = [k for k in sd if k.endswith("embeddings.position_ids") and k not in own]
    try:
        load_strict(model, sd, ignore=ignore, source=str(path))
    except CheckpointError as e:
        raise CheckpointError(
            f"{e}\n  (config {name!r}; pass the config that matches the file)"
        ) from None
    return model.eval(), {"path": str(path.resolve()), "sha256": sha256_file(path), "config": name}


def preprocess_caption(label: str) -> str:
    """The reference's caption: lower-cased, stripped, with a trailing '.' (unless it has one)."""
    c = label.lower().strip()
    return c if c.endswith(".") else c + "."


@torch.no_grad()
def encode_caption(model: nn.Module, caption: str) -> dict[str, torch.Tensor]:
    """The text inputs of :class:`GroundingDinoDetector` for one caption, exactly as GroundingDINO's
    forward computes them (tokens, sub-sentence masks, BERT, ``feat_map``, truncation to 256).

    caption: already preprocessed (see :func:`preprocess_caption`). Returns a dict of
    ``encoded_text`` float32 [1, L, d_model], ``text_token_mask`` bool [1, L],
    ``position_ids`` int64 [1, L], ``text_self_attention_masks`` bool [1, L, L].
    """
    mods = _modules()
    tok = model.tokenizer([caption], padding="longest", return_tensors="pt")
    masks, position_ids, _ = mods.gd.generate_masks_with_special_tokens_and_transfer_map(
        tok, model.specical_tokens, model.tokenizer
    )
    n = model.max_text_len
    if masks.shape[1] > n:
        masks, position_ids = masks[:, :n, :n], position_ids[:, :n]
        tok["input_ids"] = tok["input_ids"][:, :n]
        tok["attention_mask"] = tok["attention_mask"][:, :n]
        tok["token_type_ids"] = tok["token_type_ids"][:, :n]
    if model.sub_sentence_present:
        enc = {k: v for k, v in tok.items() if k != "attention_mask"}
        enc["attention_mask"] = masks
        enc["position_ids"] = position_ids
    else:
        enc = tok
    hidden = model.bert(**enc)["last_hidden_state"]
    encoded = model.feat_map(hidden)
    token_mask = tok["attention_mask"].bool()
    return {
        "encoded_text": encoded[:, :n].float().contiguous(),
        "text_token_mask": token_mask[:, :n].contiguous(),
        "position_ids": position_ids[:, :n].to(torch.int64).contiguous(),
        "text_self_attention_masks": masks[:, :n, :n].bool().contiguous(),
    }


DETECTOR_INPUTS = (
    "image",
    "encoded_text",
    "text_token_mask",
    "position_ids",
    "text_self_attention_masks",
)
DETECTOR_OUTPUTS = ("scores", "boxes")


class GroundingDinoDetector(nn.Module):
    """The ``detector`` graph: GroundingDINO's forward after the text encoder.

    Inputs: image float32 [B, 3, H, W] (ImageNet-normalised RGB, shorter side 800), and the
    :func:`encode_caption` tensors with batch B. Outputs: scores float32 [B, Q] (max over the 256
    token logits of the sigmoid, i.e. what ``predict`` compares with the box threshold) and boxes
    float32 [B, Q, 4] (cx, cy, w, h), normalised to [0, 1] by the image's width and height.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(
        self, image, encoded_text, text_token_mask, position_ids, text_self_attention_masks
    ):
        m = self.m
        misc = _modules().misc
        text_dict = {
            "encoded_text": encoded_text,
            "text_token_mask": text_token_mask,
            "position_ids": position_ids,
            "text_self_attention_masks": text_self_attention_masks,
        }
        pad = torch.zeros(
            image.shape[0], image.shape[2], image.shape[3], dtype=torch.bool, device=image.device
        )
        samples = misc.NestedTensor(image, pad)
        features, poss = m.backbone(samples)
        poss = list(poss)
        srcs, masks = [], []
        for lvl, feat in enumerate(features):
            src, mask = feat.decompose()
            srcs.append(m.input_proj[lvl](src))
            masks.append(mask)
        for lvl in range(len(srcs), m.num_feature_levels):
            src = m.input_proj[lvl](features[-1].tensors if lvl == len(features) else srcs[-1])
            mask = torch.nn.functional.interpolate(pad[None].float(), size=src.shape[-2:]).to(
                torch.bool
            )[0]
            poss.append(m.backbone[1](misc.NestedTensor(src, mask)).to(src.dtype))
            srcs.append(src)
            masks.append(mask)
        hs, reference, _, _, _ = m.transformer(srcs, masks, None, poss, None, None, text_dict)
        last = len(hs) - 1
        delta = m.bbox_embed[last](hs[last])
        boxes = (delta + misc.inverse_sigmoid(reference[last])).sigmoid()
        logits = m.class_embed[last](hs[last], text_dict)
        scores = logits.sigmoid().max(dim=-1).values
        return scores, boxes


def caption_features(model: nn.Module, labels: Sequence[str]) -> dict[str, Any]:
    """Build-time text bank: :func:`encode_caption` of every label, padded to the longest.

    Returns a dict of numpy arrays: ``encoded_text`` float32 [N, Lmax, d], ``text_token_mask``
    bool [N, Lmax], ``position_ids`` int64 [N, Lmax], ``text_self_attention_masks`` bool
    [N, Lmax, Lmax], ``length`` int64 [N] (label i uses the first length[i] tokens), and
    ``captions`` (the preprocessed strings).
    """
    import numpy as np

    feats = [encode_caption(model, preprocess_caption(label)) for label in labels]
    lmax = max(f["encoded_text"].shape[1] for f in feats)
    d = feats[0]["encoded_text"].shape[2]
    n = len(feats)
    out = {
        "encoded_text": np.zeros((n, lmax, d), np.float32),
        "text_token_mask": np.zeros((n, lmax), bool),
        "position_ids": np.zeros((n, lmax), np.int64),
        "text_self_attention_masks": np.zeros((n, lmax, lmax), bool),
        "length": np.zeros(n, np.int64),
    }
    for i, f in enumerate(feats):
        k = f["encoded_text"].shape[1]
        out["encoded_text"][i, :k] = f["encoded_text"][0].numpy()
        out["text_token_mask"][i, :k] = f["text_token_mask"][0].numpy()
        out["position_ids"][i, :k] = f["position_ids"][0].numpy()
        out["text_self_attention_masks"][i, :k, :k] = f["text_self_attention_masks"][0].numpy()
        out["length"][i] = k
    out["captions"] = [preprocess_caption(label) for label in labels]
    return out
