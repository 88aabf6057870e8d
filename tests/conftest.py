"""Shared fixtures: the real media in ../shared/data, and a tiny bundle built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, shared_data_dir  # noqa: F401  (REPO: for fixtures below)


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


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A bundle of the `tiny` profile (small AudioCLIP configs, random weights), built once."""
    from export.build_engines import main

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    rc = main(["--profile", "tiny", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def micro_sam_graphs(tmp_path_factory):
    """(encoder, decoder) ExportResults of the `micro` SAM (seed 0), exported once per session."""
    from export.sam_export import export_sam_decoder, export_sam_encoder
    from models.sam import load_sam

    sam = load_sam("micro", seed=0)
    d = tmp_path_factory.mktemp("micro_sam_onnx")
    enc = export_sam_encoder(sam, d / "sam_image_encoder.onnx", parity_batches=(), atol=1e-4)
    dec = export_sam_decoder(sam, d / "sam_prompt_decoder.onnx", atol=1e-4)
    return enc, dec


@pytest.fixture(scope="session")
def micro_point_decoder(tmp_path_factory):
    """ExportResult of the `micro` SAM's ``sam_point_decoder`` (no mask input), exported once per session."""
    from export.sam_export import export_sam_decoder
    from models.sam import load_sam

    d = tmp_path_factory.mktemp("micro_sam_point_onnx")
    return export_sam_decoder(
        load_sam("micro", seed=0), d / "sam_point_decoder.onnx", atol=1e-4, with_mask_input=False
    )
