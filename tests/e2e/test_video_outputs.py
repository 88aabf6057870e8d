"""Video through a tiny bundle: segment_video, the outputs folder (overlay, masks, JSON lines, figure),
atomic writes, --overwrite, the CLI's error paths, and bounded memory on a 2-minute video."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

import runtime  # noqa: E402
from avs.cli import main  # noqa: E402
from runtime import rle  # noqa: E402
from runtime.media.outputs import OutputError, segment_video_to_folder, write_atomic, write_video  # noqa: E402
from runtime.media.video import VideoSegmentResult  # noqa: E402
from tests.helpers.video import index_frame, make_video  # noqa: E402

MODE = "heatmap"  # the cheapest mode of the tiny bundle (no SAM)


@pytest.fixture(scope="module")
def bundle(request) -> Path:
    """The session's tiny bundle; ``AVS_TEST_TINY_BUNDLE`` may name one already built (saves the build
    when iterating on these tests alone)."""
    given = os.environ.get("AVS_TEST_TINY_BUNDLE")
    return Path(given) if given else request.getfixturevalue("tiny_bundle")


@pytest.fixture(scope="module")
def pipe(bundle):
    return runtime.load(bundle)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """3 s at 10 fps, 64x48, with a 16 kHz tone."""
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", 30, 10)


def _streams(path):
    """(decoded RGB frames, seconds of decoded audio or None, video frame rate) of a file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
        rate = Fraction(v.average_rate)
    with av.open(str(path)) as c:
        a = c.streams.audio[0] if c.streams.audio else None
        seconds = sum(f.samples for f in c.decode(a)) / a.rate if a else None
    return frames, seconds, rate


def test_segment_video_returns_per_frame_results_with_their_frames(pipe, clip):
    seen = []
    res = pipe.segment_video(
        clip,
        mode=MODE,
        sampling="fps",
        fps=5,
        window_seconds=1.0,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert isinstance(res, VideoSegmentResult)
    assert res.frame_indices == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28]
    assert res.times == pytest.approx([k / 10 for k in res.frame_indices])
    assert len(res.masks) == len(res.scores) == len(res.prompts) == 15
    assert all(m.shape == (48, 64) and m.dtype == bool for m in res.masks)
    assert seen == [(5, 15), (10, 15), (15, 15)]  # one call per 1-s window
    info = res.info()
    assert info["sampling"] == "fps" and info["video"]["num_frames"] == 30
    assert [f["video_frame"] for f in info["frames"]] == res.frame_indices
    json.dumps(info)
    # the same frames and audio through pipe.segment give the same result (window 1 = frames 0..4)
    from runtime.media.video import iter_windows

    win = next(iter(iter_windows(clip, sampling="fps", fps=5, window_seconds=1.0)))
    direct = pipe.segment(win.frames, win.audio, win.sample_rate, mode=MODE)
    for a, b in zip(direct.scores, res.scores[:5], strict=True):
        np.testing.assert_array_equal(a, b)
    # the one-call form
    one = runtime.segment(pipe.bundle.root, video=clip, mode=MODE, duration=2)
    assert one.frame_indices == [9, 19] and len(one.masks) == 2


def test_params_are_checked_before_decoding(pipe, clip):
    with pytest.raises(runtime.InputError, match="takes parameters"):
        pipe.segment_video(clip, mode=MODE, nonsense=1)
    with pytest.raises(runtime.InputError, match="unknown mode"):
        pipe.segment_video(clip, mode="nope")


def test_outputs_folder(pipe, clip, tmp_path):
    out = tmp_path / "out"
    summary = segment_video_to_folder(
        pipe, clip, out, mode=MODE, sampling="fps", window_seconds=1.2
    )
    assert summary["samples"] == 30 and summary["random_weights"] is True
    assert sorted(p.name for p in out.iterdir()) == [
        "figure.png",
        "masks",
        "overlay.mp4",
        "segments.jsonl",
    ]
    frames, audio_s, rate = _streams(out / "overlay.mp4")
    assert len(frames) == 30 and rate == 10 and frames[0].shape == (48, 64, 3)
    assert audio_s == pytest.approx(3.0, abs=0.08)  # the input's length (AAC pads to whole frames)
    lines = [json.loads(x) for x in (out / "segments.jsonl").read_text().splitlines()]
    assert (
        lines[0]["type"] == "video"
        and lines[0]["mode"] == MODE
        and lines[0]["random_weights"] is True
    )
    assert lines[-1]["type"] == "summary"
    recs = [x for x in lines if x["type"] == "frame"]
    assert [r["video_frame"] for r in recs] == list(range(30)) and [
        r["sample"] for r in recs
    ] == list(range(30))
    assert sum(x["type"] == "window" for x in lines) == 3  # 12 + 12 + 6 frames
    pngs = sorted((out / "masks").iterdir())
    assert [p.name for p in pngs] == [f"{j:06d}.png" for j in range(30)]
    from PIL import Image

    for r, p in zip(recs, pngs, strict=True):
        m = rle.decode(r["rle"])
        png = np.asarray(Image.open(p))
        assert png.shape == (48, 64) and set(np.unique(png)) <= {0, 255}
        assert np.array_equal(m, png == 255)
        assert r["coverage"] == pytest.approx(m.mean())
        assert r["score"]["shape"] == [48, 64]  # the heatmap mode scores with a map (summarised)
    # the overlay tints the mask: magenta-shifted pixels where the mask is, the frame elsewhere
    src, _, _ = _streams(clip)
    m = rle.decode(recs[3]["rle"])
    diff = np.abs(frames[3].astype(int) - src[3].astype(int)).sum(axis=2)[
        16:
    ]  # rows 0-15: label, inset
    m = m[16:]
    assert m.any() and (~m).any()
    assert diff[m].mean() > 3 * max(1.0, diff[~m].mean())
    fig = np.asarray(Image.open(out / "figure.png"))
    assert fig.shape[1] > 3 * 64 and fig.shape[2] == 3


