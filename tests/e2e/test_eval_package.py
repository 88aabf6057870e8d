"""The evaluation package and the one ``--param`` reader: ``avs segment`` and ``avs eval`` read the same
strings the same way; the split loop gives the same figures, in the split's order, whatever its
concurrency; ``--server`` and in-process options do not mix; the import rules of ``evaluation/`` and
``benchmarks/`` (no arrow up to the CLI, the metrics a leaf that models/ may use)."""

from __future__ import annotations

import ast
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from avs.cli import main as avs_main  # noqa: E402
from evaluation import cli as eval_cli  # noqa: E402
from evaluation.metrics import fscore, miou  # noqa: E402
from evaluation.predictors import VideoOutcome  # noqa: E402
from evaluation.split import evaluate_split  # noqa: E402
from models import avsbench  # noqa: E402
from runtime.errors import InputError  # noqa: E402
from runtime.modes.spec import parse_params  # noqa: E402
from tests.helpers.avsbench import make_avsbench

REPO = Path(__file__).resolve().parents[2]

# (--param strings, what every command must read from them)
PARAM_CASES = [
    (["threshold=0.3"], {"threshold": 0.3}),
    (["reverse=True", "quirks=false", "frame_policy=None"], {"reverse": True, "quirks": False, "frame_policy": None}),
    (["reverse=true", "seed=4", "dataset=ms3"], {"reverse": True, "seed": 4, "dataset": "ms3"}),
    ([" grid = audio ", "amg={\"points_per_side\": 4}"], {"grid": "audio", "amg": {"points_per_side": 4}}),
    (["note=a=b", "x=[1, 2]", "empty="], {"note": "a=b", "x": [1, 2], "empty": ""}),
    (["t=0.1", "t=0.2"], {"t": 0.2}),
]  # fmt: skip


@pytest.mark.parametrize("items, expected", PARAM_CASES)
def test_parse_params_reads_json_python_literals_and_text(items, expected):
    got = parse_params(items)
    assert got == expected
    for k, v in expected.items():  # True stays a bool, 4 an int, 0.3 a float
        assert type(got[k]) is type(v)


@pytest.mark.parametrize("bad", ["threshold", "=0.3", " =1"])
def test_parse_params_refuses_items_without_a_key(bad):
    with pytest.raises(InputError, match="--param expects key=value"):
        parse_params([bad])
    assert parse_params(None) == parse_params([]) == {}


class _FakePipe:
    """Stands in for runtime.load's pipeline: records the parameters ``avs segment`` hands over."""

    def __init__(self):
        self.params = None

    def segment(self, frames, audio, sample_rate=None, *, mode=None, **params):
        self.params = params

        class _Res:
            masks: list = []

            def summary(self):
                return "fake"

        return _Res()


@pytest.mark.parametrize("items, expected", PARAM_CASES)
def test_avs_segment_and_avs_eval_read_the_same_params(items, expected, monkeypatch, tmp_path):
    import runtime

    fake = _FakePipe()
    monkeypatch.setattr(runtime, "load", lambda *a, **k: fake)
    argv = ["segment", "--frames", "f.png", "--audio", "a.wav"]
    for it in items:
        argv += ["--param", it]
    assert avs_main(argv) == 0
    seg = fake.params
    ev = eval_cli.parse_args([x for it in items for x in ("--param", it)]).params
    assert seg == ev == expected


def test_a_bad_param_is_one_error_line_in_both(monkeypatch, capsys):
    import runtime

    monkeypatch.setattr(runtime, "load", lambda *a, **k: _FakePipe())
    assert avs_main(["segment", "--frames", "f.png", "--audio", "a.wav", "--param", "x"]) == 2
    assert "--param expects key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        eval_cli.parse_args(["--param", "x"])
    assert e.value.code == 2 and "--param expects key=value" in capsys.readouterr().err


def test_server_and_in_process_options_do_not_mix(capsys):
    for argv, what in (
        (["--server", "h:1", "--bundle", "b"], "--bundle"),
        (["--server", "h:1", "--threads", "2"], "--threads"),
        (["--concurrency", "3"], "--concurrency"),
        (["--server", "h:1", "--concurrency", "0"], "--concurrency must be >= 1"),
    ):
        with pytest.raises(SystemExit):
            eval_cli.parse_args(argv)
        assert what in capsys.readouterr().err
    a = eval_cli.parse_args(["--server", "h:1"])
    assert (a.protocol, a.concurrency, a.timeout, a.bundle) == ("http", 4, 600.0, None)
    b = eval_cli.parse_args([])
    assert b.bundle == "engines/default" and b.concurrency is None


