"""The composed Triton pipeline: ``avs`` as a BLS model that calls one Triton model per graph.

The ``avs`` model of a composed repository runs the normal :class:`runtime.Pipeline` (decoding,
preprocessing, prompts, AMG, post-processing: the same code as in-process) with a *graph runner*
(:func:`bls_graph_runner`) whose sessions send every graph call as a BLS request
(``pb_utils.InferenceRequest(...).exec()``) to the model of that graph. Masks therefore equal the
in-process runtime's bit for bit by construction, as long as the graph models compute what the
in-process sessions compute (same bytes, same execution backend, same batch).

The per-graph models have the bundle's graph names, tensor names and shapes. Graphs whose inputs and
outputs all start with the ``batch`` axis (the encoders, the AC-FPN head) get ``max_batch_size`` and a
dynamic batcher (preferred batch sizes, a max queue delay), so calls from different requests (different
``avs`` instances) are batched; the SAM decoders take one image embedding and many prompt sets per call
and have no request axis to batch on (``max_batch_size: 0``). Each model has its own instance count.

Two backends for the same graph models, so the BLS model is unchanged between them:

* ``python`` (here, and wherever Triton has no onnxruntime backend, e.g. the nvidia-pytriton wheel's
  tritonserver): :class:`GraphModel` runs the runtime's own execution backend on the checked bytes of
  its graph, and concatenates the requests of one batch into one call.
* ``onnxruntime`` / ``tensorrt`` (clusters, the official container): Triton runs ``model.onnx`` /
  ``model.plan`` itself (:func:`graph_config`).

Repository layout (:func:`write_composed_repository`)::

    OUT/avs/config.pbtxt, 1/model.py          BLS pipeline (parameter graph_models = "1")
    OUT/<graph>/config.pbtxt, 1/...           one model per bundle graph
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bundle.contract import GRAPHS
from runtime.errors import AVSError, InputError
from runtime.safefiles import mark_owned, remove_owned
from runtime.serving import wire

MARKER = ".avs-composed-repo"  # written into OUT: force replaces only folders that hold it
MAX_BATCH = 8  # max_batch_size of the batchable graphs (a bigger call is sent in chunks)
PREFERRED_BATCH = (2, 4, 8)
QUEUE_DELAY_US = 2000  # how long the dynamic batcher lets a call wait for others
BACKENDS = ("python", "onnxruntime", "tensorrt")
_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


class GraphCallError(AVSError, RuntimeError):
    """A per-graph model answered a BLS call with an error (or could not be reached)."""


# --- the BLS graph runner (inside the avs model) -----------------------------------------------------


@dataclass(frozen=True)
class _IO:
    name: str
    shape: list[int | str]
    type: str


def batchable(entry: Mapping[str, Any]) -> bool:
    """Whether a graph's inputs and outputs all start with the symbolic axis ``batch`` (manifest entry)."""
    return all(t["shape"] and t["shape"][0] == "batch" for t in entry["inputs"] + entry["outputs"])


class BlsSession:
    """A session-like object (``get_inputs``, ``get_outputs``, ``run``) whose ``run`` is a BLS call.

    pb: the ``triton_python_backend_utils`` module; model: the Triton model of the graph; entry: the
    graph's manifest entry (names, dtypes, shapes); max_batch: the model's ``max_batch_size`` (0: no
    batch axis; a larger batch is sent in chunks of max_batch).
    """

    def __init__(self, pb, graph: str, model: str, entry: Mapping[str, Any], max_batch: int):
        self._pb, self.graph, self.model, self.max_batch = pb, graph, model, int(max_batch)
        self._inputs = [_IO(t["name"], list(t["shape"]), t["dtype"]) for t in entry["inputs"]]
        self._outputs = [_IO(t["name"], list(t["shape"]), t["dtype"]) for t in entry["outputs"]]
        self.calls = 0

    def get_inputs(self) -> list[_IO]:
        """Inputs in call order (``name``, ``shape`` from the manifest, ``type`` numpy dtype name)."""
        return list(self._inputs)

    def get_outputs(self) -> list[_IO]:
        """Outputs in the graph's order."""
        return list(self._outputs)

    def run(self, output_names, feeds: Mapping[str, np.ndarray], run_options=None) -> list:
        """Outputs ``output_names`` (None: all) for ``feeds`` (input name -> array), computed by the
        graph's Triton model. Raises :class:`GraphCallError` with the model's message on failure."""
        names = list(output_names) if output_names else [o.name for o in self._outputs]
        arrays = []
        for spec in self._inputs:
            if spec.name not in feeds:
                raise InputError(f"graph {self.graph!r}: input {spec.name!r} is missing")
            arrays.append(np.ascontiguousarray(feeds[spec.name]))
        n = arrays[0].shape[0] if arrays and arrays[0].ndim else 0
        if self.max_batch and n > self.max_batch:
            parts = [
                self._call(names, [a[i : i + self.max_batch] for a in arrays])
                for i in range(0, n, self.max_batch)
            ]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(names))]
        if self.max_batch and n == 0:
            raise InputError(f"graph {self.graph!r}: an empty batch")
        return self._call(names, arrays)

    def _call(self, names: list[str], arrays: list[np.ndarray]) -> list[np.ndarray]:
        pb = self._pb
        self.calls += 1
        request = pb.InferenceRequest(
            model_name=self.model,
            inputs=[pb.Tensor(s.name, a) for s, a in zip(self._inputs, arrays, strict=True)],
            requested_output_names=names,
        )
        try:
            response = request.exec()
        except Exception as e:  # the stub raises when the model is gone or not ready
            raise GraphCallError(
                f"graph model {self.model!r} could not be called: {type(e).__name__}: {e}"
            ) from None
        if response.has_error():
            raise GraphCallError(f"graph model {self.model!r} failed: {response.error().message()}")
        out = []
        for name in names:
            t = pb.get_output_tensor_by_name(response, name)
            if t is None:
                raise GraphCallError(f"graph model {self.model!r} gave no output {name!r}")
            out.append(np.array(t.as_numpy(), copy=True))  # own the bytes, not the response's
        return out


