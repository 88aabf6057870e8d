"""Outputs people can look at and use: overlay MP4, mask PNGs, JSON lines with COCO RLE, a figure.

:func:`segment_video_to_folder` streams a video through a pipeline (``runtime.media.video``) and writes,
into one folder:

* ``overlay.mp4`` -- each sampled frame with its mask tinted over it, the mode's prompts drawn
  (foreground points green, background points red, boxes yellow) and, where the mode scores with a
  map, the map as an inset; the file's original audio (the same time span) muxed back. Its frame
  rate is the sampling's (1 fps for AVSBench sampling).
* ``masks/NNNNNN.png`` -- one 8-bit PNG per sample (0 background, 255 mask) at the video's size.
* ``segments.jsonl`` -- JSON lines: a ``"video"`` header (file, sampling, mode, preset, random
  weights), one ``"frame"`` record per sample (sample number, video frame number, time, mask as
  COCO RLE with compact string counts (``runtime.media.rle``), coverage, scores, prompts), one ``"window"``
  record per window with its timings (ms), a final ``"summary"``.
* ``figure.png`` -- one frame in three panels: the frame with the prompts, the AudioCLIP heatmap
  (where the bundle has the graphs), the overlay.

Every file is written under a temporary name (``.NAME.part``) and renamed when complete, so an
interrupted run leaves no file that looks complete; ``masks/`` appears only at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from runtime.errors import AVSError, InputError
from runtime.media import rle
from runtime.media.video import (
    FramePlan,
    VideoInfo,
    _audio_to_float,
    _open,
    check_mode,
    iter_segment_video,
    plan_frames,
    probe,
    require_av,
)
from runtime.preprocess.resize import nearest_exact
from runtime.result import jsonable
from runtime.safefiles import open_exclusive

OVERLAY, MASKS, JSONL, FIGURE = "overlay.mp4", "masks", "segments.jsonl", "figure.png"
OUTPUT_NAMES = (OVERLAY, MASKS, JSONL, FIGURE)
MASK_COLOR = (255, 48, 160)  # magenta tint
FG, BG, BOX = (40, 230, 60), (240, 40, 40), (255, 220, 0)


class OutputError(AVSError, OSError):
    """An output folder cannot be used (exists and is not empty, not writable, ...)."""


# --- folder and atomic files ---------------------------------------------------------------------------
def _part(path: Path) -> Path:
    return path.with_name(f".{path.name}.part")


def prepare_output_dir(out: str | Path, *, overwrite: bool = False) -> Path:
    """Create ``out`` (or check it) before any inference: refuse a non-empty folder unless
    ``overwrite`` (then remove the outputs of an earlier run: masks, overlay, JSON lines, figure and
    leftover ``.part`` files; other files stay), and check that it is writable."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputError(
                f"output folder {out} is not empty; choose another or pass --overwrite "
                "(overwrite=True), which replaces an earlier run's outputs"
            )
        for name in OUTPUT_NAMES:
            for p in (out / name, _part(out / name)):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
        for p in out.glob("mask_*.png"):  # the --frames form's masks
            p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".write-test-{os.getpid()}.part"
        open_exclusive(probe_file).close()
        probe_file.unlink()
    except OSError as e:
        raise OutputError(f"cannot write to output folder {out}: {e.strerror or e}") from e
    return out


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write a whole file under a temporary name in the same folder, then rename it into place."""
    path = Path(path)
    tmp = _part(path)
    try:
        with open_exclusive(tmp) as f:  # O_EXCL | O_NOFOLLOW: never through a planted link
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_png_atomic(path: str | Path, image: np.ndarray) -> Path:
    """Save a uint8 [H, W] or [H, W, 3] array as PNG, atomically."""
    path = Path(path)
    tmp = _part(path)
    try:
        with open_exclusive(tmp) as f:
            Image.fromarray(image).save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --- drawing -------------------------------------------------------------------------------------------
def _colormap(x: np.ndarray) -> np.ndarray:
    """float [H, W] in [0, 1] -> uint8 RGB [H, W, 3] (dark blue -> cyan -> yellow -> red)."""
    x = np.clip(np.nan_to_num(np.asarray(x, np.float32)), 0.0, 1.0)
    stops = np.array([0.0, 0.33, 0.66, 1.0], np.float32)
    cols = np.array([[20, 20, 120], [0, 200, 220], [250, 230, 40], [220, 30, 30]], np.float32)
    out = np.stack([np.interp(x, stops, cols[:, c]) for c in range(3)], axis=-1)
    return out.astype(np.uint8)


def heatmap_image(score_map: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A float map [h, w] (any range; min-max scaled) as uint8 RGB [H, W, 3] at ``hw``, nearest."""
    m = np.asarray(score_map, np.float32)
    if m.ndim != 2 or m.size == 0:
        raise InputError(f"score map: expected float [h, w], got shape {m.shape}")
    lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
    m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return _colormap(nearest_exact(m, hw))


