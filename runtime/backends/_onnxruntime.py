"""Creating onnxruntime sessions: providers tried TensorRT -> CUDA -> CPU, the one really got reported.

Loading (this module) is kept apart from running (the pipelines): nothing touches a GPU before a
session is created here.

Memory (measured on SAM vit_b, AudioCLIP; see docs/architecture.md "Memory"):

* ``enable_mem_pattern`` is off: its plan for a graph with a symbolic batch is made after the first
  run and then allocated next to the arena's own blocks, doubling the peak from the second run on.
* CPU memory comes from one arena shared by every session of the process (``arena="shared"``,
  ``session.use_env_allocators``), growing by exactly what is asked (``kSameAsRequested``): what the
  SAM encoder freed is reused by AudioCLIP and the decoder instead of each session keeping its own
  high-water mark. ``"session"`` is onnxruntime's default (one arena per session), ``"off"`` allocates
  from the system for every tensor (memory goes back after each call; slower: page faults).
* A session made from bytes does not keep them: onnxruntime's Python wrapper would hold the whole
  serialised model (SAM vit_b: 368 MB) for the session's lifetime next to its own copy of the weights.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from runtime.bundle.verified import VerifiedGraph
from runtime.errors import ProviderError

log = logging.getLogger(__name__)

# What each backend supports: short name -> (ORT provider, options it accepts).
PROVIDERS: dict[str, dict[str, Any]] = {
    "tensorrt": {
        "ort": "TensorrtExecutionProvider",
        "options": {
            "trt_fp16_enable",
            "trt_engine_cache_enable",
            "trt_engine_cache_path",
            "device_id",
        },
    },
    "cuda": {"ort": "CUDAExecutionProvider", "options": {"device_id", "cudnn_conv_algo_search"}},
    "cpu": {"ort": "CPUExecutionProvider", "options": set()},
}
DEFAULT_ORDER = ("tensorrt", "cuda", "cpu")
ARENAS = ("shared", "session", "off")
_shared_arena_lock = threading.Lock()
_shared_arena_ready = False


def default_arena() -> str:
    """The CPU arena mode: ``AVS_ORT_ARENA`` (one of :data:`ARENAS`) or ``"shared"``."""
    mode = os.environ.get("AVS_ORT_ARENA", "").strip().lower() or "shared"
    if mode not in ARENAS:
        raise ProviderError(f"AVS_ORT_ARENA must be one of {list(ARENAS)}, got {mode!r}")
    return mode


def _register_shared_arena() -> None:
    """Register the process-wide CPU arena (once; onnxruntime's environment is per process)."""
    global _shared_arena_ready
    with _shared_arena_lock:
        if _shared_arena_ready:
            return
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        cfg = ort.OrtArenaCfg({"arena_extend_strategy": 1})  # kSameAsRequested
        try:
            ort.create_and_register_allocator(info, cfg)
        except Exception as e:  # already registered by someone else in this process: use theirs
            if "already" not in str(e).lower():
                raise
        _shared_arena_ready = True


def session_options(*, threads: int | None = None, arena: str | None = None) -> ort.SessionOptions:
    """The ``SessionOptions`` every session of the runtime gets (see the module docstring).

    threads: intra-op threads (None or 0: ``AVS_THREADS`` env or onnxruntime's own choice).
    arena: ``"shared"``, ``"session"`` or ``"off"`` (None: :func:`default_arena`).
    """
    arena = default_arena() if arena is None else arena
    if arena not in ARENAS:
        raise ProviderError(f"arena must be one of {list(ARENAS)}, got {arena!r}")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    threads = threads or int(os.environ.get("AVS_THREADS", "0") or 0)
    if threads:
        so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_mem_pattern = False
    if arena == "off":
        so.enable_cpu_mem_arena = False
    elif arena == "shared":
        _register_shared_arena()
        so.add_session_config_entry("session.use_env_allocators", "1")
    return so


@dataclass
class SessionInfo:
    """Which providers a session asked for and which it really got (``session.get_providers()``),
    and what runs it: ``backend`` ("onnxruntime" or "openvino"), ``device``, ``precision``
    ("fp32", "bf16", "int8") and ``gate`` (the agreement verdict of a reduced precision, or None)."""

    graph: str
    requested: list[str]
    providers: list[str]
    backend: str = "onnxruntime"
    device: str = ""
    precision: str = "fp32"
    gate: dict[str, Any] | None = None

    @property
    def provider(self) -> str:
        """The provider that runs the graph (the first one the session holds)."""
        return self.providers[0] if self.providers else "none"


def resolve_providers(
    providers: Sequence[str] | None = None, options: dict[str, dict[str, Any]] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Turn short names (``"tensorrt"``, ``"cuda"``, ``"cpu"``) into ORT provider entries.

    ``None`` means the default order, keeping only providers this onnxruntime build has (CPU always).
    Unknown names or options a provider does not take are refused here, before any session exists.
    """
    options = options or {}
    for name, opts in options.items():
        if name not in PROVIDERS:
            raise ProviderError(
                f"options given for unknown provider {name!r}; known: {list(PROVIDERS)}"
            )
        bad = set(opts) - PROVIDERS[name]["options"]
        if bad:
            raise ProviderError(
                f"provider {name!r} does not take options {sorted(bad)}; it takes {sorted(PROVIDERS[name]['options'])}"
            )
    available = set(ort.get_available_providers())
    if providers is None:
        names = [n for n in DEFAULT_ORDER if PROVIDERS[n]["ort"] in available]
    else:
        names = []
        for n in providers:
            key = n.lower().removesuffix("executionprovider")
            if key not in PROVIDERS:
                raise ProviderError(f"unknown provider {n!r}; choose from {list(PROVIDERS)}")
            if PROVIDERS[key]["ort"] not in available:
                raise ProviderError(
                    f"provider {key!r} is not in this onnxruntime build (available: {sorted(available)}); "
                    "install onnxruntime-gpu in its own environment for CUDA/TensorRT"
                )
            names.append(key)
    if "cpu" not in names:
        names.append("cpu")
    return [(PROVIDERS[n]["ort"], dict(options.get(n, {}))) for n in names]


def create_session(
    path: str | Path | bytes | VerifiedGraph,
    *,
    graph: str = "",
    providers: Sequence[str] | None = None,
    provider_options: dict[str, dict[str, Any]] | None = None,
    threads: int | None = None,
    arena: str | None = None,
) -> tuple[ort.InferenceSession, SessionInfo]:
    """An ``InferenceSession`` for ``path`` (an ONNX file, its bytes, or a
    :class:`~runtime.bundle.verified.VerifiedGraph`) with the requested providers and a report of what it got.

    A ``VerifiedGraph`` runs exactly its checked bytes: the model from bytes and its external-data files
    handed to onnxruntime from memory (``add_external_initializers_from_files_in_memory``; onnxruntime
    copies them into its own tensors, so the buffers may be dropped afterwards). Measured on a 400 MB
    MatMul weight: peak RSS 1.21 GB this way against 0.83 GB for a load by path; 0.45 GB after either.

    ``threads``: intra-op threads (default: ``AVS_THREADS`` env or onnxruntime's own choice);
    ``arena``: CPU memory arena, see :func:`session_options`.
    onnxruntime silently falls back to the CPU when CUDA libraries are missing; the returned
    :class:`SessionInfo` therefore records ``session.get_providers()``, and a warning is logged.
    """
    entries = resolve_providers(providers, provider_options)
    so = session_options(threads=threads, arena=arena)
    names = [e[0] for e in entries]
    if isinstance(path, VerifiedGraph):
        if path.external:
            import numpy as np

            locs = list(path.external)
            bufs = [np.frombuffer(path.external[k], dtype=np.uint8) for k in locs]
            so.add_external_initializers_from_files_in_memory(locs, bufs, [b.size for b in bufs])
        graph = graph or path.name
        model = path.model
    else:
        model = path if isinstance(path, bytes) else str(path)
    sess = ort.InferenceSession(
        model, so, providers=names, provider_options=[e[1] for e in entries]
    )
    if getattr(sess, "_model_bytes", None) is not None:
        # The Python wrapper keeps the serialised model only to rebuild the session in set_providers(),
        # which the runtime never calls; the C++ session holds its own copy of the weights.
        sess._model_bytes = None
    got = list(sess.get_providers())
    if got and names and got[0] != names[0]:
        log.warning("%s: asked for %s, running on %s", graph or "graph", names[0], got[0])
    device = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda"}.get(
        got[0] if got else "", "tensorrt" if got else "none"
    )
    return sess, SessionInfo(
        graph or ("graph" if isinstance(path, bytes) else Path(path).stem),
        names,
        got,
        device=device,
    )
