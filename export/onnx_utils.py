"""Shared ONNX export machinery: the dynamo exporter, ``onnx.checker`` and an ORT-vs-PyTorch parity check.

Every graph in a bundle goes through :func:`export_graph`, which ends with the parity check whose
max abs error is recorded in the manifest.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18


@dataclass
class ExportResult:
    """What one export produced: the files written and the parity figures."""

    path: Path
    files: list[Path]
    inputs: list[dict]
    outputs: list[dict]
    opset: int
    parity_max_abs_err: float
    parity_per_output: dict[str, float] = field(default_factory=dict)


_ONNX_TO_NP = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.UINT8: "uint8",
}


def describe_io(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    """Names, dtypes and (symbolic) shapes of a graph's inputs and outputs, for the manifest."""

    def one(v) -> dict:
        t = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
        return {
            "name": v.name,
            "dtype": _ONNX_TO_NP.get(t.elem_type, str(t.elem_type)),
            "shape": shape,
        }

    inits = {i.name for i in model.graph.initializer}
    ins = [one(v) for v in model.graph.input if v.name not in inits]
    outs = [one(v) for v in model.graph.output]
    return ins, outs


def export_graph(
    module: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: Sequence[Mapping[int, torch.export.Dim] | None] | None = None,
    opset: int = DEFAULT_OPSET,
    parity_inputs: Sequence[Sequence[torch.Tensor]] | None = None,
    atol: float | None = None,
    reference: torch.nn.Module | None = None,
) -> ExportResult:
    """Export ``module`` with the dynamo exporter, run ``onnx.checker``, then compare ORT with PyTorch.

    Arguments:
      module: an ``nn.Module`` in eval mode whose forward takes ``example_inputs`` positionally and
        returns a tensor or a tuple of tensors (in the order of ``output_names``).
      dynamic_shapes: one mapping {axis: Dim} (or None) per input.
      parity_inputs: extra input tuples for the parity check (e.g. another batch size); the
        example inputs are always checked.
      atol: if given, raise ``RuntimeError`` when the max abs error exceeds it.
      reference: the module ORT is compared with (default ``module``), e.g. the original network when
        ``module`` is an export wrapper that computes the same function differently.

    Returns an :class:`ExportResult`; the graph is written as ``path`` plus ``path.data`` when the
    weights exceed the protobuf limit or the exporter chooses external data.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    args = tuple(example_inputs)
    kwargs = {}
    if dynamic_shapes is not None:
        kwargs["dynamic_shapes"] = tuple(dynamic_shapes)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            verbose=False,
            **kwargs,
        )
        program.save(str(path), external_data=_needs_external_data(module))
    files = [path] + ([Path(str(path) + ".data")] if Path(str(path) + ".data").exists() else [])
    onnx.checker.check_model(str(path), full_check=False)
    proto = onnx.load(str(path), load_external_data=False)
    ins, outs = describe_io(proto)
    per_output: dict[str, float] = {}
    for inputs in [args, *(tuple(p) for p in (parity_inputs or []))]:
        errs = parity(
            path,
            module if reference is None else reference.eval(),
            inputs,
            input_names,
            output_names,
        )
        for k, v in errs.items():
            per_output[k] = max(per_output.get(k, 0.0), v)
    max_err = max(per_output.values()) if per_output else 0.0
    if atol is not None and not max_err <= atol:
        raise RuntimeError(
            f"{path.name}: ORT differs from PyTorch by {max_err:.3g} (> {atol:g}): {per_output}"
        )
    return ExportResult(path, files, ins, outs, opset, float(max_err), per_output)


EXTERNAL_DATA_BYTES = (
    1_500_000_000  # weights above this go to external data (protobuf's limit: 2 GB)
)
_force_external_data = False


def force_external_data(on: bool = True) -> None:
    """Write every graph exported from now on with ONNX external data (``build_engines.py
    --external-data``: small bundles exercise the loading path that graphs over 2 GB need)."""
    global _force_external_data
    _force_external_data = bool(on)


def _needs_external_data(module: torch.nn.Module) -> bool:
    nbytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return _force_external_data or nbytes > EXTERNAL_DATA_BYTES


def to_external_data(path: str | Path) -> list[Path]:
    """Rewrite the ONNX file ``path`` with all its initializers in ``path.data`` (one file, every tensor
    however small); returns the files the graph now consists of. Tensor bytes are unchanged."""
    path = Path(path)
    data = Path(str(path) + ".data")
    model = onnx.load(str(path), load_external_data=True)
    if data.exists():
        data.unlink()
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=0,
    )
    return [path, data] if data.exists() else [path]


def cpu_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A plain CPU onnxruntime session (export-side checks only; the runtime has its own factory)."""
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def parity(
    path: str | Path,
    module: torch.nn.Module,
    inputs: Sequence[torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> dict[str, float]:
    """Max abs error of every output between ORT (CPU) on ``path`` and PyTorch on ``module``."""
    with torch.no_grad():
        ref = module(*inputs)
    if isinstance(ref, torch.Tensor):
        ref = (ref,)
    sess = cpu_session(path)
    feed = {n: t.detach().cpu().numpy() for n, t in zip(input_names, inputs, strict=True)}
    got = sess.run(list(output_names), feed)
    out = {}
    for name, r, g in zip(output_names, ref, got, strict=True):
        r = r.detach().cpu().numpy()
        if r.shape != g.shape:
            raise RuntimeError(
                f"{Path(path).name}: output {name} has shape {g.shape} in ORT, {r.shape} in PyTorch"
            )
        out[name] = (
            float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) if r.size else 0.0
        )
    return out
