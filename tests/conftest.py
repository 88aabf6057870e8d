"""Shared fixtures: the real media in ../shared/data, and a tiny bundle built once per session."""

from __future__ import annotations

import ast
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers import shared_data_dir
from tests.helpers.cache import BUILD_SOURCES, cached_build, check_bundle

if os.environ.get("AVS_TORCH_FREE") == "1":  # the torch-free lane (tests/helpers/torch_free.py)
    from tests.helpers import torch_free

    torch_free.install()
# The suite's parity tests compare onnxruntime fp32 (the exact path) with torch; runtime.load's
# default ("auto": OpenVINO and gated bf16 where available) is pinned here so they stay exact on
# every CPU. Tests of the OpenVINO backend and of the precision choice pass backend=/precision=.
os.environ.setdefault("AVS_BACKEND", "onnxruntime")
os.environ.setdefault("AVS_PRECISION", "fp32")


@pytest.fixture(autouse=True)
def torch_threads(request):
    """torch's intra-op threads during each test that runs with torch imported: 2 (the CI machine's
    cores), or n for tests marked ``torch_threads(n)``. Tests that never import torch are untouched."""
    if "torch" not in sys.modules:
        yield
        return
    import torch

    marker = request.node.get_closest_marker("torch_threads")
    n = int(marker.args[0]) if marker else 2
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not (d / "audioclip-demo").is_dir():
        pytest.skip(f"real media not found at {d} (set AVS_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def demo_dir(shared_data: Path) -> Path:
    return shared_data / "audioclip-demo"


def gpu_missing(need: str = "cuda") -> str | None:
    """Why a ``gpu`` test cannot run here (None when it can): ``need`` is ``"cuda"`` or ``"tensorrt"``
    (the marker's argument, ``@pytest.mark.gpu("tensorrt")``)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    want = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[need]
    if want not in ort.get_available_providers():
        return (
            f"{want} is not in this onnxruntime build ({ort.get_available_providers()}): "
            "install the gpu extra (onnxruntime-gpu) in its own environment"
        )
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return "no NVIDIA GPU device (/dev/nvidia*) on this machine"
    return None


#: what a runtime-only install has: the runtime, its dependencies (and optional extras), pytest, helpers
RUNTIME_ONLY_IMPORTS = {"numpy", "onnxruntime", "PIL", "soxr", "av", "tqdm", "tritonclient"}
RUNTIME_ONLY_IMPORTS |= {"runtime", "pytest", "tests"}
#: session fixtures that need the exporter (torch) whatever the cache holds
EXPORT_FIXTURES = {"micro_sam_graphs", "micro_point_decoder"}
_runtime_only_modules: dict[Path, bool] = {}


def runtime_only_module(path: Path) -> bool:
    """Whether a test module imports (at any depth) only the standard library and
    :data:`RUNTIME_ONLY_IMPORTS`: the torch-free lane's modules (marker ``runtime_only``)."""
    if path not in _runtime_only_modules:
        tops = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                tops.add(node.module.split(".")[0])
        _runtime_only_modules[path] = all(
            t in sys.stdlib_module_names or t in RUNTIME_ONLY_IMPORTS for t in tops
        )
    return _runtime_only_modules[path]


def pytest_ignore_collect(collection_path, config):
    """In the torch-free lane, test modules outside it are not even imported (they would fail to)."""
    if (
        os.environ.get("AVS_TORCH_FREE") == "1"
        and collection_path.suffix == ".py"
        and collection_path.name.startswith("test_")
        and not runtime_only_module(collection_path)
    ):
        return True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """``runtime_only`` on the tests of the torch-free lane (before ``-m`` selects); ``gpu`` tests skip,
    with the reason, where the GPU or the provider they need is absent."""
    reasons: dict[str, str | None] = {}
    for item in items:
        path = Path(str(item.fspath))
        if (
            path.name.startswith("test_")
            and runtime_only_module(path)
            and not EXPORT_FIXTURES & set(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(pytest.mark.runtime_only)
        markers = list(item.iter_markers("gpu"))
        if not markers:
            continue
        need = "tensorrt" if any("tensorrt" in m.args for m in markers) else "cuda"
        if need not in reasons:
            reasons[need] = gpu_missing(need)
        if reasons[need]:
            item.add_marker(pytest.mark.skip(reason=reasons[need]))


TINY_ARGS = ["--profile", "tiny", "--quiet"]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A bundle of the `tiny` profile (small AudioCLIP configs, random weights, micro SAM): built once
    and cached across sessions (tests/helpers/cache.py, ``$AVS_TEST_CACHE``); each session gets its own
    copy, checked by the bundle's own sha256 check. ``$AVS_TEST_BUNDLE``: copy that bundle instead (the
    torch-free lane's, built by the full environment)."""

    def build(out: Path) -> None:
        try:
            from export.build_engines import main
        except ImportError as e:  # the torch-free lane, with nothing cached
            pytest.skip(
                f"the tiny bundle is not cached and cannot be built here ({e}): build it once with the "
                "full environment (python -m pytest tests/unit/test_cache.py) or set AVS_TEST_BUNDLE"
            )
        assert main([*TINY_ARGS, "--out", str(out)]) == 0

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    if given := os.environ.get("AVS_TEST_BUNDLE"):  # a tiny bundle built elsewhere (another env)
        shutil.copytree(given, out, copy_function=shutil.copyfile)
        check_bundle(out)
        return out
    cached_build("tiny_bundle", BUILD_SOURCES, TINY_ARGS, build, out, check=check_bundle)
    return out


def _cached_exports(tmp_path_factory, name: str, args: dict, export) -> dict:
    """``export(folder) -> {key: ExportResult}`` run once and cached; the results (paths rebased onto
    this session's copy) come back from the cached ``results.json``, each file checked by its sha256."""
    import dataclasses

    from export.onnx_utils import ExportResult
    from runtime.bundle import sha256_file

    def build(out: Path) -> None:
        out.mkdir(parents=True)
        results = export(out)
        rows = {}
        for k, r in results.items():
            row = dataclasses.asdict(r)
            row["path"] = Path(r.path).name
            row["files"] = [Path(f).name for f in r.files]
            row["sha256"] = {Path(f).name: sha256_file(f) for f in r.files}
            rows[k] = row
        (out / "results.json").write_text(json.dumps(rows))

    def check(d: Path) -> None:
        for row in json.loads((d / "results.json").read_text()).values():
            for f, digest in row["sha256"].items():
                if sha256_file(d / f) != digest:
                    raise RuntimeError(f"cached export {d / f} fails its sha256 check")

    d = tmp_path_factory.mktemp(name)
    out = d / "graphs"
    cached_build(name, BUILD_SOURCES, args, build, out, check=check)
    res = {}
    for k, row in json.loads((out / "results.json").read_text()).items():
        row.pop("sha256")
        row["path"] = out / row["path"]
        row["files"] = [out / f for f in row["files"]]
        res[k] = ExportResult(**row)
    return res


@pytest.fixture(scope="session")
def micro_sam_graphs(tmp_path_factory):
    """(encoder, decoder) ExportResults of the `micro` SAM (seed 0), exported once and cached across
    sessions like :func:`tiny_bundle`."""

    def export(d: Path) -> dict:
        from export.sam_export import export_sam_decoder, export_sam_encoder
        from models.sam import load_sam

        sam = load_sam("micro", seed=0)
        enc = export_sam_encoder(sam, d / "sam_image_encoder.onnx", parity_batches=(), atol=1e-4)
        dec = export_sam_decoder(sam, d / "sam_prompt_decoder.onnx", atol=1e-4)
        return {"enc": enc, "dec": dec}

    args = {"sam": "micro", "seed": 0, "encoder": {"parity_batches": [], "atol": 1e-4}}
    res = _cached_exports(tmp_path_factory, "micro_sam_graphs", args, export)
    return res["enc"], res["dec"]


@pytest.fixture(scope="session")
def micro_point_decoder(tmp_path_factory):
    """ExportResult of the `micro` SAM's ``sam_point_decoder`` (no mask input), exported once and
    cached across sessions like :func:`tiny_bundle`."""

    def export(d: Path) -> dict:
        from export.sam_export import export_sam_decoder
        from models.sam import load_sam

        dec = export_sam_decoder(
            load_sam("micro", seed=0),
            d / "sam_point_decoder.onnx",
            atol=1e-4,
            with_mask_input=False,
        )
        return {"dec": dec}

    args = {"sam": "micro", "seed": 0, "decoder": {"with_mask_input": False, "atol": 1e-4}}
    return _cached_exports(tmp_path_factory, "micro_point_decoder", args, export)["dec"]


@pytest.fixture(scope="session")
def micro_amg_halves(tmp_path_factory):
    """(sam_point_iou, sam_mask_upscaler) ExportResults of the `micro` SAM (seed 0), exported once."""
    from export.sam_export import export_sam_amg_halves
    from models.sam import load_sam

    d = tmp_path_factory.mktemp("micro_sam_halves_onnx")
    return export_sam_amg_halves(
        load_sam("micro", seed=0), d / "sam_point_iou.onnx", d / "sam_mask_upscaler.onnx", atol=1e-4
    )
