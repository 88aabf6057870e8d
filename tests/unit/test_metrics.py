"""Tests of evaluation.metrics against hand-computed values and direct transcriptions of the
AVSBench definitions (spec section 2: mask_iou, _eval_pr, Eval_Fmeasure)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.metrics import (
    MetricAccumulator,
    frame_miou,
    fscore,
    fscore_curve,
    fscore_thresholds,
    miou,
    miou_terms,
    sigmoid32,
)
from runtime.errors import InputError

try:  # torch is only used by the tests, never by evaluation.metrics
    import torch
except ImportError:  # pragma: no cover
    torch = None

F32 = np.float32


# --------------------------------------------------------------------------------------------
# direct transcriptions of the reference definition (loops, float32), written for the tests


def _ref_thresholds(num=255):
    if torch is not None:
        return torch.linspace(0, 1 - 1e-10, num).numpy()
    return np.linspace(0.0, 1 - 1e-10, num).astype(F32)  # pragma: no cover


def _ref_sigmoid(z):
    z = np.asarray(z, np.float64)
    with np.errstate(over="ignore"):
        e = np.exp(-z).astype(F32)
    return F32(1) / (F32(1) + e)


def ref_mask_iou(z, g):
    """mask_iou: per frame, strict > 0.5 on the sigmoid; empty GT -> background fraction."""
    n, h, w = z.shape
    p = (_ref_sigmoid(z) > 0.5).astype(F32)
    g = g.astype(F32)
    total = F32(0)
    for i in range(n):
        if g[i].sum() == 0:
            inter = ((1 - g[i]) * (1 - p[i])).sum(dtype=F32)
            union = F32(h * w)
        else:
            inter = (p[i] * g[i]).sum(dtype=F32)
            union = np.maximum(p[i], g[i]).sum(dtype=F32)
        total = F32(total + inter / (union + F32(1e-7)))
    return float(total / F32(n))


def ref_fmeasure(z, g, num=255, beta2=0.3):
    """Eval_Fmeasure: loop over frames and over the thresholds, like the reference."""
    s = _ref_sigmoid(z)
    g = g.astype(F32)
    thl = _ref_thresholds(num)
    avg = None
    count = 0
    score = np.zeros(num, F32)
    for i in range(s.shape[0]):
        if g[i].mean() == 0:
            continue
        prec = np.zeros(num, F32)
        rec = np.zeros(num, F32)
        for k in range(num):
            y = (s[i] >= thl[k]).astype(F32)
            tp = (y * g[i]).sum(dtype=F32)
            prec[k] = tp / (y.sum(dtype=F32) + F32(1e-20))
            rec[k] = tp / (g[i].sum(dtype=F32) + F32(1e-20))
        with np.errstate(invalid="ignore"):
            f = F32(1 + beta2) * prec * rec / (F32(beta2) * prec + rec)
        f[f != f] = 0
        avg = f if avg is None else avg + f
        count += 1
        score = avg / F32(count)
    return float(score.max())


def _random_batch(rng, kind):
    n = int(rng.integers(1, 7))
    h, w = (int(x) for x in rng.integers(1, 20, size=2))
    gt = (rng.random((n, h, w)) < rng.uniform(0.05, 0.7)).astype(np.uint8)
    for i in range(n):  # some empty-GT frames
        if rng.random() < 0.25:
            gt[i] = 0
    if kind == "logits":
        pred = (rng.standard_normal((n, h, w)) * rng.choice([0.5, 3.0, 30.0])).astype(F32)
        pred[rng.random((n, h, w)) < 0.05] = 0.0  # exact ties at sigmoid 0.5
    elif kind == "binary":
        pred = (rng.random((n, h, w)) < rng.uniform(0, 1)).astype(F32)
    else:  # logits correlated with the GT
        pred = (gt * 2.0 - 1.0 + rng.standard_normal((n, h, w))).astype(F32)
    return pred, gt


# --------------------------------------------------------------------------------------------
# thresholds and sigmoid


def test_thresholds_shape_ends():
    t = fscore_thresholds()
    assert t.dtype == np.float32 and t.shape == (255,)
    assert t[0] == 0.0 and t[-1] == 1.0  # float32(1 - 1e-10) is exactly 1
    assert t[127] == 0.5
    assert np.all(np.diff(t) > 0)
    np.testing.assert_allclose(t, np.arange(255) / 254, atol=1e-7)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("num", [255, 2, 10, 256])
def test_thresholds_match_torch_linspace(num):
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("torch's non-vectorised (no FMA) linspace rounds differently")
    assert np.array_equal(fscore_thresholds(num), torch.linspace(0, 1 - 1e-10, num).numpy())


def test_sigmoid_values():
    s = sigmoid32(np.array([0.0, 1.0, 17.0, -200.0, 200.0]))
    assert s.dtype == np.float32
    assert s[0] == 0.5 and s[1] == F32(1 / (1 + np.exp(-1.0)))
    assert s[2] == 1.0 and s[3] == 0.0 and s[4] == 1.0


# --------------------------------------------------------------------------------------------
# hand-computed cases


def test_tiny_2x2_by_hand():
    z = np.array([[[2.0, -1.0], [0.3, -3.0]]], F32)
    g = np.array([[[1, 0], [1, 1]]], np.uint8)
    # P = [1, 0, 1, 0]: inter 2, union 3
    assert miou(z, g) == pytest.approx(2 / 3, abs=1e-6)
    # scores 0.881 (G), 0.574 (G), 0.269 (bg), 0.047 (G); best thresholds in (0.269, 0.574]:
    # prec 1, rec 2/3 -> F = 1.3 * 2/3 / (0.3 + 2/3) = 26/29
    assert fscore(z, g) == pytest.approx(26 / 29, abs=1e-6)
    curve, kept = fscore_curve(z, g)
    assert kept == 1
    assert curve[0] == pytest.approx(1.3 * 0.75 / (0.3 * 0.75 + 1), abs=1e-6)  # all 4 predicted
    assert curve[-1] == 0.0  # nothing reaches 1.0


def test_empty_gt_miou_background_fraction():
    g = np.zeros((2, 4, 5), np.uint8)
    z = np.full((2, 4, 5), -3.0, F32)
    z[1, 0, :3] = 3.0  # 3 of 20 pixels predicted in frame 1
    t = miou_terms(z, g)
    np.testing.assert_allclose(t, [1.0, 17 / 20], atol=1e-6)
    assert miou(z, g) == pytest.approx((1.0 + 17 / 20) / 2, abs=1e-6)
    # the plain per-frame IoU differs on empty-GT frames
    np.testing.assert_array_equal(frame_miou(z, g), [1.0, 0.0])


def test_frame_miou_agrees_on_nonempty_gt():
    rng = np.random.default_rng(3)
    g = (rng.random((4, 9, 7)) < 0.4).astype(np.uint8)
    g[:, 0, 0] = 1
    z = rng.standard_normal((4, 9, 7)).astype(F32)
    np.testing.assert_allclose(frame_miou(z, g), miou_terms(z, g), atol=1e-6)
    assert miou(z, g) == pytest.approx(frame_miou(z, g).mean(), abs=1e-6)


def test_all_empty_batch_fscore_zero_and_averaged_in():
    g = np.zeros((3, 6, 6), np.uint8)
    z = np.random.default_rng(0).standard_normal((3, 6, 6)).astype(F32)
    assert fscore(z, g) == 0.0
    curve, kept = fscore_curve(z, g)
    assert kept == 0 and not curve.any()
    acc = MetricAccumulator()
    acc.update(z, g, name="empty")
    g2 = np.ones((1, 6, 6), np.uint8)
    z2 = np.full((1, 6, 6), 5.0, F32)
    acc.update(z2, g2, name="perfect")
    assert acc.records[1].fscore == pytest.approx(1.0, abs=1e-6)
    assert acc.fscore == pytest.approx(0.5, abs=1e-6)  # 0 of the empty batch is averaged in
    assert acc.count == 2 and acc.records[0].empty_gt_frames == 3
    s = acc.summary()
    assert s["frames"] == 4 and s["batches"] == 2


def _f(prec, rec, b2=0.3):
    return 0.0 if prec == 0 and rec == 0 else (1 + b2) * prec * rec / (b2 * prec + rec)


def test_binary_masks_max_of_full_and_predicted():
    rng = np.random.default_rng(11)
    for _ in range(20):
        n, h, w = 5, 12, 10
        g = (rng.random((n, h, w)) < rng.uniform(0.05, 0.5)).astype(np.uint8)
        g[rng.random(n) < 0.2] = 0
        p = (rng.random((n, h, w)) < rng.uniform(0, 0.6)).astype(np.uint8)
        kept = [i for i in range(n) if g[i].any()]
        if not kept:
            assert fscore(p, g) == 0.0
            continue
        full = np.mean([_f(g[i].mean(), 1.0) for i in kept])
        pred_f = []
        for i in kept:
            tp = float((p[i] & g[i]).sum())
            pred_f.append(_f(tp / p[i].sum() if p[i].any() else 0.0, tp / g[i].sum()))
        assert fscore(p, g) == pytest.approx(max(full, np.mean(pred_f)), abs=1e-6)
        # a "Full-mask" prediction scores the mean of 1.3 p / (0.3 p + 1), p = |G| / HW
        assert fscore(np.ones_like(p), g) == pytest.approx(full, abs=1e-6)
        assert fscore(np.zeros_like(p), g) == pytest.approx(full, abs=1e-6)


def test_empty_gt_frames_skipped_by_fscore():
    rng = np.random.default_rng(5)
    g = (rng.random((4, 8, 8)) < 0.3).astype(np.uint8)
    g[2] = 0
    z = rng.standard_normal((4, 8, 8)).astype(F32)
    keep = [0, 1, 3]
    assert fscore(z, g) == pytest.approx(fscore(z[keep], g[keep]), abs=1e-7)
    assert miou(z, g) != pytest.approx(miou(z[keep], g[keep]), abs=1e-4)


# --------------------------------------------------------------------------------------------
# randomized agreement with the loop transcriptions


@pytest.mark.parametrize("kind", ["logits", "binary", "correlated"])
def test_random_agreement_with_transcription(kind):
    rng = np.random.default_rng({"logits": 1, "binary": 2, "correlated": 3}[kind])
    for _ in range(60):
        z, g = _random_batch(rng, kind)
        assert abs(miou(z, g) - ref_mask_iou(z, g)) <= 1e-6
        assert abs(fscore(z, g) - ref_fmeasure(z, g)) <= 1e-6


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.torch_threads(1)
def test_random_agreement_with_torch_reference():
    """Eager torch transcription of mask_iou/_eval_pr/Eval_Fmeasure (CPU, cuda_flag=False)."""

    def t_mask_iou(pred, target, eps=1e-7):
        n = pred.size(0)
        num_pixels = pred.size(-1) * pred.size(-2)
        no_obj = target.sum(2).sum(1) == 0
        p = (torch.sigmoid(pred) > 0.5).int()
        inter = (p * target).sum(2).sum(1)
        union = torch.max(p, target).sum(2).sum(1)
        inter_bg = ((1 - target) * (1 - p)).sum(2).sum(1)
        inter[no_obj] = inter_bg[no_obj]
        union[no_obj] = num_pixels
        return torch.sum(inter / (union + eps)) / n

    def t_fmeasure(pred, gt, num=255):
        pred = torch.sigmoid(pred)
        avg, cnt, score = 0.0, 0, torch.zeros(num)
        thl = torch.linspace(0, 1 - 1e-10, num)
        for i in range(pred.size(0)):
            if torch.mean(gt[i]) == 0.0:
                continue
            prec, rec = torch.zeros(num), torch.zeros(num)
            for k in range(num):
                y = (pred[i] >= thl[k]).float()
                tp = (y * gt[i]).sum()
                prec[k], rec[k] = tp / (y.sum() + 1e-20), tp / (gt[i].sum() + 1e-20)
            f = (1 + 0.3) * prec * rec / (0.3 * prec + rec)
            f[f != f] = 0
            avg += f
            cnt += 1
            score = avg / cnt
        return score.max().item()

    rng = np.random.default_rng(7)
    worst = 0.0
    for i in range(40):
        z, g = _random_batch(rng, ["logits", "binary", "correlated"][i % 3])
        zt, gt = torch.from_numpy(z), torch.from_numpy(g.astype(F32))
        assert abs(miou(z, g) - t_mask_iou(zt, gt).item()) <= 1e-6
        d = abs(fscore(z, g) - t_fmeasure(zt, gt))
        worst = max(worst, d)
    # torch's float32 exp differs from a correctly rounded one by 1 ulp on ~4% of inputs, which
    # can move a pixel lying on a threshold; on these inputs the results agree to 1e-6
    assert worst <= 1e-6


def test_larger_frames_agree_with_transcription():
    rng = np.random.default_rng(9)
    g = (rng.random((5, 64, 48)) < 0.3).astype(np.uint8)
    g[3] = 0
    z = (g * 1.5 - 0.7 + rng.standard_normal((5, 64, 48))).astype(F32)
    assert abs(fscore(z, g) - ref_fmeasure(z, g)) <= 1e-6
    assert abs(miou(z, g) - ref_mask_iou(z, g)) <= 1e-6


# --------------------------------------------------------------------------------------------
# input handling


def test_accepts_n1hw_bool_int_float():
    rng = np.random.default_rng(4)
    g = rng.random((3, 6, 7)) < 0.4
    z = rng.standard_normal((3, 6, 7)).astype(F32)
    ref_m, ref_f = miou(z, g), fscore(z, g)
    assert miou(z[:, None], g[:, None]) == ref_m
    assert fscore(z[:, None], g[:, None].astype(np.float64)) == ref_f
    assert fscore(z.astype(np.float64), g.astype(np.int64)) == pytest.approx(ref_f, abs=1e-6)
    pb = z > 0
    assert miou(pb, g) == miou(pb.astype(np.uint8), g) == miou(pb.astype(F32), g)


@pytest.mark.parametrize(
    "pred, gt, match",
    [
        (np.zeros((4, 4)), np.zeros((4, 4)), r"\[N, H, W\]"),
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), "same shape"),
        (np.zeros((2, 4, 4)), np.full((2, 4, 4), 0.5), "binary"),
        (np.full((1, 2, 2), np.nan), np.zeros((1, 2, 2)), "finite"),
        (np.full((1, 2, 2), np.inf), np.zeros((1, 2, 2)), "finite"),
        (np.zeros((1, 2, 2), dtype=object), np.zeros((1, 2, 2)), "dtype"),
        (np.zeros((0, 2, 2)), np.zeros((0, 2, 2)), "non-empty"),
        (np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4)), r"\[N, 1, H, W\]"),
    ],
)
def test_rejects_bad_input(pred, gt, match):
    for fn in (miou, fscore, frame_miou):
        with pytest.raises(InputError, match=match):
            fn(pred, gt)
    assert issubclass(InputError, ValueError)


def test_bad_parameters():
    z = np.zeros((1, 2, 2), F32)
    g = np.ones((1, 2, 2), np.uint8)
    with pytest.raises(InputError, match="num_thresholds"):
        fscore(z, g, num_thresholds=0)
    with pytest.raises(InputError, match="beta2"):
        fscore(z, g, beta2=-1)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        MetricAccumulator().add(1.5, 0.2)


def test_accumulator_means_and_records():
    rng = np.random.default_rng(8)
    acc = MetricAccumulator()
    assert np.isnan(acc.miou)
    vals = []
    for i in range(4):
        z, g = _random_batch(rng, "correlated")
        r = acc.update(z, g, name=f"v{i}")
        vals.append((miou(z, g), fscore(z, g)))
        assert r.name == f"v{i}" and r.frames == z.shape[0]
    assert acc.miou == pytest.approx(np.mean([v[0] for v in vals]))
    assert acc.fscore == pytest.approx(np.mean([v[1] for v in vals]))
    assert [r.to_dict()["name"] for r in acc.records] == ["v0", "v1", "v2", "v3"]
    acc.reset()
    assert acc.count == 0
