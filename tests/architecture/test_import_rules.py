"""Every import rule of DESIGN.md ("Layers ... and who may import whom"), for every package folder,
checked on the source (tests/helpers/imports.py): no import cycle in any folder nor across folders;
no arrow up (runtime imports no layer above it; models imports only the runtime's numpy preprocessing;
export imports only models and runtime; benchmarks never imports the CLI); the runtime's third-party
imports are its declared dependencies, so it installs and runs without torch."""

from __future__ import annotations

import sys

import pytest

from tests.helpers import REPO
from tests.helpers.imports import PACKAGES, all_imports, find_cycle, project_graph

#: who may import whom: for each folder, the project modules it may import (a name allows the module
#: and everything under it). Absent folders (``evaluation`` before it exists) are skipped.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    # the lean runtime: numpy + onnxruntime; never torch, models, export, reference, benchmarks, avs
    "runtime": ("runtime",),
    # PyTorch definitions: from the runtime only the numpy preprocessing (one implementation of the
    # inputs for training and serving), and evaluation.metrics (a numpy leaf, for AC-FPN training)
    "models": ("models", "runtime.preprocess", "evaluation.metrics"),
    # models -> ONNX -> bundle: models and runtime (the bundle contract), nothing above
    "export": ("export", "models", "runtime"),
    # the PyTorch oracles of the parity tests: the networks and the bundle reader, nothing above
    "reference": ("reference", "models", "runtime"),
}
#: for the folders DESIGN.md lets import (almost) anything: what they must not import
MUST_NOT_IMPORT: dict[str, tuple[str, ...]] = {
    "evaluation": ("avs", "benchmarks", "tests"),  # the product feature sits below the CLI
    "benchmarks": ("avs", "tests"),  # may import anything but the CLI on top of it
    "avs": ("tests",),
}

#: arrows present at this branch point that other items of issue 16 remove (item 4: evaluation out of
#: benchmarks, demo_inputs out of the CLI). Each is tolerated only while it exists;
#: test_pending_exceptions_still_exist fails once it is gone, so the entry is deleted then.
PENDING: dict[tuple[str, str], str] = {}  # all three removed by item 4 (merged)

#: the runtime's third-party imports: its dependencies (pyproject ``dependencies``), its optional
#: extras (video: av; serve: tritonclient), the Triton python backend's in-server module, and the
#: execution backends it may drive (onnxruntime-gpu installs ``onnxruntime``; openvino, tensorrt)
RUNTIME_THIRD_PARTY = {
    "numpy",
    "onnxruntime",
    "PIL",
    "soxr",
    "av",
    "tqdm",
    "tritonclient",
    "triton_python_backend_utils",
    "openvino",
    "tensorrt",
}

GRAPH = project_graph()
IMPORTS = all_imports()
FOLDERS = [p for p in PACKAGES if (REPO / p).is_dir()]


def _under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _pending_removed(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {d for d in deps if (m, d) not in PENDING} for m, deps in graph.items()}


def test_the_graph_sees_every_folder_and_known_edges():
    # a broken reader would pass every rule below: check it sees what is there
    assert {"runtime", "export", "models", "benchmarks", "reference", "avs"} <= set(FOLDERS)
    assert "runtime.pipeline" in GRAPH and "runtime.modes" in GRAPH
    assert any(d.startswith("runtime.bundle") for d in GRAPH["export.build_engines"])
    assert "torch" in IMPORTS["models.sam"] or any(
        i.startswith("torch") for i in IMPORTS["models.sam"]
    )


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_import_cycle_in_the_folder(folder):
    graph = _pending_removed(GRAPH)
    sub = {
        m: {d for d in deps if _under(d, (folder,))}
        for m, deps in graph.items()
        if _under(m, (folder,))
    }
    cycle = find_cycle(sub)
    assert cycle is None, f"import cycle in {folder}/: {' -> '.join(cycle)}"


def test_no_import_cycle_across_folders():
    cycle = find_cycle(_pending_removed(GRAPH))
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


@pytest.mark.parametrize("folder", [f for f in FOLDERS if f in MAY_IMPORT])
def test_no_arrow_up_from(folder):
    bad = sorted(
        f"{m} imports {d}"
        for m, deps in GRAPH.items()
        if _under(m, (folder,))
        for d in deps
        if not _under(d, MAY_IMPORT[folder]) and (m, d) not in PENDING
    )
    assert not bad, (
        f"{folder}/ may import only {MAY_IMPORT[folder]} from the project:\n" + "\n".join(bad)
    )


@pytest.mark.parametrize("folder", [f for f in FOLDERS if f in MUST_NOT_IMPORT])
def test_no_forbidden_arrow_from(folder):
    bad = sorted(
        f"{m} imports {d}"
        for m, deps in IMPORTS.items()
        if _under(m, (folder,))
        for d in deps
        if _under(d, MUST_NOT_IMPORT[folder]) and (m, d) not in PENDING
    )
    assert not bad, f"{folder}/ must not import {MUST_NOT_IMPORT[folder]}:\n" + "\n".join(bad)


def test_nothing_imports_the_tests():
    bad = sorted(
        f"{m} imports {d}" for m, deps in IMPORTS.items() for d in deps if _under(d, ("tests",))
    )
    assert not bad, "\n".join(bad)


def test_runtime_imports_only_its_declared_dependencies():
    bad = sorted(
        f"{m} imports {d}"
        for m, deps in IMPORTS.items()
        if _under(m, ("runtime",))
        for d in deps
        if (top := d.split(".")[0]) not in sys.stdlib_module_names
        and top != "runtime"
        and top not in RUNTIME_THIRD_PARTY
    )
    assert not bad, (
        "runtime/ imports something that is not a runtime dependency (torch? scipy?):\n"
        + "\n".join(bad)
    )


def test_pending_exceptions_still_exist():
    gone = [f"{a} -> {b} ({why})" for (a, b), why in PENDING.items() if b not in GRAPH.get(a, ())]
    assert not gone, "fixed: delete these entries of PENDING in this file:\n" + "\n".join(gone)


def test_the_rules_catch_an_arrow_up(tmp_path):
    # the same reader on a tree written here: models importing runtime.pipeline, a cycle in export
    for rel, text in {
        "runtime/__init__.py": "",
        "runtime/pipeline.py": "import numpy\n",
        "runtime/preprocess/__init__.py": "",
        "runtime/preprocess/image.py": "",
        "models/__init__.py": "",
        "models/a.py": "from runtime.preprocess import image\nfrom runtime import pipeline\n",
        "export/__init__.py": "",
        "export/x.py": "from . import y\n",
        "export/y.py": "from export.x import f\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    g = project_graph(tmp_path, ("runtime", "models", "export"))
    assert g["models.a"] == {"runtime.preprocess.image", "runtime.pipeline"}
    up = [d for d in g["models.a"] if not _under(d, MAY_IMPORT["models"])]
    assert up == ["runtime.pipeline"]
    assert find_cycle(g) == ["export.x", "export.y", "export.x"]