def test_avsbench_overlay_is_one_frame_per_second_with_the_audio(pipe, tmp_path):
    v = make_video(
        tmp_path / "v.mkv",
        25 * 4,
        25,
        size=(65, 49),
        codec="libx264",
        pix_fmt="yuv444p",
        channels=2,
    )
    out = tmp_path / "out"
    segment_video_to_folder(pipe, v, out, mode=MODE, figure_png=False, masks=False)
    frames, audio_s, rate = _streams(out / "overlay.mp4")
    assert len(frames) == 4 and rate == 1 and audio_s == pytest.approx(4.0, abs=0.08)
    assert frames[0].shape == (50, 66, 3)  # padded by one pixel for H.264 4:2:0
    assert sorted(p.name for p in out.iterdir()) == ["overlay.mp4", "segments.jsonl"]


def test_output_folder_rules(pipe, clip, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        segment_video_to_folder(pipe, clip, out, mode=MODE)
    # --overwrite removes an earlier run's outputs (stale masks included), keeps other files
    (out / "masks").mkdir()
    (out / "masks" / "000099.png").write_bytes(b"stale")
    (out / ".segments.jsonl.part").write_text("half")
    segment_video_to_folder(
        pipe, clip, out, mode=MODE, sampling="fps", fps=2, overwrite=True, figure_png=False
    )
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{j:06d}.png" for j in range(6)]
    assert (out / "notes.txt").read_text() == "mine"
    assert not list(out.glob(".*"))
    afile = tmp_path / "a_file"
    afile.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        segment_video_to_folder(pipe, clip, afile, mode=MODE)
    with pytest.raises(OutputError, match="cannot write"):
        segment_video_to_folder(pipe, clip, afile / "sub", mode=MODE)


def test_interrupted_run_leaves_nothing_that_looks_complete(pipe, clip, tmp_path):
    out = tmp_path / "out"
    seen: list[list[str]] = []

    def interrupt(done, total):
        seen.append(sorted(p.name for p in out.iterdir()))
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_video_to_folder(
            pipe, clip, out, mode=MODE, sampling="fps", window_seconds=0.5, progress=interrupt
        )
    # during the run only temporary names existed; after the interruption nothing is left
    assert seen and all(
        name.startswith(".") and name.endswith(".part") for names in seen for name in names
    )
    assert list(out.iterdir()) == []


def test_write_atomic_failure_leaves_neither_file_nor_temporary(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    write_atomic(target, "ok")
    assert target.read_text() == "ok"

    def fail(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path / "y.json", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


# --- the CLI ----------------------------------------------------------------------------------------------
def _cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(["segment", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_segments_a_video(bundle, clip, tmp_path, capsys):
    out = tmp_path / "o"
    rc, so, _ = _cli(
        capsys,
        "--video",
        str(clip),
        "--out",
        str(out),
        "--bundle",
        str(bundle),
        "--mode",
        MODE,
        "--param",
        "threshold=0.3",
        "--sampling",
        "fps",
        "--fps",
        "5",
        "--json",
        "--no-figure",
    )
    assert rc == 0
    summary = json.loads(so)
    assert summary["samples"] == 15 and set(summary["files"]) == {"overlay", "masks", "jsonl"}
    head = json.loads((out / "segments.jsonl").read_text().splitlines()[0])
    assert head["params"] == {"threshold": 0.3}
    rec = json.loads((out / "segments.jsonl").read_text().splitlines()[1])
    assert rec["prompt"]["threshold"] == 0.3


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--video", "{missing}"], "video file not found"),
        (["--video", "{corrupt}"], "not a video PyAV can read"),
        (["--video", "{silent}"], "has no audio track"),
        (["--video", "{clip}", "--param", "threshold"], "--param expects key=value"),
        (["--video", "{clip}", "--param", "bogus=1"], "takes parameters"),
        (["--video", "{clip}", "--mode", "nope"], "unknown mode"),
        (["--video", "{clip}", "--start", "99"], "outside the video"),
        (["--video", "{clip}", "--fps", "5"], "--fps applies to --sampling fps"),
        (["--video", "{clip}", "--out", "{file}"], "not a folder"),
        (["--video", "{clip}", "--out", "{file}/sub"], "cannot write"),
        (["--video", "{clip}", "--out", "{full}"], "not empty"),
        (["--video", "{clip}", "--bundle", "{nobundle}"], "is not a bundle"),
        (["--frames", "{clip}"], "--frames needs --audio"),
    ],
)
def test_cli_errors_are_one_line_exit_2_before_inference(
    bundle, clip, tmp_path, capsys, monkeypatch, args, msg
):
    from runtime.pipeline import Pipeline

    def no_inference(*a, **k):
        raise AssertionError("inference started")

    monkeypatch.setattr(Pipeline, "segment", no_inference)
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(500))
    make_video(tmp_path / "silent.mp4", 20, 10, audio_rate=None)
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "nobundle").mkdir()
    subs = {
        "missing": tmp_path / "missing.mp4",
        "corrupt": tmp_path / "corrupt.mp4",
        "silent": tmp_path / "silent.mp4",
        "clip": clip,
        "file": tmp_path / "file",
        "full": tmp_path / "full",
        "nobundle": tmp_path / "nobundle",
    }
    args = [a.format(**subs) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "o")]
    if "--bundle" not in args:
        args += ["--bundle", str(bundle)]
    if "--mode" not in args:
        args += ["--mode", MODE]
    rc, so, err = _cli(capsys, *args)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], err
    assert "Traceback" not in err and so == ""


