"""SAM at run time: preprocessing, prompt batching and mask postprocessing in numpy + onnxruntime.

This module reproduces ``segment_anything``'s ``SamPredictor`` around two ONNX graphs
(``sam_image_encoder`` and ``sam_prompt_decoder``, contracts in export/sam_export.py):

* ``preprocess``: ``ResizeLongestSide`` (PIL bilinear resize of the uint8 frame so that the longest
  side is S, sizes rounded with ``int(x + 0.5)``), ``(x - mean) / std`` in float32, zero padding to
  S x S at the bottom/right. Bit-identical to ``SamPredictor.set_image`` + ``Sam.preprocess``.
* ``apply_coords`` / ``apply_boxes``: original-frame pixels -> model input frame.
* ``postprocess_masks``: ``Sam.postprocess_masks`` (bilinear, align_corners=False, to S x S; crop to
  the resized size; bilinear to the frame size) as one separable resampling per axis. The two
  linear maps of each axis are composed into one block-banded matrix (each output row depends on
  at most 3-4 adjacent low-res rows), applied with small BLAS matmuls, so low-res logits go
  straight to the frame's size without the S x S intermediate; results agree with PyTorch to
  float32 rounding (about 1e-6).
* ``SamRunner``: encodes frames in batches (one embedding per frame, reused by every prompt) and
  decodes any number of prompt sets in one decoder call (chunked at ``max_prompts``).

Coordinates are (x, y) pixels, x along the width; a pixel's centre is at +0.5 (SAM's convention).
No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image

from runtime.budget import checkpoint
from runtime.bundle.contract import GRAPHS
from runtime.errors import InputError
from runtime.preprocess.resize import linear_taps

ENCODER_INPUT = GRAPHS["sam_image_encoder"].input_names[0]
ENCODER_OUTPUT = GRAPHS["sam_image_encoder"].output_names[0]
DECODER_INPUTS = GRAPHS["sam_prompt_decoder"].input_names
DECODER_OUTPUTS = GRAPHS["sam_prompt_decoder"].output_names
POINT_DECODER_INPUTS = GRAPHS["sam_point_decoder"].input_names
IOU_HALF_OUTPUTS = GRAPHS["sam_point_iou"].output_names
UPSCALER_INPUTS = GRAPHS["sam_mask_upscaler"].input_names
UPSCALER_OUTPUTS = GRAPHS["sam_mask_upscaler"].output_names

_ALLOWED_POINT_LABELS = (-1.0, 0.0, 1.0)  # padding / background / foreground


# --- geometry ------------------------------------------------------------------------------------


def get_preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(new_h, new_w) with the longest side scaled to ``long_side``, rounded as ResizeLongestSide does."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _check_hw(hw, name: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in hw)
        ok = all(float(v) == int(v) for v in hw)
    except (TypeError, ValueError):
        raise InputError(
            f"{name} must be a (height, width) pair of positive ints, got {hw!r}"
        ) from None
    if not ok or h < 1 or w < 1:
        raise InputError(f"{name} must be a (height, width) pair of positive ints, got {hw!r}")
    return h, w


def _check_image_size(image_size) -> int:
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or image_size < 1
    ):
        raise InputError(f"image_size must be a positive int, got {image_size!r}")
    return int(image_size)


def _numeric(arr, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind not in "iuf":
        raise InputError(f"{name} must be a real-valued numeric array, got dtype {a.dtype}")
    if a.size and not np.all(np.isfinite(a)):
        raise InputError(f"{name} must be finite (no NaN/inf)")
    return a.astype(np.float64)


def apply_coords(coords, orig_hw: tuple[int, int], image_size: int) -> np.ndarray:
    """Map (x, y) pixel coordinates of the original frame into the model's input frame.

    coords: array [..., 2] (any real dtype), x along the width, in pixels of a frame of size
    ``orig_hw`` = (H, W). Returns float32 [..., 2] scaled by (new_w / W, new_h / H) where
    (new_h, new_w) = ``get_preprocess_shape(H, W, image_size)`` (computed in float64, as SAM).
    """
    h, w = _check_hw(orig_hw, "orig_hw")
    s = _check_image_size(image_size)
    c = _numeric(coords, "coords")
    if c.ndim < 1 or c.shape[-1] != 2:
        raise InputError(f"coords must have shape [..., 2] (x, y), got {c.shape}")
    new_h, new_w = get_preprocess_shape(h, w, s)
    c = c.copy()
    c[..., 0] = c[..., 0] * (new_w / w)
    c[..., 1] = c[..., 1] * (new_h / h)
    return c.astype(np.float32)


def apply_boxes(boxes, orig_hw: tuple[int, int], image_size: int) -> np.ndarray:
    """Map boxes [K, 4] (x0, y0, x1, y1 pixels of the original frame) into the model input frame.

    Returns float32 [K, 4]; see :func:`apply_coords`.
    """
    b = _numeric(boxes, "boxes")
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must have shape [K, 4] (x0, y0, x1, y1), got {b.shape}")
    return apply_coords(b.reshape(-1, 2, 2), orig_hw, image_size).reshape(-1, 4)


# --- preprocessing -------------------------------------------------------------------------------


def _check_frame(image, patch_size: int, name: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"{name} must be a numpy uint8 array of shape (H, W, 3) (RGB), got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise InputError(
            f"{name} must be uint8 (H, W, 3) RGB with values 0..255, got dtype {image.dtype}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"{name} must have shape (H, W, 3) (RGB, channels last), got {image.shape}"
        )
    if image.shape[0] < patch_size or image.shape[1] < patch_size:
        raise InputError(
            f"{name} is {image.shape[0]}x{image.shape[1]}: both sides must be at least "
            f"the patch size {patch_size}"
        )
    return np.ascontiguousarray(image)


def _const3(v, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise InputError(f"{name} must be 3 finite numbers (R, G, B), got {v!r}")
    return a


def preprocess(
    image: np.ndarray,
    image_size: int,
    pixel_mean,
    pixel_std,
    *,
    patch_size: int = 16,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Frame -> encoder input, exactly as ``SamPredictor.set_image`` + ``Sam.preprocess``.

    image: uint8 [H, W, 3] RGB, 0..255, both sides >= ``patch_size``.
    image_size: S, the encoder's square input size; pixel_mean / pixel_std: 3 values on the
    0..255 scale (RGB).
    out: optional float32 [3, S, S] (or [1, 3, S, S]) buffer to write into; it is returned as x.
    Returns (x, (h, w)): x float32 [1, 3, S, S] (or ``out``), normalised, the resized frame at the top-left and
    zeros elsewhere; (h, w) the resized size (longest side S).
    """
    s = _check_image_size(image_size)
    img = _check_frame(image, patch_size)
    mean = _const3(pixel_mean, "pixel_mean")
    std = _const3(pixel_std, "pixel_std")
    new_h, new_w = get_preprocess_shape(img.shape[0], img.shape[1], s)
    if new_h < 1 or new_w < 1:
        raise InputError(
            f"image of {img.shape[0]}x{img.shape[1]} is too elongated: its short side "
            f"would be 0 pixels at image size {s}"
        )
    resized = np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.Resampling.BILINEAR))
    if out is None:
        x = np.zeros((1, 3, s, s), dtype=np.float32)
        dst = x[0]
    else:
        dst = out.reshape(3, s, s)
        dst[...] = 0.0
        x = out
    norm = (resized.astype(np.float32) - mean) / std  # [h, w, 3] float32
    dst[:, :new_h, :new_w] = norm.transpose(2, 0, 1)
    return x, (new_h, new_w)


