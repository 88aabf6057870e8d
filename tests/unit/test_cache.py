"""The embedding cache: byte bound, LRU eviction, hits across modes, results identical to uncached runs."""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from runtime._cache import EmbeddingCache, array_key
from runtime.errors import InputError


def test_lru_eviction_by_bytes():
    c = EmbeddingCache(3 * 400)
    arrays = [np.full(100, i, np.float32) for i in range(5)]  # 400 bytes each
    keys = [array_key("g", a) for a in arrays]
    for k, a in zip(keys[:3], arrays[:3], strict=True):
        c.put(k, a)
    assert c.nbytes == 1200 and len(c) == 3
    assert c.get(keys[0]) is not None  # 0 becomes most recent: 1 is the oldest now
    c.put(keys[3], arrays[3])
    assert c.get(keys[1]) is None and c.get(keys[0]) is not None and c.evictions == 1
    assert c.hits == 2 and c.misses == 1
    c.put(
        array_key("g", np.zeros(1000, np.float32)), np.zeros(1000, np.float32)
    )  # larger than the cache
    assert c.nbytes <= 1200 and len(c) == 3
    with pytest.raises(ValueError):
        c.get(keys[0])[0] = 1.0  # stored read-only
    with pytest.raises(InputError):
        EmbeddingCache(-1)


def test_keys_follow_bytes_shape_and_graph():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert array_key("g", a) == array_key("g", a.copy())
    assert array_key("g", a) != array_key("g", a.reshape(4, 3))
    assert array_key("g", a) != array_key("h", a)
    b = a.copy()
    b[0, 0] = 99
    assert array_key("g", a) != array_key("g", b)


def test_embeddings_are_reused_across_modes_and_results_unchanged(tiny_bundle):
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    audio = rng.uniform(-0.3, 0.3, 2 * 16000).astype(np.float32)
    cold = runtime.load(tiny_bundle, cache_mb=0)
    warm = runtime.load(tiny_bundle)
    first = warm.segment(frames, audio, 16000, mode="point-global")
    assert first.cache_hits == 0
    again = warm.segment(
        frames, audio, 16000, mode="heatmap-box"
    )  # same frames: CLIP + SAM from the cache
    assert again.cache_hits == 4
    ref = cold.segment(frames, audio, 16000, mode="heatmap-box")
    assert ref.cache_hits == 0 and len(cold.cache) == 0
    for a, b in zip(again.masks, ref.masks, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="cache_mb"):
        runtime.load(tiny_bundle, cache_mb=-1)
