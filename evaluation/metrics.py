"""AVSBench segmentation metrics (mIoU and F-score), numpy only.

These follow the AVSBench / Sam4AVS evaluation code (``utils/utility.py``: ``mask_iou``,
``_eval_pr``, ``Eval_Fmeasure``) exactly; see spec section 2 of ``sam4avs-reference.md``.

Conventions for every function here:

- ``pred`` is a float array of logits ``z`` (any real value) *or* a binary mask in {0, 1}
  (bool or numeric). Both go through the sigmoid, like in the reference: binary masks map to
  sigma(0) = 0.5 (background) and sigma(1) = 0.731 (foreground).
- ``gt`` is a binary mask in {0, 1} (bool, integer or float dtype).
- Shapes are ``[N, H, W]`` (N frames, rows, columns; origin top-left) or ``[N, 1, H, W]``,
  which is squeezed. ``pred`` and ``gt`` must have the same shape.
- A *batch* is what the reference passes in one call. The paper evaluates with one video per
  batch (5 frames in S4/MS3), and the final score is the mean of the batch values.

Numerics: the sigmoid is 1 / (1 + exp(-z)) in float32 with a correctly rounded exp
(``sigmoid32``); torch's float32 sigmoid can differ from it by 1 ulp, which can move a pixel
lying exactly on an F-score threshold (a rare change of order 1e-5 or less in a batch
F-score; none was seen against torch over 40 random 5x224x224 batches). The F-score
thresholds are bit-identical to ``torch.linspace(0, 1 - 1e-10, 255)`` on x86 CPUs with
AVX2/AVX512 kernels (the last one is exactly 1.0), and precision, recall and F are computed
in float32 in the reference's order.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from runtime.errors import InputError

BETA2 = 0.3  # F-measure beta^2 used by AVSBench
NUM_THRESHOLDS = 255  # number of thresholds of the PR curve
MIOU_EPS = 1e-7  # added to the union
FSCORE_EPS = 1e-20  # added to the denominators of precision and recall

__all__ = [
    "BETA2",
    "NUM_THRESHOLDS",
    "MIOU_EPS",
    "FSCORE_EPS",
    "sigmoid32",
    "fscore_thresholds",
    "miou",
    "miou_terms",
    "frame_miou",
    "fscore_curve",
    "fscore",
    "VideoRecord",
    "MetricAccumulator",
]


# --------------------------------------------------------------------------------------------
# input checks


def _as_nhw(a, name: str) -> np.ndarray:
    """Return ``a`` as an array [N, H, W]; accept [N, 1, H, W]."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise InputError(f"{name}: expected an array [N, H, W], got {type(a).__name__}") from e
    if a.dtype == object or not (
        a.dtype == np.bool_
        or np.issubdtype(a.dtype, np.integer)
        or np.issubdtype(a.dtype, np.floating)
    ):
        raise InputError(
            f"{name}: expected a real numeric or bool array [N, H, W], got dtype {a.dtype}"
        )
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise InputError(
            f"{name}: expected shape [N, H, W] or [N, 1, H, W] (N frames), got {tuple(a.shape)}"
        )
    if min(a.shape) < 1:
        raise InputError(f"{name}: expected a non-empty [N, H, W] array, got {tuple(a.shape)}")
    return a


