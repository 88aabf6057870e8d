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

``sam_point_decoder``
  the same without ``mask_input`` / ``has_mask_input`` (SAM with no mask input: every prompt set
  shares the ``no_mask_embed`` dense embedding) -> the same outputs. Used for every prompt without
  a mask input (all modes, the automatic mask generator).

Design choices (see the module docstring of runtime/sam/predictor.py for the runtime half):

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
  interpolation taps (runtime/sam/predictor.py). The graph therefore has no data-dependent output shape
  (the bug of the TorchScript recipe, and a TensorRT shape-tensor problem), no ``orig_im_size``
  input, and the runtime can threshold full-size masks chunk by chunk instead of materialising
  [P, M, H, W] float32 logits.
* **A decoder laid out for the CPU** (:class:`MaskDecoderForExport`, same weights, same maths as
  ``MaskDecoder.predict_masks`` to float32 rounding). SAM repeats the image embedding once per
  prompt set and moves it between NCHW and token layouts; here the image tokens stay [B, HW, C]
  from the start, and in ``sam_point_decoder`` (B = 1, no mask input) the image side of the first
  layer (the embedding + dense prompt, its positional sum, the token-to-image keys and values, the
  image-to-token queries) is computed once per call and broadcast over the P prompt sets. The two
  stride-2 transposed convolutions of ``output_upscaling`` are per-pixel matrix products (kernel
  offsets as extra channels), so LayerNorm2d becomes a LayerNormalization over the last axis, GELU
  is one ``Gelu`` node (opset 20), and only the 4-channel mask logits are put back in raster
  order at the end. About 1.5x faster than SAM's layout in onnxruntime on the CPU (issue 9).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.modeling.image_encoder import Attention, Block, get_rel_pos
from segment_anything.modeling.mask_decoder import MaskDecoder
from torch import nn

from export.onnx_utils import ExportResult, export_graph
from runtime.bundle.contract import GRAPHS

ENCODER_INPUTS = GRAPHS["sam_image_encoder"].input_names
ENCODER_OUTPUTS = GRAPHS["sam_image_encoder"].output_names
DECODER_INPUTS = GRAPHS["sam_prompt_decoder"].input_names
DECODER_OUTPUTS = GRAPHS["sam_prompt_decoder"].output_names
POINT_DECODER_INPUTS = GRAPHS["sam_point_decoder"].input_names
DECODER_OPSET = 20  # the first with a Gelu operator (onnxruntime runs it as one fused kernel)


