"""Every ``avs`` subcommand: ``--help`` works, and one real call on the tiny bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avs.cli import main

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("build", "demo", "segment", "modes", "train", "eval", "bench")


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_help(sub):
    r = subprocess.run(
        [sys.executable, "-m", "avs", sub, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout and "Traceback" not in r.stderr


def test_top_level_help_lists_every_subcommand():
    r = subprocess.run(
        [sys.executable, "-m", "avs", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0
    for sub in SUBCOMMANDS:
        assert sub in r.stdout


def test_modes_prints_the_capability_table(tiny_bundle, capsys):
    assert main(["modes", "--bundle", str(tiny_bundle), "--check"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert rows["acfpn"].split()[1] == "yes" and "acfpn [CPU]" in rows["acfpn"]
    assert rows["box"].split()[1] == "no" and "clap_audio (missing)" in rows["box"]
    assert "threshold=0.5 (float in (0, 1))" in out and "zero_shot_quirks" in out


def test_modes_on_a_missing_bundle_is_one_error_line(tmp_path, capsys):
    assert main(["modes", "--bundle", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: bundle folder not found")


def test_segment_and_demo(tiny_bundle, demo_dir, tmp_path, capsys):
    frames = []
    for i, name in enumerate(("cat_1.jpg", "cars_2.jpg")):
        p = tmp_path / f"f{i}.png"
        Image.open(demo_dir / name).convert("RGB").resize((64, 48)).save(p)
        frames.append(str(p))
    out = tmp_path / "masks"
    rc = main(
        [
            "segment",
            "--bundle",
            str(tiny_bundle),
            "--frames",
            *frames,
            "--audio",
            str(demo_dir / "cat_3-95694-A-5.wav"),
            "--mode",
            "heatmap",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    masks = sorted(out.glob("*.png"))
    assert len(masks) == 2 and np.asarray(Image.open(masks[0])).shape[:2] == (48, 64)
    demo = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--bundle",
                str(tiny_bundle),
                "--mode",
                "heatmap",
                "--out",
                str(demo),
                "--seconds",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "RANDOM WEIGHTS" in capsys.readouterr().out.upper()
    assert any(demo.rglob("*.mp4")) and any(demo.rglob("*.png"))


def test_build(tmp_path):
    out = tmp_path / "b"
    assert (
        main(
            [
                "build",
                "--profile",
                "tiny",
                "--graphs",
                "audioclip_image",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    m = json.loads((out / "manifest.json").read_text())
    assert list(m["graphs"]) == ["audioclip_image"]


def test_bench_quick(tiny_bundle, tmp_path):
    rc = main(
        [
            "bench",
            "--bundle",
            str(tiny_bundle),
            "--out",
            str(tmp_path),
            "--only",
            "audioclip",
            "--quick",
            "--threads",
            "1",
            "--sides",
            "fp32",
        ]
    )
    assert rc == 0
    assert all((tmp_path / f"bench.{x}").is_file() for x in ("json", "md", "png"))
    assert main(["bench", "--bundle", str(tmp_path / "none")]) == 2
    assert main(["bench", "--bundle", str(tiny_bundle), "--only", "warp"]) == 2
