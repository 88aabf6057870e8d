"""Writing the pipeline model ``avs`` into a Triton model repository.

``avs serve`` writes a repository with this one model into a temporary folder (the bundle referenced
by absolute path, the runtime imported from the repository through PYTHONPATH). ``export/triton_repo.py``
(``avs triton-repo``) calls the same writer with ``self_contained=True`` (bundle and runtime copied next to
``model.py``) and adds one model per graph.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from runtime.budget import DEFAULT_BUDGET, DEFAULT_DEADLINE_S, Budget
from runtime.errors import BundleError
from runtime.safefiles import copy_checked, inside, read_checked
from runtime.serving import wire

# Triton's queue policy of the ``avs`` model: requests beyond the queue are refused at once, and a
# request that waits in the queue longer than the timeout is refused without running.
DEFAULT_MAX_QUEUE = 16  # requests waiting per model (``avs serve --max-queue``)
DEFAULT_QUEUE_TIMEOUT_S = 30.0  # seconds a request may wait for an instance (``--queue-timeout-s``)

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
    budget: Budget | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
    backend: str = "",
    precision: str = "",
    cache_dir: str = "",
    extra_params: dict[str, str] | None = None,
) -> str:
    """``config.pbtxt`` text of the ``avs`` python-backend model.

    ``bundle``: path of the bundle (absolute, or relative to the model's version folder).
    ``instances``: model instances (each a process that loads the bundle); ``gpu``: KIND_GPU else
    KIND_CPU. ``max_request_mb``: limit of one request's input bytes (MiB). ``threads``: onnxruntime
    intra-op threads per instance (0 = default). ``providers``: comma list for ``runtime.load`` ("" = default).
    ``budget``: bounds of one request and its deadline (:class:`runtime.budget.Budget`, written as
    ``budget.<field>`` parameters; default :data:`runtime.budget.DEFAULT_BUDGET` with the served
    deadline :data:`runtime.budget.DEFAULT_DEADLINE_S`). ``max_queue`` / ``queue_timeout_s``:
    Triton's queue policy (requests past the queue size, or waiting longer, are refused).
    ``backend``, ``precision``, ``cache_dir``: ``runtime.load``'s (OpenVINO must be installed in the
    server's environment for backend "openvino"; "auto" uses onnxruntime there otherwise);
    "" = the server's ``$AVS_BACKEND`` / ``$AVS_PRECISION``, else "auto".
    ``extra_params``: more string parameters (the composed pipeline's ``graph_models``, ...).
    """
    if budget is None:
        budget = DEFAULT_BUDGET.replace(deadline_s=DEFAULT_DEADLINE_S)
    if max_queue < 1:
        raise ValueError(f"max_queue must be >= 1, got {max_queue}")
    if not queue_timeout_s > 0:
        raise ValueError(f"queue_timeout_s must be > 0, got {queue_timeout_s}")
    if instances < 1:
        raise ValueError(f"instances must be >= 1, got {instances}")
    if max_request_mb < 1:
        raise ValueError(f"max_request_mb must be >= 1, got {max_request_mb}")
    extra = dict(extra_params or {})
    for name, v in (
        ("bundle", bundle),
        ("preset", preset or ""),
        ("providers", providers),
        ("backend", backend),
        ("precision", precision),
        ("cache_dir", cache_dir),
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
    # the dynamic batcher is Triton's only scheduler with a queue policy; max_batch_size 0 keeps
    # requests unbatched (one request per execute call)
    lines.append(
        "dynamic_batching {\n  default_queue_policy {\n    timeout_action: REJECT\n"
        f"    default_timeout_microseconds: {int(queue_timeout_s * 1e6)}\n"
        f"    allow_timeout_override: false\n    max_queue_size: {int(max_queue)}\n  }}\n}}"
    )
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]")
    text = "\n".join(lines) + "\n"
    text += _param("bundle", bundle)
    text += _param("max_request_bytes", str(max_request_mb * 2**20))
    text += _param("threads", str(int(threads)))
    text += _param("preset", preset or "")
    text += _param("providers", providers)
    for f in dataclasses.fields(budget):
        v = getattr(budget, f.name)
        text += _param(
            f"budget.{f.name}", "" if v is None else f"{v:g}" if isinstance(v, float) else str(v)
        )
    text += _param("backend", backend)
    text += _param("precision", precision)
    text += _param("cache_dir", cache_dir)
    for k, v in extra.items():
        text += _param(k, v)
    return text


def copy_runtime(dst: Path) -> Path:
    """Copy the runtime package (its ``.py`` files only) to ``dst/runtime``; returns that folder.

    Symbolic links in the package are refused (nothing outside it is copied in through one).
    """
    src = Path(__file__).resolve().parents[1]
    out = dst / "runtime"
    for d, dirs, files in os.walk(src):
        rel = Path(d).relative_to(src)
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for name in [*dirs, *files]:
            if (Path(d) / name).is_symlink():
                raise BundleError(f"runtime/{rel / name} is a symbolic link; refusing to copy it")
        (out / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            if name.endswith(".py"):
                shutil.copyfile(Path(d) / name, out / rel / name, follow_symlinks=False)
    return out


def copy_bundle(bundle: str | Path, dst: Path) -> Path:
    """Copy a bundle to the new folder ``dst``: its manifest and exactly the files it names, each
    contained in the bundle (no symlinks) and hashed against the manifest as it is copied."""
    from runtime.bundle import Bundle
    from runtime.bundle.contract import MANIFEST

    b = Bundle.open(bundle, verify=False)  # the copy below checks every byte it copies
    dst.mkdir(parents=True)
    (dst / MANIFEST).write_bytes(read_checked(inside(b.root, MANIFEST, what="manifest"), None))
    for entry in b._all_file_entries():
        target = inside(dst, entry["file"])
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_checked(b.file_path(entry), target, entry["sha256"])
    return dst


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
    budget: Budget | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
    backend: str = "",
    precision: str = "",
    cache_dir: str = "",
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
        copy_bundle(bundle, version / "bundle")
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
            budget=budget,
            max_queue=max_queue,
            queue_timeout_s=queue_timeout_s,
            backend=backend,
            precision=precision,
            cache_dir=cache_dir,
            extra_params=extra_params,
        )
    )
    return model
