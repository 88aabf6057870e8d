"""runtime/prompting/prompts.py vs a transcription of the Sam4AVS prompt functions (spec sam4avs-reference 4.1-4.4, 4.8).

The ``ref_*`` functions below transcribe ``get_topk_points``, ``get_peak_points``,
``get_dense_points`` (avs_scripts/avs_s4_zero_shot_sam/test_point_prompt.py) and
``get_single_box_maxarea`` (test_heatmap_prompt_box.py) step by step, with torch's
``F.interpolate`` where the original uses it. OpenCV is not installed: its
``connectedComponentsWithStats(connectivity=8)`` is emulated with ``scipy.ndimage.label`` and a 3x3
structure (same numbering: raster order of each component's first pixel).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import ndimage

from runtime.errors import InputError
from runtime.prompting.prompts import (
    connected_components,
    dense_grid,
    dense_points,
    heatmap_boxes,
    heatmap_point_filter,
    peak_points,
    select_max_score,
    top_points,
)

IMAGE_SIZE = 224


# --- the reference, transcribed ---------------------------------------------------------------------


def ref_get_topk_points(similarity):
    similarity = similarity.reshape(IMAGE_SIZE * IMAGE_SIZE)
    index = similarity.argmax()
    points = [[index % IMAGE_SIZE + 0.5, index // IMAGE_SIZE + 0.5]]
    labels = [1]
    index = similarity.argmin()
    points.append([index % IMAGE_SIZE + 0.5, index // IMAGE_SIZE + 0.5])
    labels.append(0)
    return np.array(points), np.array(labels)


def ref_peak_rowcol(similarity, t):
    """get_peak_points up to np.argwhere: (pos_points, neg_points) as (row, col)."""
    s = np.pad(similarity, [(2, 2), (2, 2)], mode="constant")
    center = s[1 : s.shape[0] - 1, 1 : s.shape[1] - 1]
    left = s[1 : s.shape[0] - 1, 2 : s.shape[1]]
    right = s[1 : s.shape[0] - 1, 0 : s.shape[1] - 2]
    up = s[2 : s.shape[0], 1 : s.shape[1] - 1]
    down = s[0 : s.shape[0] - 2, 1 : s.shape[1] - 1]
    pos_peaks = (center > left) & (center > right) & (center > up) & (center > down)
    neg_peaks = (center < left) & (center < right) & (center < up) & (center < down)
    try_pos = pos_peaks & (center > t)
    if sum(try_pos.reshape(-1)) == 0:
        try_pos = center == center.max()
    try_neg = neg_peaks & (center < 1 - t)
    if sum(try_neg.reshape(-1)) == 0:
        try_neg = center == center.min()
    pos = try_pos[1 : center.shape[0] - 1, 1 : center.shape[1] - 1]
    neg = try_neg[1 : center.shape[0] - 1, 1 : center.shape[1] - 1]
    return np.argwhere(pos), np.argwhere(neg)


def ref_get_peak_points(similarity, t):
    pos_points, neg_points = ref_peak_rowcol(similarity, t)
    points = np.concatenate([pos_points, neg_points], axis=0)
    input_points = points  # the aliasing bug: both names are one array
    input_points[:, 0] = points[:, 1]
    input_points[:, 1] = points[:, 0]
    input_labels = np.concatenate(
        [np.ones(pos_points.shape[0]), np.zeros(neg_points.shape[0])], axis=0
    )
    return points, input_labels


def ref_get_dense_points(similarity, t, downsample=7):
    similarity = similarity.reshape((1, 1, IMAGE_SIZE, IMAGE_SIZE))
    down_side = IMAGE_SIZE // downsample
    similarity = torch.tensor(similarity)
    similarity = torch.nn.functional.interpolate(
        similarity, (down_side, down_side), mode="bilinear"
    )[0, 0]
    similarity = similarity.cpu().numpy()
    h, w = similarity.shape
    scale_h = IMAGE_SIZE / h
    scale_w = IMAGE_SIZE / w
    similarity = similarity.reshape(h * w)
    rank = similarity.argsort()
    num = max(1, min((similarity >= t).sum(), similarity.shape[0] // 2))
    labels = np.ones(num * 2).astype("uint8")
    labels[num:] = 0
    points = []
    for index in rank[-num:]:
        points.append([(index % h + 0.5) * scale_h, (index // w + 0.5) * scale_w])
    for index in rank[:num]:
        points.append([(index % h + 0.5) * scale_h, (index // w + 0.5) * scale_w])
    return np.array(points), labels, similarity, num


def cv2_connected_components_with_stats(image):
    """(retval, labels, stats) of cv2.connectedComponentsWithStats(image, connectivity=8)."""
    labels, n = ndimage.label(image != 0, structure=np.ones((3, 3), dtype=int))
    stats = np.zeros((n + 1, 5), dtype=np.int32)  # label 0 without pixels: area 0
    areas = np.bincount(labels.reshape(-1), minlength=n + 1)
    objects = ndimage.find_objects((labels == 0).astype(int)) + ndimage.find_objects(labels)
    if not areas[0]:
        objects = [None] + objects
    for lab, obj in enumerate(objects):
        if obj is not None:
            sy, sx = obj
            stats[lab] = [sx.start, sy.start, sx.stop - sx.start, sy.stop - sy.start, areas[lab]]
    return n + 1, labels, stats


def ref_get_single_box_maxarea(sm, thres):
    similarity = copy.deepcopy(sm)
    similarity[similarity >= thres] = 1.0
    similarity[similarity < thres] = 0.0
    similarity = np.int8(similarity)
    retval, labels, stats = cv2_connected_components_with_stats(similarity)
    zero_index = np.where(similarity == 0)
    remove_index = set(labels[zero_index])
    new_index = [i for i in range(retval) if i not in remove_index]
    new_stats = stats[new_index]
    area = new_stats[:, 4]
    i = area.argmax()
    return np.hstack((new_stats[i, 0:2], new_stats[i, 0:2] + new_stats[i, 2:4] - 1))[np.newaxis,]


# --- heatmaps ------------------------------------------------------------------------------------------


def similarity_map(rng, quantise: float | None = None) -> np.ndarray:
    """A heatmap as get_similarity_score makes it: 49 cosines, min-max, bilinear 7x7 -> 224x224."""
    sim = rng.standard_normal(49).astype(np.float32)
    if quantise:
        sim = np.round(sim / quantise) * quantise
    sm = (sim - sim.min()) / (sim.max() - sim.min())
    sm = torch.from_numpy(sm.reshape(1, 1, 7, 7))
    return torch.nn.functional.interpolate(sm, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear")[
        0, 0
    ].numpy()


def heatmaps(seed: int, n: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = i % 5
        if kind == 0:
            yield similarity_map(rng)
        elif kind == 1:
            yield similarity_map(rng, quantise=0.5)  # tied tokens -> plateaus, equal extremes
        elif kind == 2:
            yield rng.random((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        elif kind == 3:
            yield (np.round(rng.random((IMAGE_SIZE, IMAGE_SIZE)) * 4) / 4).astype(np.float32)
        else:
            x = ndimage.gaussian_filter(rng.random((IMAGE_SIZE, IMAGE_SIZE)), 6)
            yield ((x - x.min()) / (x.max() - x.min())).astype(np.float32)


# --- global (top) ----------------------------------------------------------------------------------------


def test_top_points_match_reference():
    for sm in heatmaps(0, 30):
        coords, labels = top_points(sm)
        ref_c, ref_l = ref_get_topk_points(sm)
        np.testing.assert_array_equal(coords, ref_c)
        np.testing.assert_array_equal(labels, ref_l)
        assert coords.dtype == np.float64 and labels.dtype == np.int64


def test_top_points_ties_and_constant_map():
    sm = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    coords, labels = top_points(sm)
    np.testing.assert_array_equal(coords, [[0.5, 0.5], [0.5, 0.5]])  # the same pixel twice
    np.testing.assert_array_equal(labels, [1, 0])
    sm[10, 200] = sm[150, 3] = 1.0
    sm[5, 7] = sm[100, 100] = -1.0
    coords, _ = top_points(sm)
    np.testing.assert_array_equal(coords, [[200.5, 10.5], [7.5, 5.5]])  # first in raster order
    coords, _ = top_points(
        np.arange(12, dtype=np.float64).reshape(3, 4)
    )  # any size, (x, y) = (col, row)
    np.testing.assert_array_equal(coords, [[3.5, 2.5], [0.5, 0.5]])


# --- local (peak) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0.6, 0.65, 0.3, 0.9])
def test_peak_points_match_reference(t):
    for sm in heatmaps(1, 20):
        ref_c, ref_l = ref_get_peak_points(sm, t)
        coords, labels = peak_points(sm, t, quirk=True)
        np.testing.assert_array_equal(coords, ref_c)  # (col, col), no +0.5
        np.testing.assert_array_equal(labels, ref_l)
        pos_rc, neg_rc = ref_peak_rowcol(sm, t)
        rc = np.concatenate([pos_rc, neg_rc])
        coords, labels = peak_points(sm, t)
        np.testing.assert_array_equal(coords, np.stack([rc[:, 1] + 0.5, rc[:, 0] + 0.5], axis=1))
        np.testing.assert_array_equal(labels, ref_l)


def test_peak_quirk_puts_every_point_on_the_diagonal():
    sm = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    sm[20, 100] = 0.9
    sm[150, 40] = 0.8
    sm += 0.5
    sm[60, 180] = 0.1  # a pit
    coords, labels = peak_points(sm, 0.6, quirk=True)
    np.testing.assert_array_equal(coords, [[100, 100], [40, 40], [180, 180]])
    np.testing.assert_array_equal(labels, [1, 1, 0])
    coords, labels = peak_points(sm, 0.6)
    np.testing.assert_array_equal(coords, [[100.5, 20.5], [40.5, 150.5], [180.5, 60.5]])
    np.testing.assert_array_equal(labels, [1, 1, 0])


def test_peak_flat_maps():
    zeros = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    coords, labels = peak_points(zeros, 0.6)
    assert labels.sum() == 50176 and (labels == 0).sum() == 50176  # every pixel, twice
    ref_c, ref_l = ref_get_peak_points(zeros, 0.6)
    np.testing.assert_array_equal(peak_points(zeros, 0.6, quirk=True)[0], ref_c)
    flat = np.full((IMAGE_SIZE, IMAGE_SIZE), 0.7, np.float32)
    coords, labels = peak_points(flat, 0.6)
    assert labels.shape == (50176,) and labels.all()  # every pixel positive, no negative
    np.testing.assert_array_equal(coords[:3], [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5]])
    np.testing.assert_array_equal(ref_get_peak_points(flat, 0.6)[1], labels)


def test_peak_thresholds_compare_in_float32():
    t = 0.6
    assert float(np.float32(t)) > t  # in float64 the pixel below *would* pass
    sm = np.zeros((50, 60), np.float32)
    sm[10, 10] = np.float32(t)
    sm[30, 40] = 0.9
    sm += 0.5 * 0  # keep zeros: no pits on a flat zero background
    coords, labels = peak_points(sm, t)
    np.testing.assert_array_equal(coords[labels == 1], [[40.5, 30.5]])
    np.testing.assert_array_equal(
        peak_points(sm.astype(np.float64), t)[0], coords
    )  # rounded to f32
    t = 0.65
    assert float(np.float32(1 - t)) < 1 - t  # in float64 the pit below *would* pass
    sm = np.ones((50, 60), np.float32)
    sm[10, 10] = np.float32(1 - t)
    sm[30, 40] = 0.1
    coords, labels = peak_points(sm, t)
    np.testing.assert_array_equal(coords[labels == 0], [[40.5, 30.5]])


def test_peak_fallbacks():
    # No peak above t: every pixel equal to the maximum (a plateau here).
    sm = np.full((40, 40), 0.2, np.float32)
    sm[5:8, 9:11] = 0.5
    coords, labels = peak_points(sm, 0.6)
    pos = coords[labels == 1]
    assert len(pos) == 6 and set(map(tuple, pos)) == {
        (x + 0.5, y + 0.5) for y in (5, 6, 7) for x in (9, 10)
    }
    # No pit below 1 - t: the minimum is the zero ring, cropped away -> no negatives.
    assert (labels == 0).sum() == 0
    # ... unless the map itself has exact zeros: those come back through the fallback.
    sm[30:32, 0:3] = 0.0
    coords, labels = peak_points(sm, 0.6)
    neg = coords[labels == 0]
    assert set(map(tuple, neg)) == {(x + 0.5, y + 0.5) for y in (30, 31) for x in (0, 1, 2)}
    # A border pit is never a negative peak (its ring neighbour is 0).
    sm = np.full((40, 40), 0.9, np.float32)
    sm[0, 20] = 0.05
    sm[20, 20] = 0.05
    coords, labels = peak_points(sm, 0.6)
    np.testing.assert_array_equal(coords[labels == 0], [[20.5, 20.5]])
    # Plateaus never count as peaks: a 2-pixel maximum above t falls back to the max plateau.
    sm = np.zeros((20, 20), np.float32)
    sm[4, 4:6] = 0.9
    coords, labels = peak_points(sm, 0.6)
    np.testing.assert_array_equal(coords[labels == 1], [[4.5, 4.5], [5.5, 4.5]])


def test_peak_all_negative_map_gives_no_positive():
    sm = np.full((10, 10), -0.5, np.float32)
    sm[3, 3] = -0.9
    coords, labels = peak_points(sm, 0.6)
    np.testing.assert_array_equal(coords, [[3.5, 3.5]])
    np.testing.assert_array_equal(labels, [0])
    ref_c, ref_l = ref_get_peak_points(sm, 0.6)
    np.testing.assert_array_equal(ref_l, labels)


# --- dense -----------------------------------------------------------------------------------------------


def test_dense_grid_is_exact_sampling_and_matches_interpolate():
    rng = np.random.default_rng(3)
    sm = rng.random((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    grid = dense_grid(sm)
    np.testing.assert_array_equal(grid, sm[3::7, 3::7])
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(sm)[None, None], (32, 32), mode="bilinear"
    )[0, 0]
    np.testing.assert_array_equal(grid, ref.numpy())
    for hw in ((100, 150), (35, 70), (7, 7), (13, 29)):
        sm = rng.random(hw, dtype=np.float32)
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(sm)[None, None], (hw[0] // 7, hw[1] // 7), mode="bilinear"
        )[0, 0].numpy()
        np.testing.assert_allclose(dense_grid(sm), ref, rtol=0, atol=2e-7)


@pytest.mark.parametrize("t", [0.85, 0.7, 0.5, 0.0, 1.1])
def test_dense_points_match_reference_on_untied_maps(t):
    for sm in heatmaps(4, 15):
        grid = dense_grid(sm).reshape(-1)
        if len(np.unique(grid)) != grid.size:
            continue  # tied maps: see test_dense_points_tie_rule
        ref_c, ref_l, _, num = ref_get_dense_points(sm, t)
        coords, labels = dense_points(sm, t)
        np.testing.assert_array_equal(coords, ref_c)  # same points, same order
        np.testing.assert_array_equal(labels, ref_l)


def test_dense_points_tie_rule():
    checked = 0
    for sm in list(heatmaps(5, 25)) + [
        np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32),
        np.full((IMAGE_SIZE, IMAGE_SIZE), 0.9, np.float32),
    ]:
        for t in (0.85, 0.7, 0.3):
            ref_c, ref_l, cells, num = ref_get_dense_points(sm, t)
            coords, labels = dense_points(sm, t)
            np.testing.assert_array_equal(labels, ref_l)
            idx = (np.floor(coords[:, 1] / 7) * 32 + np.floor(coords[:, 0] / 7)).astype(int)
            ref_idx = (np.floor(ref_c[:, 1] / 7) * 32 + np.floor(ref_c[:, 0] / 7)).astype(int)
            pos, neg = idx[:num], idx[num:]
            ref_pos, ref_neg = ref_idx[:num], ref_idx[num:]
            # The same values are chosen (as multisets), whatever the tie order ...
            np.testing.assert_array_equal(np.sort(cells[pos]), np.sort(cells[ref_pos]))
            np.testing.assert_array_equal(np.sort(cells[neg]), np.sort(cells[ref_neg]))
            # ... positives listed in ascending value, negatives too.
            assert np.all(np.diff(cells[pos]) >= 0) and np.all(np.diff(cells[neg]) >= 0)
            # Tie rule: among cells equal to the cut-off value, positives take the last in raster
            # order and negatives the first; cells strictly beyond the cut-off are always in.
            cut = cells[pos].min()
            above = np.flatnonzero(cells > cut)
            tied = np.flatnonzero(cells == cut)
            assert set(above) <= set(pos)
            assert sorted(set(pos) & set(tied)) == list(tied[len(tied) - (num - len(above)) :])
            cut = cells[neg].max()
            below = np.flatnonzero(cells < cut)
            tied = np.flatnonzero(cells == cut)
            assert set(below) <= set(neg)
            assert sorted(set(neg) & set(tied)) == list(tied[: num - len(below)])
            checked += 1
    assert checked == 81


def test_dense_points_counts_and_coordinates():
    sm = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    coords, labels = dense_points(sm, 0.85)  # nothing >= t: one point each
    assert labels.tolist() == [1, 0]
    np.testing.assert_array_equal(
        coords, [[220.5, 220.5], [3.5, 3.5]]
    )  # stable ties: last / first cell
    coords, labels = dense_points(np.ones((IMAGE_SIZE, IMAGE_SIZE), np.float32), 0.85)
    assert labels.sum() == 512 and labels.size == 1024  # capped at half the cells
    sm = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    sm[3 + 7 * 5, 3 + 7 * 9] = np.float32(0.85)  # exactly at t: counts (>=)
    sm[3 + 7 * 20, 3 + 7 * 1] = 0.9
    coords, labels = dense_points(sm, 0.85)
    np.testing.assert_array_equal(
        coords[:2], [[(9 + 0.5) * 7, (5 + 0.5) * 7], [(1 + 0.5) * 7, (20 + 0.5) * 7]]
    )
    assert labels.tolist() == [1, 1, 0, 0]
    coords, labels = dense_points(sm, 0.85, max_points=1)
    assert labels.tolist() == [1, 0]
    # Non-square map: x spans the width, y the height.
    coords, _ = dense_points(np.zeros((70, 140), np.float32), 0.5)
    np.testing.assert_array_equal(coords, [[(19 + 0.5) * 7, (9 + 0.5) * 7], [3.5, 3.5]])


# --- heatmap box --------------------------------------------------------------------------------------------


def test_connected_components_match_scipy():
    rng = np.random.default_rng(6)
    shapes = [(224, 224), (1, 50), (50, 1), (1, 1), (17, 33), (64, 64)]
    for k in range(40):
        h, w = shapes[k % len(shapes)]
        density = (0.05, 0.3, 0.5, 0.7, 0.95)[k % 5]
        mask = rng.random((h, w)) < density
        labels, areas, boxes = connected_components(mask)
        ref, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        np.testing.assert_array_equal(labels, ref)
        assert areas.tolist() == [int((ref == i).sum()) for i in range(1, n + 1)]
        for i, sl in enumerate(ndimage.find_objects(ref)):
            assert boxes[i].tolist() == [sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1]
    # A spiral (one long component) and a checkerboard (diagonals connect everything).
    spiral = np.zeros((41, 41), bool)
    top, left, bottom, right = 0, 0, 40, 40
    while top <= bottom and left <= right:
        spiral[top, left : right + 1] = spiral[top : bottom + 1, right] = True
        spiral[bottom, left : right + 1] = True
        spiral[top + 2 : bottom + 1, left] = True
        if left + 2 <= right:
            spiral[top + 2, left : left + 3] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    for m in (spiral, (np.indices((30, 30)).sum(0) % 2 == 0)):
        labels, areas, _ = connected_components(m)
        ref, n = ndimage.label(m, structure=np.ones((3, 3), dtype=int))
        np.testing.assert_array_equal(labels, ref)
    _, areas, boxes = connected_components(np.zeros((5, 5), bool))
    assert areas.shape == (0,) and boxes.shape == (0, 4)


def _maxarea_box(sm, t: float = 0.55):
    """The single_maxarea box as int64 [4], or None for no box (what the mode sees)."""
    boxes = heatmap_boxes(sm, t, "single_maxarea")
    assert boxes.shape in ((0, 4), (1, 4))
    return boxes[0] if len(boxes) else None


@pytest.mark.parametrize("t", [0.55, 0.3, 0.8, 0.0])
def test_heatmap_box_matches_reference(t):
    for sm in heatmaps(7, 25):
        try:
            ref = ref_get_single_box_maxarea(sm, t)[0]
        except ValueError:
            ref = None
        got = _maxarea_box(sm, t)
        if ref is None:
            assert got is None
        else:
            assert got.dtype == np.int64 and got.tolist() == ref.tolist()


def test_heatmap_box_edge_cases():
    sm = np.full((IMAGE_SIZE, IMAGE_SIZE), 0.5, np.float32)
    with pytest.raises(ValueError):
        ref_get_single_box_maxarea(sm, 0.55)  # the reference crashes
    assert _maxarea_box(sm, 0.55) is None  # -> the mode returns an empty mask
    assert _maxarea_box(sm, 0.5).tolist() == [0, 0, 223, 223]  # everything >= t
    # Equal areas: the component whose first pixel comes first in raster order.
    sm = np.zeros((60, 80), np.float32)
    sm[10:13, 50:53] = 0.9  # first pixel (10, 50)
    sm[10:13, 5:8] = 0.9  # first pixel (10, 5): wins
    sm[40:43, 0:3] = 0.9
    assert _maxarea_box(sm).tolist() == [5, 10, 7, 12]
    assert ref_get_single_box_maxarea(sm, 0.55)[0].tolist() == [5, 10, 7, 12]
    # Diagonal contact joins two squares (8-connectivity): now the largest.
    sm[43:46, 3:6] = 0.9
    assert _maxarea_box(sm).tolist() == [0, 40, 5, 45]
    # A pixel exactly at float32(t) is foreground (>=).
    sm = np.zeros((30, 30), np.float32)
    sm[4, 4:10] = np.float32(0.55)
    sm[20:22, 20:22] = 0.6
    assert _maxarea_box(sm, 0.55).tolist() == [4, 4, 9, 4]
    assert _maxarea_box(sm, 1.5) is None


# --- selection and validation -----------------------------------------------------------------------------


def test_mask_selection_first_index_on_ties():
    masks = np.zeros((3, 4, 5), bool)
    masks[0, :2] = True
    masks[1, :, :2] = True
    masks[2, :2] = True
    mask, i = select_max_score(masks, np.array([0.5, 0.9, 0.9], np.float32))
    assert i == 1 and np.array_equal(mask, masks[1])
    with pytest.raises(InputError):
        select_max_score(masks, np.array([0.1, np.nan, 0.2]))
    with pytest.raises(InputError):
        select_max_score(masks, np.array([0.1, 0.2]))
    with pytest.raises(InputError):
        select_max_score(masks.astype(np.float32), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(InputError):
        select_max_score(masks[:0], np.zeros(0))


@pytest.mark.parametrize(
    "fn",
    [
        top_points,
        lambda m: peak_points(m, 0.6),
        lambda m: dense_points(m, 0.85),
        lambda m: _maxarea_box(m, 0.55),
    ],
)
def test_heatmaps_are_validated(fn):
    good = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for bad in (
        good[None],
        good[0],
        good.astype(np.int32),
        good.tolist(),
        good[:0],
        np.where(np.eye(IMAGE_SIZE, dtype=bool), np.nan, good).astype(np.float32),
        np.full_like(good, np.inf),
    ):
        with pytest.raises(InputError):
            fn(bad)


def test_thresholds_and_options_are_validated():
    sm = np.zeros((14, 14), np.float32)
    for bad in (float("nan"), "0.6", None, True):
        with pytest.raises(InputError):
            peak_points(sm, bad)
        with pytest.raises(InputError):
            dense_points(sm, bad)
        with pytest.raises(InputError):
            _maxarea_box(sm, bad)
    with pytest.raises(InputError):
        peak_points(sm, 0.6, quirk="yes")
    with pytest.raises(InputError):
        dense_points(sm, 0.5, max_points=0)
    with pytest.raises(InputError):
        dense_points(np.zeros((6, 50), np.float32), 0.5)  # smaller than one 7x7 cell
    with pytest.raises(InputError):
        connected_components(np.zeros((3, 3, 3), bool))


# --- the audio-guided grid of No-Prompt (grid="audio") ------------------------------------------------


def _grid_points(n: int, hw) -> np.ndarray:
    side = (np.arange(n) + 0.5) / n
    return np.stack(np.meshgrid(side * hw[1], side * hw[0]), axis=-1).reshape(-1, 2)


def test_heatmap_point_filter_selects_the_hot_region():
    """A hot rectangle on a cold map: the threshold keeps exactly the grid points inside it, in
    image pixels of a non-square frame (the map covers the frame squashed to 224 x 224)."""
    sm = np.zeros((224, 224), np.float32)
    sm[56:112, 112:224] = 1.0  # rows 1/4..1/2, right half
    hw = (300, 640)
    pts = _grid_points(16, hw)
    flags = heatmap_point_filter(sm, hw, threshold=0.5)(pts)
    inside = (pts[:, 0] >= 320) & (pts[:, 1] >= 75) & (pts[:, 1] < 150)
    assert inside.sum() > 0
    np.testing.assert_array_equal(flags, inside)


def test_heatmap_point_filter_keep_fraction_and_ties():
    sm = np.tile(np.linspace(0.0, 1.0, 224, dtype=np.float32), (224, 1))  # grows with x
    pts = _grid_points(10, (224, 224))
    flags = heatmap_point_filter(sm, (224, 224), keep=0.2)(pts)
    assert flags.sum() == 20
    assert np.all(pts[flags, 0] > pts[~flags, 0].max())  # the two right-most columns
    flat = np.full((224, 224), 0.3, np.float32)  # all tied: the grid's first points, at least one
    tied = heatmap_point_filter(flat, (224, 224), keep=0.05)(pts)
    np.testing.assert_array_equal(np.flatnonzero(tied), np.arange(5))
    one = heatmap_point_filter(sm, (224, 224), keep=1e-6)(pts)
    assert one.sum() == 1 and pts[one, 0][0] == pts[:, 0].max()
    # a threshold above the whole map still prompts the hottest point
    top = heatmap_point_filter(sm, (224, 224), threshold=2.0)(pts)
    assert top.sum() == 1 and pts[top, 0][0] == pts[:, 0].max()


@pytest.mark.parametrize(
    "kw,match",
    [
        ({}, "exactly one"),
        ({"keep": 0.1, "threshold": 0.5}, "exactly one"),
        ({"keep": 0.0}, "keep must be a fraction"),
        ({"keep": 1.5}, "keep must be a fraction"),
        ({"threshold": float("nan")}, "finite"),
        ({"keep": True}, "real number"),
    ],
)
def test_heatmap_point_filter_rejects_bad_options(kw, match):
    with pytest.raises(InputError, match=match):
        heatmap_point_filter(np.zeros((8, 8), np.float32), (8, 8), **kw)
    with pytest.raises(InputError):
        heatmap_point_filter(np.zeros((8, 8), np.int64), (8, 8), keep=0.5)
