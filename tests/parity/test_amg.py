"""runtime/sam/amg.py (numpy automatic mask generation) vs segment_anything's SamAutomaticMaskGenerator.

Two kinds of parity:

* the AMG *logic* (grid, IoU and stability filters, boxes, crop-edge filter, NMS, crops, uncrop,
  records) through :func:`runtime.sam.amg.generate_masks` against SAM's own generator, both driven by
  the same synthetic point-dependent decoder (discs, squares and diamonds of varying sharpness
  around each point): outputs must be identical, bit for bit;
* the whole path on the ``micro`` SAM (random weights, models/sam.py) exported to ONNX
  (export/sam_export.py) and run by :class:`runtime.sam.amg.AutomaticMaskGenerator` through
  :class:`runtime.sam.predictor.SamRunner`, against SamAutomaticMaskGenerator on the PyTorch model, on a
  real photo resized to 224x224: same masks (IoU >= 0.999), same count, same order up to score
  near-ties (ORT and PyTorch differ by ~1e-7 in the predicted IoU).

Random weights give predicted IoUs of about -0.2..0.1, so the default thresholds (0.88 / 0.95)
keep no mask on the micro model: that run checks [] == []; the lowered-threshold runs compare
real masks. The defaults with surviving masks are covered by the synthetic decoder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils import amg as sam_amg
from torchvision.ops import nms as tv_nms

from runtime.errors import InputError
from runtime.sam.amg import (
    AmgConfig,
    AutomaticMaskGenerator,
    batched_mask_to_box,
    box_nms,
    build_point_grid,
    generate_crop_boxes,
    generate_masks,
    stability_score,
)

PHOTO = "cat_1.jpg"


pytestmark = pytest.mark.torch_threads(1)


# --- synthetic point-dependent decoder ------------------------------------------------------------


def synthetic_decoder(
    points: np.ndarray, crop_hw, *, quantised: bool = False, negative: bool = False
):
    """(logits float32 [B, 3, h, w], iou float32 [B, 3]) for points float [B, 2] (x, y) crop pixels."""
    h, w = int(crop_hw[0]), int(crop_hw[1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    b = points.shape[0]
    logits = np.empty((b, 3, h, w), dtype=np.float32)
    iou = np.empty((b, 3), dtype=np.float32)
    for i, (x, y) in enumerate(np.asarray(points, dtype=np.float64)):
        key = int(x * 7.31 + y * 13.17)
        dx = np.abs(xx - np.float32(x))
        dy = np.abs(yy - np.float32(y))
        dists = (np.sqrt(dx * dx + dy * dy), np.maximum(dx, dy), 0.5 * dx + dy)
        for k in range(3):
            radius = np.float32(4 + (key + 11 * k) % 57)
            sharp = np.float32(0.25 + ((3 * key + k) % 8) * 0.5)
            logits[i, k] = (radius - dists[k]) * sharp
            if quantised:
                iou[i, k] = 0.80 + 0.01 * ((key + 5 * k) % 20)
            else:
                frac = (np.sin(key * 12.9898 + k * 78.233) * 43758.5453) % 1.0
                iou[i, k] = 0.78 + 0.22 * frac
    if negative:
        logits = -np.abs(logits) - 2.0
    return logits, iou


class _SyntheticPredictor:
    """Stands in for SamPredictor inside SamAutomaticMaskGenerator (identity coordinate transform)."""

    def __init__(self, **kw) -> None:
        self.kw = kw
        self.model = SimpleNamespace(mask_threshold=0.0)
        self.device = torch.device("cpu")
        self.transform = SimpleNamespace(apply_coords=lambda pts, size: np.array(pts, copy=True))
        self.hw = None

    def set_image(self, image):
        self.hw = image.shape[:2]

    def reset_image(self):
        self.hw = None

    def predict_torch(
        self,
        point_coords,
        point_labels,
        boxes=None,
        mask_input=None,
        multimask_output=True,
        return_logits=False,
    ):
        assert multimask_output and return_logits and torch.all(point_labels == 1)
        logits, iou = synthetic_decoder(point_coords[:, 0, :].numpy(), self.hw, **self.kw)
        return torch.from_numpy(logits), torch.from_numpy(iou), None


@pytest.fixture(scope="module")
def micro_sam():
    from models.sam import load_sam

    return load_sam("micro", seed=0)


def sam_reference_synthetic(micro_sam, image_hw, amg_kwargs, **kw):
    gen = SamAutomaticMaskGenerator(micro_sam, **amg_kwargs)
    gen.predictor = _SyntheticPredictor(**kw)
    return gen.generate(np.zeros((*image_hw, 3), dtype=np.uint8))


def ours_synthetic(image_hw, amg_kwargs, **kw):
    def for_crop(crop_box):
        x0, y0, x1, y1 = crop_box

        def predict_fn(coords, labels):
            assert coords.shape[1:] == (1, 2) and np.all(labels == 1)
            return synthetic_decoder(coords[:, 0, :], (y1 - y0, x1 - x0), **kw)

        return predict_fn, None

    return generate_masks(image_hw, for_crop, AmgConfig(**amg_kwargs))


def _record_key(r) -> tuple:
    seg = np.ascontiguousarray(r["segmentation"])
    return (
        tuple(r["point_coords"][0]),
        tuple(r["bbox"]),
        r["area"],
        r["predicted_iou"],
        r["stability_score"],
        tuple(r["crop_box"]),
        hashlib.sha1(seg.tobytes()).hexdigest(),
    )


def assert_records_identical(ref, out, sort_key=lambda r: r["predicted_iou"]):
    """Same records bit for bit; the order may differ only inside groups of equal ``sort_key``
    (torchvision's batched_nms re-sorts unstably above 1,000 boxes)."""
    assert len(out) == len(ref)
    for r in out:
        assert set(r) == {
            "segmentation",
            "area",
            "bbox",
            "predicted_iou",
            "point_coords",
            "stability_score",
            "crop_box",
        }
        assert r["segmentation"].dtype == bool and r["segmentation"].ndim == 2
        assert all(isinstance(v, int) for v in r["bbox"] + r["crop_box"] + [r["area"]])
    assert [sort_key(r) for r in out] == [sort_key(r) for r in ref]
    i = 0
    while i < len(ref):
        j = i
        while j < len(ref) and sort_key(ref[j]) == sort_key(ref[i]):
            j += 1
        assert sorted(map(_record_key, ref[i:j])) == sorted(map(_record_key, out[i:j])), (
            f"records {i}:{j}"
        )
        i = j
    for a, b in zip(ref, out, strict=True):  # the segmentations themselves, in the matched order
        if _record_key(a) == _record_key(b):
            np.testing.assert_array_equal(a["segmentation"], b["segmentation"])


# --- building blocks vs segment_anything / torchvision --------------------------------------------


def test_point_grid_and_crop_boxes_match_sam():
    for n in (1, 2, 5, 16, 32):
        np.testing.assert_array_equal(build_point_grid(n), sam_amg.build_point_grid(n))
    for hw in ((224, 224), (480, 640), (1000, 333), (17, 5), (1, 1)):
        for layers in range(4):
            for ratio in (512 / 1500, 0.0, 0.5):
                boxes, idx = generate_crop_boxes(hw, layers, ratio)
                ref_boxes, ref_idx = sam_amg.generate_crop_boxes(hw, layers, ratio)
                assert [list(b) for b in boxes] == ref_boxes and idx == ref_idx


@pytest.mark.parametrize("n", [0, 1, 40, 700, 2500])
def test_box_nms_matches_torchvision(n):
    rng = np.random.default_rng(n)
    xy = rng.integers(0, 60, (n, 2))
    wh = rng.integers(0, 40, (n, 2))  # zero-size boxes included
    boxes = np.concatenate([xy, xy + wh], axis=1)
    for scores in (
        rng.integers(0, 6, n).astype(np.float32),  # many ties
        rng.random(n, dtype=np.float32),
    ):
        for thr in (0.0, 0.3, 0.7, 1.0):
            ref = tv_nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores), thr).numpy()
            np.testing.assert_array_equal(box_nms(boxes, scores, thr), ref)