# --- mask postprocessing -------------------------------------------------------------------------


_BLOCK = 64  # output rows/columns per block of the banded resampling


@lru_cache(maxsize=64)
def _axis_plan(low: int, image_size: int, crop: int, out: int) -> tuple[tuple, ...]:
    """One axis of ``Sam.postprocess_masks`` as a block-banded linear map low -> out.

    Composition of bilinear low -> image_size, crop to [0, crop), bilinear crop -> out. Each output
    row depends on at most a few adjacent low-res rows, so the map is stored as blocks
    (o0, o1, s0, s1, W) with W float32 [o1 - o0, s1 - s0]: out[o0:o1] = W @ low[s0:s1].
    """
    a0, a1, u0, u1 = linear_taps(low, image_size)
    b0, b1, v0, v1 = linear_taps(crop, out)
    taps_i = np.stack([a0[b0], a1[b0], a0[b1], a1[b1]], axis=1)
    taps_w = np.stack([v0 * u0[b0], v0 * u1[b0], v1 * u0[b1], v1 * u1[b1]], axis=1)
    blocks = []
    for o0 in range(0, out, _BLOCK):
        o1 = min(o0 + _BLOCK, out)
        ti, tw = taps_i[o0:o1], taps_w[o0:o1]
        s0, s1 = int(ti.min()), int(ti.max()) + 1
        w = np.zeros((o1 - o0, s1 - s0), dtype=np.float64)
        rows = np.repeat(np.arange(o1 - o0), ti.shape[1])
        np.add.at(w, (rows, (ti - s0).reshape(-1)), tw.reshape(-1))
        w = w.astype(np.float32)
        w.setflags(write=False)
        blocks.append((o0, o1, s0, s1, w))
    return tuple(blocks)


