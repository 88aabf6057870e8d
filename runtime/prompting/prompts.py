"""Heatmap -> SAM prompts, as the Sam4AVS zero-shot scripts make them (spec sam4avs-reference 4.1-4.4, 4.8).

numpy only. Every function takes the audio-image heatmap ``sm``: a 2-D float array [H, W] (224 x 224
in the reference) of finite values, normally in [0, 1] (min-max normalised, bilinear upsampled).
Comparisons with thresholds are made in float32, as in the reference where the heatmap is float32:
float64 maps are rounded to float32 first, and a threshold ``t`` is compared as ``float32(t)`` (and
``float32(1 - t)``, with ``1 - t`` computed in float64).

Coordinate convention of every result: pixels of the heatmap (which has the size of the SAM input
frame), origin at the top-left corner of the top-left pixel, x = column (along the width), y = row.
A point is a continuous position: the centre of pixel (row r, col c) is (x, y) = (c + 0.5, r + 0.5).
Boxes are [x0, y0, x1, y1] *inclusive* integer pixel indices (the reference's
``[x, y, x + w - 1, y + h - 1]``). Points and boxes are passed to SAM unchanged, exactly as the
reference passes them (SAM's prompt encoder adds its own +0.5 shift on the model-input grid).

Point results are ``(coords, labels)``: coords float64 [N, 2] (x, y), labels int64 [N] with
1 = foreground (positive) and 0 = background (negative), positives first.

Deliberate differences from the reference, each documented at its function:

* ``peak_points``: the reference swaps row/col in place on an aliased array and returns (col, col)
  without the +0.5 shift; ``quirk=True`` reproduces that, the default returns the pixel centre
  (col + 0.5, row + 0.5), the same convention as ``top_points`` and ``dense_points``.
* ``dense_points``: the reference sorts with numpy's unstable quicksort, so the choice and order of
  tied cells depends on the numpy version; here the sort is stable (see the tie rule there).
* ``heatmap_boxes`` (every box strategy of the reference): see its edge cases (crashes -> no box,
  e.g. ``single_maxarea`` with nothing above the threshold, where the reference raises;
  ``single_maxscore``'s whole-map box for an empty foreground only with ``quirk=True``;
  ``multi_box``'s sentinel box of an empty background label dropped).
"""

from __future__ import annotations

import numpy as np

from runtime.errors import InputError
from runtime.preprocess.resize import resize

__all__ = [
    "BOX_STRATEGIES",
    "connected_components",
    "dense_points",
    "heatmap_boxes",
    "heatmap_point_filter",
    "peak_points",
    "select_max_score",
    "top_points",
]

DENSE_CELL = 7  # the reference's ``downsample``: one dense cell per 7x7 heatmap pixels


# --- validation ------------------------------------------------------------------------------------


def _check_map(sm, name: str = "sm", min_side: int = 1) -> np.ndarray:
    """A 2-D finite float heatmap -> float32 [H, W] (a copy only if the dtype changes)."""
    if not isinstance(sm, np.ndarray):
        raise InputError(
            f"{name} must be a 2-D numpy float array [H, W] (the heatmap), got {type(sm).__name__}"
        )
    if sm.dtype.kind != "f":
        raise InputError(
            f"{name} must be a float array [H, W] (heatmap values, normally 0..1), "
            f"got dtype {sm.dtype}"
        )
    if sm.ndim != 2:
        raise InputError(f"{name} must be 2-D [H, W], got shape {sm.shape}")
    if sm.shape[0] < min_side or sm.shape[1] < min_side:
        raise InputError(f"{name} must be at least {min_side}x{min_side}, got shape {sm.shape}")
    if not np.all(np.isfinite(sm)):
        raise InputError(f"{name} must be finite (no NaN/inf)")
    return np.ascontiguousarray(sm, dtype=np.float32)


def _check_threshold(t, name: str = "t") -> float:
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a real number (a heatmap threshold), got {t!r}")
    t = float(t)
    if not np.isfinite(t):
        raise InputError(f"{name} must be finite, got {t}")
    return t


