"""The OpenVINO execution backend: a bundle's ONNX graph compiled for the CPU by OpenVINO's runtime.

Optional (``pip install avs-runtime[openvino]``; imported only when a session is made here).
A session is compiled from the bytes the bundle checked against its manifest's sha256
(``core.read_model(model=bytes)``), never from a second copy on disk; a graph whose weights live in
external files (``extra_files``, checked too) is read from its path instead. Precision is set
explicitly: ``INFERENCE_PRECISION_HINT`` ``f32`` for fp32 (OpenVINO's default on a bf16-capable CPU
is bf16, so it is never left to the default) or ``bf16``.

Compiled-model caching (OpenVINO's ``CACHE_DIR``) is used only when the user names a folder
(``runtime.load(..., cache_dir=...)``), in a subfolder per graph sha256 and precision.

Why the native API and not onnxruntime's OpenVINO execution provider (``onnxruntime-ep-openvino``):
measured on the SAM vit_b encoder (docs/architecture.md, "Backends"), the provider adds a second
runtime around the same OpenVINO kernels, ships its own copy of OpenVINO (52 MB wheel), needs the
plugin-EP registration API of onnxruntime >= 1.23, and is not faster; the native API is one
dependency with the precision hint, thread count and cache folder as plain properties.

The session object mimics the part of ``onnxruntime.InferenceSession`` the runtime uses:
``get_inputs()``/``get_outputs()`` (objects with ``name``, ``shape``: ints for fixed axes, strings
for dynamic ones, ``type``), and ``run(output_names, feeds) -> list of numpy arrays`` (copies, safe
to keep; thread-safe: one infer request per thread).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import BundleError, InputError, ProviderError

OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
_core_lock = threading.Lock()
_core = None


def available() -> bool:
    """True when the ``openvino`` package can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def core():
    """The process's ``openvino.Core`` (created once); ProviderError when openvino is not installed."""
    global _core
    with _core_lock:
        if _core is None:
            try:
                import openvino as ov
            except ImportError as e:
                raise ProviderError(
                    "backend='openvino' needs the openvino package: pip install 'avs-runtime[openvino]' "
                    "(or use backend='onnxruntime')"
                ) from e
            _core = ov.Core()
        return _core


def version() -> str:
    """OpenVINO's version string ("" when not installed)."""
    try:
        import openvino as ov
    except ImportError:
        return ""
    return str(ov.__version__)


@dataclass(frozen=True)
class IOSpec:
    """One graph input or output: ``name``, ``shape`` (int per fixed axis, str per dynamic one), ``type``."""

    name: str
    shape: list[int | str]
    type: str


def _spec(port, i: int, known: frozenset[str]) -> IOSpec:
    """A port's IOSpec; its name is the one of its tensor names in ``known`` (the contract's names:
    OpenVINO may give a port several names, e.g. an ONNX input's and a following node's)."""
    shape: list[int | str] = []
    for k, d in enumerate(port.get_partial_shape()):
        shape.append(int(d.get_length()) if d.is_static else f"d{i}_{k}")
    names = sorted(port.get_names())
    name = next((n for n in names if n in known), port.get_any_name())
    return IOSpec(name, shape, str(port.get_element_type()))


class OpenVINOSession:
    """A graph compiled by OpenVINO for the CPU, with onnxruntime's session interface (module docstring).

    model: the ONNX file's bytes (as checked) or its path; precision: "fp32" or "bf16";
    threads: ``INFERENCE_NUM_THREADS`` (None/0: OpenVINO's own choice); cache_dir: a folder for
    OpenVINO's compiled-model cache (None: no cache on disk); graph: its name, for messages;
    names: the graph's input and output names as the contract gives them (a port with several
    tensor names is called by the one listed here).
    """

    backend = "openvino"

    def __init__(
        self,
        model: bytes | str | Path,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        graph: str = "graph",
        names: Sequence[str] = (),
    ) -> None:
        if precision not in OV_PRECISION:
            raise ProviderError(
                f"OpenVINO runs precision 'fp32' or 'bf16' here, got {precision!r} "
                "(int8 graphs of a bundle run on onnxruntime)"
            )
        c = core()
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if cache_dir is not None:
            config["CACHE_DIR"] = str(cache_dir)
        try:
            ov_model = c.read_model(model if isinstance(model, bytes) else str(model))
            self._compiled = c.compile_model(ov_model, "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError for unsupported / damaged models
            raise BundleError(
                f"graph {graph!r} cannot be compiled by OpenVINO ({type(e).__name__}: "
                f"{str(e)[:300]}); use backend='onnxruntime'"
            ) from e
        del ov_model
        self.graph = graph
        got = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = str(getattr(got, "get_type_name", lambda: got)())
        # what the compiled model really uses (a CPU without bf16 compiles f32 whatever was asked)
        self.precision = "bf16" if self.inference_precision == "bf16" else "fp32"
        self.requested_precision = precision
        self.device = "CPU (" + str(c.get_property("CPU", "FULL_DEVICE_NAME")) + ")"
        known = frozenset(names)
        self._inputs = [_spec(p, 0, known) for p in self._compiled.inputs]
        self._outputs = [_spec(p, 1, known) for p in self._compiled.outputs]
        self._out_index = {o.name: k for k, o in enumerate(self._outputs)}
        for k, p in enumerate(self._compiled.outputs):  # every name of an output port
            for n in p.get_names():
                self._out_index.setdefault(n, k)
        self._local = threading.local()

    def get_inputs(self) -> list[IOSpec]:
        """The graph's inputs in order."""
        return list(self._inputs)

    def get_outputs(self) -> list[IOSpec]:
        """The graph's outputs in order."""
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        """``["OpenVINO"]`` (the analogue of onnxruntime's provider list)."""
        return ["OpenVINO"]

    def run(
        self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        """Outputs ``output_names`` (None: all, in order) for ``feeds`` (input name -> array).

        Returns numpy arrays owned by the caller (copied out of OpenVINO's tensors).
        """
        names = [o.name for o in self._outputs] if output_names is None else list(output_names)
        missing = [i.name for i in self._inputs if i.name not in feeds]
        if missing:
            raise InputError(f"graph {self.graph!r}: missing inputs {missing}")
        unknown = [n for n in names if n not in self._out_index]
        if unknown:
            raise InputError(f"graph {self.graph!r} has no outputs {unknown}")
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self._compiled.create_infer_request()
        req.infer({k: np.ascontiguousarray(feeds[i.name]) for k, i in enumerate(self._inputs)})
        return [np.array(req.get_output_tensor(self._out_index[n]).data, copy=True) for n in names]


def cache_folder(root: str | Path, sha256: str, precision: str) -> Path:
    """The ``CACHE_DIR`` of one graph: ``<root>/openvino/<sha256[:16]>-<precision>``."""
    return Path(root) / "openvino" / f"{sha256[:16]}-{precision}"
