"""The house rules, checked on the source: runtime/ imports no torch, models, export or reference and has
no import cycle; no graph I/O name or bundle constant is typed out in runtime/ outside the contract
module; a toy mode added as docs/architecture.md says runs through ``segment``."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.bundle.contract import GRAPHS
from runtime.errors import InputError
from runtime.modes import MODES, ModeSpec, Param
from runtime.result import FrameOutput
from tests.helpers.imports import find_cycle

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "runtime"
FORBIDDEN = ("torch", "models", "export", "reference", "benchmarks", "tests", "avs")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(RUNTIME.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module ``path`` imports (absolute names), at any depth of the file."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return out


def import_graph() -> dict[str, set[str]]:
    """runtime module -> the runtime modules it imports."""
    mods = _runtime_modules()
    known = set(mods)
    return {m: {i for i in _imports(p, m, known) if i in known and i != m} for m, p in mods.items()}


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_runtime_has_no_import_cycle():
    graph = import_graph()
    assert "runtime.modes" in graph and "runtime.modes.points" in graph["runtime.modes"]
    assert find_cycle(graph) is None, f"import cycle in runtime/: {' -> '.join(find_cycle(graph))}"


def test_mode_modules_do_not_import_the_table_or_the_pipeline():
    graph = import_graph()
    for m, deps in graph.items():
        if m.startswith("runtime.modes."):
            assert not deps & {"runtime.modes", "runtime.pipeline", "runtime"}, (m, deps)


def test_runtime_imports_no_torch_models_export():
    known = set(_runtime_modules())
    for name, path in _runtime_modules().items():
        for imp in _imports(path, name, known):
            assert imp.split(".")[0] not in FORBIDDEN, f"{path.relative_to(REPO)} imports {imp}"


# --- the contract owns the names and constants --------------------------------------------------------

IO_NAMES = {t.name for g in GRAPHS.values() for t in (*g.inputs, *g.outputs)}
# bundle constants the manifest gives: sample rates, clip lengths, CLIP's input size
CONSTANTS = {44100, 48000, 480000, 220500, 224}


def _flagged(path: Path):
    """String constants that name a graph input or output where they address a tensor (a subscript, or a
    key of a dict handed to a ``run`` call), and numeric constants the manifest should give."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            yield node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "run"
        ):
            for arg in node.args:
                if isinstance(arg, ast.Dict):
                    yield from (k for k in arg.keys if isinstance(k, ast.Constant))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool)
            and node.value in CONSTANTS
        ):
            yield node


def test_no_graph_io_name_or_bundle_constant_outside_the_contract():
    found = []
    for path in sorted(RUNTIME.rglob("*.py")):
        if path.name == "contract.py" or path.relative_to(RUNTIME).as_posix() == "media/demo.py":
            continue  # the contract itself; the generated demo clip's own size (not preprocessing)
        for node in _flagged(path):
            v = node.value
            if (isinstance(v, str) and v in IO_NAMES) or (
                isinstance(v, (int, float)) and not isinstance(v, bool) and v in CONSTANTS
            ):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {v!r}")
    assert not found, "typed out outside runtime/bundle/contract.py:\n" + "\n".join(found)


def test_the_check_catches_a_typed_out_feed(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        'def f(sess, x, feats):\n    sess.run(None, {"waveform": x})\n    return feats["global"], 48000\n'
    )
    assert sorted(map(str, (n.value for n in _flagged(bad)))) == ["48000", "global", "waveform"]


# --- a toy mode, added the way docs/architecture.md says ----------------------------------------------


def run_brightness(st, frames, audio, sample_rate, *, level):
    """Toy mode: pixels brighter than ``level`` sound; the score is the frame's mean brightness."""
    emb = st.audio.embeddings(audio, sample_rate, len(frames))  # the declared stage, for the test
    with pytest.raises(AttributeError, match="not declared"):
        st.sam  # noqa: B018 (a stage the mode did not declare is not handed to it)
    out = []
    for f, e in zip(frames, emb, strict=True):
        gray = f.mean(axis=2)
        out.append(
            FrameOutput(
                gray > level,
                np.array([gray.mean()], np.float32),
                {"level": level, "audio_norm": float(np.linalg.norm(e))},
            )
        )
    return out


TOY = ModeSpec(
    name="brightness",
    graphs=("audioclip_audio",),
    stages=("audio",),
    run=run_brightness,
    params=(Param("level", 128.0, "float", "brightness threshold", low=0.0, high=255.0),),
    score_kind="mean brightness float32 [1]",
    doc="toy mode of tests/architecture/test_architecture.py",
)


def test_a_toy_mode_runs_through_segment(tiny_bundle, monkeypatch):
    monkeypatch.setitem(MODES, TOY.name, TOY)
    pipe = runtime.load(tiny_bundle)
    rng = np.random.default_rng(0)
    frames = [
        rng.integers(0, 256, (40, 60, 3), dtype=np.uint8),
        np.full((30, 20, 3), 200, np.uint8),
    ]
    audio = rng.uniform(-0.5, 0.5, 16000 * 2).astype(np.float32)
    res = pipe.segment(frames, audio, 16000, mode="brightness", level=100)
    assert res.mode == "brightness" and res.preset == "default" and res.random_weights
    np.testing.assert_array_equal(res.masks[0], frames[0].mean(axis=2) > 100)
    assert res.masks[1].all() and res.scores[1][0] == pytest.approx(200.0)
    assert res.prompts[0]["level"] == 100.0 and res.prompts[0] is not res.prompts[1]
    assert res.providers == {"audioclip_audio": "CPUExecutionProvider"} and "audio" in res.timings
    with pytest.raises(InputError, match="level must be in"):
        pipe.segment(frames, audio, 16000, mode="brightness", level=300)
    with pytest.raises(InputError, match="takes parameters"):
        pipe.segment(frames, audio, 16000, mode="brightness", lvl=3)
