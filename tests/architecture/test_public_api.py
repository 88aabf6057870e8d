"""The public API: what ``import runtime`` offers, and every import the README's code blocks show
resolves (so its examples can run as pasted)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import runtime

REPO = Path(__file__).resolve().parents[2]


def test_runtime_exports_the_documented_api():
    assert set(runtime.__all__) == {
        "load",
        "segment",
        "Pipeline",
        "SegmentResult",
        "Bundle",
        "AVSError",
        "BundleError",
        "InputError",
        "ProviderError",
        "rle",
        "Budget",  # runtime.load(budget=): the bounds of one segment call
        "Gate",  # runtime.load(gate=): the agreement limits of a reduced precision
    }
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None


def _readme_imports() -> list[tuple[str, list[str]]]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    out = []
    for block in blocks:
        for m in re.finditer(r"^\s*from ([\w.]+) import ([\w, ]+)$", block, flags=re.M):
            out.append((m.group(1), [n.strip() for n in m.group(2).split(",")]))
        for m in re.finditer(r"^\s*import ([\w.]+)$", block, flags=re.M):
            out.append((m.group(1), []))
    return out


def test_every_readme_import_resolves():
    imports = _readme_imports()
    assert any(mod == "runtime" for mod, _ in imports)  # the parser found the examples
    for mod, names in imports:
        m = importlib.import_module(mod)
        for n in names:
            assert hasattr(m, n) or importlib.util.find_spec(f"{mod}.{n}"), (
                f"README: from {mod} import {n}"
            )
