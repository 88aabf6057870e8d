"""heatmap-box's ``box_strategy`` (runtime.prompting.prompts.heatmap_boxes and the mode) vs the Sam4AVS box
functions (spec sam4avs-reference 4.4, 4.8).

The ``ref_*`` functions transcribe ``get_multi_box``, ``get_single_box_maxarea``,
``get_single_box_maxscore`` and ``get_total_box`` of ``test_heatmap_prompt_box.py`` step by step
(deep copy, two-step binarisation, int8, ``cv2.connectedComponentsWithStats(connectivity=8)``,
the background-label bookkeeping). OpenCV is not installed here: :func:`cv2_stats` emulates
``connectedComponentsWithStats`` with ``scipy.ndimage.label`` (3x3 structure: the same raster-order
numbering) and computes every label's stats *including label 0* (the background's bounding box);
for a label without pixels it returns the sentinel row OpenCV 5.0 gives ([-1, 2147483647, 0, 0, 0],
checked once with opencv-python-headless 5.0.0.93). The per-frame SAM loop of the script (one
``SamPredictor.predict(box=...)`` per box, ``scores.argmax()``, masks OR-ed) is written out with
segment_anything's predictor on the bundle's micro SAM.

What the runtime returns differs from the reference only where the reference crashes or emits
garbage; each such case is spelled out in :func:`expected`.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

import runtime
from runtime.errors import InputError
from runtime.modes.heatmap_sam import segment_from_heatmaps
from runtime.prompting.prompts import BOX_STRATEGIES, heatmap_boxes
from runtime.result import SegmentResult

IMAGE_SIZE = 224
INT_MAX = 2147483647


# --- the reference, transcribed ---------------------------------------------------------------------


def cv2_stats(img: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """``connectedComponentsWithStats(img, connectivity=8)`` -> (retval, labels int32, stats int32 [retval, 5])."""
    labels, n = ndimage.label(img != 0, structure=np.ones((3, 3), dtype=int))
    stats = np.zeros((n + 1, 5), np.int32)
    for lab in range(n + 1):
        ys, xs = np.nonzero(labels == lab)
        if ys.size == 0:
            stats[lab] = [-1, INT_MAX, 0, 0, 0]  # OpenCV 5.0's row for a label without pixels
        else:
            stats[lab] = [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
                ys.size,
            ]
    return n + 1, labels.astype(np.int32), stats


def _binarise(sm, thres):
    similarity = copy.deepcopy(sm)
    similarity[similarity >= thres] = 1.0
    similarity[similarity < thres] = 0.0
    return np.int8(similarity)


def ref_get_multi_box(sm, thres=0.8):
    similarity = _binarise(sm, thres)
    retval, labels, stats = cv2_stats(similarity)
    zero_index = np.where(similarity == 0)
    remove_index = set(labels[zero_index])
    new_index = [i for i in range(retval) if i not in remove_index]
    return np.hstack((stats[new_index, 0:2], stats[new_index, 0:2] + stats[new_index, 2:4] - 1))


def ref_get_single_box_maxarea(sm, thres=0.8):
    similarity = _binarise(sm, thres)
    retval, labels, stats = cv2_stats(similarity)
    zero_index = np.where(similarity == 0)
    remove_index = set(labels[zero_index])
    new_index = [i for i in range(retval) if i not in remove_index]
    new_stats = stats[new_index]
    area = new_stats[:, 4]
    max_area_index = area.argmax()  # ValueError on an empty sequence
    return np.hstack(
        (
            new_stats[max_area_index, 0:2],
            new_stats[max_area_index, 0:2] + new_stats[max_area_index, 2:4] - 1,
        )
    )[np.newaxis,]


def ref_get_single_box_maxscore(sm, thres=0.8):
    similarity = _binarise(sm, thres)
    retval, labels, stats = cv2_stats(similarity)
    sm = sm.reshape(IMAGE_SIZE * IMAGE_SIZE)
    index = sm.argmax()
    stat_index = labels[index // IMAGE_SIZE, index % IMAGE_SIZE]
    return np.hstack((stats[stat_index, 0:2], stats[stat_index, 0:2] + stats[stat_index, 2:4] - 1))[
        np.newaxis,
    ]


def ref_get_total_box(sm, thres=0.8):
    similarity = _binarise(sm, thres)
    y_coords, x_coords = np.nonzero(similarity)
    return np.array([x_coords.min(), y_coords.min(), x_coords.max(), y_coords.max()])[np.newaxis,]


REF = {
    "multi_box": ref_get_multi_box,
    "single_maxarea": ref_get_single_box_maxarea,
    "single_maxscore": ref_get_single_box_maxscore,
    "total_box": ref_get_total_box,
}


def reference_boxes(sm, t, strategy):
    """The script's boxes, or the string "ValueError" where it crashes."""
    try:
        return np.asarray(REF[strategy](sm, t)).reshape(-1, 4).astype(np.int64)
    except ValueError:
        return "ValueError"


