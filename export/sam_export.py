"""SAM -> ONNX: the image encoder and the prompt decoder as two graphs (dynamo exporter).

Graph contracts (S = image size, 1024 for the official models; g = S / 16 the embedding grid):

``sam_image_encoder``
  image [B, 3, S, S] float32 (RGB, normalised with SAM's pixel mean/std, zero-padded bottom/right)
  -> image_embeddings [B, 256, g, g] float32.  B is dynamic.

``sam_prompt_decoder``
  image_embeddings [1, 256, g, g] float32  (one frame's embedding)
  point_coords     [P, N, 2] float32  (x, y) in the model input frame, i.e. pixels of the resized
                   (longest side = S) image, before the +0.5 pixel-centre shift
  point_labels     [P, N] float32     1 foreground, 0 background, 2 box top-left, 3 box
                   bottom-right, -1 padding / not a point
  mask_input       [P, 1, 4g, 4g] float32  low-res mask logits of a previous prediction
  has_mask_input   [1] float32        1.0 to use mask_input, 0.0 to ignore it
  -> iou_predictions [P, 4] float32, low_res_masks [P, 4, 4g, 4g] float32 (logits).
  P (prompt sets) and N (points per set) are dynamic.

Design choices (see the module docstring of runtime/sam.py for the runtime half):

* **All four mask tokens are returned.** Token 0 is SAM's single-mask output
  (``multimask_output=False``), tokens 1..3 its three multimask outputs. The runtime slices
  ``[:, 1:]`` or ``[:, :1]``, exactly as ``MaskDecoder.forward``; computing the extra token costs
  nothing (all four are computed by ``predict_masks`` anyway) and no ``select_masks`` argmax with a
  SymInt point count is needed in the graph.
* **No upscaling in the graph.** ``Sam.postprocess_masks`` (bilinear to S x S, crop to the resized
  size, bilinear to the frame size) is done by the runtime in numpy with precomputed separable
  interpolation taps (runtime/sam.py). The graph therefore has no data-dependent output shape
  (the bug of the TorchScript recipe, and a TensorRT shape-tensor problem), no ``orig_im_size``
  input, and the runtime can threshold full-size masks chunk by chunk instead of materialising
  [P, M, H, W] float32 logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from segment_anything.modeling import Sam
from torch import nn

from export.onnx_utils import ExportResult, export_graph
from runtime.contract import GRAPHS

ENCODER_INPUTS = GRAPHS["sam_image_encoder"].input_names
ENCODER_OUTPUTS = GRAPHS["sam_image_encoder"].output_names
DECODER_INPUTS = GRAPHS["sam_prompt_decoder"].input_names
DECODER_OUTPUTS = GRAPHS["sam_prompt_decoder"].output_names


class SamEncoderForExport(nn.Module):
    """Normalised, padded image [B, 3, S, S] float32 -> image embedding [B, 256, S/16, S/16]."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.image_encoder = sam.image_encoder
        self.img_size = int(sam.image_encoder.img_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


class SamDecoderForExport(nn.Module):
    """SAM's prompt encoder + mask decoder for one image embedding and a batch of prompt sets.

    See the module docstring for the input/output contract. The prompt embedding follows
    ``PromptEncoder._embed_points`` / ``_embed_boxes`` (+0.5 pixel-centre shift, random Fourier
    features, label embeddings: -1 -> not_a_point, 0/1 -> point_embeddings[0/1], 2/3 -> box-corner
    embeddings) without indexing by label, so P and N stay symbolic. The dense positional encoding
    of the embedding grid is a constant.
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        pe = sam.prompt_encoder
        self.prompt_encoder = pe
        self.mask_decoder = sam.mask_decoder
        in_h, in_w = pe.input_image_size
        # x is divided by the input width, y by the input height (PositionEmbeddingRandom.forward_with_coords).
        self.register_buffer("coord_scale", torch.tensor([float(in_w), float(in_h)]), persistent=False)
        with torch.no_grad():
            self.register_buffer("dense_pe", pe.get_dense_pe().detach().clone(), persistent=False)
        self.num_labels = int(pe.num_point_embeddings)  # labels 0..3: neg, pos, box corner 1, 2

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        xy = (coords + 0.5) / self.coord_scale
        emb = pe.pe_layer._pe_encoding(xy)  # [P, N, C]
        lab = labels.unsqueeze(-1)
        is_pad = lab == -1
        emb = torch.where(is_pad, pe.not_a_point_embed.weight, emb)
        for i in range(self.num_labels):
            emb = emb + pe.point_embeddings[i].weight * (lab == i).to(emb.dtype)
        return emb

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pe = self.prompt_encoder
        sparse = self._embed_points(point_coords, point_labels)
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = has * pe.mask_downscaling(mask_input) + (1.0 - has) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        low_res, iou = self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return iou, low_res


def _grid(sam: Sam) -> int:
    return int(sam.prompt_encoder.image_embedding_size[0])


def decoder_example_inputs(sam: Sam, num_prompts: int, num_points: int, *, has_mask: bool = True,
                           seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random decoder inputs (in the graph's order) for export and parity checks."""
    g = torch.Generator().manual_seed(seed)
    s = float(sam.image_encoder.img_size)
    grid = _grid(sam)
    emb = torch.randn(1, int(sam.prompt_encoder.embed_dim), grid, grid, generator=g)
    coords = torch.rand(num_prompts, num_points, 2, generator=g) * s
    labels = torch.randint(-1, 4, (num_prompts, num_points), generator=g).to(torch.float32)
    mask = torch.randn(num_prompts, 1, 4 * grid, 4 * grid, generator=g)
    has = torch.tensor([1.0 if has_mask else 0.0])
    return emb, coords, labels, mask, has


def export_sam_encoder(sam: Sam, path: str | Path, *, example_batch: int = 2,
                       parity_batches: tuple[int, ...] = (1,), atol: float | None = 1e-3,
                       seed: int = 0) -> ExportResult:
    """Export ``sam_image_encoder`` (dynamic batch) to ``path`` with an ORT-vs-PyTorch parity check.

    The example batch (>= 2, so the batch axis stays symbolic) and every ``parity_batches`` size are
    run through both PyTorch and ORT on random normalised images; ``atol`` (None: no limit) bounds
    the max abs difference of the embeddings.
    """
    if example_batch < 2:
        raise ValueError(f"example_batch must be >= 2 (a size-1 example fixes the batch axis), got {example_batch}")
    wrapper = SamEncoderForExport(sam).eval()
    s = wrapper.img_size
    g = torch.Generator().manual_seed(seed)
    example = (torch.randn(example_batch, 3, s, s, generator=g),)
    parity = [(torch.randn(b, 3, s, s, generator=g),) for b in parity_batches]
    return export_graph(
        wrapper, example, path,
        input_names=ENCODER_INPUTS, output_names=ENCODER_OUTPUTS,
        dynamic_shapes=[{0: torch.export.Dim("batch", min=1, max=1024)}],
        parity_inputs=parity, atol=atol,
    )


def export_sam_decoder(sam: Sam, path: str | Path, *, atol: float | None = 1e-3,
                       seed: int = 0) -> ExportResult:
    """Export ``sam_prompt_decoder`` (dynamic prompt sets P and points N) with a parity check.

    Exported with P=3, N=5 and checked in ORT vs PyTorch also at (P, N) = (1, 1) without a mask
    input and (7, 2) with one.
    """
    wrapper = SamDecoderForExport(sam).eval()
    example = decoder_example_inputs(sam, 3, 5, seed=seed)
    parity = [
        decoder_example_inputs(sam, 1, 1, has_mask=False, seed=seed + 1),
        decoder_example_inputs(sam, 7, 2, has_mask=True, seed=seed + 2),
    ]
    prompts = torch.export.Dim("num_prompts", min=1, max=65536)
    points = torch.export.Dim("num_points", min=1, max=65536)
    return export_graph(
        wrapper, example, path,
        input_names=DECODER_INPUTS, output_names=DECODER_OUTPUTS,
        dynamic_shapes=[None, {0: prompts, 1: points}, {0: prompts, 1: points}, {0: prompts}, None],
        parity_inputs=parity, atol=atol,
    )
