"""No-Prompt without wasted upscaling (issue 17): the IoU half first, masks only where they can pass.

The micro SAM's runner with the point decoder in two halves (``sam_point_iou`` +
``sam_mask_upscaler``) gives exactly the records of the one-graph point decoder and matches
segment-anything's own ``SamAutomaticMaskGenerator``, both where many masks pass the IoU filter and
where none do. The thresholds are placed from the measured IoU predictions (never from where random
weights are assumed to land).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator

from runtime.errors import InputError
from runtime.sam.amg import AutomaticMaskGenerator, build_point_grid
from tests.parity.test_amg import assert_records_close  # the AMG parity check of the other decoders

PHOTO = "cat_1.jpg"
SIDE = 8  # points per side: 64 prompt sets


@pytest.fixture(scope="module")
def micro_sam():
    from models.sam import load_sam

    return load_sam("micro", seed=0)


@pytest.fixture(scope="module")
def runners(micro_sam_graphs, micro_point_decoder, micro_amg_halves):
    """(one-graph point decoder runner, two-halves runner) of the micro SAM."""
    from export.onnx_utils import cpu_session
    from models.sam import get_sam_config
    from runtime.sam.predictor import SamRunner

    enc, dec = micro_sam_graphs
    cfg = get_sam_config("micro")

    def make(halves):
        return SamRunner(
            cpu_session(enc.path, 1),
            cpu_session(dec.path, 1),
            cfg["image_size"],
            cfg["pixel_mean"],
            cfg["pixel_std"],
            patch_size=cfg["patch_size"],
            mask_threshold=cfg["mask_threshold"],
            point_decoder=cpu_session(micro_point_decoder.path, 1),
            iou_first=halves,
        )

    iou_r, up_r = micro_amg_halves
    return make(None), make(lambda: (cpu_session(iou_r.path, 1), cpu_session(up_r.path, 1)))


@pytest.fixture(scope="module")
def photo(demo_dir: Path) -> np.ndarray:
    img = Image.open(demo_dir / PHOTO).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _best_ious(runner, photo) -> np.ndarray:
    """The best multimask IoU prediction of each grid prompt set (float32 [SIDE^2])."""
    (emb,) = runner.embed([photo])
    pts = build_point_grid(SIDE) * np.array([[photo.shape[1], photo.shape[0]]], np.float64)
    iou, _ = runner.predict_low_res(emb, photo.shape[:2], pts[:, None, :], np.ones((len(pts), 1)))
    return iou.max(axis=1)


def _same_records(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if k == "segmentation":
                assert np.array_equal(x[k], y[k])
            else:
                assert x[k] == y[k], k


def _kw(thresh: float) -> dict:
    # stability filter off and NMS off, so that every mask that passes the IoU filter is kept
    return {
        "points_per_side": SIDE,
        "pred_iou_thresh": float(thresh),
        "stability_score_thresh": 0.0,
        "box_nms_thresh": 1.0,
    }


def test_many_masks_pass_exactly_the_same_records_fewer_upscaled(runners, micro_sam, photo):
    plain, halves = runners
    best = _best_ious(plain, photo)
    thresh = float(np.median(best))  # about half of the prompt sets can pass: many masks
    if thresh <= 0.0:
        thresh = float(best.max()) / 2
    can_pass = int(np.count_nonzero(best > np.float32(thresh)))
    assert 0 < can_pass < best.size
    halves.iou_first_counts.update(prompt_sets=0, upscaled=0)
    got = AutomaticMaskGenerator(halves, **_kw(thresh)).generate(photo)
    assert halves.iou_first_counts == {"prompt_sets": best.size, "upscaled": can_pass}
    assert len(got) >= can_pass  # at least the best mask of each passing prompt set
    _same_records(AutomaticMaskGenerator(plain, **_kw(thresh)).generate(photo), got)
    assert_records_close(SamAutomaticMaskGenerator(micro_sam, **_kw(thresh)).generate(photo), got)


def test_no_mask_passes_nothing_upscaled(runners, micro_sam, photo):
    plain, halves = runners
    best = _best_ious(plain, photo)
    thresh = float(best.max()) + 0.01  # above every prediction: no mask passes
    halves.iou_first_counts.update(prompt_sets=0, upscaled=0)
    got = AutomaticMaskGenerator(halves, **_kw(thresh)).generate(photo)
    assert got == [] and halves.iou_first_counts == {"prompt_sets": best.size, "upscaled": 0}
    assert SamAutomaticMaskGenerator(micro_sam, **_kw(thresh)).generate(photo) == []


def test_filter_off_and_no_halves_fall_back_to_the_one_graph_decoder(runners, photo):
    plain, halves = runners
    halves.iou_first_counts.update(prompt_sets=0, upscaled=0)
    kw = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    _same_records(
        AutomaticMaskGenerator(plain, **kw).generate(photo),
        AutomaticMaskGenerator(halves, **kw).generate(photo),
    )
    assert halves.iou_first_counts["prompt_sets"] == 0  # pred_iou_thresh 0: every mask is needed
    (emb,) = plain.embed([photo])
    a = plain.predict_low_res_iou_first(emb, photo.shape[:2], [[10.0, 10.0]], [1], 0.5)
    b = plain.predict_low_res(emb, photo.shape[:2], [[10.0, 10.0]], [1])
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(InputError, match="iou_thresh"):
        halves.predict_low_res_iou_first(emb, photo.shape[:2], [[1.0, 1.0]], [1], float("nan"))