def _points(coords: np.ndarray, n_pos: int, n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([np.ones(n_pos, np.int64), np.zeros(n_neg, np.int64)])
    return np.asarray(coords, dtype=np.float64).reshape(-1, 2), labels


# --- 4.1 global ------------------------------------------------------------------------------------


def top_points(sm) -> tuple[np.ndarray, np.ndarray]:
    """Point-Prompt (global), ``get_topk_points``: the argmax pixel (label 1) and the argmin pixel (label 0).

    sm: float [H, W] finite heatmap. Ties go to the first pixel in raster (row-major) order, so on a
    constant map both points are the same pixel. Returns coords float64 [2, 2] = pixel centres
    (col + 0.5, row + 0.5) and labels int64 [1, 0].
    """
    m = _check_map(sm)
    w = m.shape[1]
    hi = int(np.argmax(m))
    lo = int(np.argmin(m))
    coords = [[hi % w + 0.5, hi // w + 0.5], [lo % w + 0.5, lo // w + 0.5]]
    return _points(np.array(coords), 1, 1)


# --- 4.2 local -------------------------------------------------------------------------------------


def peak_points(sm, t: float, *, quirk: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Point-Prompt (local), ``get_peak_points``: strict 4-neighbour peaks above t, pits below 1 - t.

    sm: float [H, W] finite heatmap; t: threshold (0.6 for S4, 0.65 for MS3 in the paper).

    The map is padded with 2 zeros on each side; the candidates are the map plus a 1-pixel zero
    ring. A positive is strictly greater than its 4 neighbours and > float32(t); a negative is
    strictly smaller than its 4 neighbours and < float32(1 - t). Plateaus are never peaks, and on a
    map with values >= 0 a border pixel is never a negative (its ring neighbour is 0).
    Fallbacks (reference behaviour, padding ring included): no positive -> every candidate equal to
    the candidates' maximum; no negative -> every candidate equal to their minimum, which is <= 0
    and so includes the ring (removed below): on a [0, 1] map this keeps only pixels that are
    exactly 0, and usually none. Then the ring is cropped off. A constant map gives every pixel as
    a positive (H*W points; 50,176 at 224x224), and an all-zero map also every pixel as a negative.

    Points are listed in raster order, positives first. Coordinates:
    * default: (x, y) = (col + 0.5, row + 0.5), the pixel centre (same convention as
      :func:`top_points` and :func:`dense_points`);
    * ``quirk=True``: the reference's output, (x, y) = (col, col) with no +0.5 (its in-place row/col
      swap on an aliased array loses the row), needed to reproduce the paper's "local" numbers.

    Returns coords float64 [N, 2] and labels int64 [N]. N = 0 is possible only for a map whose
    values are all below 0 (the positive fallback then keeps only ring pixels); callers treat an
    empty prompt as an empty mask.
    """
    m = _check_map(sm)
    t = _check_threshold(t)
    if not isinstance(quirk, (bool, np.bool_)):
        raise InputError(f"quirk must be a bool, got {quirk!r}")
    p = np.pad(m, 2, mode="constant")
    c = p[1:-1, 1:-1]
    n1, n2, n3, n4 = p[1:-1, 2:], p[1:-1, :-2], p[2:, 1:-1], p[:-2, 1:-1]
    pos = (c > n1) & (c > n2) & (c > n3) & (c > n4) & (c > np.float32(t))
    if not pos.any():
        pos = c == c.max()
    neg = (c < n1) & (c < n2) & (c < n3) & (c < n4) & (c < np.float32(1.0 - t))
    if not neg.any():
        neg = c == c.min()
    pos_rc = np.argwhere(pos[1:-1, 1:-1])
    neg_rc = np.argwhere(neg[1:-1, 1:-1])
    rc = np.concatenate([pos_rc, neg_rc], axis=0).astype(np.float64)
    if quirk:
        coords = np.stack([rc[:, 1], rc[:, 1]], axis=1)
    else:
        coords = np.stack([rc[:, 1] + 0.5, rc[:, 0] + 0.5], axis=1)
    return _points(coords, len(pos_rc), len(neg_rc))


# --- 4.3 dense -------------------------------------------------------------------------------------


def dense_grid(sm) -> np.ndarray:
    """The dense cells of ``get_dense_points``: sm bilinearly downsampled to (H // 7, W // 7), float32.

    Bilinear with ``align_corners=False`` and no antialiasing, as ``F.interpolate``. When H and W are
    multiples of 7 (224 -> 32) this is exactly ``sm[7i + 3, 7j + 3]``; otherwise the interpolated
    values (float32, within ~1e-7 of PyTorch's). sm: float [H, W] with H, W >= 7.
    """
    m = _check_map(sm, min_side=DENSE_CELL)
    h, w = m.shape
    gh, gw = h // DENSE_CELL, w // DENSE_CELL
    if h % DENSE_CELL == 0 and w % DENSE_CELL == 0:
        half = DENSE_CELL // 2
        return np.ascontiguousarray(m[half::DENSE_CELL, half::DENSE_CELL])
    return resize(m, (gh, gw), "bilinear", antialias=False).astype(np.float32)


def dense_points(sm, t: float, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Point-Prompt (dense), ``get_dense_points``: the num highest cells positive, the num lowest negative.

    sm: float [H, W] finite heatmap, H, W >= 7; t: threshold (0.85 for S4, 0.7 for MS3).
    The map is downsampled to a (gh, gw) = (H // 7, W // 7) grid (:func:`dense_grid`; 32x32 for 224).
    num = max(1, min(#{cells >= float32(t)}, max_points)), max_points defaulting to half the cells
    (512 for 224x224, the reference's ``1024 // 2``).

    Tie rule: cells are ranked by a *stable* ascending sort of the flattened (row-major) grid, so
    equal values keep raster order: among tied cells the positives take those latest in raster
    order, the negatives those earliest. (The reference's quicksort leaves ties in an unspecified,
    numpy-version dependent order; only the chosen sets can differ, and only on tied cells.)

    Order of the points: positives in ascending value (``rank[-num:]``), then negatives in
    ascending value (``rank[:num]``), as in the reference. Coordinates are cell centres:
    (x, y) = ((j + 0.5) * W / gw, (i + 0.5) * H / gh) for cell (row i, col j), i.e.
    ((idx % 32 + 0.5) * 7, (idx // 32 + 0.5) * 7) at 224. Returns coords float64 [2 num, 2] and
    labels int64 [2 num] (num ones, then num zeros).
    """
    grid = dense_grid(sm)
    t = _check_threshold(t)
    gh, gw = grid.shape
    n_cells = gh * gw
    if max_points is None:
        max_points = n_cells // 2
    if (
        isinstance(max_points, (bool, np.bool_))
        or not isinstance(max_points, (int, np.integer))
        or max_points < 1
    ):
        raise InputError(f"max_points must be a positive int or None, got {max_points!r}")
    flat = grid.reshape(-1)
    rank = np.argsort(flat, kind="stable")
    num = max(1, min(int(np.count_nonzero(flat >= np.float32(t))), int(max_points)))
    idx = np.concatenate([rank[n_cells - num :], rank[:num]])
    h, w = sm.shape
    sx, sy = w / gw, h / gh
    coords = np.stack([(idx % gw + 0.5) * sx, (idx // gw + 0.5) * sy], axis=1)
    return _points(coords, num, num)


# --- 4.4 heatmap box -------------------------------------------------------------------------------


def heatmap_point_filter(
    sm, image_hw: tuple[int, int], *, keep: float | None = None, threshold: float | None = None
):
    """Which automatic-mask grid points the audio points at: a ``point_filter`` for :mod:`runtime.sam.amg`.

    sm: float [S, S] heatmap (normally 0..1) of the image squashed to S x S: heatmap pixel (row, col)
    covers image pixels x in [col * W / S, (col + 1) * W / S), y likewise, with image_hw = (H, W).
    Give exactly one of keep: the fraction in (0, 1] of the points with the highest heatmap value
    (at least one; equal values keep the grid's order), or threshold: the points whose value is
    >= threshold (at least the highest one, so a frame is never left without a prompt).
    Returns filter(points float64 [N, 2] (x, y) image pixels) -> bool [N].
    """
    m = _check_map(sm)
    h, w = (int(v) for v in image_hw)
    if h < 1 or w < 1:
        raise InputError(
            f"image_hw must be a (height, width) pair of positive ints, got {image_hw!r}"
        )
    if (keep is None) == (threshold is None):
        raise InputError("give exactly one of keep (a fraction of the grid points) and threshold")
    if keep is not None:
        keep = _check_threshold(keep, "keep")
        if not 0.0 < keep <= 1.0:
            raise InputError(f"keep must be a fraction in (0, 1], got {keep}")
    else:
        threshold = _check_threshold(threshold, "threshold")
    rows, cols = m.shape

    def point_filter(points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        c = np.clip(np.floor(pts[:, 0] * cols / w), 0, cols - 1).astype(np.int64)
        r = np.clip(np.floor(pts[:, 1] * rows / h), 0, rows - 1).astype(np.int64)
        vals = m[r, c]
        flags = np.zeros(vals.shape[0], dtype=bool)
        if vals.size == 0:
            return flags
        order = np.argsort(-vals, kind="stable")
        if keep is not None:
            flags[order[: max(1, int(round(keep * vals.size)))]] = True
        else:
            flags[vals >= np.float32(threshold)] = True
            flags[order[0]] = True
        return flags

    return point_filter


def connected_components(mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a boolean image, numbered in raster order of their first pixel.

    mask: bool (or 0/1 integer) [H, W]. Returns (labels, areas, boxes): labels int32 [H, W] with 0 for
    background and 1..K for the components (the numbering of OpenCV's
    ``connectedComponents(connectivity=8)`` and ``scipy.ndimage.label`` with a 3x3 structure);
    areas int64 [K] pixel counts; boxes int64 [K, 4] inclusive [x0, y0, x1, y1] pixel indices.

    Run-length based: runs of each row are linked to the runs of the row above that touch them
    (diagonals included), and the run graph is reduced to its components with vectorised
    min-label hooking and pointer jumping. numpy only.
    """
    b = np.asarray(mask)
    if b.ndim != 2 or b.dtype.kind not in "biu":
        raise InputError(
            f"mask must be a 2-D bool array [H, W], got dtype {b.dtype}, shape {b.shape}"
        )
    b = b.astype(bool)
    h, w = b.shape
    labels = np.zeros((h, w), dtype=np.int32)
    if not b.any():
        return labels, np.zeros(0, np.int64), np.zeros((0, 4), np.int64)
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1 : w + 1] = b
    d = np.diff(padded, axis=1)  # [H, W + 1]
    rows, starts = np.nonzero(d == 1)  # run starts at column `starts` (raster order)
    _, ends = np.nonzero(d == -1)  # exclusive end columns, same order
    n = rows.size
    stride = w + 2
    key_s = rows.astype(np.int64) * stride + starts
    key_e = rows.astype(np.int64) * stride + ends
    # Runs of row r - 1 touching run (r, s, e): start <= e and end >= s (8-connectivity).
    lo = np.searchsorted(key_e, (rows - 1).astype(np.int64) * stride + starts, side="left")
    hi = np.searchsorted(key_s, (rows - 1).astype(np.int64) * stride + ends, side="right")
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    parent = np.arange(n, dtype=np.int64)
    if total:
        first = np.cumsum(counts) - counts
        a = np.repeat(lo, counts) + (np.arange(total) - np.repeat(first, counts))
        c = np.repeat(np.arange(n), counts)
        while True:
            pa, pc = parent[a], parent[c]
            low = np.minimum(pa, pc)
            new = parent.copy()
            np.minimum.at(new, pa, low)
            np.minimum.at(new, pc, low)
            while True:  # pointer jumping until every run points at its root
                jumped = new[new]
                if np.array_equal(jumped, new):
                    break
                new = jumped
            if np.array_equal(new, parent):
                break
            parent = new
    roots, comp = np.unique(parent, return_inverse=True)  # roots ascending = raster order
    k = roots.size
    lengths = (ends - starts).astype(np.int64)
    areas = np.bincount(comp, weights=lengths, minlength=k).astype(np.int64)
    x0 = np.full(k, w, np.int64)
    x1 = np.full(k, -1, np.int64)
    y0 = np.full(k, h, np.int64)
    y1 = np.full(k, -1, np.int64)
    np.minimum.at(x0, comp, starts)
    np.maximum.at(x1, comp, ends - 1)
    np.minimum.at(y0, comp, rows)
    np.maximum.at(y1, comp, rows)
    labels.reshape(-1)[np.flatnonzero(b)] = np.repeat(comp + 1, lengths).astype(np.int32)
    return labels, areas, np.stack([x0, y0, x1, y1], axis=1)


BOX_STRATEGIES = ("single_maxarea", "single_maxscore", "multi_box", "total_box")


def heatmap_boxes(
    sm, t: float = 0.55, strategy: str = "single_maxarea", *, quirk: bool = False
) -> np.ndarray:
    """Heatmap-based Box-Prompt with any of the reference's box strategies (``--point_strategy`` of
    ``test_heatmap_prompt_box.py``; spec 4.4 and 4.8).

    sm: float [H, W] finite heatmap; t: threshold (0.55 in the paper); strategy: one of
    :data:`BOX_STRATEGIES`; quirk: reproduce the reference where its result is defined but wrong
    (the ``sam4avs`` preset). Foreground = pixels >= float32(t) (and nothing when t > 1, as the
    reference's two-step binarisation gives); components are 8-connected, numbered in raster order
    of their first pixel (:func:`connected_components`, OpenCV's numbering).

    * ``single_maxarea`` (the S4 script): the largest component; equal areas go to the first.
    * ``single_maxscore``: the component holding the heatmap's argmax pixel (first in raster order
      on ties).
    * ``multi_box`` (the MS3 script): every component, in label order; SAM is prompted with each
      box and the masks are OR-ed.
    * ``total_box``: the bounding box of every foreground pixel.

    Returns int64 [K, 4] inclusive [x0, y0, x1, y1] pixel boxes (the reference's
    ``[x, y, x + w - 1, y + h - 1]``); K = 1 for the single and total strategies, K >= 0 for
    ``multi_box``; K = 0 means "no box" (the heatmap-box mode then yields an empty mask).

    Edge cases (the reference's behaviour, and what is returned here):

    * nothing >= t: ``single_maxarea`` and ``total_box`` raise ``ValueError`` in the reference ->
      [0, 4] here (both presets); ``multi_box`` returns [0, 4] there too; ``single_maxscore``
      takes the argmax pixel's label, the background, whose box is the whole map
      [0, 0, W - 1, H - 1]: reproduced with ``quirk=True``, [0, 4] otherwise (a box that says
      "everything" when the heatmap says "nothing here" is a bug, not a prompt).
    * everything >= t: ``multi_box`` in the reference keeps the background label (it drops only
      the labels seen on zero pixels, and there are none) and adds its box, made of OpenCV's
      sentinel statistics for an empty label, which differ between OpenCV versions (5.0:
      [-1, 2147483647, -2, 2147483646]) and lie far outside the image, so SAM's answer to it is
      undefined. It is dropped here in both presets: the one deliberate difference in ``sam4avs``.
      The other strategies give [[0, 0, W - 1, H - 1]] as in the reference.
    * ties: equal areas -> first label in raster order; equal maxima -> first pixel in raster order.
    """
    m = _check_map(sm)
    t = _check_threshold(t)
    if strategy not in BOX_STRATEGIES:
        raise InputError(f"box strategy must be one of {BOX_STRATEGIES}, got {strategy!r}")
    if not isinstance(quirk, (bool, np.bool_)):
        raise InputError(f"quirk must be a bool, got {quirk!r}")
    fg = m >= np.float32(t)
    if t > 1.0:  # the reference writes 1.0 into the foreground, then drops values < t again
        fg &= np.float32(1.0) >= np.float32(t)
    none = np.zeros((0, 4), np.int64)
    if strategy == "total_box":
        if not fg.any():
            return none
        rows, cols = np.nonzero(fg)
        return np.array([[cols.min(), rows.min(), cols.max(), rows.max()]], np.int64)
    labels, areas, boxes = connected_components(fg)
    if strategy == "multi_box":
        return boxes.astype(np.int64, copy=True)
    if strategy == "single_maxarea":
        return none if areas.size == 0 else boxes[int(np.argmax(areas))][None].copy()
    # single_maxscore
    w = m.shape[1]
    i = int(np.argmax(m))
    lab = int(labels[i // w, i % w])
    if lab == 0:  # the argmax pixel is background: nothing reaches t
        if not quirk:
            return none
        # the background label's box: every pixel is background here
        return np.array([[0, 0, m.shape[1] - 1, m.shape[0] - 1]], np.int64)
    return boxes[lab - 1][None].copy()


# --- mask selection --------------------------------------------------------------------------------


def _check_masks_scores(masks, scores) -> tuple[np.ndarray, np.ndarray]:
    mk = np.asarray(masks)
    sc = np.asarray(scores)
    if mk.ndim != 3 or mk.dtype != bool or mk.shape[0] < 1:
        raise InputError(
            f"masks must be a bool array [M, H, W] with M >= 1, got dtype {mk.dtype}, "
            f"shape {mk.shape}"
        )
    if sc.ndim != 1 or sc.shape[0] != mk.shape[0] or sc.dtype.kind not in "fiu":
        raise InputError(
            f"scores must be a real array [M] = [{mk.shape[0]}], got dtype {sc.dtype}, "
            f"shape {sc.shape}"
        )
    if not np.all(np.isfinite(sc)):
        raise InputError("scores must be finite (no NaN/inf)")
    return mk, sc


def select_max_score(masks, scores) -> tuple[np.ndarray, int]:
    """Selection ``max_score``: the mask with the highest predicted IoU, the first index on ties.

    masks: bool [M, H, W] (SAM's multimask output); scores: float [M]. Returns (mask bool [H, W],
    index).
    """
    mk, sc = _check_masks_scores(masks, scores)
    i = int(np.argmax(sc))
    return mk[i], i
