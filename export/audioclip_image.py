"""Export of AudioCLIP's image tower (CLIP ModifiedResNet) to the ``audioclip_image`` ONNX graph.

Graph: input ``image`` [batch, 3, 224, 224] float32 (CLIP-normalised RGB) -> ``global``
[batch, D], ``dense`` [batch, D, 7, 7] (q-k-v attention tokens) and ``surgery_dense``
[batch, D, 7, 7] (CLIP-Surgery v-v attention tokens); D = 1024 for the official config.
None of the outputs is L2-normalised.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from export.onnx_utils import ExportResult, export_graph
from models.clip_visual import ModifiedResNet
from runtime.bundle.contract import GRAPHS

INPUT_NAMES = GRAPHS["audioclip_image"].input_names
OUTPUT_NAMES = GRAPHS["audioclip_image"].output_names

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "ImageEncoderForExport", "export_audioclip_image"]


class ImageEncoderForExport(nn.Module):
    """Wraps a :class:`ModifiedResNet`: image [B, 3, R, R] float32 normalised ->
    (global [B, D], dense [B, D, R/32, R/32], surgery_dense [B, D, R/32, R/32])."""

    def __init__(self, visual: ModifiedResNet):
        super().__init__()
        if not isinstance(visual, ModifiedResNet):
            raise TypeError(f"visual must be a ModifiedResNet, got {type(visual).__name__}")
        self.visual = visual

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.visual.forward_features(image)
        return f["global"], f["dense"], f["surgery_dense"]


def export_audioclip_image(
    visual: ModifiedResNet,
    path: str | Path,
    *,
    atol: float | None = 1e-4,
    seed: int = 0,
) -> ExportResult:
    """Export ``visual`` (put in eval mode) to ``path`` with a dynamic batch axis.

    The graph is traced at batch 2 and ORT is compared with PyTorch at batches 2, 1 and 3 on
    random N(0, 1) images (``seed``); a max abs error above ``atol`` raises RuntimeError
    (``atol=None`` only records it). Returns the :class:`ExportResult` (files, I/O, errors).
    """
    wrapper = ImageEncoderForExport(visual).eval()
    r = visual.input_resolution
    dtype = visual.conv1.weight.dtype
    device = visual.conv1.weight.device
    g = torch.Generator().manual_seed(seed)

    def image(b: int) -> torch.Tensor:
        return torch.randn(b, 3, r, r, generator=g).to(device=device, dtype=dtype)

    return export_graph(
        wrapper,
        (image(2),),
        path,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_shapes=[{0: torch.export.Dim("batch", min=1, max=1024)}],
        parity_inputs=[(image(1),), (image(3),)],
        atol=atol,
    )
