"""GroundingDINO at build time: the ``detector`` graph and the per-label text bank.

The detector graph is exported with the TorchScript tracer (``dynamo=False``), not the dynamo
exporter: GroundingDINO iterates over its ``spatial_shapes`` tensor (reference points, deformable
attention, proposals), which ``torch.export`` treats as data-dependent and refuses. Tracing records
those shapes as constants, so the graph has a **fixed image size** (recorded in the manifest); the
text length L stays dynamic. The usual ORT-vs-PyTorch parity check runs on two different labels.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from export.onnx_utils import ExportResult, describe_io, parity
from models.grounding_dino import (
    DETECTOR_INPUTS,
    DETECTOR_OUTPUTS,
    GroundingDinoDetector,
    caption_features,
    encode_caption,
    preprocess_caption,
)

DETECTOR_OPSET = 17


def export_detector(
    model: torch.nn.Module,
    path: str | Path,
    image_hw: tuple[int, int],
    *,
    example_labels: tuple[str, str] = ("dog", "a man speaking"),
    seed: int = 0,
    atol: float | None = 1e-4,
) -> ExportResult:
    """Export ``detector``: image float32 [1, 3, H, W] (fixed H, W = ``image_hw``) + text tensors
    (see :class:`GroundingDinoDetector`, L dynamic) -> scores [1, Q], boxes [1, Q, 4] (cx, cy, w, h in [0, 1]).

    Raises RuntimeError when ORT differs from PyTorch by more than ``atol``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = (int(v) for v in image_hw)
    det = GroundingDinoDetector(model).eval()
    g = torch.Generator().manual_seed(seed)
    images = [torch.randn(1, 3, h, w, generator=g), torch.randn(1, 3, h, w, generator=g) * 0.5]
    texts = [encode_caption(model, preprocess_caption(s)) for s in example_labels]
    args = [(im, *[t[k] for k in DETECTOR_INPUTS[1:]]) for im, t in zip(images, texts, strict=True)]
    dyn = {
        "encoded_text": {1: "L"},
        "text_token_mask": {1: "L"},
        "position_ids": {1: "L"},
        "text_self_attention_masks": {1: "L", 2: "L"},
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            det,
            args[0],
            str(path),
            dynamo=False,
            opset_version=DETECTOR_OPSET,
            input_names=list(DETECTOR_INPUTS),
            output_names=list(DETECTOR_OUTPUTS),
            dynamic_axes=dyn,
        )
    onnx.checker.check_model(str(path), full_check=False)
    ins, outs = describe_io(onnx.load(str(path), load_external_data=False))
    per: dict[str, float] = {}
    for a in args:
        for k, v in parity(path, det, a, DETECTOR_INPUTS, DETECTOR_OUTPUTS).items():
            per[k] = max(per.get(k, 0.0), v)
    err = max(per.values())
    if atol is not None and not err <= atol:
        raise RuntimeError(
            f"{path.name}: ORT differs from PyTorch by {err:.3g} (> {atol:g}): {per}"
        )
    return ExportResult(path, [path], ins, outs, DETECTOR_OPSET, float(err), per)


def detector_text_bank(model: torch.nn.Module, labels) -> dict[str, Any]:
    """Per-label detector text inputs (see :func:`models.grounding_dino.caption_features`) as numpy arrays."""
    feats = caption_features(model, labels)
    for k in (
        "encoded_text",
        "text_token_mask",
        "position_ids",
        "text_self_attention_masks",
        "length",
    ):
        if not isinstance(feats[k], np.ndarray):
            raise TypeError(f"{k} must be a numpy array")
    return feats
