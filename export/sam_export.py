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

* **Global attention in query chunks.** The encoder's global-attention blocks compute their queries
  ``attn_rows`` grid rows at a time (:func:`chunked_global_attention`), each row with exactly the
  original operations, so the [B * heads, g * g, g * g] attention matrix (805 MB per frame at ViT-B,
  plus as much again for the relative-position sums and the softmax) never exists whole. Measured
  with onnxruntime on ViT-B, one 1024 px frame: activations 3.2 GB -> 1.2 GB; see
  docs/architecture.md "Memory". The parity check compares with segment_anything's own
  ``ImageEncoderViT``.

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

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from segment_anything.modeling.image_encoder import Attention, Block, get_rel_pos
from torch import nn

from export.onnx_utils import ExportResult, export_graph
from runtime.contract import GRAPHS

ENCODER_INPUTS = GRAPHS["sam_image_encoder"].input_names
ENCODER_OUTPUTS = GRAPHS["sam_image_encoder"].output_names
DECODER_INPUTS = GRAPHS["sam_prompt_decoder"].input_names
DECODER_OUTPUTS = GRAPHS["sam_prompt_decoder"].output_names


DEFAULT_ATTN_ROWS = 8  # grid rows of queries per chunk of a global-attention block (vit_b: 512 queries)