def draw_prompts(
    image: Image.Image, prompt: dict[str, Any], *, scale: tuple[float, float] = (1.0, 1.0)
) -> None:
    """Draw a mode's prompts on ``image`` (frame pixels times ``scale`` (sx, sy)): ``points`` [K, 2]
    (x, y) with ``labels`` [K] (1 foreground: green, 0 background: red), ``box`` [4] and
    ``boxes_xyxy`` [[x0, y0, x1, y1], ...] (yellow), ``boxes`` [[x, y, w, h], ...] (thin yellow).
    Keys that are absent or None are skipped."""
    d = ImageDraw.Draw(image)
    sx, sy = scale
    r = max(3, round(min(image.size) / 60))
    lw = max(1, round(min(image.size) / 200))

    def rect(b, width):
        x0, y0, x1, y1 = (float(v) for v in b)
        d.rectangle([x0 * sx, y0 * sy, x1 * sx, y1 * sy], outline=BOX, width=width)

    pts = prompt.get("points")
    if pts is not None and len(pts):
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        labels = prompt.get("labels")
        labels = np.ones(len(pts)) if labels is None else np.asarray(labels).reshape(-1)
        for (x, y), lab in zip(pts, labels, strict=False):
            cx, cy = x * sx, y * sy
            d.ellipse(
                [cx - r, cy - r, cx + r, cy + r],
                fill=FG if int(lab) == 1 else BG,
                outline=(255, 255, 255),
                width=max(1, lw),
            )
    xyxy = prompt.get("boxes_xyxy")
    if xyxy is not None and len(xyxy):
        for b in np.asarray(xyxy, np.float64).reshape(-1, 4):
            rect(b, lw + 1)
    elif prompt.get("box") is not None:
        rect(np.asarray(prompt["box"]).reshape(4), lw + 1)
    xywh = prompt.get("boxes")
    if xywh is not None and len(xywh):
        for x, y, w, h in np.asarray(xywh, np.float64).reshape(-1, 4):
            rect((x, y, x + w, y + h), lw)