def expected(sm, t, strategy, quirk: bool) -> np.ndarray:
    """What the runtime must return: the reference's boxes, except
    - a crash (single_maxarea / total_box with nothing >= t) -> no box;
    - multi_box with every pixel >= t: the reference adds the box of the empty background label
      (OpenCV's sentinel statistics): dropped in both presets;
    - single_maxscore with nothing >= t: the background's box (the whole map) only with quirk."""
    ref = reference_boxes(sm, t, strategy)
    if isinstance(ref, str):
        return np.zeros((0, 4), np.int64)
    fg = _binarise(sm, t) != 0
    if strategy == "multi_box" and fg.all():
        assert ref.shape[0] == 2 and (
            ref[0, 0] < 0 or ref[0, 1] > IMAGE_SIZE
        )  # the garbage box comes first
        return ref[1:]
    if strategy == "single_maxscore" and not fg.any():
        assert ref.tolist() == [[0, 0, IMAGE_SIZE - 1, IMAGE_SIZE - 1]]
        return ref if quirk else np.zeros((0, 4), np.int64)
    return ref


# --- heatmaps ------------------------------------------------------------------------------------------


def smooth_maps(seed: int, n: int) -> list[np.ndarray]:
    """Heatmaps as the scripts make them: 7x7 random values, min-max normalised, bilinear x32 (torch)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.rand(1, 1, 7, 7, generator=g)
        x = (x - x.min()) / (x.max() - x.min())
        out.append(F.interpolate(x, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear")[0, 0].numpy())
    return out


def edge_maps() -> dict[str, np.ndarray]:
    z = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    maps = {"all_below": np.full_like(z, 0.3), "all_above": np.full_like(z, 0.9)}
    ramp = np.tile(np.linspace(0.56, 1.0, IMAGE_SIZE, dtype=np.float32), (IMAGE_SIZE, 1))
    maps["all_above_ramp"] = ramp
    tie_area = z.copy()  # two equal squares and a smaller one; the first in raster order wins
    tie_area[100:110, 150:160] = 0.9
    tie_area[100:110, 20:30] = 0.9  # first pixel (100, 20): wins
    tie_area[5:8, 200:203] = 0.95
    maps["tie_area"] = tie_area
    tie_max = z.copy()  # the same maximum in two regions: the first pixel in raster order wins
    tie_max[150:170, 10:40] = 0.8
    tie_max[160, 20] = 1.0
    tie_max[30:60, 100:190] = 0.7
    tie_max[40, 120] = 1.0
    maps["tie_max"] = tie_max
    diag = z.copy()  # diagonal contact joins (8-connectivity)
    diag[10:13, 10:13] = 0.9
    diag[13:16, 13:16] = 0.9
    diag[200:210, 0:4] = 0.9
    maps["diagonal"] = diag
    exact = z.copy()
    exact[50, 60:70] = np.float32(0.55)  # exactly at float32(t): foreground
    exact[80:90, 80:81] = np.float32(0.55) - np.float32(1e-7)  # just below
    maps["exact_threshold"] = exact
    return maps


CASES = [(f"smooth{i}", m) for i, m in enumerate(smooth_maps(3, 12))] + list(edge_maps().items())


@pytest.mark.parametrize("strategy", BOX_STRATEGIES)
@pytest.mark.parametrize("quirk", [False, True])
@pytest.mark.parametrize("t", [0.55, 0.3, 0.8, 1.0, 1.5])
def test_boxes_match_reference(strategy, quirk, t):
    for name, sm in CASES:
        got = heatmap_boxes(sm, t, strategy, quirk=quirk)
        want = expected(sm, t, strategy, quirk)
        assert got.dtype == np.int64 and got.ndim == 2 and got.shape[1] == 4, name
        assert got.tolist() == want.tolist(), (name, got, want)


def test_edge_cases_spelled_out():
    e = edge_maps()
    full = [[0, 0, 223, 223]]
    # nothing above t: the reference crashes (maxarea, total), gives [] (multi) or the whole map (maxscore)
    assert reference_boxes(e["all_below"], 0.55, "single_maxarea") == "ValueError"
    assert reference_boxes(e["all_below"], 0.55, "total_box") == "ValueError"
    assert reference_boxes(e["all_below"], 0.55, "multi_box").shape == (0, 4)
    assert reference_boxes(e["all_below"], 0.55, "single_maxscore").tolist() == full
    for s in BOX_STRATEGIES:
        assert heatmap_boxes(e["all_below"], 0.55, s).shape == (0, 4)
    assert heatmap_boxes(e["all_below"], 0.55, "single_maxscore", quirk=True).tolist() == full
    # everything above: the reference's multi_box adds the garbage box of the empty background label
    ref = reference_boxes(e["all_above"], 0.55, "multi_box")
    assert ref.tolist() == [[-1, INT_MAX, -2, INT_MAX - 1], *full]
    for s in BOX_STRATEGIES:
        for q in (False, True):
            assert heatmap_boxes(e["all_above"], 0.55, s, quirk=q).tolist() == full
    # ties
    assert heatmap_boxes(e["tie_area"], 0.55, "single_maxarea").tolist() == [[20, 100, 29, 109]]
    assert heatmap_boxes(e["tie_max"], 0.55, "single_maxscore").tolist() == [[100, 30, 189, 59]]
    assert heatmap_boxes(e["tie_area"], 0.55, "multi_box").tolist() == [
        [200, 5, 202, 7],
        [20, 100, 29, 109],
        [150, 100, 159, 109],
    ]
    assert heatmap_boxes(e["tie_area"], 0.55, "total_box").tolist() == [[20, 5, 202, 109]]


def test_box_strategy_is_validated():
    sm = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for bad in ("multi", "", None, 3):
        with pytest.raises(InputError, match="box strategy must be one of"):
            heatmap_boxes(sm, 0.55, bad)
    with pytest.raises(InputError, match="quirk"):
        heatmap_boxes(sm, 0.55, "multi_box", quirk="yes")
    with pytest.raises(InputError):
        heatmap_boxes(sm.astype(np.int32), 0.55, "multi_box")


# --- the mode: SAM per box, masks OR-ed ------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tiny_bundle, demo_dir):
    from PIL import Image

    from reference.zero_shot import load_reference_models

    frames = [
        np.asarray(
            Image.open(demo_dir / n).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
        )
        for n in ("cat_1.jpg", "cars_2.jpg", "clock_1.jpg")
    ]
    return (
        runtime.load(tiny_bundle, preset="sam4avs", threads=2),
        load_reference_models(tiny_bundle).sam,
        frames,
    )


def _blob_maps() -> np.ndarray:
    z = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    z[0, 20:80, 30:100] = 0.9
    z[0, 150:200, 120:210] = 0.7
    z[0, 60, 60] = 1.0
    z[1] = smooth_maps(11, 1)[0]
    z[2, 100:140, 10:50] = 0.6
    z[2, 10:30, 180:220] = 0.95
    z[2, 190:220, 190:220] = 0.8
    return z


def _reference_masks(sam, frames, maps, t, strategy, quirk):
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam)
    out = []
    for frame, sm in zip(frames, maps, strict=True):
        boxes = expected(sm, t, strategy, quirk)
        total = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
        if len(boxes):
            predictor.set_image(frame)
            for box in boxes:
                masks, scores, _ = predictor.predict(
                    point_coords=None, point_labels=None, box=box[None, :], multimask_output=True
                )
                total = np.bitwise_or(total, masks[scores.argmax()])
        out.append(total)
    return out


@pytest.mark.parametrize("strategy", BOX_STRATEGIES)
def test_mode_masks_match_reference_loop(setup, strategy):
    pipe, sam, frames = setup
    maps = _blob_maps()
    with torch.no_grad():
        want = _reference_masks(sam, frames, maps, 0.55, strategy, quirk=True)
    res = SegmentResult.from_frames(
        "",
        "",
        segment_from_heatmaps(
            pipe.stages(),
            frames,
            maps,
            "heatmap-box",
            t=0.55,
            quirk=True,
            frame_policy="reference",
            box_strategy=strategy,
        ),
    )
    for i, (m, w, p, sc) in enumerate(zip(res.masks, want, res.prompts, res.scores, strict=True)):
        inter, union = np.count_nonzero(m & w), np.count_nonzero(m | w)
        assert union == 0 or inter / union >= 0.999, (strategy, i, inter / union)
        boxes = expected(maps[i], 0.55, strategy, True)
        assert p["box_strategy"] == strategy
        np.testing.assert_array_equal(p["boxes_xyxy"], boxes.astype(np.float64))
        assert sc.shape == (len(boxes),)
        assert (p["box"] is None) == (len(boxes) != 1)
    if strategy == "multi_box":
        assert len(res.prompts[0]["boxes_xyxy"]) == 2 and len(res.prompts[2]["boxes_xyxy"]) == 3


def test_dataset_selects_the_scripts_strategy(setup, demo_dir):
    pipe, _, frames = setup
    wav = demo_dir / "cat_3-95694-A-5.wav"
    r = pipe.segment(frames[:1], wav, mode="heatmap-box", t=0.99, dataset="ms3")
    assert r.prompts[0]["box_strategy"] == "multi_box"
    r = pipe.segment(frames[:1], wav, mode="heatmap-box", t=0.99)
    assert r.prompts[0]["box_strategy"] == "single_maxarea"
    r = pipe.segment(
        frames[:1], wav, mode="heatmap-box", t=0.99, dataset="ms3", box_strategy="total_box"
    )
    assert r.prompts[0]["box_strategy"] == "total_box"
    with pytest.raises(InputError, match="box_strategy must be one of"):
        pipe.segment(frames[:1], wav, mode="heatmap-box", box_strategy="largest")