def test_mask_boxes_and_stability_match_sam():
    rng = np.random.default_rng(0)
    masks = rng.random((40, 23, 31)) > 0.97
    masks[3] = False
    masks[5] = False
    masks[5, 22, 30] = True
    masks[6] = True
    ref = sam_amg.batched_mask_to_box(torch.from_numpy(masks)).numpy()
    np.testing.assert_array_equal(batched_mask_to_box(masks), ref)
    np.testing.assert_array_equal(batched_mask_to_box(masks[:0]), np.zeros((0, 4), np.int64))
    logits = (rng.standard_normal((30, 50, 40)) * 3).astype(np.float32)
    logits[0] = -5.0  # empty union: 0 / 0
    logits[1, :, :] = 1.0  # exactly at the upper cut: not counted
    ref = sam_amg.calculate_stability_score(torch.from_numpy(logits), 0.0, 1.0).numpy()
    got = stability_score(logits, 0.0, 1.0)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)  # NaN == NaN here


# --- the AMG logic with a synthetic decoder, identical outputs -----------------------------------


def test_synthetic_defaults_identical(micro_sam):
    """All of SAM's defaults (32x32 grid, batches of 64, 0.88 / 0.95, NMS 0.7) on a 224x224 frame."""
    ref = sam_reference_synthetic(micro_sam, (224, 224), {})
    out = ours_synthetic((224, 224), {})
    assert len(ref) > 20  # masks do survive the default thresholds here
    assert_records_identical(ref, out)


