"""COCO RLE (runtime.media.rle): hand-checked examples, round trips, pycocotools as an independent reference."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import rle
from runtime.errors import InputError


def test_hand_checked_examples():
    # column-major: [[0, 1], [1, 1]] reads 0, 1, 1, 1 -> one 0 then three 1s
    m = np.array([[0, 1], [1, 1]], bool)
    assert rle.encode(m, compressed=False) == {"size": [2, 2], "counts": [1, 3]}
    # starts with 1: a zero-length run of 0s first; [[1, 0, 0]] -> 1, 0, 0
    assert rle.encode(np.array([[1, 0, 0]], bool), compressed=False)["counts"] == [0, 1, 2]
    # rows differ from columns: [[1, 1], [0, 0]] column-major is 1, 0, 1, 0
    assert rle.encode(np.array([[1, 1], [0, 0]], bool), compressed=False)["counts"] == [
        0,
        1,
        1,
        1,
        1,
    ]
    assert rle.encode(np.zeros((3, 4), bool), compressed=False)["counts"] == [12]
    assert rle.encode(np.ones((3, 4), bool), compressed=False)["counts"] == [0, 12]
    # compact string: 5-bit groups from '0'; 12 -> '<' (12 + 48), 0 -> '0'
    assert rle.counts_to_string([12]) == "<" and rle.counts_to_string([0, 12]) == "0<"
    # 100 = 0b11_00100: low group 4 with continuation (4 | 0x20) + 48 = 'T', then 3 -> '3'
    assert rle.counts_to_string([100]) == "T3"
    assert rle.string_to_counts("T3") == [100]


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (48, 64), (33, 1), (1, 40), (120, 91)])
@pytest.mark.parametrize("density", [0.0, 0.03, 0.5, 0.97, 1.0])
def test_round_trip(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    m = rng.random(shape) < density
    for compressed in (True, False):
        r = rle.encode(m, compressed=compressed)
        assert r["size"] == list(shape)
        back = rle.decode(r)
        assert back.dtype == bool and back.shape == shape and np.array_equal(back, m)
        assert rle.area(r) == int(m.sum())
    counts = rle.encode(m, compressed=False)["counts"]
    assert rle.string_to_counts(rle.counts_to_string(counts)) == counts


def test_runs_with_large_and_decreasing_counts():
    # long runs and counts smaller than the one two places before (negative deltas: sign bits)
    counts = [5, 100000, 3, 70000, 1, 1, 2, 123456, 0 + 9]
    s = rle.counts_to_string(counts)
    assert rle.string_to_counts(s) == counts
    r = {"size": [1, sum(counts)], "counts": s}
    m = rle.decode(r)
    assert m.sum() == sum(counts[1::2]) == rle.area(r)
    assert rle.encode(m, compressed=False)["counts"] == counts and rle.encode(m)["counts"] == s


def test_bad_input_is_refused():
    with pytest.raises(InputError, match="2-D"):
        rle.encode(np.zeros((2, 2, 2), bool))
    with pytest.raises(InputError, match="bool"):
        rle.encode(np.full((2, 2), 0.5))
    with pytest.raises(InputError, match="sum to"):
        rle.decode({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(InputError, match="ends inside"):
        rle.string_to_counts("T")  # continuation bit set on the last character
    with pytest.raises(InputError, match="characters"):
        rle.string_to_counts("~~")
    with pytest.raises(InputError, match="'size'"):
        rle.decode({"counts": "0<"})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_agrees_with_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(7)
    for shape in [(1, 1), (10, 13), (64, 48), (240, 320)]:
        for density in (0.0, 0.1, 0.5, 1.0):
            m = rng.random(shape) < density
            if density == 0.5:  # blobs as well as noise
                m = np.kron(
                    rng.random((shape[0] // 4 + 1, shape[1] // 4 + 1)) < 0.5, np.ones((4, 4), bool)
                )[: shape[0], : shape[1]]
            ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            ours = rle.encode(m)
            assert ours["counts"] == ref["counts"].decode("ascii")
            assert ours["size"] == list(ref["size"])
            assert np.array_equal(
                mask_utils.decode(ours | {"counts": ours["counts"].encode()}).astype(bool), m
            )
            assert np.array_equal(rle.decode({"size": ref["size"], "counts": ref["counts"]}), m)
            assert rle.area(ours) == int(mask_utils.area(ref))
