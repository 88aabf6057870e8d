"""One backend interface: a session for graph G in precision P, on onnxruntime or OpenVINO.

:func:`open_session` picks the backend (:func:`resolve_backend`) and the precision
(:func:`runtime.backends.precision.choose_precision`), runs the agreement gate where a reduced precision
is not yet measured on this machine, and returns the session (``run(output_names, feeds) ->
list of arrays``, ``get_inputs()``, ``get_outputs()``) with a
:class:`~runtime.backends._onnxruntime.SessionInfo` saying what really runs it (backend, device, precision,
gate verdict).

Backends (``runtime.load(..., backend=...)``):

* ``"onnxruntime"``: today's sessions (:mod:`runtime.backends._onnxruntime`), providers TensorRT -> CUDA -> CPU.
* ``"openvino"``: :mod:`runtime.backends._openvino` (CPU only; needs the ``openvino`` extra).
* ``"auto"`` (default): onnxruntime when a GPU provider is asked for or available; else OpenVINO
  when it is installed and the CPU has AMX (``amx_bf16``: OpenVINO's bf16 is the fast path there,
  and onnxruntime has no bf16); else onnxruntime. On CPUs without AMX, OpenVINO's fp32 was measured
  no faster than onnxruntime's and its peak RSS 1.5x higher (AVX-512 Xeon, SAM vit_b: encoder 7.35
  vs 6.39 s per frame, point modes 3.29 vs 2.18 GB; README "Benchmarks"), so ``auto`` keeps
  onnxruntime there and ``backend="openvino"`` remains one option away. Graphs the bundle holds in
  int8 (onnxruntime contrib-op graphs) always run on onnxruntime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from runtime.backends import _openvino as openvino_backend
from runtime.backends._onnxruntime import SessionInfo, create_session
from runtime.backends.precision import (
    BACKENDS,
    CpuInfo,
    Gate,
    Verdict,
    VerdictCache,
    check_choice,
    choose_precision,
    cpu_info,
    judge,
    measure_agreement,
    process_verdicts,
    verdict_key,
)
from runtime.bundle.contract import GRAPHS
from runtime.bundle.verified import VerifiedGraph
from runtime.errors import ProviderError

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
# calibration() -> (feed dicts, description) or None (no calibration inputs: not gated)
Calibration = Callable[[], "tuple[list[dict[str, Any]], str] | None"]


def resolve_backend(
    backend: str = "auto", providers: Sequence[str] | None = None, cpu: CpuInfo | None = None
) -> str:
    """The backend ``"onnxruntime"`` or ``"openvino"`` that ``backend`` means here (module docstring).

    providers: onnxruntime provider short names asked for (``"cuda"``, ...); a GPU provider with
    ``backend="openvino"`` is refused (OpenVINO runs the CPU here).
    """
    backend = check_choice("backend", backend, BACKENDS)
    asked_gpu = any(p.lower().removesuffix("executionprovider") != "cpu" for p in providers or ())
    if backend == "onnxruntime":
        return backend
    if backend == "openvino":
        if asked_gpu:
            raise ProviderError(
                f"backend='openvino' runs on the CPU; providers {list(providers or ())} are "
                "onnxruntime's: use backend='onnxruntime' for a GPU"
            )
        if not openvino_backend.available():
            raise ProviderError(
                "backend='openvino' needs the openvino package: pip install 'avs-runtime[openvino]'"
            )
        return backend
    if asked_gpu or (providers is None and set(GPU_PROVIDERS) & set(ort.get_available_providers())):
        return "onnxruntime"
    cpu = cpu_info() if cpu is None else cpu
    if openvino_backend.available() and cpu.auto_bf16:  # AMX CPUs (all have AVX2)
        return "openvino"
    return "onnxruntime"


def open_session(
    model: bytes | str | Path | VerifiedGraph,
    *,
    graph: str,
    sha256: str,
    stored_precision: str = "fp32",
    backend: str = "auto",
    precision: str = "auto",
    preset: str | None = None,
    providers: Sequence[str] | None = None,
    provider_options: dict[str, dict[str, Any]] | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    gate: Gate | None = None,
    calibration: Calibration | None = None,
    verdicts: VerdictCache | None = None,
    cpu: CpuInfo | None = None,
) -> tuple[Any, SessionInfo]:
    """A session of ``graph`` (ONNX ``model``: a checked :class:`VerifiedGraph`, bytes, or a path) and
    what runs it. A graph with external data runs on onnxruntime (from the checked bytes).

    sha256: the graph's checksum (gate-verdict and compiled-cache key); stored_precision: the
    bundle's precision of the graph; backend / precision: as ``runtime.load``; cache_dir: a
    user-named folder for OpenVINO's compiled models and the gate verdicts (None: verdicts in
    memory only, nothing on disk); gate: the agreement limits (default :class:`Gate`);
    calibration: makes the gate's inputs (None: a reduced precision cannot be measured and fp32 is
    kept); verdicts: where verdicts are kept (default: ``cache_dir``'s, else the process's).
    A gate that fails keeps fp32 and says so (a warning, and ``SessionInfo.gate["passed"]`` False).
    """
    cpu = cpu_info() if cpu is None else cpu
    be = resolve_backend(backend, providers, cpu)
    if isinstance(model, VerifiedGraph):
        if model.external and be == "openvino":
            # OpenVINO reads ONNX external data only from files, not from the checked bytes
            if check_choice("backend", backend, BACKENDS) == "openvino":
                raise ProviderError(
                    f"graph {graph!r} keeps its weights in ONNX external data, which OpenVINO "
                    "cannot take from memory: run it on backend='onnxruntime' or 'auto'"
                )
            be = "onnxruntime"
        elif be == "openvino":
            model = model.model
    if stored_precision == "int8" and be == "openvino":
        if check_choice("backend", backend, BACKENDS) == "openvino":
            raise ProviderError(
                f"graph {graph!r} is stored in int8 (onnxruntime contrib ops): it runs on "
                "backend='onnxruntime' or 'auto'"
            )
        be = "onnxruntime"
    choice = choose_precision(
        precision, graph=graph, backend=be, stored=stored_precision, cpu=cpu, preset=preset
    )
    if be == "onnxruntime":
        sess, info = create_session(
            model,
            graph=graph,
            providers=providers,
            provider_options=provider_options,
            threads=threads,
        )
        info.precision = choice.precision
        return sess, info

    def compile_ov(prec: str):
        cdir = (
            openvino_backend.cache_folder(cache_dir, sha256, prec)
            if cache_dir is not None
            else None
        )
        spec = GRAPHS.get(graph)
        names = (*spec.input_names, *spec.output_names) if spec is not None else ()
        return openvino_backend.OpenVINOSession(
            model, precision=prec, threads=threads, cache_dir=cdir, graph=graph, names=names
        )

    gate_report = None
    if not choice.gated:
        sess = compile_ov(choice.precision)
    else:
        gate = gate or Gate()
        if verdicts is None:
            verdicts = VerdictCache(cache_dir) if cache_dir is not None else process_verdicts()
        key = verdict_key(sha256, choice.precision, be, cpu, gate)
        verdict = verdicts.get(key)
        if verdict is not None:
            sess = compile_ov(choice.precision if verdict.passed else "fp32")
        else:
            cal = calibration() if calibration is not None else None
            if cal is None:
                verdict = Verdict(
                    graph, sha256, choice.precision, be, cpu.key, False, float("nan"),
                    float("nan"), float("nan"), "none",
                    "no calibration inputs for this graph: not measured, fp32 kept",
                    {"min_cosine": gate.min_cosine, "min_mask_iou": gate.min_mask_iou},
                )  # fmt: skip
                sess = compile_ov("fp32")
            else:
                feeds, desc = cal
                feeds = list(feeds)
                # fp32 first, its outputs kept and its session dropped before the reduced one is
                # compiled: the two are never held at once, so the gate's peak is the larger one's
                fp32 = compile_ov("fp32")
                names = [o.name for o in fp32.get_outputs()]
                ref_outputs = iter([fp32.run(names, f) for f in feeds])
                del fp32
                reduced = compile_ov(choice.precision)
                agr = measure_agreement(
                    lambda _names, _feed: next(ref_outputs), reduced.run, feeds, names
                )
                passed, why = judge(agr, gate)
                verdict = Verdict(
                    graph, sha256, choice.precision, be, cpu.key, passed, agr["cosine_min"],
                    agr["max_abs"], agr["mask_iou_min"], f"{len(feeds)} x ({desc})", why,
                    {"min_cosine": gate.min_cosine, "min_mask_iou": gate.min_mask_iou},
                )  # fmt: skip
                if passed:
                    sess = reduced
                else:
                    del reduced
                    sess = compile_ov("fp32")
            verdicts.put(key, verdict)
        if not verdict.passed:
            (log.info if verdict.inputs == "none" else log.warning)(
                "%s: %s not used, fp32 kept (%s)", graph, verdict.precision, verdict.reason
            )
        gate_report = verdict.report()
    info = SessionInfo(
        graph,
        ["OpenVINO"],
        sess.get_providers(),
        backend="openvino",
        device=sess.device,
        precision=sess.precision,
        gate=gate_report,
    )
    return sess, info