def test_synthetic_score_ties_identical(micro_sam):
    """Quantised IoU scores: hundreds of exact ties; NMS keeps index order among them."""
    kw = {"points_per_side": 20, "points_per_batch": 50, "stability_score_thresh": 0.9}
    ref = sam_reference_synthetic(micro_sam, (200, 260), kw, quantised=True)
    out = ours_synthetic((200, 260), kw, quantised=True)
    assert len(ref) > 20
    assert len({r["predicted_iou"] for r in ref}) < len(ref)
    assert_records_identical(ref, out)


@pytest.mark.parametrize("layers,factor", [(1, 1), (2, 2)])
def test_synthetic_crop_layers_identical(micro_sam, layers, factor):
    kw = {
        "points_per_side": 8,
        "crop_n_layers": layers,
        "crop_n_points_downscale_factor": factor,
        "pred_iou_thresh": 0.8,
        "stability_score_thresh": 0.8,
    }
    ref = sam_reference_synthetic(micro_sam, (180, 240), kw)
    out = ours_synthetic((180, 240), kw)
    assert len(ref) > 5
    assert len({tuple(r["crop_box"]) for r in ref}) > 1  # masks from several crops survive
    assert_records_identical(ref, out, sort_key=lambda r: r["crop_box"][2] * r["crop_box"][3])


def test_synthetic_chunked_upscaling_identical(micro_sam, monkeypatch):
    """Survivors upscaled a few at a time (memory bound) give the same records."""
    import runtime.sam.amg as amg

    kw = {"points_per_side": 10, "pred_iou_thresh": 0.8, "stability_score_thresh": 0.8}
    ref = sam_reference_synthetic(micro_sam, (90, 120), kw)
    monkeypatch.setattr(amg, "_CHUNK_ELEMENTS", 90 * 120 * 4)  # 4 masks per chunk
    out = ours_synthetic((90, 120), kw)
    assert len(ref) > 5
    assert_records_identical(ref, out)


def test_synthetic_no_masks_gives_empty_list(micro_sam):
    kw = {"points_per_side": 4}
    assert sam_reference_synthetic(micro_sam, (64, 64), kw, negative=True) == []
    assert ours_synthetic((64, 64), kw, negative=True) == []
    assert ours_synthetic((64, 64), {"points_per_side": 4, "pred_iou_thresh": 1.0}) == []
    assert ours_synthetic((64, 64), {"points_per_side": 4, "crop_n_layers": 1}, negative=True) == []


# --- input checking ------------------------------------------------------------------------------


def test_rejects_bad_inputs():
    with pytest.raises(InputError):
        generate_masks((0, 10), lambda cb: None)
    with pytest.raises(InputError):
        generate_masks((10, -1), lambda cb: None)
    with pytest.raises(InputError):
        AmgConfig(points_per_side=0)
    with pytest.raises(InputError):
        AmgConfig(min_mask_region_area=100)
    with pytest.raises(InputError):
        AmgConfig(output_mode="coco_rle")
    with pytest.raises(InputError):
        AmgConfig(pred_iou_thresh=float("nan"))

    def bad_shapes(cb):
        return (
            lambda c, lab: (
                np.zeros((c.shape[0], 3, 5, 5), np.float32),
                np.zeros((c.shape[0], 3), np.float32),
            )
        ), None

    with pytest.raises(InputError, match="crop's size"):
        generate_masks((16, 16), bad_shapes, AmgConfig(points_per_side=2, pred_iou_thresh=0.0))

    def bad_iou(cb):
        return (
            lambda c, lab: (
                np.zeros((c.shape[0], 3, 16, 16), np.float32),
                np.zeros((c.shape[0] + 1, 3), np.float32),
            )
        ), None

    with pytest.raises(InputError, match="iou"):
        generate_masks((16, 16), bad_iou, AmgConfig(points_per_side=2))


