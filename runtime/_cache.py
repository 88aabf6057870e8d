"""A byte-bounded LRU cache of per-frame embeddings, shared by every mode and prompt of a pipeline.

Keys are (graph, digest of the input's bytes, shape and dtype); values are the graph's outputs for
that input. A frame segmented by several modes, or by the same mode with other prompts or parameters,
is encoded once per process while it stays in the cache. Thread-safe.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from runtime.errors import InputError

__all__ = ["EmbeddingCache", "array_key"]


def array_key(graph: str, x: np.ndarray, *extra: Any) -> tuple:
    """Cache key of one graph input: (graph, blake2b-128 of the bytes, shape, dtype, *extra)."""
    a = np.ascontiguousarray(x)
    return (
        graph,
        hashlib.blake2b(a.data, digest_size=16).hexdigest(),
        a.shape,
        a.dtype.str,
        *extra,
    )


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 64


class EmbeddingCache:
    """LRU cache bounded in bytes: ``max_bytes`` (0 disables it). Values are stored read-only."""

    def __init__(self, max_bytes: int) -> None:
        if (
            isinstance(max_bytes, bool)
            or not isinstance(max_bytes, (int, np.integer))
            or max_bytes < 0
        ):
            raise InputError(
                f"cache size must be a non-negative number of bytes, got {max_bytes!r}"
            )
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple) -> Any | None:
        """The cached value of ``key`` (marked most recently used), or None; counts a hit or a miss."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: tuple, value: Any) -> None:
        """Store ``value`` (arrays made read-only), evicting least recently used entries to stay in bounds.
        A value larger than the whole cache is not stored."""
        size = _nbytes(value)
        if size > self.max_bytes:
            return
        for v in value.values() if isinstance(value, dict) else [value]:
            if isinstance(v, np.ndarray):
                v.setflags(write=False)
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, s) = self._items.popitem(last=False)
                self._bytes -= s
                self.evictions += 1

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0
