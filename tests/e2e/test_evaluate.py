"""AVSBench evaluation (the ``evaluation`` package, ``avs eval``) end to end on a tiny bundle and tiny
S4 / MS3 sets.

The per-video figures are checked against ``evaluation.metrics`` applied to predictions computed
independently of the evaluator: the AC-FPN logits by plain onnxruntime sessions on the bundle's
graph files (fed by the runtime's preprocessing functions), the heatmap masks by a separate
``segment`` call; the full-mask baseline against its closed form.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import runtime  # noqa: E402
from evaluation import cli as eval_cli  # noqa: E402
from evaluation import paper, run  # noqa: E402
from evaluation.metrics import fscore, miou  # noqa: E402
from evaluation.summary import RANDOM_WARNING  # noqa: E402
from models import avsbench  # noqa: E402
from runtime.errors import InputError  # noqa: E402
from runtime.preprocess.audio import prepare_audioclip_audio  # noqa: E402
from runtime.preprocess.image import clip_preprocess  # noqa: E402
from tests.helpers.avsbench import make_avsbench

REPO = Path(__file__).resolve().parents[2]
POSTER = REPO.parent / "shared" / "spec" / "paper-poster.txt"
VIDEOS = 2  # per split


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("avsbench")
    make_avsbench(root, "s4", videos_per_split=VIDEOS, seed=1)
    make_avsbench(root, "ms3", videos_per_split=VIDEOS, seed=2)
    return root


@pytest.fixture(scope="module")
def acfpn_run(tiny_bundle, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_acfpn")
    summary = run.evaluate(
        tiny_bundle,
        data,
        kinds=("s4", "ms3"),
        mode="acfpn",
        out=out,
        save_masks=True,
        save_overlays=True,
        progress=False,
    )
    return summary, out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _independent_logits(bundle: Path, rec) -> np.ndarray:
    """AC-FPN logits [5, 224, 224] of one video from plain onnxruntime sessions on the graph files."""
    m = json.loads((bundle / "manifest.json").read_text())
    entry, pre = m["graphs"]["acfpn"], m["preprocessing"]
    audio_graph = m["graphs"][entry["audio_graph"]]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sa = ort.InferenceSession(
        str(bundle / audio_graph["file"]), opts, providers=["CPUExecutionProvider"]
    )
    sv = ort.InferenceSession(str(bundle / entry["file"]), opts, providers=["CPUExecutionProvider"])
    wav = prepare_audioclip_audio(
        rec.wav,
        None,
        5,
        target_rate=pre["audio"]["sample_rate"],
        chunk_seconds=1.0,
        tile=pre["audio"]["tile"],
        input_scale=entry["audio_input_scale"],
    )
    frames = [avsbench.load_frame(p) for p in rec.frames]
    img = clip_preprocess(
        frames, size=pre["image"]["size"], mean=pre["image"]["mean"], std=pre["image"]["std"]
    )
    emb = sa.run(None, {"waveform": wav})[0]
    return sv.run(None, {"image": img, "audio_embedding": emb})[0][:, 0]


def test_acfpn_outputs_and_warnings(acfpn_run, data):
    summary, out = acfpn_run
    for name in (
        "summary.json",
        "summary.md",
        "per_video_s4_test.jsonl",
        "per_video_ms3_test.jsonl",
    ):
        assert (out / name).is_file(), name
    disk = json.loads((out / "summary.json").read_text())
    md = (out / "summary.md").read_text()
    assert disk["random_weights"] is True and disk["comparable"] is False
    assert RANDOM_WARNING == "RANDOM WEIGHTS -- not comparable"
    assert RANDOM_WARNING in md and any(RANDOM_WARNING in w for w in disk["warnings"])
    assert disk["scored_on"] == "logits" and disk["mode"] == "acfpn"
    # the paper's row beside ours, in the paper's units
    assert disk["paper_method"] == "AC-FPN (Hadamard)"
    assert disk["paper"]["s4"] == {"miou_pct": 77.12, "fscore": 0.874}
    assert "| paper: AC-FPN (Hadamard) | 77.12 | .874 | 49.95 | .635 |" in md
    for kind in ("s4", "ms3"):
        r = disk["results"][kind]
        assert r["videos"] == r["videos_in_split"] == VIDEOS and r["complete"]
        assert r["frames"] == 5 * VIDEOS
        assert 0.0 <= r["miou"] <= 1.0 and 0.0 <= r["fscore"] <= 1.0
        assert set(r["providers"]) == {"audioclip_audio", "acfpn"}
        rows = _rows(out / f"per_video_{kind}_test.jsonl")
        recs = avsbench.index_split(data, kind, "test")
        assert [row["name"] for row in rows] == [rec.name for rec in recs]
        for row, rec in zip(rows, recs, strict=True):
            assert row["category"] == rec.category
            assert 0.0 <= row["miou"] <= 1.0 and 0.0 <= row["fscore"] <= 1.0
            assert len(row["frame_miou"]) == 5 and all(0.0 <= x <= 1.0 for x in row["frame_miou"])
            assert {"audio", "acfpn", "total", "wall", "metrics"} <= set(row["timings_ms"])
            for k in range(1, 6):
                for sub in ("masks", "overlays"):
                    p = out / sub / kind / rec.name / f"{rec.name}_{k}.png"
                    assert p.is_file(), p
        assert np.isclose(r["miou"], np.mean([row["miou"] for row in rows]))
        assert np.isclose(r["fscore"], np.mean([row["fscore"] for row in rows]))


def test_acfpn_metrics_equal_evaluation_metrics_on_independent_logits(acfpn_run, tiny_bundle, data):
    """Per-video mIoU / F of the evaluator == evaluation.metrics on logits recomputed with plain ORT."""
    summary, out = acfpn_run
    for kind in ("s4", "ms3"):
        rows = _rows(out / f"per_video_{kind}_test.jsonl")
        for row, rec in zip(rows, avsbench.index_split(data, kind, "test"), strict=True):
            z = _independent_logits(tiny_bundle, rec)
            gt = np.stack([avsbench.load_mask(p, kind) for p in rec.masks])
            assert row["miou"] == pytest.approx(miou(z, gt), abs=1e-6)
            assert row["fscore"] == pytest.approx(fscore(z, gt), abs=1e-6)
            # scoring the probabilities as if they were logits would be wrong, and would show
            p = 1 / (1 + np.exp(-z.astype(np.float64)))
            assert abs(fscore(p, gt) - row["fscore"]) > 1e-4
            # the saved masks are the runtime's: sigmoid > 0.5, i.e. logit > 0
            for k in range(5):
                png = np.asarray(
                    Image.open(out / "masks" / kind / rec.name / f"{rec.name}_{k + 1}.png")
                )
                assert np.mean((png > 0) == (z[k] > 0)) > 0.9999


def test_heatmap_mode_scores_binary_masks(tiny_bundle, data, tmp_path):
    summary = run.evaluate(
        tiny_bundle, data, kinds=("s4",), mode="heatmap", out=tmp_path, progress=False
    )
    assert summary["scored_on"] == "binary {0,1} masks" and summary["paper_method"] is None
    assert (
        summary["random_weights"]
        and "(no figure for this mode)" in (tmp_path / "summary.md").read_text()
    )
    rows = _rows(tmp_path / "per_video_s4_test.jsonl")
    assert len(rows) == VIDEOS
    pipe = runtime.load(tiny_bundle)
    for row, rec in zip(rows, avsbench.index_split(data, "s4", "test"), strict=True):
        res = pipe.segment([str(p) for p in rec.frames], str(rec.wav), mode="heatmap")
        pred = np.stack(res.masks).astype(np.float32)
        gt = np.stack([avsbench.load_mask(p, "s4") for p in rec.masks])
        assert row["miou"] == pytest.approx(miou(pred, gt), abs=1e-7)
        assert row["fscore"] == pytest.approx(fscore(pred, gt), abs=1e-7)
        assert row["mask_coverage"] == pytest.approx([float(m.mean()) for m in res.masks])


def test_full_mask_baseline_matches_its_closed_form(data, tmp_path):
    """Every pixel foreground: IoU = |G| / (H W) per frame, and F = mean of 1.3 p / (0.3 p + 1)."""
    summary = run.evaluate(
        None, data, kinds=("s4", "ms3"), mode="full-mask", out=tmp_path, progress=False
    )
    assert not summary["random_weights"] and summary["paper_method"] == "Full-mask"
    assert summary["comparable"]  # a complete test split, no random weights
    for kind in ("s4", "ms3"):
        rows = _rows(tmp_path / f"per_video_{kind}_test.jsonl")
        for row, rec in zip(rows, avsbench.index_split(data, kind, "test"), strict=True):
            gt = np.stack([avsbench.load_mask(p, kind) for p in rec.masks]).astype(np.float64)
            p = gt.reshape(5, -1).mean(axis=1)
            assert row["miou"] == pytest.approx(p.mean(), abs=1e-6)
            assert row["fscore"] == pytest.approx(np.mean(1.3 * p / (0.3 * p + 1)), abs=1e-6)
    # S4 train has one GT mask per video (frame 1): one metric frame per video
    s = run.evaluate(None, data, kinds=("s4",), split="train", mode="full-mask", progress=False)
    r = s["results"]["s4"]
    assert r["frames"] == r["videos"] == VIDEOS and any(
        "test split only" in w for w in s["warnings"]
    )


def test_max_videos_marks_a_partial_run(tiny_bundle, data, tmp_path):
    s = run.evaluate(
        tiny_bundle,
        data,
        kinds=("ms3",),
        mode="heatmap",
        out=tmp_path,
        max_videos=1,
        progress=False,
    )
    r = s["results"]["ms3"]
    assert r["videos"] == 1 and r["videos_in_split"] == VIDEOS and not r["complete"]
    assert any("partial run" in w for w in s["warnings"])
    assert len(_rows(tmp_path / "per_video_ms3_test.jsonl")) == 1


def test_missing_dataset_file_is_named(tiny_bundle, data, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data, root)
    rec = avsbench.index_split(root, "s4", "test")[1]
    rec.frames[3].unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(rec.frames[3]))):
        run.evaluate(tiny_bundle, root, kinds=("s4",), mode="heatmap", progress=False)
    rec.wav.unlink()
    rc = eval_cli.main(
        [
            "--bundle",
            str(tiny_bundle),
            "--data-root",
            str(root),
            "--kind",
            "s4",
            "--mode",
            "heatmap",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "error:" in err and (str(rec.frames[3]) in err or str(rec.wav) in err)
    with pytest.raises(FileNotFoundError, match="s4_meta_data.csv"):
        run.evaluate(None, tmp_path / "nowhere", kinds=("s4",), mode="full-mask", progress=False)


def test_bad_arguments_are_refused(tiny_bundle, data, tmp_path):
    with pytest.raises(InputError, match="unknown mode"):
        run.evaluate(tiny_bundle, data, mode="nope", progress=False)
    with pytest.raises(InputError, match="takes parameters"):
        run.evaluate(tiny_bundle, data, mode="heatmap", params={"thres": 0.3}, progress=False)
    with pytest.raises(InputError, match="kinds"):
        run.evaluate(tiny_bundle, data, kinds=("avss",), mode="heatmap", progress=False)
    with pytest.raises(InputError, match="needs --bundle"):
        run.evaluate(None, data, mode="heatmap", progress=False)
    with pytest.raises(SystemExit):
        eval_cli.parse_args(["--kind", "s5"])
    a = eval_cli.parse_args(
        ["--kind", "both", "--param", "threshold=0.3", "--param", "reverse=true"]
    )
    assert a.kinds == ["s4", "ms3"] and a.params == {"threshold": 0.3, "reverse": True}


def test_paper_figures_are_the_posters():
    """The hard-coded paper table equals the poster's tables, row by row."""
    if not POSTER.is_file():
        pytest.skip(f"{POSTER} not found")
    text = POSTER.read_text()
    names = {
        "AC-FPN (Hadamard)": "AC-FPN (Hadamard)",
        "AC-FPN (Concatenation)": "AC-FPN (Concatenation)",
        "TPAVI-ResNet50 [30]": "TPAVI-ResNet50",
        "Point-Prompt(global)": "Point-Prompt (global)",
        "Point-Prompt(local)": "Point-Prompt (local)",
        "Point-Prompt(dense)": "Point-Prompt (dense)",
    }
    seen = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("\t") if c.strip()]
        if len(cells) < 5:
            continue
        name = names.get(cells[0], cells[0])
        if name not in paper.PAPER:
            continue
        nums = [float(c) for c in cells[1:5]]
        assert paper.PAPER[name] == {"s4": (nums[0], nums[1]), "ms3": (nums[2], nums[3])}, name
        seen.add(name)
    assert seen == set(paper.PAPER)