def test_cli_frames_form_still_works(bundle, tmp_path, capsys):
    from PIL import Image

    paths = []
    for k in range(2):
        p = tmp_path / f"f{k}.png"
        Image.fromarray(index_frame(k + 1, 48, 64)).save(p)
        paths.append(str(p))
    wav = tmp_path / "a.wav"
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000) * 32767).astype("<i2")
    import wave

    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(x.tobytes())
    rc = main(
        [
            "segment",
            "--frames",
            *paths,
            "--audio",
            str(wav),
            "--bundle",
            str(bundle),
            "--mode",
            MODE,
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert rc == 0 and "mask covers" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["mask_1.png", "mask_2.png"]


# --- long videos ----------------------------------------------------------------------------------------
def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_two_minute_video_streams_in_bounded_memory(pipe, tmp_path):
    """2 min of 160x120 video at 15 fps with 48 kHz stereo audio; one frame every 2 s segmented (the
    model is the slow part; decoding, audio and writing cover the whole 2 minutes).

    Kept whole, the decoded frames would take 104 MB and the decoded audio track 23 MB (mono float32;
    46 MB stereo, as the overlay's muxing once held it); streamed, the peak RSS after the second window
    may grow by at most 25 MB."""
    n, fps = 120 * 15, 15
    p = tmp_path / "long.mp4"
    rate = 48000

    def frames():
        for k in range(n):
            yield index_frame(k % 1024, 120, 160)

    t = np.arange(120 * rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    write_video(p, frames(), fps, audio=np.stack([tone, tone[::-1]]), sample_rate=rate)
    del t, tone
    state: dict[str, int] = {}

    def progress(done, total):
        state["calls"] = state.get("calls", 0) + 1
        if state["calls"] == 2:  # after two windows: arenas warmed up; reset the peak counter
            state["base"] = _rss_kb("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")

    out = tmp_path / "out"
    summary = segment_video_to_folder(
        pipe,
        p,
        out,
        mode=MODE,
        sampling="fps",
        fps=0.5,
        window_seconds=8.0,
        progress=progress,
        figure_png=False,
    )
    peak = _rss_kb("VmHWM")
    assert summary["samples"] == 60 and state["calls"] == 15
    grown_mb = (peak - state["base"]) / 1024
    assert grown_mb < 25, f"peak RSS grew by {grown_mb:.0f} MB while streaming"
    frames_out, audio_s, _ = _streams(out / "overlay.mp4")
    assert len(frames_out) == 60 and audio_s == pytest.approx(120.0, abs=0.1)
    recs = [json.loads(x) for x in (out / "segments.jsonl").read_text().splitlines()]
    assert [r["video_frame"] for r in recs if r["type"] == "frame"][-3:] == [1710, 1740, 1770]