def render_overlay(
    frame: np.ndarray,
    mask: np.ndarray,
    prompt: dict[str, Any] | None = None,
    *,
    score_map: np.ndarray | None = None,
    label: str | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """The frame (uint8 RGB [H, W, 3]) with ``mask`` (bool [h, w]; nearest-resized to H x W when
    different) tinted over it and outlined, the prompts drawn (:func:`draw_prompts`, frame pixels),
    ``score_map`` (float [h, w]) as an inset in the top-right corner, and ``label`` written at the
    top left. Returns uint8 RGB [H, W, 3]."""
    if not (
        isinstance(frame, np.ndarray)
        and frame.dtype == np.uint8
        and frame.ndim == 3
        and frame.shape[2] == 3
    ):
        raise InputError(
            f"frame: expected uint8 [H, W, 3], got {getattr(frame, 'dtype', type(frame))} {getattr(frame, 'shape', '')}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    h, w = frame.shape[:2]
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"mask: expected bool [H, W], got shape {m.shape}")
    m = nearest_exact(m.astype(bool), (h, w))
    out = frame.astype(np.float32)
    out[m] = out[m] * (1 - alpha) + np.float32(MASK_COLOR) * alpha
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    out[m & ~inner] = MASK_COLOR
    img = Image.fromarray(out.astype(np.uint8))
    if score_map is not None and np.ndim(score_map) == 2 and min(h, w) >= 32:
        ih, iw = max(8, h // 4), max(8, w // 4)
        inset = Image.fromarray(heatmap_image(score_map, (ih, iw)))
        img.paste(inset, (w - iw - 2, 2))
        ImageDraw.Draw(img).rectangle([w - iw - 3, 1, w - 2, ih + 2], outline=(255, 255, 255))
    if prompt:
        draw_prompts(img, prompt)
    if label:
        d = ImageDraw.Draw(img)
        tw = d.textlength(label)
        d.rectangle([0, 0, tw + 6, 13], fill=(0, 0, 0))
        d.text((3, 1), label, fill=(255, 255, 255))
    return np.asarray(img)


def figure(
    frame: np.ndarray,
    mask: np.ndarray,
    prompt: dict[str, Any],
    *,
    heatmap: np.ndarray | None = None,
    title: str = "",
) -> np.ndarray:
    """A figure for one frame: [frame + prompts | heatmap + prompts (if given) | overlay], each panel
    captioned, ``title`` above. ``heatmap``: float [h, w] over the whole frame (stretched to it).
    Returns uint8 RGB [H', W', 3]."""
    h, w = frame.shape[:2]
    panels: list[tuple[str, Image.Image]] = []
    a = Image.fromarray(frame)
    draw_prompts(a, prompt)
    drawn = any(
        prompt.get(k) is not None and len(prompt.get(k))
        for k in ("points", "box", "boxes_xyxy", "boxes")
    )
    panels.append(
        (
            "frame + prompts (green +, red -, yellow box)"
            if drawn
            else "frame (this mode uses no prompt)",
            a,
        )
    )
    if heatmap is not None:
        b = Image.fromarray(heatmap_image(heatmap, (h, w)))
        draw_prompts(b, prompt)
        panels.append(("audio-image heatmap (blue low, red high)", b))
    panels.append(
        ("mask tinted over the frame", Image.fromarray(render_overlay(frame, mask, prompt)))
    )
    pad, cap, top = 8, 18, 22 if title else 4
    W = len(panels) * (w + pad) + pad
    H = top + h + cap + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    if title:
        d.text((pad, 5), title, fill=(0, 0, 0))
    for i, (caption, p) in enumerate(panels):
        x = pad + i * (w + pad)
        canvas.paste(p, (x, top))
        d.text((x, top + h + 3), caption, fill=(0, 0, 0))
    return np.asarray(canvas)


# --- video writing -------------------------------------------------------------------------------------
def _video_codec() -> str:
    av = require_av()
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class VideoWriter:
    """Encode RGB frames (uint8 [H, W, 3], all the same size) to an MP4/MKV at ``fps``, optionally
    with mono or stereo float audio (``add_audio``). Odd sizes are padded by one edge pixel for H.264."""

    def __init__(
        self,
        path: str | Path,
        fps: Fraction | float,
        *,
        audio_rate: int | None = None,
        audio_channels: int = 1,
        codec: str | None = None,
        pix_fmt: str = "yuv420p",
        format: str | None = None,
    ):
        av = require_av()
        self.path = Path(path)
        open_exclusive(self.path).close()  # a planted link at the name is removed, not followed
        self._c = av.open(str(self.path), "w", format=format)
        self._fps = Fraction(fps).limit_denominator(100_000)
        self._codec, self._pix = codec or _video_codec(), pix_fmt
        self._v = None
        self._a = None
        self._n = 0
        self._apts = 0
        if audio_rate is not None:
            self._a = self._c.add_stream("aac", rate=int(audio_rate))
            self._a.layout = "mono" if audio_channels == 1 else "stereo"
        self._achannels = audio_channels

    def write(self, frame: np.ndarray) -> None:
        av = require_av()
        if not (
            isinstance(frame, np.ndarray)
            and frame.dtype == np.uint8
            and frame.ndim == 3
            and frame.shape[2] == 3
        ):
            raise InputError("VideoWriter.write: expected uint8 [H, W, 3]")
        if self._pix == "yuv420p":
            ph, pw = frame.shape[0] % 2, frame.shape[1] % 2
            if ph or pw:
                frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="edge")
        if self._v is None:
            self._v = self._c.add_stream(self._codec, rate=self._fps)
            self._v.width, self._v.height = frame.shape[1], frame.shape[0]
            self._v.pix_fmt = self._pix
            if self._codec == "libx264":
                self._v.options = {"crf": "20", "preset": "veryfast"}
        elif (frame.shape[1], frame.shape[0]) != (self._v.width, self._v.height):
            raise InputError(
                f"VideoWriter.write: frame {frame.shape[1]}x{frame.shape[0]} differs from the "
                f"first, {self._v.width}x{self._v.height}"
            )
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self._n
        vf.time_base = Fraction(1) / self._fps
        for p in self._v.encode(vf):
            self._c.mux(p)
        self._n += 1

    def add_audio(self, x: np.ndarray) -> None:
        """Append audio: float32 [T] (mono) or [C, T], values in [-1, 1], at the writer's rate."""
        av = require_av()
        if self._a is None:
            raise InputError("VideoWriter was opened without audio_rate")
        x = np.asarray(x, np.float32)
        x = x[None] if x.ndim == 1 else x
        if x.shape[0] != self._achannels:
            raise InputError(
                f"add_audio: expected {self._achannels} channel(s), got shape {x.shape}"
            )
        for i in range(0, x.shape[1], 4096):
            chunk = np.ascontiguousarray(np.clip(x[:, i : i + 4096], -1, 1))
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self._a.layout.name)
            af.sample_rate = self._a.rate
            af.pts = self._apts
            af.time_base = Fraction(1, self._a.rate)
            self._apts += chunk.shape[1]
            for p in self._a.encode(af):
                self._c.mux(p)

    def close(self) -> None:
        """Flush the encoders and close the file."""
        if self._v is not None:
            for p in self._v.encode():
                self._c.mux(p)
        if self._a is not None:
            for p in self._a.encode():
                self._c.mux(p)
        self._c.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    *,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
    format: str | None = None,
) -> Path:
    """Write frames (uint8 RGB [H, W, 3]) and optional audio (float32 [T] or [C, T] in [-1, 1] at
    ``sample_rate``) to a video file (container from the suffix or ``format``)."""
    ch = 1 if audio is None or np.ndim(audio) == 1 else int(np.shape(audio)[0])
    with VideoWriter(
        path,
        fps,
        audio_rate=sample_rate if audio is not None else None,
        audio_channels=ch,
        codec=codec,
        pix_fmt=pix_fmt,
        format=format,
    ) as w:
        for f in frames:
            w.write(f)
        if audio is not None:
            w.add_audio(audio)
    return Path(path)