def test_cli_runs_without_torch(tiny_bundle, data, tmp_path):
    """`avs eval` is runtime-only: the evaluation never imports torch."""
    code = f"""
import sys
from avs.cli import main
rc = main(["eval", "--bundle", {str(tiny_bundle)!r}, "--data-root", {str(data)!r}, "--kind", "ms3",
           "--mode", "heatmap", "--max-videos", "1", "--out", {str(tmp_path)!r}, "--quiet"])
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH", bad)
sys.exit(rc or (3 if bad else 0))
"""
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| ours: `heatmap` (**RANDOM WEIGHTS -- not comparable**)" in r.stdout
    assert (tmp_path / "summary.json").is_file()


def test_random_weights_flag_follows_the_graphs_the_mode_runs(tiny_bundle):
    """Official AudioCLIP towers beside a random AC-FPN head: heatmap is comparable, acfpn is not."""
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    assert run.random_weight_sources(m, "acfpn") == ["acfpn", "audioclip"]
    m["weights"]["audioclip"] = {
        "path": "/w/AudioCLIP-Full-Training.pt",
        "sha256": "0" * 64,
        "config": "audioclip",
    }
    assert run.random_weight_sources(m, "heatmap") == []
    assert run.random_weight_sources(m, "acfpn") == ["acfpn"]
    del m["graphs"]["audioclip_image"]["weights"]  # unnamed weights: every random source counts
    assert "acfpn" in run.random_weight_sources(m, "heatmap")
