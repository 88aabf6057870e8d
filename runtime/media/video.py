"""Video input: decode a video file (PyAV), sample its frames, pair each with a second of its audio.

PyAV (``pip install 'avs-runtime[video]'`` or ``pip install av``) is an optional dependency of the
runtime, imported only when a video is read.

Frame numbering and time. Frames are numbered 0, 1, ... in decoding (presentation) order, as
AVSBench's cv2 loop counted them; frame k is taken to start at k / fps seconds, fps being the video
stream's average rate (a variable-frame-rate file is treated as constant at its average rate). Time 0
is the first video frame; audio samples are placed on the same clock by their timestamps.

Two samplings (``sampling=``):

* ``"avsbench"`` -- AVSBench's preprocessing (spec sam4avs-reference, section 3): with
  ``fr = round(fps)``, second l (l = 0, 1, ... from ``start``) gives frame
  ``int((start + l) * fr + 15 / 16 * fr)``, clamped to the last frame; it goes with audio second
  ``[start + l, start + l + 1)``, resampled to 16 kHz first (AVSBench's WAV files are 16 kHz). One
  frame per whole second: ``duration`` defaults to the whole seconds left after ``start``; a
  ``duration`` that reaches past the end repeats the last frame and the last second of audio, as
  AVSBench did for short clips (``duration`` is rounded up to whole seconds). Frames are handed to
  the modes at their decoded size; the modes squash them to 224 x 224 as AVSBench did (with the
  preset's antialias setting; preset ``sam4avs`` is cv2-like).
* ``"fps"`` -- every frame (``fps=None``) or frames at ``fps`` per second (the frame shown at each
  time ``start + j / fps``: ``floor((start + j / fps) * video_fps)``). Each frame goes with the
  1-second slice of audio centred on its time; near the ends of the track the slice is shifted to
  lie inside it. The slices are concatenated, so that ``Pipeline.segment``'s convention (frame k gets
  second k of the audio) hands frame k its own slice; audio stays at the file's rate (the pipeline
  resamples with the bundle's constants).

Long videos are processed in windows (:func:`iter_windows`): a few seconds of frames are decoded,
their audio is decoded lazily alongside, and nothing else is kept, so memory does not grow with the
video's length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import AVSError, InputError
from runtime.preprocess.audio import MAX_RATE, MIN_RATE, load_audio, read_wav, to_mono_float
from runtime.result import SegmentResult, jsonable

__all__ = [
    "SAMPLINGS",
    "AVSBENCH_AUDIO_RATE",
    "VideoInfo",
    "FramePlan",
    "VideoWindow",
    "VideoSegmentResult",
    "require_av",
    "probe",
    "plan_frames",
    "iter_windows",
    "check_mode",
    "iter_segment_video",
    "segment_video",
]

SAMPLINGS = ("avsbench", "fps")
AVSBENCH_AUDIO_RATE = 16000  # moviepy write_audiofile(fps=16000) in AVSBench's preprocessing
_EPS = 1e-6

ProgressFn = Callable[[int, int], Any]


def require_av():
    """The ``av`` module (PyAV), or an :class:`AVSError` that says how to install it."""
    try:
        import av
    except ImportError as e:
        raise AVSError(
            "reading or writing video needs PyAV, an optional dependency: "
            "pip install 'avs-runtime[video]' (or pip install av)"
        ) from e
    return av


def _open(path: str | Path):
    av = require_av()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"video file not found: {p}")
    try:
        return av.open(str(p), "r")
    except av.EOFError as e:
        raise InputError(
            f"{p}: the file ends before any video frame (empty, zero-length or truncated)"
        ) from e
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{p}: not a video PyAV can read ({e})") from e


# --- probing and planning ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds. ``fps``: the video stream's average rate (exact fraction);
    ``num_frames``: frame count (container metadata, else counted from the packets);
    ``duration``: ``num_frames / fps`` seconds; ``audio_rate`` / ``audio_channels``: None without audio."""

    path: str
    width: int
    height: int
    fps: Fraction
    num_frames: int
    duration: float
    has_audio: bool
    audio_rate: int | None
    audio_channels: int | None
    codec: str

    def describe(self) -> str:
        """One line for people: size, rate, length, audio."""
        audio = (
            f"audio {self.audio_rate} Hz x {self.audio_channels} ch"
            if self.has_audio
            else "no audio"
        )
        return (
            f"{self.path}: {self.width}x{self.height} {self.codec}, {float(self.fps):.3f} fps, "
            f"{self.num_frames} frames ({self.duration:.2f} s), {audio}"
        )