def _source_audio(path: str | Path, t0: float, t1: float, origin: float):
    """(rate, channels, chunks) of the file's audio in [t0, t1) s (video clock): ``chunks`` yields
    float32 [C, n] pieces as they are decoded (C 1 or 2; more channels are mixed to mono), so memory
    holds one decoded frame at a time. None when the file has no audio track."""
    with _open(path) as c:
        if not c.streams.audio:
            return None
        st = c.streams.audio[0]
        rate = int(st.codec_context.sample_rate)
        ch = len(st.codec_context.layout.channels)
    channels = ch if ch <= 2 else 1

    def chunks():
        with _open(path) as c:
            st = c.streams.audio[0]
            pos = None
            i0, i1 = int(round(t0 * rate)), int(round(t1 * rate))
            for fr in c.decode(st):
                x = _audio_to_float(fr)
                if x.shape[0] != channels:
                    x = x.mean(axis=0, keepdims=True)
                if pos is None:
                    pos = int(round(((fr.time or 0.0) - origin) * rate))
                a, b = max(i0, pos), min(i1, pos + x.shape[1])
                if b > a:
                    yield x[:, a - pos : b - pos]
                pos += x.shape[1]
                if pos >= i1:
                    break

    return rate, channels, chunks()


def _array_audio(x: np.ndarray, rate: int, t0: float, t1: float):
    """(rate, 1, chunks) of a mono array's [t0, t1) s, as :func:`_source_audio`."""
    i0, i1 = max(0, int(round(t0 * rate))), max(0, int(round(t1 * rate)))
    seg = x[i0:i1]
    return rate, 1, (seg[None, i : i + 65536] for i in range(0, seg.size, 65536))


def _mux_audio(video_only: Path, dest: Path, audio) -> None:
    """Copy the video packets of ``video_only`` into ``dest`` (MP4) and add ``audio`` = (rate,
    channels, iterable of float32 [C, n] chunks) encoded as AAC, chunk by chunk; None: no audio."""
    av = require_av()
    open_exclusive(dest).close()  # a planted link at the name is removed, not followed
    with av.open(str(video_only)) as vin, av.open(str(dest), "w", format="mp4") as out:
        vs = vin.streams.video[0]
        vo = out.add_stream_from_template(vs)
        ao = None
        if audio is not None:
            rate, channels, chunks = audio
            ao = out.add_stream("aac", rate=rate)
            ao.layout = "mono" if channels == 1 else "stereo"
        for pkt in vin.demux(vs):
            if pkt.dts is None:
                continue
            pkt.stream = vo
            out.mux(pkt)
        if ao is not None:
            pts = 0
            for x in chunks:
                chunk = np.ascontiguousarray(np.clip(x, -1, 1).astype(np.float32))
                if chunk.shape[1] == 0:
                    continue
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=ao.layout.name)
                af.sample_rate, af.pts, af.time_base = rate, pts, Fraction(1, rate)
                pts += chunk.shape[1]
                for p in ao.encode(af):
                    out.mux(p)
            for p in ao.encode():
                out.mux(p)


