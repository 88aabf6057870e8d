"""Shared fixtures: the real media in ../shared/data, and a tiny bundle built once per session."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import shared_data_dir
from tests.helpers.cache import cached_build


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


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip, with the reason, where the GPU or the provider they need is absent."""
    reasons: dict[str, str | None] = {}
    for item in items:
        markers = list(item.iter_markers("gpu"))
        if not markers:
            continue
        need = "tensorrt" if any("tensorrt" in m.args for m in markers) else "cuda"
        if need not in reasons:
            reasons[need] = gpu_missing(need)
        if reasons[need]:
            item.add_marker(pytest.mark.skip(reason=reasons[need]))


#: what decides a built graph or bundle (see tests/helpers/cache.py): export and the model definitions,
#: the bundle format, the numpy preprocessing and sessions export uses, and the install
BUILD_SOURCES = (
    "export",
    "models",
    "runtime/bundle",
    "runtime/preprocess",
    "runtime/backends",
    "pyproject.toml",
)
TINY_ARGS = ["--profile", "tiny", "--quiet"]


def _check_bundle(d: Path) -> None:
    from runtime.bundle import Bundle

    Bundle.open(d, verify=True)  # schema and every file's sha256


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A bundle of the `tiny` profile (small AudioCLIP configs, random weights, micro SAM): built once
    and cached across sessions (tests/helpers/cache.py, ``$AVS_TEST_CACHE``); each session gets its own
    copy, checked by the bundle's own sha256 check."""

    def build(out: Path) -> None:
        from export.build_engines import main

        assert main([*TINY_ARGS, "--out", str(out)]) == 0

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    cached_build("tiny_bundle", BUILD_SOURCES, TINY_ARGS, build, out, check=_check_bundle)
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