# --- the micro SAM through ONNX Runtime ----------------------------------------------------------


@pytest.fixture(scope="module", params=["prompt-decoder", "point-decoder"])
def micro_runner(request, micro_sam_graphs):
    """The micro SAM's runner on SAM's decoder graph, then on ``sam_point_decoder`` (the AMG's fast path)."""
    from export.onnx_utils import cpu_session
    from models.sam import get_sam_config
    from runtime.sam.predictor import SamRunner

    enc, dec = micro_sam_graphs
    cfg = get_sam_config("micro")
    point = None
    if request.param == "point-decoder":
        point = cpu_session(request.getfixturevalue("micro_point_decoder").path, 1)
    return SamRunner(
        cpu_session(enc.path, 1),
        cpu_session(dec.path, 1),
        cfg["image_size"],
        cfg["pixel_mean"],
        cfg["pixel_std"],
        patch_size=cfg["patch_size"],
        mask_threshold=cfg["mask_threshold"],
        point_decoder=point,
    )


@pytest.fixture(scope="module")
def photo(demo_dir: Path) -> np.ndarray:
    img = Image.open(demo_dir / PHOTO).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    return np.asarray(img)


def assert_records_close(ref, out, *, iou_tol: float = 1e-5):
    """ORT vs PyTorch: same count; each mask matched (same grid point, mask IoU >= 0.999);
    the order may differ only between records whose predicted IoUs are within iou_tol."""
    assert len(out) == len(ref)
    used = set()
    order = []
    for r in out:
        best, best_iou = None, -1.0
        for j, q in enumerate(ref):
            if (
                j in used
                or q["point_coords"] != r["point_coords"]
                or q["crop_box"] != r["crop_box"]
            ):
                continue
            inter = np.count_nonzero(q["segmentation"] & r["segmentation"])
            union = np.count_nonzero(q["segmentation"] | r["segmentation"])
            m = 1.0 if union == 0 else inter / union
            if m > best_iou:
                best, best_iou = j, m
        assert best is not None and best_iou >= 0.999, (
            f"no match for the mask at {r['point_coords']}"
        )
        q = ref[best]
        used.add(best)
        order.append(best)
        assert abs(q["predicted_iou"] - r["predicted_iou"]) <= iou_tol
        assert abs(q["stability_score"] - r["stability_score"]) <= 2e-3
        assert np.abs(np.subtract(q["bbox"], r["bbox"])).max() <= 1
        assert abs(q["area"] - r["area"]) <= 0.001 * max(q["area"], 1) + 1
    for a in range(len(order)):  # inversions only between near-tied scores
        for b in range(a + 1, len(order)):
            if order[a] > order[b]:
                assert abs(out[a]["predicted_iou"] - out[b]["predicted_iou"]) <= 2 * iou_tol


@pytest.mark.slow
def test_micro_ort_defaults(micro_runner, micro_sam, photo):
    """SAM's defaults on the micro model: both generators agree (random weights keep nothing).

    Slow: 1,024 prompt sets through the full-size SAM mask decoder on each side, about 10 s in
    ORT and 20 s in PyTorch eager on one busy core.
    """
    ref = SamAutomaticMaskGenerator(micro_sam).generate(photo)
    out = AutomaticMaskGenerator(micro_runner).generate(photo)
    assert_records_close(ref, out)