class _SlowPredictor:
    """Predicts the GT of each video with a one-pixel border cleared, after a delay that is longest for
    the first call: with several workers the answers come back out of order."""

    mode = "fake"
    scored_on = "binary {0,1} masks"

    def __init__(self, kind):
        self.kind, self.active, self.peak, self.calls = kind, 0, 0, 0
        self._lock = threading.Lock()

    def predict(self, rec, gt_shape, params):
        with self._lock:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
            first = self.calls == 1
        time.sleep(0.3 if first else 0.05)
        gts = [avsbench.load_mask(p, self.kind) for p in rec.masks]
        masks = [np.pad(g[1:-1, 1:-1], 1) for g in gts]
        with self._lock:
            self.active -= 1
        assert params == {"k": 1} and tuple(gt_shape) == gts[0].shape
        return VideoOutcome(
            np.stack(masks).astype(np.float32), masks, {"fake": 1.0}, {"g": "CPU"}, False
        )


def test_split_loop_is_the_same_at_any_concurrency(tmp_path):
    data = make_avsbench(tmp_path / "d", "ms3", videos_per_split=4, seed=3)
    runs = {}
    for c in (1, 3):
        pred = _SlowPredictor("ms3")
        out = tmp_path / f"c{c}"
        r = evaluate_split(
            pred, data, "ms3", params={"k": 1}, out=out, progress=False, concurrency=c
        )
        rows = (out / "per_video_ms3_test.jsonl").read_text().splitlines()
        runs[c] = (r, [json.loads(x) for x in rows], pred.peak)
    (r1, rows1, peak1), (r3, rows3, peak3) = runs[1], runs[3]
    assert peak1 == 1 and peak3 > 1  # really in flight together
    recs = avsbench.index_split(data, "ms3", "test")
    assert [x["name"] for x in rows1] == [x["name"] for x in rows3] == [rec.name for rec in recs]
    for row, rec in zip(rows3, recs, strict=True):  # the figures are the metric's on the masks
        gt = np.stack([avsbench.load_mask(p, "ms3") for p in rec.masks])
        pred = np.stack([np.pad(g[1:-1, 1:-1], 1) for g in gt]).astype(np.float32)
        assert row["miou"] == pytest.approx(miou(pred, gt), abs=1e-7)
        assert row["fscore"] == pytest.approx(fscore(pred, gt), abs=1e-7)
    for k in ("videos", "frames", "miou", "fscore", "complete", "providers"):
        assert r1[k] == r3[k], k
    assert {"fake", "metrics"} <= set(r3["timings_ms"]) and r3["per_video_file"]
    with pytest.raises(InputError, match="concurrency"):
        evaluate_split(_SlowPredictor("ms3"), data, "ms3", concurrency=0, progress=False)


# --- import rules of evaluation/ and benchmarks/ --------------------------------------------------


def _imported_roots(folder: Path) -> dict[str, set[str]]:
    """file (relative) -> every absolute module it imports, at any depth of the file."""
    out = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        out[str(path.relative_to(REPO))] = names
    return out


def test_evaluation_imports_no_torch_export_benchmarks_or_cli():
    for f, names in _imported_roots(REPO / "evaluation").items():
        bad = {
            n
            for n in names
            if n.split(".")[0] in ("torch", "export", "benchmarks", "avs", "reference", "tests")
        }
        bad |= {n for n in names if n.startswith("models.") and n != "models.avsbench"}
        assert not bad, f"{f} imports {sorted(bad)}"


def test_benchmarks_never_import_the_cli():
    for f, names in _imported_roots(REPO / "benchmarks").items():
        assert not {n for n in names if n.split(".")[0] == "avs"}, f"{f} imports the avs CLI"


def test_models_import_only_the_metrics_of_evaluation():
    for f, names in _imported_roots(REPO / "models").items():
        ev = {n for n in names if n.split(".")[0] == "evaluation"}
        assert ev <= {"evaluation", "evaluation.metrics"}, f"{f} imports {sorted(ev)}"
    metrics = _imported_roots(REPO / "evaluation")["evaluation/metrics.py"]
    assert {n.split(".")[0] for n in metrics} <= {
        "__future__",
        "math",
        "dataclasses",
        "numpy",
        "runtime",
    }
    assert {n for n in metrics if n.startswith("runtime")} <= {
        "runtime.errors",
        "runtime.errors.InputError",
    }