# --- the whole job ----------------------------------------------------------------------------------
def _heatmap_of(pipe, frame: np.ndarray, wav: np.ndarray, rate: int) -> np.ndarray | None:
    """AudioCLIP's heatmap of one frame and its second of audio (the ``heatmap`` mode's score map,
    float32 [H, W] in [0, 1]), or None when the bundle lacks the graphs."""
    from runtime.modes import MODES

    spec = MODES.get("heatmap")
    if spec is None or not all(pipe.bundle.has(g) for g in spec.graphs):
        return None
    res = pipe.segment([frame], wav, rate, mode="heatmap")
    return res.scores[0] if res.scores and np.ndim(res.scores[0]) == 2 else None


def _label(res, mode: str, j: int, t: float) -> str:
    tag = "  RANDOM WEIGHTS" if res.random_weights else ""
    return f"{mode}  #{j}  t={t:.2f}s{tag}"


def segment_video_to_folder(
    pipe,
    video: str | Path,
    out: str | Path,
    *,
    mode: str | None = None,
    sampling: str = "avsbench",
    fps: float | None = None,
    start: float = 0.0,
    duration: float | None = None,
    audio=None,
    sample_rate: int | None = None,
    overwrite: bool = False,
    overlay: bool = True,
    masks: bool = True,
    jsonl: bool = True,
    figure_png: bool = True,
    figure_sample: int | None = None,
    window_seconds: float = 4.0,
    max_window_frames: int = 32,
    progress: Callable[[int, int], Any] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Segment a video and write the outputs (module docstring) into ``out``, window by window.

    Everything is checked before inference (mode, parameters names, the video, the sampling, the
    output folder). ``figure_sample``: which sample the figure shows (default: the middle one).
    ``progress(done, total)``: after each window. Returns a summary dict (paths, counts, seconds).
    """
    t_start = time.perf_counter()
    mode = check_mode(pipe, mode, params)
    info: VideoInfo = probe(video)
    plan: FramePlan = plan_frames(info, sampling=sampling, fps=fps, start=start, duration=duration)
    if audio is None and not info.has_audio:
        raise InputError(
            f"{video} has no audio track; pass the audio separately (audio= a WAV path, or "
            "an array with sample_rate=; CLI: --audio file.wav)"
        )
    total = len(plan)
    fig_j = total // 2 if figure_sample is None else int(figure_sample)
    if not 0 <= fig_j < total:
        raise InputError(f"figure_sample must be in [0, {total}), got {figure_sample}")
    out = prepare_output_dir(out, overwrite=overwrite)
    paths = {
        "overlay": out / OVERLAY,
        "masks": out / MASKS,
        "jsonl": out / JSONL,
        "figure": out / FIGURE,
    }
    mask_tmp, jsonl_tmp = _part(paths["masks"]), _part(paths["jsonl"])
    video_tmp = out / ".overlay-video-only.mp4.part"
    overlay_tmp = _part(paths["overlay"])
    temps = [mask_tmp, jsonl_tmp, video_tmp, overlay_tmp]
    writer = None
    jf = None
    fig_data = None
    written: dict[str, str] = {}
    sums: dict[str, float] = {}
    random_weights = bool(pipe.bundle.random_weights)
    try:
        if masks:
            mask_tmp.mkdir()
        if jsonl:
            jf = open_exclusive(jsonl_tmp, "w")  # closed in finally
        if overlay:
            writer = VideoWriter(video_tmp, plan.out_fps, format="mp4")
        header_done = False
        for win, res in iter_segment_video(
            pipe,
            video,
            mode=mode,
            info=info,
            plan=plan,
            audio=audio,
            sample_rate=sample_rate,
            window_seconds=window_seconds,
            max_window_frames=max_window_frames,
            progress=progress,
            **params,
        ):
            info_d = res.info()
            if jf is not None and not header_done:
                jf.write(
                    json.dumps(
                        {
                            "type": "video",
                            "file": str(video),
                            "width": info.width,
                            "height": info.height,
                            "fps": float(info.fps),
                            "num_frames": info.num_frames,
                            "sampling": plan.sampling,
                            "sample_fps": float(plan.out_fps),
                            "samples": total,
                            "mode": res.mode,
                            "preset": res.preset,
                            "params": jsonable(params),
                            "random_weights": bool(res.random_weights),
                            "providers": res.providers,
                            "precision": info_d["precision"],
                            "rle": "COCO, column-major, counts as the pycocotools compact string",
                        }
                    )
                    + "\n"
                )
                header_done = True
            for i, j in enumerate(win.positions):
                frame, mask, prompt = win.frames[i], res.masks[i], res.prompts[i]
                score = res.scores[i] if i < len(res.scores) else None
                smap = score if score is not None and score.ndim == 2 else None
                if writer is not None:
                    writer.write(
                        render_overlay(
                            frame,
                            mask,
                            prompt,
                            score_map=smap,
                            label=_label(res, res.mode, j, win.times[i]),
                        )
                    )
                if masks:
                    full = nearest_exact(mask, frame.shape[:2])
                    save_png_atomic(mask_tmp / f"{j:06d}.png", full.astype(np.uint8) * 255)
                if jf is not None:
                    rec = {
                        "type": "frame",
                        "sample": j,
                        "video_frame": win.indices[i],
                        "time": win.times[i],
                        **info_d["frames"][i],
                        "rle": rle.encode(mask),
                    }
                    jf.write(json.dumps(rec) + "\n")
                if figure_png and j == fig_j:
                    fig_data = (
                        frame,
                        mask,
                        dict(prompt),
                        smap,
                        win.audio[i * win.sample_rate : (i + 1) * win.sample_rate],
                        win.sample_rate,
                        res.random_weights,
                        res.mode,
                        win.times[i],
                    )
            for k, v in res.timings.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if jf is not None:
                jf.write(
                    json.dumps(
                        {
                            "type": "window",
                            "samples": [win.positions[0], win.positions[-1]],
                            "timings_ms": jsonable(res.timings),
                        }
                    )
                    + "\n"
                )
        seconds = time.perf_counter() - t_start
        if jf is not None:
            jf.write(
                json.dumps(
                    {
                        "type": "summary",
                        "samples": total,
                        "seconds": seconds,
                        "timings_ms": jsonable(sums),
                    }
                )
                + "\n"
            )
            jf.close()
            jf = None
            os.replace(jsonl_tmp, paths["jsonl"])
            written["jsonl"] = str(paths["jsonl"])
        if masks:
            os.replace(mask_tmp, paths["masks"])
            written["masks"] = str(paths["masks"])
        if writer is not None:
            writer.close()
            writer = None
            if plan.sampling == "avsbench":
                t0 = plan.start
            else:
                t0 = plan.times[0]
            t1 = t0 + total / float(plan.out_fps)
            if audio is None:
                with _open(video) as c:
                    vs = c.streams.video[0]
                    origin = (
                        float(vs.start_time * vs.time_base) if vs.start_time is not None else 0.0
                    )
                track = _source_audio(video, t0, t1, origin)
            else:
                from runtime.media.video import _external_audio

                src = _external_audio(audio, sample_rate)
                track = _array_audio(src.x, src.rate, t0, t1)
            _mux_audio(video_tmp, overlay_tmp, track)
            os.replace(overlay_tmp, paths["overlay"])
            video_tmp.unlink()
            written["overlay"] = str(paths["overlay"])
        if fig_data is not None:
            frame, mask, prompt, smap, wav, rate, rnd, mname, t = fig_data
            heat = smap
            if heat is None and mname != "heatmap":
                heat = _heatmap_of(pipe, frame, wav, rate)
            title = f"{Path(str(video)).name}  sample {fig_j} (t = {t:.2f} s)  mode {mname}" + (
                "  -- RANDOM WEIGHTS: the mask and heatmap mean nothing" if rnd else ""
            )
            save_png_atomic(paths["figure"], figure(frame, mask, prompt, heatmap=heat, title=title))
            written["figure"] = str(paths["figure"])
    finally:
        if jf is not None:
            jf.close()
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already failing; the temporary file is removed below
                pass
        for p in temps:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
    return {
        "out": str(out),
        "files": written,
        "samples": total,
        "seconds": time.perf_counter() - t_start,
        "mode": mode,
        "sampling": plan.sampling,
        "video": info.describe(),
        "random_weights": random_weights,
    }