def bls_graph_runner(
    bundle, pb, *, provider: str = "CPUExecutionProvider", models: Mapping[str, str] | None = None
) -> Callable[[str], tuple[BlsSession, Any]]:
    """A :class:`runtime.Pipeline` ``graph_runner`` that sends every graph call to a Triton model.

    bundle: the :class:`runtime.bundle.Bundle` (manifest: names, shapes); pb: the python backend's
    utils module; provider: what the graph models run on, reported as the sessions' provider (it also
    picks the SAM encoder batch, as in-process); models: graph -> Triton model name (default: the
    graph's name).
    """
    from runtime.backends._onnxruntime import SessionInfo

    def make(graph: str):
        entry = bundle.graphs[graph]
        model = (models or {}).get(graph, graph)
        max_batch = MAX_BATCH if batchable(entry) else 0
        return BlsSession(pb, graph, model, entry, max_batch), SessionInfo(
            graph, [f"triton:{model}"], [provider]
        )

    return make


# --- the per-graph python model ----------------------------------------------------------------------


def _params(config: Mapping[str, Any]) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


class GraphModel:
    """Triton python-backend model of one bundle graph (parameters ``bundle``, ``graph``, ``threads``,
    ``providers``): a session of the runtime's execution backend made from the graph's checked bytes.

    ``execute`` runs the requests of one dynamic batch as one call when the graph has a batch axis and
    their other dimensions agree (else one call each); every failure becomes that request's error.
    """

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # only inside Triton's stub

        from runtime.bundle import Bundle
        from runtime.pipeline import Pipeline

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        p = _params(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        bundle_dir = Path(p.get("bundle", "bundle"))
        if not bundle_dir.is_absolute():
            bundle_dir = version_dir / bundle_dir
        self.graph = p["graph"]
        threads = int(p.get("threads") or 0) or None
        providers = [s for s in p.get("providers", "").split(",") if s] or None
        bundle = Bundle.open(bundle_dir, verify=True)
        pipe = Pipeline(bundle, threads=threads, providers=providers, cache_mb=0)
        self.session = pipe.session(self.graph)  # checked bytes, contract-checked I/O
        self.provider = pipe.session_info[self.graph].provider
        spec = GRAPHS[self.graph]
        self.inputs, self.outputs = list(spec.input_names), list(spec.output_names)
        self.batched = int(config.get("max_batch_size", 0)) > 0
        print(
            f"[avs] graph model {args.get('model_instance_name')}: {self.graph} of {bundle_dir} on "
            f"{self.provider}; pid {os.getpid()}",
            file=sys.stderr,
            flush=True,
        )

    def _error(self, msg: str):
        return self._pb.InferenceResponse(output_tensors=[], error=self._pb.TritonError(msg))

    def execute(self, requests: list) -> list:
        pb = self._pb
        responses: list[Any] = [None] * len(requests)
        groups: dict[Any, list[tuple[int, dict[str, np.ndarray]]]] = {}
        for i, request in enumerate(requests):
            feeds = {}
            for name in self.inputs:
                t = pb.get_input_tensor_by_name(request, name)
                if t is None:
                    responses[i] = self._error(f"{self.graph}: input {name!r} is missing")
                    break
                feeds[name] = t.as_numpy()
            if responses[i] is not None:
                continue
            key = (
                tuple((n, a.shape[1:], a.dtype.str) for n, a in feeds.items())
                if self.batched
                else ("single", i)
            )
            groups.setdefault(key, []).append((i, feeds))
        for items in groups.values():
            try:
                if len(items) == 1:
                    outs = [self.session.run(self.outputs, items[0][1])]
                else:
                    sizes = [f[self.inputs[0]].shape[0] for _, f in items]
                    feed = {n: np.concatenate([f[n] for _, f in items]) for n in self.inputs}
                    joined = self.session.run(self.outputs, feed)
                    cuts = np.cumsum(sizes)[:-1]
                    split = [np.split(o, cuts) for o in joined]
                    outs = [[s[k] for s in split] for k in range(len(items))]
                for (i, _), out in zip(items, outs, strict=True):
                    responses[i] = pb.InferenceResponse(
                        output_tensors=[
                            pb.Tensor(n, np.ascontiguousarray(o))
                            for n, o in zip(self.outputs, out, strict=True)
                        ]
                    )
            except Exception as e:  # never let a request end the model
                traceback.print_exc(file=sys.stderr)
                for i, _ in items:
                    responses[i] = self._error(f"{self.graph}: {type(e).__name__}: {e}")
        return responses

    def finalize(self) -> None:
        self.session = None


# --- repository --------------------------------------------------------------------------------------

GRAPH_MODEL_PY = '''\
"""Triton python-backend entry of one avs graph model (written by avs-runtime; do not edit)."""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
# the folder holding the runtime package: the avs model's copy in a self-contained repository, or
# the repository that wrote this file
for _root in (os.path.join(_here, "..", "..", "avs", "1"), {root!r}):
    if os.path.isdir(os.path.join(_root, "runtime")):
        break
if _root not in sys.path:
    sys.path.insert(0, _root)

from runtime.serving.composed import GraphModel as TritonPythonModel  # noqa: E402,F401
'''


def _dim(d: Any) -> int:
    return int(d) if isinstance(d, int) else -1


def _tensor(kind: str, t: Mapping[str, Any], batched: bool) -> str:
    if t["dtype"] not in _DTYPES:
        raise ValueError(f"tensor {t['name']!r}: dtype {t['dtype']} has no Triton equivalent here")
    shape = t["shape"][1:] if batched else t["shape"]
    dims = ", ".join(str(_dim(d)) for d in shape)
    return f'{kind} {{\n  name: "{t["name"]}"\n  data_type: {_DTYPES[t["dtype"]]}\n  dims: [ {dims} ]\n}}'


def _param(key: str, value: str) -> str:
    if '"' in value or "\\" in value or "\n" in value:
        raise ValueError(f"parameter {key} must not contain quotes, backslashes or newlines")
    return f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}'


