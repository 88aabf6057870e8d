"""``ruff check`` and ``ruff format --check`` are clean over the whole repository (config: pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def _ruff() -> list[str]:
    """The ruff beside this interpreter (the venv's), else one on PATH; skip when neither exists."""
    here = Path(sys.executable).parent / "ruff"
    if here.is_file():
        return [str(here)]
    found = shutil.which("ruff")
    if found:
        return [found]
    pytest.skip("ruff is not installed (pip install ruff, or the dev extra)")


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(args):
    r = subprocess.run(
        [*_ruff(), *args, "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, f"ruff {' '.join(args)} found problems:\n{r.stdout}{r.stderr}"