@pytest.mark.parametrize(
    "kw",
    [
        # no filtering, no suppression: every one of the 3 x 64 masks, in score order
        {
            "points_per_side": 8,
            "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0,
            "box_nms_thresh": 1.0,
        },
        # both filters active (random logits are small: a 0.05 stability offset), batches of 48
        {
            "points_per_side": 12,
            "points_per_batch": 48,
            "pred_iou_thresh": 0.02,
            "stability_score_offset": 0.05,
            "stability_score_thresh": 0.3,
            "box_nms_thresh": 1.0,
        },
        # NMS at the default 0.7: random masks span the frame, so one survives out of 192
        {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
        # crops: 1 + 4 crop embeddings, crop-edge filter, crop NMS
        {
            "points_per_side": 4,
            "crop_n_layers": 1,
            "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0,
            "box_nms_thresh": 1.0,
            "crop_nms_thresh": 1.0,
        },
    ],
)
def test_micro_ort_lowered_thresholds(micro_runner, micro_sam, photo, kw):
    ref = SamAutomaticMaskGenerator(micro_sam, **kw).generate(photo)
    out = AutomaticMaskGenerator(micro_runner, **kw).generate(photo)
    assert len(ref) >= 1
    assert_records_close(ref, out)


def test_micro_ort_no_masks_and_bad_images(micro_runner, photo):
    assert (
        AutomaticMaskGenerator(micro_runner, points_per_side=4, pred_iou_thresh=0.99).generate(
            photo
        )
        == []
    )
    gen = AutomaticMaskGenerator(micro_runner, points_per_side=4)
    for bad in (
        np.zeros((0, 224, 3), np.uint8),
        np.zeros((224, 0, 3), np.uint8),
        photo.astype(np.float32),
        photo[..., :2],
        photo[..., 0],
    ):
        with pytest.raises(InputError):
            gen.generate(bad)
    with pytest.raises(InputError, match="unknown AMG parameters"):
        AutomaticMaskGenerator(micro_runner, points_per_sides=4)
    with pytest.raises(InputError, match="SamRunner"):
        AutomaticMaskGenerator(object())


# --- sparse segment-everything (a point filter) ---------------------------------------------------


def test_synthetic_point_filter_equals_sam_with_the_kept_points(micro_sam):
    """Prompting a subset of the grid is SAM's generator run on exactly that subset (``point_grids``)."""
    hw = (224, 224)
    grid = build_point_grid(32)
    flags = (grid[:, 0] > 0.3) & (grid[:, 1] < 0.6) & (np.arange(len(grid)) % 3 != 0)
    seen = []

    def point_filter(points):
        seen.append(points.copy())
        return (
            (points[:, 0] > 0.3 * hw[1])
            & (points[:, 1] < 0.6 * hw[0])
            & (np.arange(len(points)) % 3 != 0)
        )

    gen = SamAutomaticMaskGenerator(micro_sam, points_per_side=None, point_grids=[grid[flags]])
    gen.predictor = _SyntheticPredictor()
    ref = gen.generate(np.zeros((*hw, 3), dtype=np.uint8))

    def for_crop(crop_box):
        return (lambda coords, labels: synthetic_decoder(coords[:, 0, :], hw)), None

    out = generate_masks(hw, for_crop, AmgConfig(), point_filter=point_filter)
    assert 0 < len(ref) < len(ours_synthetic(hw, {}))  # fewer masks than the full grid, but some
    assert_records_identical(ref, out)
    np.testing.assert_array_equal(seen[0], grid * 224)  # the filter sees image pixels


def test_point_filter_is_checked_and_sees_image_pixels_per_crop():
    calls = []

    def keep_left(points):
        calls.append(points.copy())
        return points[:, 0] < 60

    def for_crop(crop_box):
        x0, y0, x1, y1 = crop_box
        return (lambda coords, labels: synthetic_decoder(coords[:, 0, :], (y1 - y0, x1 - x0))), None

    cfg = AmgConfig(
        points_per_side=4, crop_n_layers=1, pred_iou_thresh=0.8, stability_score_thresh=0.8
    )
    out = generate_masks((100, 120), for_crop, cfg, point_filter=keep_left)
    assert len(calls) == 5  # the image and its four crops
    assert all(r["point_coords"][0][0] < 60 for r in out)
    crops, _ = generate_crop_boxes((100, 120), 1, cfg.crop_overlap_ratio)
    for pts, (x0, y0, x1, y1) in zip(calls, crops, strict=True):
        assert (
            pts[:, 0].min() >= x0
            and pts[:, 0].max() <= x1
            and pts[:, 1].min() >= y0
            and pts[:, 1].max() <= y1
        )
    with pytest.raises(InputError, match="point_filter must return bool"):
        generate_masks((100, 120), for_crop, cfg, point_filter=lambda p: np.ones(3, bool))
    with pytest.raises(InputError, match="point_filter must return bool"):
        generate_masks((100, 120), for_crop, cfg, point_filter=lambda p: np.ones(len(p)))