def _resample(masks: np.ndarray, plan_y, plan_x, out: np.ndarray | None = None) -> np.ndarray:
    """Apply the block-banded maps: float32 [..., Ly, Lx] -> [..., Hout, Wout] (x axis first)."""
    lead = masks.shape[:-2]
    w_out = plan_x[-1][1]
    h_out = plan_y[-1][1]
    tmp = np.empty(lead + (masks.shape[-2], w_out), dtype=np.float32)
    for o0, o1, s0, s1, w in plan_x:
        np.matmul(masks[..., :, s0:s1], w.T, out=tmp[..., :, o0:o1])
    if out is None:
        out = np.empty(lead + (h_out, w_out), dtype=np.float32)
    for o0, o1, s0, s1, w in plan_y:
        np.matmul(w, tmp[..., s0:s1, :], out=out[..., o0:o1, :])
    return out


def postprocess_masks(
    masks: np.ndarray, input_hw: tuple[int, int], orig_hw: tuple[int, int], image_size: int
) -> np.ndarray:
    """Mask logits -> logits at the frame's size, as ``Sam.postprocess_masks`` (before thresholding).

    masks: float [..., h, w] logits on the padded square input (the decoder's low-res output,
    h = w = 4 * S / 16, or already S x S). input_hw: the resized (unpadded) size from
    :func:`preprocess`; orig_hw: the frame's (H, W); image_size: S.
    Returns float32 [..., H, W]: bilinear (align_corners=False) to S x S, crop to input_hw,
    bilinear to orig_hw, computed as one separable banded resampling (matches PyTorch to ~1e-6).
    """
    s = _check_image_size(image_size)
    ih, iw = _check_hw(input_hw, "input_hw")
    oh, ow = _check_hw(orig_hw, "orig_hw")
    m = np.asarray(masks)
    if m.dtype.kind != "f" or m.ndim < 2:
        raise InputError(
            f"masks must be a float array [..., h, w] of logits, got dtype {m.dtype}, shape {m.shape}"
        )
    if ih > s or iw > s:
        raise InputError(f"input_hw {input_hw} exceeds the image size {s}")
    m = m.astype(np.float32, copy=False)
    plan_y = _axis_plan(m.shape[-2], s, ih, oh)
    plan_x = _axis_plan(m.shape[-1], s, iw, ow)
    return _resample(m, plan_y, plan_x)


# --- prompts -------------------------------------------------------------------------------------


