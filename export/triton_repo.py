"""``avs triton-repo BUNDLE OUT``: a Triton model repository for clusters, written from a bundle.

Layout::

    OUT/avs/config.pbtxt                  the pipeline (python backend; runtime.serving.triton_model)
    OUT/avs/1/{model.py, runtime/, bundle/}   self-contained: the runtime and the bundle travel with it
    OUT/<graph>/config.pbtxt              one model per bundle graph: onnxruntime, or tensorrt where the
    OUT/<graph>/1/model.onnx|model.plan   bundle has a plan; explicit dims; dynamic batching on graphs
                                          with a batch axis (the encoders and the AC-FPN head)

The per-graph models let a cluster call (and scale) each encoder directly; the ``avs`` model runs the
whole pipeline in its own process with onnxruntime. Names and ports agree with ``deploy/kubernetes``.
``avs triton-repo --composed`` writes the composed repository instead (``avs`` as a BLS pipeline that
calls these per-graph models: :mod:`runtime.serving.composed`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from runtime.bundle import Bundle
from runtime.safefiles import copy_checked, mark_owned, remove_owned
from runtime.serving import repo as avs_repo
from runtime.serving import wire

MARKER = ".avs-triton-repo"  # written into OUT: --force replaces only folders that hold it
MAX_BATCH = 8  # max_batch_size of the batchable graphs
QUEUE_DELAY_US = 2000  # dynamic batcher: how long a request may wait for others
_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


def _dim(d: Any) -> int:
    return int(d) if isinstance(d, int) else -1


def _batchable(entry: dict[str, Any]) -> bool:
    """All inputs and outputs start with the symbolic axis ``batch``."""
    return all(t["shape"] and t["shape"][0] == "batch" for t in entry["inputs"] + entry["outputs"])


def _tensor(kind: str, t: dict[str, Any], batched: bool) -> str:
    if t["dtype"] not in _DTYPES:
        raise ValueError(f"tensor {t['name']!r}: dtype {t['dtype']} has no Triton equivalent here")
    shape = t["shape"][1:] if batched else t["shape"]
    dims = ", ".join(str(_dim(d)) for d in shape)
    return f'{kind} {{\n  name: "{t["name"]}"\n  data_type: {_DTYPES[t["dtype"]]}\n  dims: [ {dims} ]\n}}'


def graph_model_config(
    name: str, entry: dict[str, Any], *, gpu: bool, instances: int, tensorrt: bool
) -> str:
    """``config.pbtxt`` of one bundle graph (manifest ``entry``) as a Triton model."""
    batched = _batchable(entry)
    max_batch = (
        min(MAX_BATCH, int(entry.get("tensorrt", {}).get("max_batch", MAX_BATCH)))
        if tensorrt
        else MAX_BATCH
    )
    lines = [
        f'name: "{name}"',
        f'backend: "{"tensorrt" if tensorrt else "onnxruntime"}"',
        f"max_batch_size: {max_batch if batched else 0}",
    ]
    lines += [_tensor("input", t, batched) for t in entry["inputs"]]
    lines += [_tensor("output", t, batched) for t in entry["outputs"]]
    if batched:
        prefs = ", ".join(str(b) for b in (2, 4, 8) if b <= max_batch)
        lines.append(
            f"dynamic_batching {{\n  preferred_batch_size: [ {prefs} ]\n"
            f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}"
        )
    lines.append(
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {'KIND_GPU' if gpu else 'KIND_CPU'}\n  }}\n]"
    )
    return "\n".join(lines) + "\n"


def write_repository(
    bundle_dir: str | Path,
    out: str | Path,
    *,
    gpu: bool = False,
    instances: int = 1,
    max_request_mb: int = wire.DEFAULT_MAX_REQUEST_MB,
    force: bool = False,
    budget=None,
    max_queue: int = avs_repo.DEFAULT_MAX_QUEUE,
    queue_timeout_s: float = avs_repo.DEFAULT_QUEUE_TIMEOUT_S,
) -> Path:
    """Write the model repository of ``bundle_dir`` to ``out`` and return ``out``.

    ``gpu``: KIND_GPU instance groups (else KIND_CPU). ``instances``: instances per model. A graph with
    a TensorRT plan in the manifest is written as a tensorrt model (its plan), otherwise as onnxruntime.
    ``force``: replace an existing ``out`` that this function wrote (it holds the marker file
    :data:`MARKER`); any other existing folder is refused. Every file copied in is contained in the
    bundle (no symlinks) and hashed against the manifest as it is copied (plans included).
    """
    if instances < 1:
        raise ValueError(f"instances must be >= 1, got {instances}")
    bundle = Bundle.open(bundle_dir, verify=True)
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not force:
            raise FileExistsError(f"{out} exists; pass --force to replace it")
        remove_owned(out, MARKER, what="avs triton-repo")
    out.mkdir(parents=True)
    mark_owned(out, MARKER)
    avs_repo.write_avs_model(
        out,
        bundle.root,
        self_contained=True,
        instances=instances,
        gpu=gpu,
        max_request_mb=max_request_mb,
        providers="cuda,cpu" if gpu else "cpu",
        budget=budget,
        max_queue=max_queue,
        queue_timeout_s=queue_timeout_s,
    )
    for name, entry in bundle.graphs.items():
        plan = entry.get("tensorrt")
        use_trt = bool(gpu and plan)
        d = out / name / "1"
        d.mkdir(parents=True)
        if use_trt:
            copy_checked(bundle.file_path(plan), d / "model.plan", plan["sha256"])
        else:
            copy_checked(bundle.file_path(entry), d / "model.onnx", entry["sha256"])
            for extra in entry.get("extra_files", []):  # external weights next to the graph
                copy_checked(bundle.file_path(extra), d / Path(extra["file"]).name, extra["sha256"])
        (out / name / "config.pbtxt").write_text(
            graph_model_config(name, entry, gpu=gpu, instances=instances, tensorrt=use_trt)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundle")
    p.add_argument("out")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    print(write_repository(a.bundle, a.out, gpu=a.gpu, instances=a.instances, force=a.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