def _check_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (pred, gt) as [N, H, W]; gt as bool."""
    p = _as_nhw(pred, "pred")
    g = _as_nhw(gt, "gt")
    if p.shape != g.shape:
        raise InputError(
            f"pred and gt must have the same shape [N, H, W], got {tuple(p.shape)} and "
            f"{tuple(g.shape)}"
        )
    if np.issubdtype(p.dtype, np.floating) and not np.isfinite(p).all():
        raise InputError("pred: expected finite values (logits or a {0,1} mask), found NaN or inf")
    if g.dtype != np.bool_:
        if np.issubdtype(g.dtype, np.floating) and not np.isfinite(g).all():
            raise InputError("gt: expected a binary mask in {0, 1}, found NaN or inf")
        if not ((g == 0) | (g == 1)).all():
            bad = np.unique(g[(g != 0) & (g != 1)])[:5]
            raise InputError(
                f"gt: expected a binary mask with values in {{0, 1}}, found e.g. {bad.tolist()}"
            )
        g = g != 0
    return p, g


def _check_scores(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = _check_pair(pred, gt)
    return sigmoid32(p), g


# --------------------------------------------------------------------------------------------
# building blocks


def sigmoid32(z) -> np.ndarray:
    """Sigmoid of ``z`` (any shape, real or bool) as float32, like torch's float32 sigmoid.

    Computed as ``1 / (1 + e)`` in float32 arithmetic (the reference's formula), with
    ``e = exp(-z)`` evaluated in float64 and rounded once to float32. So sigmoid32(0) == 0.5
    exactly, z >= 17 gives exactly 1.0 and z <= -89 exactly 0.0. Against torch's CPU kernel
    (whose float32 exp is not always correctly rounded) about 4% of values differ by 1 ulp.
    """
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore"):
        e = np.exp(-z).astype(np.float32)  # inf where exp overflows float32 -> sigmoid 0
    one = np.float32(1)
    return one / (one + e)


def fscore_thresholds(num: int = NUM_THRESHOLDS) -> np.ndarray:
    """The F-score thresholds, float32 [num], ascending, first 0.0, last exactly 1.0.

    Bit-identical to ``torch.linspace(0, 1 - 1e-10, num)`` (float32) as computed by torch's
    CPU kernel on x86 with AVX2/AVX512: ``step = float32(1) / float32(num - 1)``; index k below
    ``num // 2`` gives ``round32(k * step)``, the others ``round32(1 - (num - 1 - k) * step)``,
    each rounded once (fused multiply-add).
    """
    if isinstance(num, bool) or not isinstance(num, int | np.integer) or num < 1:
        raise InputError(f"num_thresholds: expected an int >= 1, got {num!r}")
    num = int(num)
    end = np.float32(1 - 1e-10)  # rounds to exactly 1.0
    if num == 1:
        return np.zeros(1, np.float32)
    step = float(end / np.float32(num - 1))  # float32 division, held exactly in float64
    k = np.arange(num, dtype=np.float64)
    # products of a float32 and an integer < 2**29 are exact in float64, and so is the
    # difference with 1.0 below, so the cast to float32 is the only rounding (as with an FMA)
    lo = k * step
    hi = float(end) - (num - 1 - k) * step
    return np.where(np.arange(num) < num // 2, lo, hi).astype(np.float32)


# --------------------------------------------------------------------------------------------
# mIoU


def miou_terms(pred, gt) -> np.ndarray:
    """Per-frame terms of the AVSBench mIoU: float32 [N]; ``miou`` is their mean.

    ``pred``: logits or {0,1} mask [N, H, W] (or [N, 1, H, W]); ``gt``: {0,1} mask, same shape.
    With P = 1[sigmoid(pred) > 0.5] (strict), a frame with non-empty GT scores
    |P and G| / (|P or G| + 1e-7); a frame with empty GT scores the fraction of pixels left
    background, |not P and not G| / (H * W + 1e-7). Computed in float32 like the reference.
    """
    s, g = _check_scores(pred, gt)
    p = s > np.float32(0.5)
    n, h, w = g.shape
    inter = np.count_nonzero((p & g).reshape(n, -1), axis=1)
    union = np.count_nonzero((p | g).reshape(n, -1), axis=1)
    empty = ~g.reshape(n, -1).any(axis=1)
    inter_bg = np.count_nonzero((~p & ~g).reshape(n, -1), axis=1)
    inter = np.where(empty, inter_bg, inter).astype(np.float32)
    union = np.where(empty, h * w, union).astype(np.float32)
    return inter / (union + np.float32(MIOU_EPS))


def miou(pred, gt) -> float:
    """AVSBench mIoU of one batch (``mask_iou``): the mean over the N frames of ``miou_terms``.

    ``pred``: float logits (P = float32 sigmoid > 0.5, i.e. z > 0 except that 0 < z < ~1e-7
    rounds to 0.5 and counts as background, as in torch) or a binary {0,1} mask,
    shape [N, H, W] or [N, 1, H, W]; ``gt``: binary {0,1} mask of the same shape.
    Empty-GT frames score the background fraction (see ``miou_terms``), unlike ``frame_miou``.
    Returns a Python float in [0, 1]. The dataset value is the mean over batches (videos).
    """
    t = miou_terms(pred, gt)
    return float(np.sum(t, dtype=np.float32) / np.float32(t.shape[0]))


def frame_miou(pred, gt) -> np.ndarray:
    """Plain per-frame IoU (Jaccard), float64 [N]; NOT the AVSBench metric.

    ``pred``, ``gt`` as in ``miou`` (P = sigmoid(pred) > 0.5). Per frame:
    |P and G| / |P or G|, with 1.0 when both are empty. This is the common per-frame variant:
    it differs from ``miou``/``miou_terms`` on empty-GT frames, where it gives 0.0 for any
    non-empty prediction and 1.0 for an empty one, while AVSBench scores the fraction of
    background pixels. On frames with non-empty GT both agree up to the 1e-7 epsilon.
    """
    s, g = _check_scores(pred, gt)
    p = s > np.float32(0.5)
    n = g.shape[0]
    inter = np.count_nonzero((p & g).reshape(n, -1), axis=1).astype(np.float64)
    union = np.count_nonzero((p | g).reshape(n, -1), axis=1).astype(np.float64)
    out = np.ones(n, np.float64)
    nz = union > 0
    out[nz] = inter[nz] / union[nz]
    return out


# --------------------------------------------------------------------------------------------
# F-score


def _count_thresholds_le(s: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Number of thresholds <= s for each s (float32 [P] in [0, 1]); thr ascending, thr[0] = 0.

    Same result as ``np.searchsorted(thr, s, side="right")``, about 10x faster: the thresholds
    are within an ulp of k / (K - 1), so the index is guessed and then corrected and verified
    against the exact float32 thresholds (falling back to a binary search where unresolved).
    """
    k = thr.shape[0]
    if k < 2:
        return np.searchsorted(thr, s, side="right")
    c = (s.astype(np.float64) * (k - 1)).astype(np.intp) + 1
    np.clip(c, 1, k, out=c)
    ext = np.append(thr, np.float32(np.inf))  # ext[k] = inf: nothing is above the last slot
    for _ in range(2):
        c -= thr[c - 1] > s  # guessed too high
        c += ext[c] <= s  # guessed too low
    bad = ~((thr[c - 1] <= s) & (ext[c] > s))
    if bad.any():  # pragma: no cover - not reached for linspace thresholds
        c[bad] = np.searchsorted(thr, s[bad], side="right")
    return c


def _counts_per_threshold(s: np.ndarray, g: np.ndarray, thr: np.ndarray):
    """For frames s [M, HW] float32 and g [M, HW] bool: (#pred, #TP) [M, K] int64 where the
    prediction at threshold k is s >= thr[k]."""
    m, _ = s.shape
    k = thr.shape[0]
    # c = number of thresholds <= s: the pixel is predicted at thresholds 0..c-1
    c = _count_thresholds_le(s.ravel(), thr)
    c = c.reshape(m, -1)
    c += (np.arange(m, dtype=c.dtype) * (k + 1))[:, None]  # one block of k + 1 bins per frame
    c = c.ravel()
    hist = np.bincount(c, minlength=m * (k + 1)).reshape(m, k + 1)
    hist_tp = np.bincount(c[g.ravel()], minlength=m * (k + 1)).reshape(m, k + 1)
    # number predicted at threshold k = pixels with c >= k + 1: suffix sums from index 1
    n_pred = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
    n_tp = np.cumsum(hist_tp[:, ::-1], axis=1)[:, ::-1][:, 1:]
    return n_pred, n_tp


def fscore_curve(
    pred, gt, beta2: float = BETA2, num_thresholds: int = NUM_THRESHOLDS
) -> tuple[np.ndarray, int]:
    """Mean F-measure curve of one batch over the thresholds, and the number of frames used.

    ``pred``: logits or {0,1} mask [N, H, W] (or [N, 1, H, W]); ``gt``: {0,1} mask, same shape.
    Returns (curve float32 [num_thresholds], kept) where curve[k] is the mean over the ``kept``
    frames with non-empty GT of F_k = (1 + beta2) prec rec / (beta2 prec + rec) (NaN -> 0),
    prec = TP / (#pred + 1e-20), rec = TP / (#GT + 1e-20), prediction sigmoid(pred) >= tau_k
    (``fscore_thresholds``). All-empty GT gives a zero curve and kept = 0.
    """
    if not isinstance(beta2, int | float | np.floating | np.integer) or not beta2 > 0:
        raise InputError(f"beta2: expected a positive number, got {beta2!r}")
    thr = fscore_thresholds(num_thresholds)
    s, g = _check_scores(pred, gt)
    n = g.shape[0]
    s = s.reshape(n, -1)
    g = g.reshape(n, -1)
    keep = g.any(axis=1)  # frames whose GT mean is 0 are skipped
    kept = int(keep.sum())
    k = thr.shape[0]
    if kept == 0:
        return np.zeros(k, np.float32), 0
    s, g = s[keep], g[keep]
    n_pred, n_tp = _counts_per_threshold(s, g, thr)
    f32 = np.float32
    tp = n_tp.astype(f32)
    prec = tp / (n_pred.astype(f32) + f32(FSCORE_EPS))
    rec = tp / (g.sum(axis=1, dtype=np.int64).astype(f32)[:, None] + f32(FSCORE_EPS))
    with np.errstate(invalid="ignore", divide="ignore"):
        f = f32(1 + beta2) * prec * rec / (f32(beta2) * prec + rec)
    f[np.isnan(f)] = 0
    # sum in frame order in float32, like the reference's running sum
    acc = np.zeros(k, f32)
    for row in f:
        acc = acc + row
    return acc / f32(kept), kept


def fscore(pred, gt, beta2: float = BETA2, num_thresholds: int = NUM_THRESHOLDS) -> float:
    """AVSBench F-score of one batch (``Eval_Fmeasure``): max over thresholds of the mean curve.

    ``pred``: float logits or binary {0,1} mask, [N, H, W] or [N, 1, H, W]; ``gt``: binary
    {0,1} mask of the same shape. Frames with empty GT are skipped; a batch whose frames all
    have empty GT returns 0.0 (and is still averaged in by the caller, like the reference).
    Returns a Python float in [0, 1]. See ``fscore_curve`` for the definition. For binary
    masks this is max(mean F of the full-image mask, mean F of the predicted mask).
    """
    curve, kept = fscore_curve(pred, gt, beta2=beta2, num_thresholds=num_thresholds)
    if kept == 0:
        return 0.0
    return float(curve.max())


# --------------------------------------------------------------------------------------------
# accumulation over a data set


@dataclass
class VideoRecord:
    """Metrics of one batch (normally one video): batch mIoU and F-score, frame counts."""

    name: str
    miou: float
    fscore: float
    frames: int = 0
    empty_gt_frames: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MetricAccumulator:
    """Mean of per-batch AVSBench metrics over batches (the reference's ``AverageMeter``).

    Call ``update(pred, gt, name)`` once per batch (= one video to match the paper);
    ``miou`` and ``fscore`` are then the means over batches, and ``records`` keeps one
    ``VideoRecord`` per batch in call order.
    """

    beta2: float = BETA2
    num_thresholds: int = NUM_THRESHOLDS
    records: list[VideoRecord] = field(default_factory=list)

    def update(self, pred, gt, name: str | None = None) -> VideoRecord:
        """Score one batch: ``pred`` logits or {0,1} mask and ``gt`` {0,1} mask, [N, H, W]."""
        p, g = _check_pair(pred, gt)
        n = g.shape[0]
        empty = int((~g.reshape(n, -1).any(axis=1)).sum())
        rec = VideoRecord(
            name=str(name) if name is not None else f"batch{len(self.records)}",
            miou=miou(p, g),
            fscore=fscore(p, g, beta2=self.beta2, num_thresholds=self.num_thresholds),
            frames=n,
            empty_gt_frames=empty,
        )
        self.records.append(rec)
        return rec

    def add(
        self,
        miou_value: float,
        fscore_value: float,
        name: str | None = None,
        frames: int = 0,
        empty_gt_frames: int = 0,
    ) -> VideoRecord:
        """Record precomputed batch values (each a finite float in [0, 1])."""
        for label, v in (("miou_value", miou_value), ("fscore_value", fscore_value)):
            if not isinstance(v, int | float | np.floating | np.integer) or not (
                math.isfinite(v) and 0.0 <= v <= 1.0
            ):
                raise InputError(f"{label}: expected a finite number in [0, 1], got {v!r}")
        rec = VideoRecord(
            name=str(name) if name is not None else f"batch{len(self.records)}",
            miou=float(miou_value),
            fscore=float(fscore_value),
            frames=int(frames),
            empty_gt_frames=int(empty_gt_frames),
        )
        self.records.append(rec)
        return rec

    @property
    def count(self) -> int:
        """Number of batches recorded."""
        return len(self.records)

    @property
    def miou(self) -> float:
        """Mean batch mIoU (NaN before any update)."""
        if not self.records:
            return float("nan")
        return float(np.mean([r.miou for r in self.records]))

    @property
    def fscore(self) -> float:
        """Mean batch F-score (NaN before any update)."""
        if not self.records:
            return float("nan")
        return float(np.mean([r.fscore for r in self.records]))

    def reset(self) -> None:
        """Forget every record."""
        self.records.clear()

    def summary(self) -> dict:
        """{"miou", "fscore", "batches", "frames", "empty_gt_frames"} as plain Python values."""
        return {
            "miou": self.miou,
            "fscore": self.fscore,
            "batches": self.count,
            "frames": int(sum(r.frames for r in self.records)),
            "empty_gt_frames": int(sum(r.empty_gt_frames for r in self.records)),
        }