def encode_prompts(
    orig_hw: tuple[int, int],
    image_size: int,
    point_coords=None,
    point_labels=None,
    boxes=None,
    *,
    boxes_inside: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """SAM's decoder prompt inputs for P prompt sets, as ``SamPredictor.predict_torch`` builds them.

    The one place where points and boxes become decoder inputs (every mode and the automatic mask
    generator go through it). orig_hw: the frame's (H, W); image_size: SAM's input size S.
    point_coords: float [N, 2] (one prompt set) or [P, N, 2], (x, y) pixels of the frame with
    0 <= x <= W, 0 <= y <= H; point_labels: [N] / [P, N], 1 foreground, 0 background, -1 padding.
    boxes: [4] or [K, 4] (x0, y0, x1, y1) pixels, each its own prompt set (with points [N, 2]
    shared by every box, or [K, N, 2] paired). boxes_inside: refuse boxes outside the frame;
    False takes them as they are (SAM itself neither checks nor clips boxes: a detector's box may
    stick out of the frame, and the reference feeds it unclipped).
    Conventions: boxes become two corner points labelled 2 and 3 after the points; prompt sets
    without a box get one padding point (0, 0) labelled -1.
    Returns (coords float32 [P, N', 2] in the model's input frame, labels float32 [P, N']).
    """
    h, w = _check_hw(orig_hw, "orig_hw")
    pts = lab = bxs = None
    if point_coords is None and point_labels is not None:
        raise InputError("point_labels given without point_coords")
    if point_coords is not None:
        if point_labels is None:
            raise InputError(
                "point_labels must be given with point_coords (1 foreground, 0 background)"
            )
        pts = _numeric(point_coords, "point_coords")
        lab = _numeric(point_labels, "point_labels")
        if pts.ndim == 2:
            pts = pts[None]
            if lab.ndim == 1:
                lab = lab[None]
        if pts.ndim != 3 or pts.shape[-1] != 2 or pts.shape[1] < 1:
            raise InputError(
                f"point_coords must be [N, 2] or [P, N, 2] (x, y) pixels with N >= 1, "
                f"got {np.shape(point_coords)}"
            )
        if lab.shape != pts.shape[:2]:
            raise InputError(
                f"point_labels must have shape {pts.shape[:2]} to match point_coords "
                f"{np.shape(point_coords)}, got {np.shape(point_labels)}"
            )
        if not np.all(np.isin(lab, _ALLOWED_POINT_LABELS)):
            bad = np.unique(lab[~np.isin(lab, _ALLOWED_POINT_LABELS)])[:5]
            raise InputError(
                f"point_labels must be 1 (foreground), 0 (background) or -1 (padding), "
                f"got {bad.tolist()}"
            )
        xs, ys = pts[..., 0], pts[..., 1]
        if xs.min() < 0 or ys.min() < 0 or xs.max() > w or ys.max() > h:
            raise InputError(
                f"point_coords must lie in the frame: 0 <= x <= {w}, 0 <= y <= {h} "
                f"(pixels of the {h}x{w} frame), got x in [{xs.min()}, {xs.max()}], "
                f"y in [{ys.min()}, {ys.max()}]"
            )
    if boxes is not None:
        bxs = _numeric(boxes, "boxes")
        if bxs.ndim == 1:
            bxs = bxs[None]
        if bxs.ndim != 2 or bxs.shape[1] != 4 or bxs.shape[0] < 1:
            raise InputError(
                f"boxes must be [4] or [K, 4] (x0, y0, x1, y1) pixels with K >= 1, "
                f"got {np.shape(boxes)}"
            )
        x0, y0, x1, y1 = bxs.T
        if boxes_inside and ((x0 < 0).any() or (y0 < 0).any() or (x1 > w).any() or (y1 > h).any()):
            raise InputError(
                f"boxes must lie in the frame: 0 <= x <= {w}, 0 <= y <= {h} "
                f"(pixels of the {h}x{w} frame), got {bxs[:4].tolist()}..."
            )
        if (x1 < x0).any() or (y1 < y0).any():
            raise InputError("boxes must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
    if pts is None and bxs is None:
        raise InputError(
            "give point_coords/point_labels and/or boxes: at least one prompt is needed"
        )

    if bxs is not None:
        k = bxs.shape[0]
        corners = bxs.reshape(k, 2, 2)
        corner_labels = np.tile(np.array([[2.0, 3.0]]), (k, 1))
        if pts is not None:
            if pts.shape[0] == 1 and k > 1:
                pts = np.repeat(pts, k, axis=0)
                lab = np.repeat(lab, k, axis=0)
            elif pts.shape[0] != k:
                raise InputError(
                    f"with {k} boxes, point_coords must be [N, 2] (shared) or [{k}, N, 2], "
                    f"got {pts.shape[0]} prompt sets"
                )
            coords = np.concatenate([pts, corners], axis=1)
            labels = np.concatenate([lab, corner_labels], axis=1)
        else:
            coords, labels = corners, corner_labels
    else:
        # Points only: SAM appends one padding point (label -1) to every prompt set.
        p = pts.shape[0]
        coords = np.concatenate([pts, np.zeros((p, 1, 2))], axis=1)
        labels = np.concatenate([lab, -np.ones((p, 1))], axis=1)
    return apply_coords(coords, (h, w), image_size), labels.astype(np.float32)


# --- the runner ----------------------------------------------------------------------------------


def _io_names(session, kind: str) -> list[str]:
    return [v.name for v in (session.get_inputs() if kind == "in" else session.get_outputs())]


class SamRunner:
    """SAM inference on two onnxruntime sessions; one embedding per frame, reused by every prompt.

    encoder, decoder: ``onnxruntime.InferenceSession`` objects of ``sam_image_encoder`` and
    ``sam_prompt_decoder`` (export/sam_export.py contracts). image_size (S), pixel_mean,
    pixel_std (RGB, 0..255 scale), patch_size and mask_threshold come from the bundle manifest.
    point_decoder: the optional ``sam_point_decoder`` session, used for every prompt without a mask
    input (the same outputs, faster). max_batch: frames per encoder call; max_prompts: prompt sets
    per decoder call (16: the decoder's activations, ~70 MB per prompt set at ViT sizes, stay
    bounded, and larger calls are no faster on the CPU).
    iou_first: optional ``(sam_point_iou, sam_mask_upscaler)`` sessions, or a callable returning
    them on first use: the point decoder in two halves, so that :meth:`predict_low_res_iou_first`
    makes the masks only of the prompt sets whose predicted IoU can pass a threshold.
    """

    def __init__(
        self,
        encoder,
        decoder,
        image_size: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        *,
        patch_size: int = 16,
        mask_threshold: float = 0.0,
        max_batch: int = 5,
        max_prompts: int = 16,
        point_decoder=None,
        iou_first=None,
    ) -> None:
        self.image_size = _check_image_size(image_size)
        self.pixel_mean = _const3(pixel_mean, "pixel_mean")
        self.pixel_std = _const3(pixel_std, "pixel_std")
        if self.image_size % int(patch_size):
            raise InputError(
                f"image_size {image_size} is not a multiple of patch_size {patch_size}"
            )
        self.patch_size = int(patch_size)
        self.mask_threshold = float(mask_threshold)
        if int(max_batch) < 1 or int(max_prompts) < 1:
            raise InputError(
                f"max_batch and max_prompts must be >= 1, got {max_batch}, {max_prompts}"
            )
        self.max_batch = int(max_batch)
        self.max_prompts = int(max_prompts)
        if _io_names(encoder, "in") != [ENCODER_INPUT] or ENCODER_OUTPUT not in _io_names(
            encoder, "out"
        ):
            raise InputError(
                f"encoder session must take {[ENCODER_INPUT]} and give {ENCODER_OUTPUT!r}; "
                f"it takes {_io_names(encoder, 'in')} and gives {_io_names(encoder, 'out')}"
            )
        if _io_names(decoder, "in") != list(DECODER_INPUTS) or not set(DECODER_OUTPUTS) <= set(
            _io_names(decoder, "out")
        ):
            raise InputError(
                f"decoder session must take {list(DECODER_INPUTS)} and give {list(DECODER_OUTPUTS)}; "
                f"it takes {_io_names(decoder, 'in')} and gives {_io_names(decoder, 'out')}"
            )
        if point_decoder is not None and (
            _io_names(point_decoder, "in") != list(POINT_DECODER_INPUTS)
            or not set(DECODER_OUTPUTS) <= set(_io_names(point_decoder, "out"))
        ):
            raise InputError(
                f"point decoder session must take {list(POINT_DECODER_INPUTS)} and give "
                f"{list(DECODER_OUTPUTS)}; it takes {_io_names(point_decoder, 'in')}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.point_decoder = point_decoder
        self._iou_first = iou_first
        # prompt sets through predict_low_res_iou_first, and those whose masks were made
        self.iou_first_counts = {"prompt_sets": 0, "upscaled": 0}
        grid = self.image_size // self.patch_size
        emb_shape = tuple(decoder.get_inputs()[0].shape)
        if len(emb_shape) != 4 or not isinstance(emb_shape[1], int):
            raise InputError(
                f"decoder input image_embeddings must be [1, C, g, g] with a fixed C, got {emb_shape}"
            )
        self.embedding_shape = (1, int(emb_shape[1]), grid, grid)
        self.low_res_size = 4 * grid

    # -- frames ------------------------------------------------------------------------------------

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """uint8 [H, W, 3] RGB frame -> (float32 [1, 3, S, S] encoder input, resized (h, w)); see :func:`preprocess`."""
        return preprocess(
            image, self.image_size, self.pixel_mean, self.pixel_std, patch_size=self.patch_size
        )

    def embed(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Image embeddings of frames, encoded in batches of up to ``max_batch``.

        frames: a sequence of uint8 [H, W, 3] RGB arrays (sizes may differ), or one such array.
        Returns one float32 [1, C, g, g] embedding per frame (C = 256, g = S / 16), in order.
        """
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = [frames]
        frames = list(frames)
        if not frames:
            raise InputError("frames must hold at least one uint8 (H, W, 3) RGB frame")
        for i, f in enumerate(frames):
            _check_frame(f, self.patch_size, name=f"frames[{i}]")
        s = self.image_size
        out: list[np.ndarray] = []
        for start in range(0, len(frames), self.max_batch):
            chunk = frames[start : start + self.max_batch]
            batch = np.empty((len(chunk), 3, s, s), dtype=np.float32)
            for j, f in enumerate(chunk):
                self.preprocess_into(f, batch[j])
            checkpoint("a SAM encoder batch")
            (emb,) = self.encoder.run([ENCODER_OUTPUT], {ENCODER_INPUT: batch})
            out.extend(emb[j : j + 1] for j in range(len(chunk)))
        return out

    def preprocess_into(self, image: np.ndarray, out: np.ndarray) -> tuple[int, int]:
        """Write the encoder input of ``image`` into ``out`` (float32 [3, S, S]); returns the resized (h, w)."""
        _, hw = preprocess(
            image,
            self.image_size,
            self.pixel_mean,
            self.pixel_std,
            patch_size=self.patch_size,
            out=out,
        )
        return hw

    # -- prompts -----------------------------------------------------------------------------------

    def _check_embedding(self, embedding) -> np.ndarray:
        if not isinstance(embedding, np.ndarray) or embedding.dtype != np.float32:
            got = getattr(embedding, "dtype", type(embedding).__name__)
            raise InputError(
                f"embedding must be a float32 array of shape {self.embedding_shape} "
                f"(from SamRunner.embed), got {got}"
            )
        e = embedding
        if e.ndim == 3:
            e = e[None]
        if e.shape != self.embedding_shape:
            raise InputError(
                f"embedding must have shape {self.embedding_shape}, got {np.shape(embedding)}"
            )
        return np.ascontiguousarray(e)

    def _mask_input(self, mask_input, p: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.low_res_size
        if mask_input is None:
            return np.zeros(
                (1 if self.point_decoder is not None else p, 1, r, r), np.float32
            ), np.zeros(1, np.float32)
        m = np.asarray(mask_input)
        if m.dtype.kind != "f" or not np.all(np.isfinite(m)):
            raise InputError(f"mask_input must be finite float logits, got dtype {m.dtype}")
        if m.ndim == 2:
            m = m[None, None]
        elif m.ndim == 3:
            m = m[:, None]
        if m.ndim != 4 or m.shape[1:] != (1, r, r) or m.shape[0] not in (1, p):
            raise InputError(
                f"mask_input must be [{r}, {r}], [1 or {p}, {r}, {r}] or [1 or {p}, 1, {r}, {r}] "
                f"low-res logits, got {np.shape(mask_input)}"
            )
        m = np.ascontiguousarray(np.broadcast_to(m, (p, 1, r, r)), dtype=np.float32)
        return m, np.ones(1, np.float32)

    def decode(
        self,
        embedding: np.ndarray,
        coords: np.ndarray,
        labels: np.ndarray,
        mask_input: np.ndarray,
        has_mask_input: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw decoder call(s), chunked at ``max_prompts`` prompt sets.

        coords float32 [P, N, 2] in the model input frame, labels float32 [P, N] (-1, 0, 1, 2, 3),
        mask_input float32 [P, 1, 4g, 4g] (or [1, 1, 4g, 4g] zeros when has_mask_input is 0),
        has_mask_input float32 [1]. Without a mask input the point decoder runs, if there is one.
        Returns (iou [P, 4], low_res [P, 4, 4g, 4g]) for all four mask tokens.
        """
        ious, lows = [], []
        points_only = self.point_decoder is not None and not float(
            np.asarray(has_mask_input).reshape(-1)[0]
        )
        for a in range(0, coords.shape[0], self.max_prompts):
            checkpoint("a SAM decoder batch")
            sl = slice(a, a + self.max_prompts)
            feeds = (
                embedding,
                np.ascontiguousarray(coords[sl], dtype=np.float32),
                np.ascontiguousarray(labels[sl], dtype=np.float32),
            )
            if points_only:
                iou, low = self.point_decoder.run(
                    list(DECODER_OUTPUTS), dict(zip(POINT_DECODER_INPUTS, feeds, strict=True))
                )
            else:
                feeds += (np.ascontiguousarray(mask_input[sl]), has_mask_input)
                iou, low = self.decoder.run(
                    list(DECODER_OUTPUTS), dict(zip(DECODER_INPUTS, feeds, strict=True))
                )
            ious.append(iou)
            lows.append(low)
        if len(ious) == 1:
            return ious[0], lows[0]
        return np.concatenate(ious), np.concatenate(lows)

    @property
    def has_iou_first(self) -> bool:
        """True when the two decoder halves (``sam_point_iou``, ``sam_mask_upscaler``) are there."""
        return self._iou_first is not None

    def _halves(self):
        if callable(self._iou_first):
            self._iou_first = tuple(self._iou_first())
        iou_s, up_s = self._iou_first
        if _io_names(iou_s, "in") != list(POINT_DECODER_INPUTS) or _io_names(up_s, "in") != list(
            UPSCALER_INPUTS
        ):
            raise InputError(
                "iou_first must be the sam_point_iou and sam_mask_upscaler sessions, got graphs "
                f"taking {_io_names(iou_s, 'in')} and {_io_names(up_s, 'in')}"
            )
        return iou_s, up_s

    def predict_low_res_iou_first(
        self,
        embedding: np.ndarray,
        orig_hw: tuple[int, int],
        point_coords,
        point_labels,
        iou_thresh: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_low_res` (multimask, no mask input) that makes masks only where they can pass.

        The IoU half runs first on every prompt set; the mask half (output upscaling + mask product)
        only on the prompt sets with a multimask IoU > ``iou_thresh`` (float32 comparison, as
        the automatic mask generator's filter). Returns (iou float32 [P, 3], low_res float32
        [P, 3, 4g, 4g]) where the rows of the other prompt sets are zeros (their masks cannot pass
        the filter and are never read). Without the halves, :meth:`predict_low_res`.
        """
        if not self.has_iou_first:
            return self.predict_low_res(embedding, orig_hw, point_coords, point_labels)
        h, w = _check_hw(orig_hw, "orig_hw")
        emb = self._check_embedding(embedding)
        thr = np.float32(iou_thresh)
        if not np.isfinite(thr):
            raise InputError(f"iou_thresh must be a finite number, got {iou_thresh!r}")
        coords, labels = encode_prompts((h, w), self.image_size, point_coords, point_labels)
        iou_s, up_s = self._halves()
        p, r = coords.shape[0], self.low_res_size
        ious = np.empty((p, 4), np.float32)
        low = np.zeros((p, 3, r, r), np.float32)  # untouched pages cost nothing
        for a in range(0, p, self.max_prompts):
            sl = slice(a, a + self.max_prompts)
            iou, tokens, hyper = iou_s.run(
                list(IOU_HALF_OUTPUTS),
                dict(
                    zip(
                        POINT_DECODER_INPUTS,
                        (
                            emb,
                            np.ascontiguousarray(coords[sl], dtype=np.float32),
                            np.ascontiguousarray(labels[sl], dtype=np.float32),
                        ),
                        strict=True,
                    )
                ),
            )
            ious[sl] = iou
            keep = np.flatnonzero((iou[:, 1:] > thr).any(axis=1))
            if keep.size:
                (m,) = up_s.run(
                    list(UPSCALER_OUTPUTS),
                    dict(
                        zip(
                            UPSCALER_INPUTS,
                            (tokens, hyper)  # all kept: no copy
                            if keep.size == iou.shape[0]
                            else (
                                np.ascontiguousarray(tokens[keep]),
                                np.ascontiguousarray(hyper[keep]),
                            ),
                            strict=True,
                        )
                    ),
                )
                low[a + keep] = m[:, 1:]
            self.iou_first_counts["upscaled"] += int(keep.size)
        self.iou_first_counts["prompt_sets"] += p
        return np.ascontiguousarray(ious[:, 1:]), low

    def predict_low_res(
        self,
        embedding: np.ndarray,
        orig_hw: tuple[int, int],
        point_coords=None,
        point_labels=None,
        boxes=None,
        multimask_output: bool = True,
        mask_input=None,
        boxes_inside: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """IoU predictions and low-res logits for P prompt sets (arguments as :meth:`predict`).

        Returns (iou float32 [P, M], low_res float32 [P, M, 4g, 4g]) with M = 3 (multimask) or 1.
        """
        h, w = _check_hw(orig_hw, "orig_hw")
        emb = self._check_embedding(embedding)
        if not isinstance(multimask_output, (bool, np.bool_)):
            raise InputError(f"multimask_output must be a bool, got {multimask_output!r}")
        coords, labels = encode_prompts(
            (h, w), self.image_size, point_coords, point_labels, boxes, boxes_inside=boxes_inside
        )
        masks_in, has_mask = self._mask_input(mask_input, coords.shape[0])
        iou, low = self.decode(emb, coords, labels, masks_in, has_mask)
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return np.ascontiguousarray(iou[:, sel]), np.ascontiguousarray(low[:, sel])

    def upscale(
        self,
        low: np.ndarray,
        orig_hw: tuple[int, int],
        *,
        return_logits: bool = False,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Low-res logits [..., 4g, 4g] -> masks at the frame's size [..., H, W] (``Sam.postprocess_masks``),
        bool (logits > mask_threshold) or float32 logits with ``return_logits``."""
        h, w = _check_hw(orig_hw, "orig_hw")
        input_hw = get_preprocess_shape(h, w, self.image_size)
        logits = postprocess_masks(low, input_hw, (h, w), self.image_size)
        return logits if return_logits else np.greater(logits, self.mask_threshold, out=out)

    def predict(
        self,
        embedding: np.ndarray,
        orig_hw: tuple[int, int],
        point_coords=None,
        point_labels=None,
        boxes=None,
        multimask_output: bool = True,
        mask_input=None,
        return_logits: bool = False,
        boxes_inside: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for a batch of prompt sets on one frame's embedding, as ``SamPredictor.predict_torch``.

        embedding: float32 [1, C, g, g] from :meth:`embed`; orig_hw: the frame's (H, W).
        point_coords: float [N, 2] (one prompt set) or [P, N, 2] (P prompt sets), (x, y) pixels of
        the original frame, 0 <= x <= W, 0 <= y <= H; point_labels: [N] / [P, N] with 1 =
        foreground, 0 = background, -1 = padding (ignored point).
        boxes: [4] or [K, 4] (x0, y0, x1, y1) pixels; each box is its own prompt set. With both,
        points [N, 2] are shared by every box, or [K, N, 2] are paired with the boxes.
        boxes_inside=False accepts boxes that stick out of the frame (see :func:`encode_prompts`).
        mask_input: optional low-res logits [4g, 4g], [1 or P, 4g, 4g] or [1 or P, 1, 4g, 4g] from
        an earlier call. multimask_output: True -> SAM's 3 masks per prompt set, False -> its single
        mask. All prompt sets go through one decoder call (chunked at ``max_prompts``).

        Returns (masks, iou, low_res): masks bool [P, M, H, W] (logits > mask_threshold; float32
        logits if ``return_logits``), iou float32 [P, M], low_res float32 [P, M, 4g, 4g] logits,
        with M = 3 or 1.
        """
        h, w = _check_hw(orig_hw, "orig_hw")
        iou, low = self.predict_low_res(
            embedding,
            (h, w),
            point_coords,
            point_labels,
            boxes,
            multimask_output,
            mask_input,
            boxes_inside,
        )
        p = low.shape[0]
        masks = np.empty((p, low.shape[1], h, w), dtype=np.float32 if return_logits else bool)
        for i in range(p):  # one prompt set at a time keeps the float32 intermediate small
            masks[i] = self.upscale(low[i], (h, w), return_logits=return_logits)
        return masks, iou, low
