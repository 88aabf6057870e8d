"""Export of AC-FPN (visual tower + fusion + FPN neck + semantic-FPN head) to the ``acfpn`` graph.

Graph: ``image`` [batch, 3, 224, 224] float32 (CLIP-normalised RGB) and ``audio_embedding``
[batch, D] float32 (the unnormalised AudioCLIP audio embedding of each frame's 1-s chunk, from
the ``audioclip_audio`` graph) -> ``logits`` [batch, 1, 224, 224] float32 (sigmoid > 0.5 is the
sounding object; pixel (row, col) in image orientation). The audio tower is not part of this
graph: an embedding is computed once per audio chunk and fed in.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from export.onnx_utils import ExportResult, export_graph
from models.acfpn import ACFPN, fuse_features
from runtime.bundle.contract import GRAPHS

INPUT_NAMES = GRAPHS["acfpn"].input_names
OUTPUT_NAMES = GRAPHS["acfpn"].output_names

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "ACFPNForExport", "export_acfpn"]


class ACFPNForExport(nn.Module):
    """The image + embedding path of an :class:`ACFPN`, without its audio tower.

    ``forward(image [B, 3, R, R] float32 normalised, audio_embedding [B, D] float32)``
    -> logits [B, 1, R, R] float32. Holds the model's ``visual``, ``neck`` and ``head`` only, so
    the audio weights never enter the graph.
    """

    def __init__(self, model: ACFPN):
        super().__init__()
        if not isinstance(model, ACFPN):
            raise TypeError(f"model must be an ACFPN, got {type(model).__name__}")
        self.visual = model.visual
        self.neck = model.neck
        self.head = model.head
        self.fusion = model.fusion
        self.embed_dim = model.embed_dim
        self.image_size = model.image_size

    def forward(self, image: torch.Tensor, audio_embedding: torch.Tensor) -> torch.Tensor:
        f = self.visual.forward_features(image)
        c4 = fuse_features(self.fusion, f["x4"], f["dense"], audio_embedding.to(f["dense"].dtype))
        return self.head(self.neck([f["x1"], f["x2"], f["x3"], c4]))


def export_acfpn(
    model: ACFPN,
    path: str | Path,
    *,
    atol: float | None = 1e-4,
    seed: int = 0,
    embedding_scale: float | None = None,
) -> ExportResult:
    """Export ``model`` (its graph wrapper in eval mode) to ``path`` with a dynamic batch axis.

    Traced at batch 2; ORT is compared with PyTorch at batches 2 and 3 on random N(0, 1) images
    and random N(0, s^2) embeddings, s = ``embedding_scale`` (default 1.0). A max abs error
    above ``atol`` raises RuntimeError (``atol=None`` only records it). Returns the
    :class:`ExportResult`.
    """
    wrapper = ACFPNForExport(model).eval()
    r, d = wrapper.image_size, wrapper.embed_dim
    p = next(model.visual.parameters())
    g = torch.Generator().manual_seed(seed)
    scale = 1.0 if embedding_scale is None else float(embedding_scale)

    def inputs(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.randn(b, 3, r, r, generator=g).to(device=p.device, dtype=p.dtype)
        emb = (torch.randn(b, d, generator=g) * scale).to(device=p.device, dtype=p.dtype)
        return img, emb

    batch = torch.export.Dim("batch", min=1, max=1024)
    return export_graph(
        wrapper,
        inputs(2),
        path,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_shapes=[{0: batch}, {0: batch}],
        parity_inputs=[inputs(3)],
        atol=atol,
    )