def chunked_global_attention(attn: Attention, x: torch.Tensor, rows: int) -> torch.Tensor:
    """segment_anything's ``Attention.forward`` on a whole [B, H, W, C] grid, queries in chunks of ``rows``
    grid rows.

    Every query row goes through exactly the original operations (``(q * scale) @ k^T``, the decomposed
    relative-position terms of ``add_decomposed_rel_pos`` for that row, softmax, ``@ v``), so results
    match the unchunked module to float32 rounding; the [B * heads, H * W, H * W] attention matrix
    (805 MB per 1024 px frame at ViT-B) is never whole: its largest piece is
    [B * heads, rows * W, H * W].
    """
    b, h, w, _ = x.shape
    nh = attn.num_heads
    qkv = attn.qkv(x).reshape(b, h * w, 3, nh, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * nh, h * w, -1).unbind(0)
    kt = k.transpose(-2, -1)
    if attn.use_rel_pos:
        rel_h_table = get_rel_pos(h, h, attn.rel_pos_h)  # [H, H, C]
        rel_w_table = get_rel_pos(w, w, attn.rel_pos_w)  # [W, W, C]
        r_q = q.reshape(b * nh, h, w, -1)
    outs = []
    for r0 in range(0, h, rows):
        r1 = min(r0 + rows, h)
        a = (q[:, r0 * w:r1 * w] * attn.scale) @ kt  # [B * nh, (r1 - r0) * W, H * W]
        if attn.use_rel_pos:
            rq = r_q[:, r0:r1]
            rel_h = torch.einsum("bhwc,hkc->bhwk", rq, rel_h_table[r0:r1])
            rel_w = torch.einsum("bhwc,wkc->bhwk", rq, rel_w_table)
            a = (a.view(b * nh, r1 - r0, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
                 ).view(b * nh, (r1 - r0) * w, h * w)
        outs.append(a.softmax(dim=-1) @ v)
    o = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
    o = o.view(b, nh, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return attn.proj(o)


class SamEncoderForExport(nn.Module):
    """Normalised, padded image [B, 3, S, S] float32 -> image embedding [B, 256, S/16, S/16].

    ``ImageEncoderViT.forward`` step by step, with the global-attention blocks' queries in chunks of
    ``attn_rows`` grid rows (:func:`chunked_global_attention`; None: whole, as the original). The model's
    modules are used as they are, nothing in ``sam`` is changed.
    """

    def __init__(self, sam: Sam, *, attn_rows: int | None = DEFAULT_ATTN_ROWS) -> None:
        super().__init__()
        if attn_rows is not None and (isinstance(attn_rows, bool) or not isinstance(attn_rows, int) or attn_rows < 1):
            raise ValueError(f"attn_rows must be a positive int or None, got {attn_rows!r}")
        self.image_encoder = sam.image_encoder
        self.img_size = int(sam.image_encoder.img_size)
        self.attn_rows = attn_rows

    def _block(self, blk: Block, x: torch.Tensor) -> torch.Tensor:
        if blk.window_size > 0 or self.attn_rows is None:
            return blk(x)
        x = x + chunked_global_attention(blk.attn, blk.norm1(x), self.attn_rows)  # Block.forward, global
        return x + blk.mlp(blk.norm2(x))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        enc = self.image_encoder
        x = enc.patch_embed(image)
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        for blk in enc.blocks:
            x = self._block(blk, x)
        return enc.neck(x.permute(0, 3, 1, 2))


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
                       seed: int = 0, attn_rows: int | None = DEFAULT_ATTN_ROWS) -> ExportResult:
    """Export ``sam_image_encoder`` (dynamic batch) to ``path`` with an ORT-vs-PyTorch parity check.

    The example batch (>= 2, so the batch axis stays symbolic) and every ``parity_batches`` size are
    run through ORT and through segment_anything's own ``ImageEncoderViT`` (not the export wrapper) on
    random normalised images; ``atol`` (None: no limit) bounds the max abs difference of the
    embeddings. attn_rows: query chunk of the global-attention blocks (:class:`SamEncoderForExport`).
    """
    if example_batch < 2:
        raise ValueError(f"example_batch must be >= 2 (a size-1 example fixes the batch axis), got {example_batch}")
    wrapper = SamEncoderForExport(sam, attn_rows=attn_rows).eval()
    s = wrapper.img_size
    g = torch.Generator().manual_seed(seed)
    example = (torch.randn(example_batch, 3, s, s, generator=g),)
    parity = [(torch.randn(b, 3, s, s, generator=g),) for b in parity_batches]
    return export_graph(
        wrapper, example, path,
        input_names=ENCODER_INPUTS, output_names=ENCODER_OUTPUTS,
        dynamic_shapes=[{0: torch.export.Dim("batch", min=1, max=1024)}],
        parity_inputs=parity, atol=atol, reference=sam.image_encoder,
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


_PROBE = r"""
import json, sys
import numpy as np
from runtime.sessions import create_session

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

path, batch, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sess, _ = create_session(path, graph="sam_image_encoder", providers=["cpu"])
before = hwm()
sess.run(None, {sess.get_inputs()[0].name: np.zeros((batch, 3, size, size), np.float32)})
print(json.dumps({"session": before, "peak": hwm()}))
"""


def measure_encoder_memory(path: str | Path, image_size: int, *, timeout_s: float = 900) -> dict | None:
    """Peak-RSS cost of the exported encoder under the runtime's session options (CPU), for the manifest.

    Runs the graph on a batch of 1 and of 2 zero images (activations do not depend on the values),
    each in a fresh process (VmHWM). Returns ``{"bytes_per_frame": peak(2) - peak(1), "bytes_batch1":
    peak(1) - RSS after the session was made, "method": ...}``, or None where /proc is missing or a
    probe fails. The runtime picks its encoder batch from ``bytes_per_frame`` (runtime/memory.py).
    """
    if not Path("/proc/self/status").exists():
        return None
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    got = {}
    for b in (1, 2):
        try:
            out = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(b), str(int(image_size))],
                                 capture_output=True, text=True, env=env, timeout=timeout_s, check=True)
            got[b] = json.loads(out.stdout.strip().splitlines()[-1])
        except (subprocess.SubprocessError, ValueError, IndexError, OSError):
            return None
    return {
        "bytes_per_frame": max(1, got[2]["peak"] - got[1]["peak"]),
        "bytes_batch1": max(0, got[1]["peak"] - got[1]["session"]),
        "method": "VmHWM of fresh processes running batches of 1 and 2 on the CPU (runtime session options)",
    }