def probe(path: str | Path) -> VideoInfo:
    """Read a video's streams (no frame decoding); refuses files without a video stream or frames."""
    av = require_av()
    with _open(path) as c:
        if not c.streams.video:
            raise InputError(f"{path}: the file has no video stream (or one without frames)")
        vs = c.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        if not rate or rate <= 0:
            raise InputError(f"{path}: the video stream has no frame rate")
        fps = Fraction(rate.numerator, rate.denominator)
        n = int(vs.frames or 0)
        if n <= 0:  # MKV/WebM keep no count: count the packets (no decoding)
            try:
                n = sum(1 for pkt in c.demux(vs) if pkt.size)
            except av.FFmpegError as e:
                raise InputError(f"{path}: cannot read the video stream ({e})") from e
        if n <= 0:
            raise InputError(f"{path}: the video has no frames (zero length)")
        aus = c.streams.audio
        a = aus[0] if aus else None
        return VideoInfo(
            path=str(path),
            width=int(vs.codec_context.width),
            height=int(vs.codec_context.height),
            fps=fps,
            num_frames=n,
            duration=float(n / fps),
            has_audio=a is not None,
            audio_rate=int(a.codec_context.sample_rate) if a else None,
            audio_channels=len(a.codec_context.layout.channels) if a else None,
            codec=str(vs.codec_context.name),
        )


@dataclass(frozen=True)
class FramePlan:
    """Which frames to segment. ``indices[j]``: video frame number of sample j (non-decreasing; may
    repeat at the end when clamped); ``times[j]``: that frame's time (s); ``audio_centres[j]``: centre
    of sample j's 1-s audio slice (s); ``out_fps``: the rate of the sampled sequence (1 for avsbench);
    ``audio_rate``: rate the audio is resampled to first (16000 for avsbench; None keeps the file's)."""

    sampling: str
    indices: list[int]
    times: list[float]
    audio_centres: list[float]
    out_fps: Fraction
    audio_rate: int | None
    start: float

    def __len__(self) -> int:
        return len(self.indices)


def _as_fraction(x: float | int | Fraction, name: str) -> Fraction:
    if isinstance(x, bool) or not isinstance(x, int | float | Fraction | np.integer | np.floating):
        raise InputError(f"{name}: expected a number, got {type(x).__name__}")
    if not math.isfinite(float(x)):
        raise InputError(f"{name}: expected a finite number, got {x}")
    if isinstance(x, Fraction):
        return x
    if isinstance(x, int | np.integer):
        return Fraction(int(x))
    return Fraction(float(x)).limit_denominator(1_000_000)


def plan_frames(
    info: VideoInfo,
    *,
    sampling: str = "avsbench",
    fps: float | None = None,
    start: float = 0.0,
    duration: float | None = None,
) -> FramePlan:
    """The frames a sampling picks from a video (module docstring for the rules).

    ``start`` (s, >= 0, before the end) and ``duration`` (s, > 0; default: to the end) choose the
    window; ``fps`` (samples per second, 0 < fps <= the video's rate) only with ``sampling="fps"``.
    """
    if sampling not in SAMPLINGS:
        raise InputError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    s = float(_as_fraction(start, "start"))
    if s < 0 or s >= info.duration:
        raise InputError(
            f"start={start} s is outside the video (0 <= start < {info.duration:.3f} s)"
        )
    if duration is not None:
        d = float(_as_fraction(duration, "duration"))
        if d <= 0:
            raise InputError(f"duration must be > 0 s, got {duration}")
    n, vf = info.num_frames, info.fps
    if sampling == "avsbench":
        if fps is not None:
            raise InputError(
                "fps= applies to sampling='fps'; AVSBench sampling takes one frame per second"
            )
        fr = round(float(vf))
        if fr < 1:
            raise InputError(
                f"AVSBench sampling needs a video of at least 0.5 fps, got {float(vf)}"
            )
        secs = (
            max(1, math.ceil(d - 1e-3))
            if duration is not None
            else max(1, math.floor(info.duration - s + 1e-3))
        )
        idx = [min(int((s + ll) * fr + 15 / 16 * fr), n - 1) for ll in range(secs)]
        return FramePlan(
            "avsbench",
            idx,
            [float(k / vf) for k in idx],
            [s + ll + 0.5 for ll in range(secs)],
            Fraction(1),
            AVSBENCH_AUDIO_RATE,
            s,
        )
    end = min(info.duration, s + d) if duration is not None else info.duration
    if fps is None:
        k0 = max(0, math.ceil(s * vf - _EPS))
        idx = [k for k in range(k0, n) if float(k / vf) < end - _EPS]
        rate = vf
    else:
        r = _as_fraction(fps, "fps")
        if not 0 < r <= vf:
            raise InputError(f"fps must be in (0, {float(vf):.3f}] (the video's rate), got {fps}")
        idx, j = [], 0
        while True:
            t = s + float(j / r)
            if t >= end - _EPS:
                break
            k = math.floor(t * float(vf) + _EPS)
            if k >= n:
                break
            idx.append(k)
            j += 1
        rate = r
    if not idx:
        raise InputError(f"no frame of {info.path} lies in [{s}, {end}) s")
    times = [float(k / vf) for k in idx]
    return FramePlan("fps", idx, times, list(times), rate, None, s)


