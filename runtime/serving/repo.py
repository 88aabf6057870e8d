"""Writing the pipeline model ``avs`` into a Triton model repository.

``avs serve`` writes a repository with this one model into a temporary folder (the bundle referenced
by absolute path, the runtime imported from the repository through PYTHONPATH). ``export/triton_repo.py``
(``avs triton-repo``) calls the same writer with ``self_contained=True`` (bundle and runtime copied next to
``model.py``) and adds one model per graph.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from runtime.serving import wire

MODEL_PY = '''\
"""Triton python-backend entry of the avs pipeline model (written by avs-runtime; do not edit)."""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
# the folder that holds the runtime package: a self-contained repository carries it next to this file
_root = _here if os.path.isdir(os.path.join(_here, "runtime")) else {root!r}
if _root not in sys.path:
    sys.path.insert(0, _root)

from runtime.serving.triton_model import TritonPythonModel  # noqa: E402,F401
'''


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _param(key: str, value: str) -> str:
    return f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}\n'


def avs_model_config(
    *,
    bundle: str,
    instances: int = 1,
    gpu: bool = False,
    max_request_mb: int = wire.DEFAULT_MAX_REQUEST_MB,
    threads: int = 0,
    preset: str | None = None,
    providers: str = "",
    extra_params: dict[str, str] | None = None,
) -> str:
    """``config.pbtxt`` text of the ``avs`` python-backend model.

    ``bundle``: path of the bundle (absolute, or relative to the model's version folder).
    ``instances``: model instances (each a process that loads the bundle); ``gpu``: KIND_GPU else
    KIND_CPU. ``max_request_mb``: limit of one request's input bytes (MiB). ``threads``: onnxruntime
    intra-op threads per instance (0 = default). ``providers``: comma list for ``runtime.load`` ("" = default).
    ``extra_params``: more string parameters (the composed pipeline's ``graph_models``, ...).
    """
    if instances < 1:
        raise ValueError(f"instances must be >= 1, got {instances}")
    if max_request_mb < 1:
        raise ValueError(f"max_request_mb must be >= 1, got {max_request_mb}")
    extra = dict(extra_params or {})
    for name, v in (
        ("bundle", bundle),
        ("preset", preset or ""),
        ("providers", providers),
        *extra.items(),
    ):
        if '"' in v or "\\" in v or "\n" in v:
            raise ValueError(f"{name} must not contain quotes, backslashes or newlines: {v!r}")
    lines = [f'name: "{wire.MODEL_NAME}"', 'backend: "python"', "max_batch_size: 0", ""]
    for t in wire.INPUTS:
        lines.append(
            f'input {{\n  name: "{t.name}"\n  data_type: {t.config_dtype}\n  dims: {_dims(t.dims)}\n'
            "  optional: true\n}"
        )
    for t in wire.OUTPUTS:
        lines.append(
            f'output {{\n  name: "{t.name}"\n  data_type: {t.config_dtype}\n  dims: {_dims(t.dims)}\n}}'
        )
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]")
    text = "\n".join(lines) + "\n"
    text += _param("bundle", bundle)
    text += _param("max_request_bytes", str(max_request_mb * 2**20))
    text += _param("threads", str(int(threads)))
    text += _param("preset", preset or "")
    text += _param("providers", providers)
    for k, v in extra.items():
        text += _param(k, v)
    return text


def copy_runtime(dst: Path) -> Path:
    """Copy the runtime package (its ``.py`` files only) to ``dst/runtime``; returns that folder."""
    src = Path(__file__).resolve().parents[1]
    out = dst / "runtime"
    shutil.copytree(
        src, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True
    )
    return out


def write_avs_model(
    repo: str | Path,
    bundle: str | Path,
    *,
    self_contained: bool = False,
    instances: int = 1,
    gpu: bool = False,
    max_request_mb: int = wire.DEFAULT_MAX_REQUEST_MB,
    threads: int = 0,
    preset: str | None = None,
    providers: str = "",
    extra_params: dict[str, str] | None = None,
) -> Path:
    """Write ``repo/avs/{config.pbtxt, 1/model.py}`` and return ``repo/avs``.

    ``self_contained``: copy the bundle to ``avs/1/bundle`` and the runtime to ``avs/1/runtime`` (for a
    cluster); else the config points at ``bundle``'s absolute path and the server's PYTHONPATH must
    hold the runtime (``avs serve`` does that).
    """
    repo, bundle = Path(repo), Path(bundle).resolve()
    model = repo / wire.MODEL_NAME
    version = model / wire.MODEL_VERSION
    version.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds runtime/
    (version / "model.py").write_text(MODEL_PY.replace("{root!r}", repr(root)))
    if self_contained:
        shutil.copytree(bundle, version / "bundle", dirs_exist_ok=True)
        copy_runtime(version)
        ref = "bundle"
    else:
        ref = str(bundle)
    (model / "config.pbtxt").write_text(
        avs_model_config(
            bundle=ref,
            instances=instances,
            gpu=gpu,
            max_request_mb=max_request_mb,
            threads=threads,
            preset=preset,
            providers=providers,
            extra_params=extra_params,
        )
    )
    return model
