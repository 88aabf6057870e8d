"""What every stage shares: the bundle, the active preset, the graph runner, the embedding cache and the
running call's timings. Built by the pipeline; stages never see the pipeline itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime._cache import EmbeddingCache, array_key
from runtime.bundle import Bundle
from runtime.bundle.contract import Preset
from runtime.errors import InputError


@dataclass
class StageContext:
    """bundle: the checked bundle; preset: the active preset; run: ``run(graph, *inputs) -> outputs``
    in the contract's order; device: ``device(graph) -> str`` ("cpu", "cuda", "tensorrt"; creates the
    session if needed);
    cache: embeddings reused across calls."""

    bundle: Bundle
    preset: Preset
    run: Callable[..., list[np.ndarray]]
    device: Callable[[str], str]
    cache: EmbeddingCache
    _local: threading.local = field(default_factory=threading.local)

    # --- the running call ----------------------------------------------------------------------
    def begin_call(self) -> dict[str, float]:
        """Start a ``segment`` call on this thread: fresh timings (ms per stage) and cache-hit count."""
        self._local.timings = {}
        self._local.hits = 0
        return self._local.timings

    @property
    def timings(self) -> dict[str, float]:
        """The running call's timings on this thread (a throwaway dict outside a call)."""
        if not hasattr(self._local, "timings"):
            self._local.timings = {}
        return self._local.timings

    @property
    def cache_hits(self) -> int:
        """Embeddings the running call took from the cache."""
        return getattr(self._local, "hits", 0)

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Add the milliseconds spent in the ``with`` block to the call's ``timings[key]``."""
        t = self.timings
        t0 = time.perf_counter()
        try:
            yield
        finally:
            t[key] = t.get(key, 0.0) + (time.perf_counter() - t0) * 1000.0

    # --- constants -----------------------------------------------------------------------------
    def preset_value(self, key: str, override: Any = None) -> Any:
        """A constant of the active preset, unless ``override`` is given."""
        if override is not None:
            return override
        if key not in self.preset:
            raise InputError(f"preset {self.preset.name!r} has no constant {key!r}")
        return self.preset[key]

    def section(self, name: str) -> Any:
        """A preprocessing section of the manifest as its typed contract class."""
        return self.bundle.section(name)

    def graph_input_shape(self, graph: str, index: int = 0) -> list[int | str]:
        """The manifest's shape of input ``index`` of ``graph`` (ints fixed, strings symbolic)."""
        return list(self.bundle.graphs[graph]["inputs"][index]["shape"])

    def cached(self, graph: str, items: Sequence[np.ndarray], compute) -> list:
        """Per-item results of ``compute(missing items) -> list`` through the embedding cache."""
        if not self.cache.max_bytes:  # cache off: no hashing, no copies
            return list(compute(list(items)))
        keys = [array_key(graph, x) for x in items]
        got = [self.cache.get(k) for k in keys]
        todo = [i for i, g in enumerate(got) if g is None]
        self._local.hits = self.cache_hits + len(items) - len(todo)
        if todo:
            for i, value in zip(todo, compute([items[i] for i in todo]), strict=True):
                self.cache.put(keys[i], value)
                got[i] = value
        return got
