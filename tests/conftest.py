"""Shared fixtures: the real media in ../shared/data, and a tiny bundle built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$AVS_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("AVS_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


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
