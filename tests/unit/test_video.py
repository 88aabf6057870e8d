"""Video input: probing, the two samplings (exact frames picked), audio pairing, refusals."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from runtime.errors import InputError  # noqa: E402
from runtime.media.outputs import write_video  # noqa: E402
from runtime.media.video import iter_windows, plan_frames, probe  # noqa: E402
from tests.helpers.video import index_frame, make_video, read_index  # noqa: E402


def picked(path, **kw) -> tuple[list[int], list]:
    """Indices read back from the frames the windows hand out, and the windows."""
    wins = list(iter_windows(path, **kw))
    return [read_index(f) for w in wins for f in w.frames], wins


NTSC = Fraction(30000, 1001)


@pytest.mark.parametrize(
    ("fps", "n", "expect"),
    [
        # int(l * fr + 15 / 16 * fr): fr = 24 -> 22.5; 25 -> 23.4375; 30 (also 29.97 rounded) -> 28.125
        (24, 24 * 5, [22, 46, 70, 94, 118]),
        (25, 25 * 5, [23, 48, 73, 98, 123]),
        (NTSC, 150, [28, 58, 88, 118, 148]),  # 150 frames = 5.005 s -> 5 whole seconds
        (30, 30 * 5 + 10, [28, 58, 88, 118, 148]),  # 5.33 s -> 5 whole seconds
    ],
)
def test_avsbench_sampling_picks_the_reference_frames(tmp_path, fps, n, expect):
    p = make_video(tmp_path / "v.mp4", n, fps)
    got, wins = picked(p, sampling="avsbench")
    assert got == expect
    assert [k for w in wins for k in w.indices] == expect
    # one second of 16 kHz audio per frame (AVSBench's WAVs are 16 kHz)
    assert all(w.sample_rate == 16000 and w.audio.size == 16000 * len(w.frames) for w in wins)


def test_avsbench_clamps_to_the_last_frame_and_repeats_the_last_audio_second(tmp_path):
    # 3.5 s at 24 fps = 84 frames; duration=5 asks for 5 seconds as AVSBench's fixed t = 5 did
    rate = 16000

    def tone(t):  # frequency steps up each second: 300, 400, 500, 600 Hz
        return (0.5 * np.sin(2 * np.pi * (300 + 100 * np.floor(t)) * t)).astype(np.float32)

    p = make_video(tmp_path / "short.mp4", 84, 24, tone=tone)
    got, wins = picked(p, sampling="avsbench", duration=5)
    assert got == [22, 46, 70, 83, 83]
    audio = np.concatenate([w.audio for w in wins])
    assert audio.size == 5 * rate

    def dominant(x):
        spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        return np.fft.rfftfreq(x.size, 1 / rate)[int(spec.argmax())]

    freqs = [dominant(audio[i * rate : (i + 1) * rate]) for i in range(5)]
    assert freqs[:3] == pytest.approx([300, 400, 500], abs=3)
    # seconds 3 and 4 lie past the 3.5-s track: both are its last second, [2.5, 3.5) (500 and 600 Hz)
    assert np.allclose(audio[3 * rate : 4 * rate], audio[4 * rate :], atol=1e-6)
    last = audio[4 * rate :]
    assert dominant(last[: rate // 2 - 400]) == pytest.approx(500, abs=5)
    assert dominant(last[rate // 2 + 400 :]) == pytest.approx(600, abs=5)


@pytest.mark.parametrize(
    ("fps", "n", "rate", "start", "duration", "expect"),
    [
        (25, 30, None, 0.0, None, list(range(30))),
        (30, 40, 10, 0.0, None, [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39]),
        (25, 40, 10, 0.0, 1.0, [0, 2, 5, 7, 10, 12, 15, 17, 20, 22]),
        (NTSC, 40, 10, 0.0, 1.0, [0, 2, 5, 8, 11, 14, 17, 20, 23, 26]),  # k = floor(j / 10 * 29.97)
        (24, 72, 2, 1.0, 1.5, [24, 36, 48]),
        (24, 48, None, 1.5, None, list(range(36, 48))),
    ],
)
def test_fps_sampling_picks_exact_frames(tmp_path, fps, n, rate, start, duration, expect):
    p = make_video(tmp_path / "v.mp4", n, fps)
    got, wins = picked(p, sampling="fps", fps=rate, start=start, duration=duration)
    assert got == expect
    sr = wins[0].sample_rate
    assert sr == 16000 and all(w.audio.size == sr * len(w.frames) for w in wins)


def test_fps_audio_is_the_second_centred_on_each_frame(tmp_path):
    rate, fps = 8000, 10
    ramp = lambda t: (t / 10.0).astype(np.float32)  # noqa: E731 - value = time / 10 (PCM keeps it exact)
    p = tmp_path / "ramp.mkv"
    frames = (index_frame(k, 48, 64) for k in range(60))
    t = np.arange(6 * rate) / rate
    write_video(p, frames, fps, audio=ramp(t), sample_rate=rate, codec="ffv1", pix_fmt="yuv444p")
    # ffv1 + AAC would smear the ramp; check with the audio given separately too (exact)
    for kw in ({}, {"audio": ramp(t), "sample_rate": rate}):
        got, wins = picked(p, sampling="fps", fps=2, **kw)
        assert got == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]
        a = np.concatenate([w.audio for w in wins]).reshape(-1, rate)
        # frame at time tau gets [tau - 0.5, tau + 0.5), shifted into [0, 6): centre value tau / 10
        centres = [max(0.5, min(5.5, k / fps)) for k in got]
        tol = 0.02 if not kw else 1e-4
        assert a.mean(axis=1) == pytest.approx([c / 10 for c in centres], abs=tol)


@pytest.mark.parametrize(
    ("size", "suffix", "codec", "pix"),
    [
        ((67, 45), ".mkv", "libx264", "yuv444p"),
        ((61, 33), ".mkv", "ffv1", "yuv444p"),
        ((100, 38), ".mp4", "mpeg4", "yuv420p"),
    ],
)
def test_odd_sizes_and_containers(tmp_path, size, suffix, codec, pix):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} missing from this PyAV build")
    p = make_video(tmp_path / f"v{suffix}", 60, 30, size=size, codec=codec, pix_fmt=pix, channels=2)
    info = probe(p)
    assert (info.width, info.height) == (size if codec != "mpeg4" else size)
    assert info.num_frames == 60 and info.fps == 30 and info.has_audio and info.audio_channels == 2
    got, wins = picked(p, sampling="avsbench")
    assert got == [28, 58]
    assert wins[0].frames[0].shape[:2] == (
        size[1],
        size[0] + (size[0] % 2 if pix == "yuv420p" else 0),
    )


def test_windows_are_bounded_in_frames_and_seconds(tmp_path):
    p = make_video(tmp_path / "v.mp4", 25 * 12, 25)
    _, wins = picked(p, sampling="avsbench", window_seconds=4)
    assert [len(w.frames) for w in wins] == [4, 4, 4]
    assert [w.positions for w in wins] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    _, wins = picked(p, sampling="fps", window_seconds=2, max_window_frames=20)
    assert max(len(w.frames) for w in wins) == 20 and sum(len(w.frames) for w in wins) == 300


def test_video_without_audio_is_refused_unless_audio_is_given(tmp_path):
    p = make_video(tmp_path / "silent.mp4", 50, 25, audio_rate=None)
    assert not probe(p).has_audio
    with pytest.raises(InputError, match="no audio track; pass the audio separately"):
        list(iter_windows(p))
    wav = np.zeros(2 * 22050, np.float32)
    got, wins = picked(p, audio=wav, sample_rate=22050)
    assert got == [23, 48] and wins[0].sample_rate == 16000
    with pytest.raises(InputError, match="sample_rate is required"):
        list(iter_windows(p, audio=wav))


def test_corrupt_empty_and_missing_files_are_refused(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(
        InputError, match="not a video PyAV can read|cannot read|no video stream|no frames"
    ):
        probe(bad)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="not a video PyAV can read"):
        probe(empty)
    with pytest.raises(InputError, match="video file not found"):
        probe(tmp_path / "nope.mp4")
    # a container with a video stream but no frames (zero length)
    for suffix in (".mp4", ".mkv"):
        zero = tmp_path / f"zero{suffix}"
        c = av.open(str(zero), "w")
        s = c.add_stream("ffv1" if suffix == ".mkv" else "mpeg4", rate=25)
        s.width, s.height = 64, 48
        c.add_stream("aac", rate=16000)
        c.start_encoding()
        c.close()
        assert zero.stat().st_size > 0
        with pytest.raises(
            InputError, match="no video stream|no frames|ends before any video frame"
        ):
            probe(zero)
    # random bytes under a video name
    noise = tmp_path / "noise.mkv"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(
        InputError, match="not a video PyAV can read|no video stream|before any video frame"
    ):
        probe(noise)
    # a truncated file is read as far as it goes (ffmpeg's behaviour), its length from what is there
    good = make_video(tmp_path / "good.mkv", 100, 25, codec="ffv1", pix_fmt="yuv444p")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    info = probe(cut)
    assert 0 < info.num_frames < 100
    got, _ = picked(cut, sampling="fps")
    assert got == list(range(len(got))) and len(got) <= info.num_frames


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"sampling": "every"}, "sampling must be one of"),
        ({"start": 9.0}, "outside the video"),
        ({"start": -1}, "outside the video"),
        ({"duration": 0}, "duration must be > 0"),
        ({"sampling": "avsbench", "fps": 5}, "applies to sampling='fps'"),
        ({"sampling": "fps", "fps": 50}, "fps must be in"),
        ({"sampling": "fps", "fps": float("nan")}, "finite"),
    ],
)
def test_bad_plan_arguments(tmp_path, kw, msg):
    info = probe(make_video(tmp_path / "v.mp4", 50, 25))
    with pytest.raises(InputError, match=msg):
        plan_frames(info, **kw)