def graph_config(
    name: str,
    entry: Mapping[str, Any],
    *,
    backend: str = "onnxruntime",
    gpu: bool = False,
    instances: int = 1,
    max_batch: int = MAX_BATCH,
    preferred: tuple[int, ...] = PREFERRED_BATCH,
    queue_delay_us: int = QUEUE_DELAY_US,
    parameters: Mapping[str, str] | None = None,
) -> str:
    """``config.pbtxt`` of bundle graph ``name`` (manifest ``entry``) as a Triton model.

    backend: "python" (:class:`GraphModel`), "onnxruntime" or "tensorrt"; the tensors, batching and
    instances are the same for all three. A graph with a batch axis gets ``max_batch_size: max_batch``
    and a dynamic batcher (``preferred`` sizes up to max_batch, ``queue_delay_us``); the others
    ``max_batch_size: 0``. parameters: extra string parameters (the python backend's bundle, graph, ...).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if instances < 1 or max_batch < 1 or queue_delay_us < 0:
        raise ValueError(
            f"instances and max_batch must be >= 1 and queue_delay_us >= 0, got "
            f"{instances}, {max_batch}, {queue_delay_us}"
        )
    batched = batchable(entry)
    lines = [
        f'name: "{name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {max_batch if batched else 0}",
    ]
    lines += [_tensor("input", t, batched) for t in entry["inputs"]]
    lines += [_tensor("output", t, batched) for t in entry["outputs"]]
    if batched:
        prefs = ", ".join(str(b) for b in preferred if b <= max_batch) or str(max_batch)
        lines.append(
            f"dynamic_batching {{\n  preferred_batch_size: [ {prefs} ]\n"
            f"  max_queue_delay_microseconds: {int(queue_delay_us)}\n}}"
        )
    lines.append(
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {'KIND_GPU' if gpu else 'KIND_CPU'}\n  }}\n]"
    )
    lines += [_param(k, v) for k, v in (parameters or {}).items()]
    return "\n".join(lines) + "\n"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def parse_graph_instances(text: str) -> dict[str, int]:
    """``"GRAPH=N[,GRAPH=N...]"`` (N >= 1) -> {graph: instances}; ValueError saying what was expected."""
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit() or int(n) < 1:
            raise ValueError(
                f"expected GRAPH=N[,GRAPH=N...] with N >= 1 (e.g. sam_image_encoder=2), got {item!r}"
            )
        out[name.strip()] = int(n)
    return out


def write_composed_repository(
    bundle_dir: str | Path,
    out: str | Path,
    *,
    backend: str = "python",
    self_contained: bool = False,
    gpu: bool = False,
    instances: int = 2,
    graph_instances: Mapping[str, int] | None = None,
    queue_delay_us: int = QUEUE_DELAY_US,
    max_request_mb: int = wire.DEFAULT_MAX_REQUEST_MB,
    threads: int = 0,
    graph_threads: int = 0,
    preset: str | None = None,
    force: bool = False,
    **avs_options,
) -> Path:
    """Write a composed repository of ``bundle_dir`` to ``out``; returns ``out``.

    avs_options: more options of the ``avs`` model (:func:`runtime.serving.repo.write_avs_model`:
    ``budget``, ``max_queue``, ``queue_timeout_s``, ...). ``force`` replaces only a folder this
    function wrote (it holds the marker :data:`MARKER`).

    backend: of the graph models ("python": the runtime's backend in Triton's python backend;
    "onnxruntime": Triton's, with a graph's TensorRT plan as a "tensorrt" model where ``gpu`` and the
    manifest has one). instances: ``avs`` (BLS) instances, i.e. requests in flight at once;
    graph_instances: graph -> instances (default 1 each). self_contained: copy the bundle and the
    runtime into ``avs/1`` (clusters); else the configs name the bundle's absolute path and the
    server's PYTHONPATH holds the runtime (``avs serve --composed``). threads / graph_threads:
    onnxruntime intra-op threads of the avs model (unused: it runs no graph) and of each graph model.
    """
    from runtime.bundle import Bundle
    from runtime.serving import repo as avs_repo

    if backend not in ("python", "onnxruntime"):
        raise ValueError(f"backend must be 'python' or 'onnxruntime', got {backend!r}")
    bundle = Bundle.open(bundle_dir, verify=True)
    graph_instances = dict(graph_instances or {})
    unknown = sorted(set(graph_instances) - set(bundle.graphs))
    if unknown:
        raise ValueError(f"graph_instances names graphs {unknown} the bundle lacks")
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not force:
            raise FileExistsError(f"{out} exists; pass --force to replace it")
        remove_owned(out, MARKER, what="the composed repository writer")
    out.mkdir(parents=True)
    provider = "CUDAExecutionProvider" if gpu else "CPUExecutionProvider"
    avs_repo.write_avs_model(
        out,
        bundle.root,
        self_contained=self_contained,
        instances=instances,
        gpu=False,  # the BLS pipeline is CPU work; the graph models hold the accelerators
        max_request_mb=max_request_mb,
        threads=threads,
        preset=preset,
        extra_params={"graph_models": "1", "graph_provider": provider},
        **avs_options,
    )
    mark_owned(out, MARKER)
    root = str(Path(__file__).resolve().parents[2])
    bundle_ref = "../../avs/1/bundle" if self_contained else str(bundle.root)
    for name, entry in bundle.graphs.items():
        d = out / name / "1"
        d.mkdir(parents=True)
        kind, params = backend, None
        if backend == "python":
            (d / "model.py").write_text(GRAPH_MODEL_PY.replace("{root!r}", repr(root)))
            params = {
                "bundle": bundle_ref,
                "graph": name,
                "threads": str(int(graph_threads)),
                "providers": "cuda,cpu" if gpu else "cpu",
            }
        elif gpu and entry.get("tensorrt"):
            kind = "tensorrt"
            _link_or_copy(bundle.root / entry["tensorrt"]["file"], d / "model.plan")
        else:
            _link_or_copy(bundle.root / entry["file"], d / "model.onnx")
            for extra in entry.get("extra_files", []):  # external data keeps its file name
                _link_or_copy(bundle.root / extra["file"], d / Path(extra["file"]).name)
        max_batch = MAX_BATCH
        if kind == "tensorrt":
            max_batch = min(MAX_BATCH, int(entry["tensorrt"].get("max_batch", MAX_BATCH)))
        (out / name / "config.pbtxt").write_text(
            graph_config(
                name,
                entry,
                backend=kind,
                gpu=gpu,
                instances=int(graph_instances.get(name, 1)),
                max_batch=max_batch,
                queue_delay_us=queue_delay_us,
                parameters=params,
            )
        )
    return out