# --- audio --------------------------------------------------------------------------------------------
def _audio_to_float(frame) -> np.ndarray:
    """A decoded PyAV audio frame -> float32 [C, T] in [-1, 1]."""
    a = frame.to_ndarray()
    ch = len(frame.layout.channels)
    if not frame.format.is_planar:
        a = a.reshape(-1, ch).T
    name = frame.format.name.rstrip("p")
    if name == "s16":
        return a.astype(np.float32) / 32768.0
    if name == "s32":
        return (a.astype(np.float64) / 2147483648.0).astype(np.float32)
    if name == "u8":
        return (a.astype(np.float32) - 128.0) / 128.0
    if name in ("flt", "dbl"):
        return a.astype(np.float32)
    if name == "s64":
        return (a.astype(np.float64) / 9.223372036854775808e18).astype(np.float32)
    raise InputError(f"unsupported audio sample format {frame.format.name}")


class _AudioSource:
    """Mono float32 audio on the video's clock, read in increasing time order (streams or arrays)."""

    rate: int

    def span(self, t0: float, t1: float) -> np.ndarray:  # pragma: no cover - interface
        """Samples of [t0, t1) s (fewer where the track ends); samples before t0 may be forgotten."""
        raise NotImplementedError

    def ensure(self, t: float) -> None:
        """Decode up to ``t`` s, so that :meth:`end` is known if the track ends before it."""

    def end(self) -> float | None:  # pragma: no cover - interface
        """The track's length (s) once known (always for arrays; at end of stream for files)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def slices(self, centres: Sequence[float], target_rate: int | None) -> tuple[np.ndarray, int]:
        """1-s slices centred on ``centres`` (shifted into the track), concatenated: float32
        [len(centres) * rate], resampled to ``target_rate`` (None: the source's rate) first."""
        los = [max(0.0, c - 0.5) for c in centres]
        hi = max(los) + 1.0
        self.ensure(hi)
        end = self.end()
        if end is not None:
            los = [min(lo, max(0.0, end - 1.0)) for lo in los]
        a, b = min(los), max(los) + 1.0
        x = self.span(a, b)
        rate = self.rate
        if target_rate is not None and target_rate != rate:
            x = load_audio(x, rate, target_rate) if x.size else x
            rate = target_rate
        out = np.zeros(len(centres) * rate, np.float32)
        for i, lo in enumerate(los):
            o = int(round((lo - a) * rate))
            piece = x[o : o + rate]
            out[i * rate : i * rate + piece.size] = piece
        return out, rate


class _ArrayAudio(_AudioSource):
    def __init__(self, x: np.ndarray, rate: int):
        self.x, self.rate = x, int(rate)

    def span(self, t0: float, t1: float) -> np.ndarray:
        i0 = max(0, int(round(t0 * self.rate)))
        i1 = max(i0, int(round(t1 * self.rate)))
        return self.x[i0:i1]

    def end(self) -> float:
        return self.x.size / self.rate


class _StreamAudio(_AudioSource):
    """Decodes a file's first audio track lazily, keeping only samples at or after the last request."""

    def __init__(self, path: str | Path, origin: float):
        self._c = _open(path)
        self._stream = self._c.streams.audio[0]
        self.rate = int(self._stream.codec_context.sample_rate)
        if not MIN_RATE <= self.rate <= MAX_RATE:
            raise InputError(f"{path}: audio rate {self.rate} Hz outside [{MIN_RATE}, {MAX_RATE}]")
        self._frames = self._c.decode(self._stream)
        self._origin = origin
        self._buf: list[np.ndarray] = []
        self._buf_start = 0  # sample index (video clock) of the first buffered sample
        self._buf_len = 0
        self._next: int | None = None  # sample index where the next decoded frame goes
        self._eof = False
        self._path = path

    def _decode_until(self, sample: int) -> None:
        av = require_av()
        while not self._eof and self._buf_start + self._buf_len < sample:
            try:
                frame = next(self._frames)
            except StopIteration:
                self._eof = True
                break
            except av.FFmpegError as e:
                raise InputError(f"{self._path}: cannot decode the audio track ({e})") from e
            x = _audio_to_float(frame).mean(axis=0, dtype=np.float64).astype(np.float32)
            if self._next is None:
                t = (frame.time - self._origin) if frame.time is not None else 0.0
                self._next = int(round(t * self.rate))
                self._buf_start = self._next
                if self._next > 0:  # audio starts after the first video frame: silence before it
                    self._buf_start = 0
                    self._buf.append(np.zeros(self._next, np.float32))
                    self._buf_len = self._next
            self._buf.append(x)
            self._buf_len += x.size
            self._next += x.size

    def ensure(self, t: float) -> None:
        self._decode_until(int(round(t * self.rate)))

    def _drop_before(self, sample: int) -> None:
        cut = sample - self._buf_start
        if cut <= 0 or not self._buf:
            return
        data = np.concatenate(self._buf)
        cut = min(cut, data.size)
        self._buf = [data[cut:]]
        self._buf_start += cut
        self._buf_len = data.size - cut

    def span(self, t0: float, t1: float) -> np.ndarray:
        i0, i1 = int(round(t0 * self.rate)), int(round(t1 * self.rate))
        self._decode_until(i1)
        self._drop_before(i0)
        data = np.concatenate(self._buf) if self._buf else np.zeros(0, np.float32)
        self._buf = [data]
        lo = max(0, i0 - self._buf_start)
        return data[lo : max(lo, i1 - self._buf_start)]

    def end(self) -> float | None:
        return (self._buf_start + self._buf_len) / self.rate if self._eof else None

    def close(self) -> None:
        self._c.close()


def _external_audio(audio, sample_rate: int | None) -> _ArrayAudio:
    if isinstance(audio, str | Path):
        wav, rate = read_wav(audio)
        if sample_rate is not None and sample_rate != rate:
            raise InputError(f"sample_rate={sample_rate} given, but {audio} is at {rate} Hz")
        return _ArrayAudio(to_mono_float(wav), rate)
    if sample_rate is None:
        raise InputError("sample_rate is required with an audio array (e.g. sample_rate=16000)")
    if (
        not isinstance(sample_rate, int | np.integer)
        or not MIN_RATE <= int(sample_rate) <= MAX_RATE
    ):
        raise InputError(
            f"sample rate must be an integer in [{MIN_RATE}, {MAX_RATE}] Hz, got {sample_rate!r}"
        )
    return _ArrayAudio(to_mono_float(audio), int(sample_rate))


# --- windows -------------------------------------------------------------------------------------------
@dataclass
class VideoWindow:
    """A run of consecutive samples: ``frames`` uint8 RGB [H, W, 3] at the video's size,
    ``positions`` (sample numbers j in the plan), ``indices`` / ``times`` (video frame numbers and
    their times), ``audio`` float32 [len(frames) * sample_rate] (second k for frame k) at
    ``sample_rate`` Hz, and ``total`` (samples in the whole plan)."""

    frames: list[np.ndarray]
    positions: list[int]
    indices: list[int]
    times: list[float]
    audio: np.ndarray
    sample_rate: int
    total: int


def _decode_picked(path: str | Path, plan: FramePlan) -> Iterator[tuple[int, np.ndarray]]:
    """(j, frame) for every sample j of the plan, in order, decoding the video once."""
    av = require_av()
    with _open(path) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        j, k, last = 0, -1, None
        total = len(plan.indices)
        try:
            for frame in c.decode(vs):
                k += 1
                if j >= total:
                    break
                if k < plan.indices[j]:
                    continue
                last = frame.to_ndarray(format="rgb24")
                while j < total and plan.indices[j] == k:
                    yield j, last
                    j += 1
        except av.FFmpegError as e:
            raise InputError(f"{path}: cannot decode video frame {k + 1} ({e})") from e
        if j < total:
            if last is None:
                if k < 0:
                    raise InputError(f"{path}: the video has no decodable frames")
                raise InputError(
                    f"{path}: the video has only {k + 1} frames, none of the sampled ones"
                )
            while j < total:  # AVSBench: indices past the last frame take the last frame
                yield j, last
                j += 1


def iter_windows(
    path: str | Path,
    *,
    sampling: str = "avsbench",
    fps: float | None = None,
    start: float = 0.0,
    duration: float | None = None,
    audio=None,
    sample_rate: int | None = None,
    window_seconds: float = 4.0,
    max_window_frames: int = 32,
    info: VideoInfo | None = None,
    plan: FramePlan | None = None,
) -> Iterator[VideoWindow]:
    """Decode a video window by window (frames and their audio), keeping nothing between windows.

    A window holds the samples of at most ``window_seconds`` of video and at most
    ``max_window_frames`` frames. ``audio``: None takes the file's audio track (refused when it has
    none); a WAV path or an array with ``sample_rate`` replaces it (time 0 = first video frame).
    """
    info = info or probe(path)
    plan = plan or plan_frames(info, sampling=sampling, fps=fps, start=start, duration=duration)
    if not window_seconds > 0 or int(max_window_frames) < 1:
        raise InputError("window_seconds must be > 0 and max_window_frames >= 1")
    if audio is None and not info.has_audio:
        raise InputError(
            f"{path} has no audio track; pass the audio separately (audio= a WAV path, or "
            "an array with sample_rate=; CLI: --audio file.wav)"
        )
    if audio is not None:
        src: _AudioSource = _external_audio(audio, sample_rate)
    else:
        with _open(path) as c:
            vs = c.streams.video[0]
            origin = float(vs.start_time * vs.time_base) if vs.start_time is not None else 0.0
        src = _StreamAudio(path, origin)
    try:
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> VideoWindow:
            pos = [j for j, _ in pending]
            wav, rate = src.slices([plan.audio_centres[j] for j in pos], plan.audio_rate)
            return VideoWindow(
                [f for _, f in pending],
                pos,
                [plan.indices[j] for j in pos],
                [plan.times[j] for j in pos],
                wav,
                rate,
                len(plan),
            )

        for j, frame in _decode_picked(path, plan):
            if pending and (
                len(pending) >= max_window_frames
                or float((j - pending[0][0]) / plan.out_fps) >= window_seconds - _EPS
            ):
                yield flush()
                pending = []
            pending.append((j, frame))
        if pending:
            yield flush()
    finally:
        src.close()


# --- segmentation --------------------------------------------------------------------------------------
def check_mode(pipe, mode: str | None, params: dict[str, Any]) -> str:
    """The mode that ``pipe.segment`` will run (default resolved), checked against the bundle and its
    parameters before any decoding or inference (:meth:`runtime.pipeline.Pipeline.check_mode`)."""
    return pipe.check_mode(mode, params)[0].name


def iter_segment_video(
    pipe,
    path: str | Path,
    *,
    mode: str | None = None,
    sampling: str = "avsbench",
    fps: float | None = None,
    start: float = 0.0,
    duration: float | None = None,
    audio=None,
    sample_rate: int | None = None,
    window_seconds: float = 4.0,
    max_window_frames: int = 32,
    progress: ProgressFn | None = None,
    info: VideoInfo | None = None,
    plan: FramePlan | None = None,
    **params: Any,
) -> Iterator[tuple[VideoWindow, SegmentResult]]:
    """Segment a video window by window: yields (window, its :class:`SegmentResult`).

    Arguments as :func:`segment_video`. Memory holds one window (its frames, audio and results).
    """
    mode = check_mode(pipe, mode, params)
    info = info or probe(path)
    plan = plan or plan_frames(info, sampling=sampling, fps=fps, start=start, duration=duration)
    done = 0
    for win in iter_windows(
        path,
        audio=audio,
        sample_rate=sample_rate,
        window_seconds=window_seconds,
        max_window_frames=max_window_frames,
        info=info,
        plan=plan,
    ):
        res = pipe.segment(win.frames, win.audio, win.sample_rate, mode=mode, **params)
        done += len(win.frames)
        yield win, res
        if progress is not None:
            progress(done, len(plan))


@dataclass
class VideoSegmentResult(SegmentResult):
    """A :class:`SegmentResult` over a video's sampled frames, plus where they came from:
    ``frame_indices[i]`` (video frame number), ``times[i]`` (s), ``sampling``, ``video`` (probe info).
    Masks are bool [H, W] at the video's size; timings are summed over the windows."""

    frame_indices: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    sampling: str = ""
    video: dict[str, Any] = field(default_factory=dict)

    def info(self, **kw: Any) -> dict[str, Any]:
        out = super().info(**kw)
        for f, k, t in zip(out["frames"], self.frame_indices, self.times, strict=False):
            f["video_frame"], f["time"] = int(k), float(t)
        out["sampling"], out["video"] = self.sampling, jsonable(self.video)
        return out


def _video_dict(info: VideoInfo) -> dict[str, Any]:
    return {
        "path": info.path,
        "width": info.width,
        "height": info.height,
        "fps": float(info.fps),
        "num_frames": info.num_frames,
        "duration": info.duration,
        "audio_rate": info.audio_rate,
        "audio_channels": info.audio_channels,
        "codec": info.codec,
    }


def segment_video(
    pipe,
    path: str | Path,
    *,
    mode: str | None = None,
    sampling: str = "avsbench",
    fps: float | None = None,
    start: float = 0.0,
    duration: float | None = None,
    audio=None,
    sample_rate: int | None = None,
    window_seconds: float = 4.0,
    max_window_frames: int = 32,
    progress: ProgressFn | None = None,
    **params: Any,
) -> VideoSegmentResult:
    """Segment a video file: masks for the sampled frames, with their frame numbers and times.

    ``path``: any file PyAV reads (MP4, MKV, WebM, ...) with a video stream. ``sampling``:
    ``"avsbench"`` or ``"fps"`` (module docstring); ``fps``: samples per second for ``"fps"`` (None:
    every frame); ``start`` / ``duration``: the window in seconds (default: the whole video).
    ``audio`` / ``sample_rate``: audio to use instead of the file's track (required when it has
    none). ``progress(done, total)``: called after each window with frames done and total.
    ``params``: the mode's parameters. All masks are kept in memory; for long videos use
    :func:`iter_segment_video` or ``runtime.media.outputs.segment_video_to_folder``, which stream.
    """
    info = probe(path)
    parts: list[SegmentResult] = []
    indices: list[int] = []
    times: list[float] = []
    for win, res in iter_segment_video(
        pipe,
        path,
        mode=mode,
        sampling=sampling,
        fps=fps,
        start=start,
        duration=duration,
        audio=audio,
        sample_rate=sample_rate,
        window_seconds=window_seconds,
        max_window_frames=max_window_frames,
        progress=progress,
        info=info,
        **params,
    ):
        parts.append(res)
        indices += win.indices
        times += win.times
    first = parts[0]
    base = {f.name: getattr(first, f.name) for f in fields(SegmentResult)}
    for f in fields(
        SegmentResult
    ):  # per-frame lists (masks, scores, prompts, ...) are concatenated
        vals = [getattr(r, f.name) for r in parts]
        if all(
            isinstance(v, list) and len(v) == len(r.masks) for v, r in zip(vals, parts, strict=True)
        ):
            base[f.name] = [x for v in vals for x in v]
    timings: dict[str, float] = {}
    for r in parts:
        for k, v in r.timings.items():
            timings[k] = timings.get(k, 0.0) + float(v)
    base["timings"] = timings
    return VideoSegmentResult(
        **base, frame_indices=indices, times=times, sampling=sampling, video=_video_dict(info)
    )