DEFAULT_ATTN_ROWS = (
    8  # grid rows of queries per chunk of a global-attention block (vit_b: 512 queries)
)


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
        a = (q[:, r0 * w : r1 * w] * attn.scale) @ kt  # [B * nh, (r1 - r0) * W, H * W]
        if attn.use_rel_pos:
            rq = r_q[:, r0:r1]
            rel_h = torch.einsum("bhwc,hkc->bhwk", rq, rel_h_table[r0:r1])
            rel_w = torch.einsum("bhwc,wkc->bhwk", rq, rel_w_table)
            a = (
                a.view(b * nh, r1 - r0, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
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
        if attn_rows is not None and (
            isinstance(attn_rows, bool) or not isinstance(attn_rows, int) or attn_rows < 1
        ):
            raise ValueError(f"attn_rows must be a positive int or None, got {attn_rows!r}")
        self.image_encoder = sam.image_encoder
        self.img_size = int(sam.image_encoder.img_size)
        self.attn_rows = attn_rows

    def _block(self, blk: Block, x: torch.Tensor) -> torch.Tensor:
        if blk.window_size > 0 or self.attn_rows is None:
            return blk(x)
        x = x + chunked_global_attention(
            blk.attn, blk.norm1(x), self.attn_rows
        )  # Block.forward, global
        return x + blk.mlp(blk.norm2(x))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        enc = self.image_encoder
        x = enc.patch_embed(image)
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        for blk in enc.blocks:
            x = self._block(blk, x)
        return enc.neck(x.permute(0, 3, 1, 2))


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, h, c // h).transpose(1, 2)  # [B, h, N, C / h]


def _attend(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """segment_anything's ``Attention.forward``, with the batch of q and of k / v broadcast (1 or P)."""
    h = attn.num_heads
    qh, kh, vh = _heads(attn.q_proj(q), h), _heads(attn.k_proj(k), h), _heads(attn.v_proj(v), h)
    weights = torch.softmax((qh @ kh.transpose(-1, -2)) / math.sqrt(qh.shape[-1]), dim=-1)
    out = weights @ vh
    b, _, n, d = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class MaskDecoderForExport(nn.Module):
    """``MaskDecoder.predict_masks`` on image tokens [B, HW, C] (B = 1 shared by all prompt sets, or P).

    Same modules and weights as SAM's decoder; see the module docstring for the layout. forward(src,
    tokens): src float32 [B, HW, C] = image embedding + dense prompt embedding as tokens, tokens
    float32 [P, T, C] = output tokens + sparse prompt embeddings; returns (low_res [P, K, 4g, 4g],
    iou [P, K]) for all K = 4 mask tokens.
    """

    def __init__(self, mask_decoder: MaskDecoder, dense_pe: torch.Tensor) -> None:
        super().__init__()
        self.decoder = mask_decoder
        self.register_buffer(
            "pos", dense_pe.flatten(2).transpose(1, 2).contiguous(), persistent=False
        )
        up1, norm, _, up2, _ = mask_decoder.output_upscaling
        for i, up in ((1, up1), (2, up2)):
            if tuple(up.kernel_size) != (2, 2) or tuple(up.stride) != (2, 2):
                raise ValueError(f"output_upscaling[{i}] must be a 2x2, stride-2 ConvTranspose2d")
            # [C_in, C_out, a, b] -> [C_in, (a, b, C_out)]: out pixel (2i + a, 2j + b) of input pixel (i, j)
            w = up.weight.detach().permute(0, 2, 3, 1).reshape(up.weight.shape[0], -1).contiguous()
            self.register_buffer(f"w{i}", w, persistent=False)
            self.register_buffer(f"b{i}", up.bias.detach().clone(), persistent=False)
        self.norm = norm
        self.c1, self.c2 = int(up1.weight.shape[1]), int(up2.weight.shape[1])

    def forward(self, src: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        queries, keys = self.transform(src, tokens)
        m = self.upscale_masks(keys, self.hyper(queries))
        return m, self.decoder.iou_prediction_head(queries[:, 0, :])

    def transform(
        self, src: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer: (queries [P, T, C], image tokens ``keys`` [P, HW, C])."""
        tr, pos = self.decoder.transformer, self.pos
        queries, keys = tokens, src
        for layer in tr.layers:  # TwoWayAttentionBlock.forward
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            q, k = queries + tokens, keys + pos
            queries = layer.norm2(queries + _attend(layer.cross_attn_token_to_image, q, k, keys))
            queries = layer.norm3(queries + layer.mlp(queries))
            q = queries + tokens
            keys = layer.norm4(keys + _attend(layer.cross_attn_image_to_token, k, q, queries))
        q, k = queries + tokens, keys + pos
        queries = tr.norm_final_attn(queries + _attend(tr.final_attn_token_to_image, q, k, keys))
        return queries, keys

    def hyper(self, queries: torch.Tensor) -> torch.Tensor:
        """The mask tokens' hypernetwork outputs [P, K, C2]."""
        md = self.decoder
        return torch.stack(
            [
                md.output_hypernetworks_mlps[i](queries[:, 1 + i, :])
                for i in range(md.num_mask_tokens)
            ],
            dim=1,
        )

    def upscale_masks(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """``output_upscaling`` of the image tokens [P, HW, C] and the masks' product with ``hyper``
        [P, K, C2]: low-res logits [P, K, 4g, 4g]."""
        md = self.decoder
        p, hw, _ = keys.shape
        g = math.isqrt(hw)
        x = (keys @ self.w1).reshape(p, hw, 4, self.c1) + self.b1  # [P, (i, j), (a1, b1), C1]
        x = F.gelu(F.layer_norm(x, (self.c1,), self.norm.weight, self.norm.bias, self.norm.eps))
        x = F.gelu((x @ self.w2).reshape(p, hw * 4, 4, self.c2) + self.b2).reshape(
            p, hw * 16, self.c2
        )
        k_masks = md.num_mask_tokens
        m = x @ hyper.transpose(
            1, 2
        )  # [P, (i, j, a1, b1, a2, b2), K]; pixel (4i + 2a1 + a2, 4j + 2b1 + b2)
        m = (
            m.reshape(p, g, g, 2, 2, 2, 2, k_masks)
            .permute(0, 7, 1, 3, 5, 2, 4, 6)
            .reshape(p, k_masks, 4 * g, 4 * g)
        )
        return m


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
        self.register_buffer(
            "coord_scale", torch.tensor([float(in_w), float(in_h)]), persistent=False
        )
        with torch.no_grad():
            self.register_buffer("dense_pe", pe.get_dense_pe().detach().clone(), persistent=False)
        self.num_labels = int(pe.num_point_embeddings)  # labels 0..3: neg, pos, box corner 1, 2
        self.decode = MaskDecoderForExport(sam.mask_decoder, self.dense_pe)

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

    def _decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        dense: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        md = self.mask_decoder
        sparse = self._embed_points(point_coords, point_labels)
        src = (image_embeddings + dense).flatten(2).transpose(1, 2)
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        low_res, iou = self.decode(src, tokens)
        return iou, low_res

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pe = self.prompt_encoder
        has = has_mask_input.reshape(1, 1, 1, 1)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has * pe.mask_downscaling(mask_input) + (1.0 - has) * no_mask  # [P, C, g, g]
        return self._decode(image_embeddings, point_coords, point_labels, dense)


class SamPointDecoderForExport(SamDecoderForExport):
    """``sam_point_decoder``: the decoder without mask input; one src [1, HW, C] for every prompt set."""

    def forward(
        self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self._decode(image_embeddings, point_coords, point_labels, dense)


class SamPointIouForExport(SamDecoderForExport):
    """``sam_point_iou``: the first half of ``sam_point_decoder``: the IoU head's predictions, and what
    the second half (``sam_mask_upscaler``) needs to make the masks of the prompt sets kept:
    (iou_predictions [P, 4], image_tokens [P, HW, C], mask_hyper [P, 4, C2])."""

    def forward(
        self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        md = self.mask_decoder
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        sparse = self._embed_points(point_coords, point_labels)
        src = (image_embeddings + dense).flatten(2).transpose(1, 2)
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        queries, keys = self.decode.transform(src, tokens)
        return md.iou_prediction_head(queries[:, 0, :]), keys, self.decode.hyper(queries)


class SamMaskUpscalerForExport(nn.Module):
    """``sam_mask_upscaler``: the second half: (image_tokens [K, HW, C], mask_hyper [K, 4, C2]) ->
    low_res_masks [K, 4, 4g, 4g], the same operations as the end of ``sam_point_decoder``."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        with torch.no_grad():
            pe = sam.prompt_encoder.get_dense_pe().detach().clone()
        self.decode = MaskDecoderForExport(sam.mask_decoder, pe)

    def forward(self, image_tokens: torch.Tensor, mask_hyper: torch.Tensor) -> torch.Tensor:
        return self.decode.upscale_masks(image_tokens, mask_hyper)


def export_sam_amg_halves(
    sam: Sam,
    iou_path: str | Path,
    upscaler_path: str | Path,
    *,
    atol: float | None = 1e-3,
    seed: int = 0,
) -> tuple[ExportResult, ExportResult]:
    """Export ``sam_point_iou`` and ``sam_mask_upscaler`` (dynamic prompt sets P, points N), each with
    an ORT-vs-PyTorch parity check; together they compute ``sam_point_decoder`` (tests compare the
    pair with segment-anything's own decoder and automatic mask generator)."""
    iou_mod = SamPointIouForExport(sam).eval()
    example = decoder_example_inputs(sam, 3, 5, seed=seed)[:3]
    parity = [
        decoder_example_inputs(sam, 1, 1, has_mask=False, seed=seed + 1)[:3],
        decoder_example_inputs(sam, 7, 2, has_mask=False, seed=seed + 2)[:3],
    ]
    prompts = torch.export.Dim("num_prompts", min=1, max=65536)
    points = torch.export.Dim("num_points", min=1, max=65536)
    spec_iou, spec_up = GRAPHS["sam_point_iou"], GRAPHS["sam_mask_upscaler"]
    r1 = export_graph(
        iou_mod,
        example,
        iou_path,
        input_names=spec_iou.input_names,
        output_names=spec_iou.output_names,
        dynamic_shapes=[None, {0: prompts, 1: points}, {0: prompts, 1: points}],
        opset=DECODER_OPSET,
        parity_inputs=parity,
        atol=atol,
    )
    with torch.no_grad():
        _, keys, hyper = iou_mod(*example)
        _, keys7, hyper7 = iou_mod(*parity[1])
    up_prompts = torch.export.Dim("num_prompts", min=1, max=65536)
    r2 = export_graph(
        SamMaskUpscalerForExport(sam).eval(),
        (keys, hyper),
        upscaler_path,
        input_names=spec_up.input_names,
        output_names=spec_up.output_names,
        dynamic_shapes=[{0: up_prompts}, {0: up_prompts}],
        opset=DECODER_OPSET,
        parity_inputs=[(keys7, hyper7)],
        atol=atol,
    )
    return r1, r2


def _grid(sam: Sam) -> int:
    return int(sam.prompt_encoder.image_embedding_size[0])


def decoder_example_inputs(
    sam: Sam, num_prompts: int, num_points: int, *, has_mask: bool = True, seed: int = 0
) -> tuple[torch.Tensor, ...]:
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


def export_sam_encoder(
    sam: Sam,
    path: str | Path,
    *,
    example_batch: int = 2,
    parity_batches: tuple[int, ...] = (1,),
    atol: float | None = 1e-3,
    seed: int = 0,
    attn_rows: int | None = DEFAULT_ATTN_ROWS,
) -> ExportResult:
    """Export ``sam_image_encoder`` (dynamic batch) to ``path`` with an ORT-vs-PyTorch parity check.

    The example batch (>= 2, so the batch axis stays symbolic) and every ``parity_batches`` size are
    run through ORT and through segment_anything's own ``ImageEncoderViT`` (not the export wrapper) on
    random normalised images; ``atol`` (None: no limit) bounds the max abs difference of the
    embeddings. attn_rows: query chunk of the global-attention blocks (:class:`SamEncoderForExport`).
    """
    if example_batch < 2:
        raise ValueError(
            f"example_batch must be >= 2 (a size-1 example fixes the batch axis), got {example_batch}"
        )
    wrapper = SamEncoderForExport(sam, attn_rows=attn_rows).eval()
    s = wrapper.img_size
    g = torch.Generator().manual_seed(seed)
    example = (torch.randn(example_batch, 3, s, s, generator=g),)
    parity = [(torch.randn(b, 3, s, s, generator=g),) for b in parity_batches]
    return export_graph(
        wrapper,
        example,
        path,
        input_names=ENCODER_INPUTS,
        output_names=ENCODER_OUTPUTS,
        dynamic_shapes=[{0: torch.export.Dim("batch", min=1, max=1024)}],
        parity_inputs=parity,
        atol=atol,
        reference=sam.image_encoder,
    )


def export_sam_decoder(
    sam: Sam,
    path: str | Path,
    *,
    atol: float | None = 1e-3,
    seed: int = 0,
    with_mask_input: bool = True,
) -> ExportResult:
    """Export ``sam_prompt_decoder`` (or, ``with_mask_input=False``, ``sam_point_decoder``) with dynamic
    prompt sets P and points N, and a parity check against ``MaskDecoder.predict_masks`` itself.

    Exported with P=3, N=5 and checked in ORT vs PyTorch also at (P, N) = (1, 1) without a mask
    input and (7, 2) with one (without a mask input for the point decoder). The PyTorch side of the
    check is segment-anything's own decoder (:class:`SamReferenceDecoder`), not the export layout.
    """
    wrapper = (
        SamDecoderForExport(sam) if with_mask_input else SamPointDecoderForExport(sam)
    ).eval()
    n_in = 5 if with_mask_input else 3
    example = decoder_example_inputs(sam, 3, 5, seed=seed)[:n_in]
    parity = [
        decoder_example_inputs(sam, 1, 1, has_mask=False, seed=seed + 1)[:n_in],
        decoder_example_inputs(sam, 7, 2, has_mask=with_mask_input, seed=seed + 2)[:n_in],
    ]
    prompts = torch.export.Dim("num_prompts", min=1, max=65536)
    points = torch.export.Dim("num_points", min=1, max=65536)
    shapes = [None, {0: prompts, 1: points}, {0: prompts, 1: points}, {0: prompts}, None][:n_in]
    return export_graph(
        wrapper,
        example,
        path,
        input_names=DECODER_INPUTS if with_mask_input else POINT_DECODER_INPUTS,
        output_names=DECODER_OUTPUTS,
        dynamic_shapes=shapes,
        opset=DECODER_OPSET,
        parity_inputs=parity,
        atol=atol,
        reference=SamReferenceDecoder(sam, with_mask_input=with_mask_input),
    )


class SamReferenceDecoder(nn.Module):
    """The decoder graphs' inputs -> outputs through segment-anything's own ``MaskDecoder.predict_masks``
    (SAM's layout: the embedding repeated per prompt set): the oracle of the export parity check."""

    def __init__(self, sam: Sam, *, with_mask_input: bool = True) -> None:
        super().__init__()
        self.embed = SamDecoderForExport(sam)
        self.with_mask_input = with_mask_input

    def forward(
        self, image_embeddings, point_coords, point_labels, mask_input=None, has_mask_input=None
    ):
        w = self.embed
        pe = w.prompt_encoder
        sparse = w._embed_points(point_coords, point_labels)
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            sparse.shape[0], -1, *image_embeddings.shape[2:]
        )
        if self.with_mask_input:
            has = has_mask_input.reshape(1, 1, 1, 1)
            dense = has * pe.mask_downscaling(mask_input) + (1.0 - has) * dense
        low_res, iou = w.mask_decoder.predict_masks(image_embeddings, w.dense_pe, sparse, dense)
        return iou, low_res


_PROBE = r"""
import json, sys
import numpy as np
from runtime.backends._onnxruntime import create_session

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


def measure_encoder_memory(
    path: str | Path, image_size: int, *, timeout_s: float = 900
) -> dict | None:
    """Peak-RSS cost of the exported encoder under the runtime's session options (CPU), for the manifest.

    Runs the graph on a batch of 1 and of 2 zero images (activations do not depend on the values),
    each in a fresh process (VmHWM). Returns ``{"bytes_per_frame": peak(2) - peak(1), "bytes_batch1":
    peak(1) - RSS after the session was made, "method": ...}``, or None where /proc is missing or a
    probe fails. The runtime picks its encoder batch from ``bytes_per_frame`` (runtime/backends/_memory.py).
    """
    if not Path("/proc/self/status").exists():
        return None
    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
    }
    got = {}
    for b in (1, 2):
        try:
            out = subprocess.run(
                [sys.executable, "-c", _PROBE, str(path), str(b), str(int(image_size))],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout_s,
                check=True,
            )
            got[b] = json.loads(out.stdout.strip().splitlines()[-1])
        except (subprocess.SubprocessError, ValueError, IndexError, OSError):
            return None
    return {
        "bytes_per_frame": max(1, got[2]["peak"] - got[1]["peak"]),
        "bytes_batch1": max(0, got[1]["peak"] - got[1]["session"]),
        "method": "VmHWM of fresh processes running batches of 1 and 2 on the CPU (runtime session options)",
    }
