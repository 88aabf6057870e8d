"""The work one request may ask for (:class:`Budget`) and its deadline, checked before any work starts.

Both the served model (``runtime.serving.triton_model``) and the in-process API
(``Pipeline.segment``) check a request against the same :class:`Budget`, from headers and shapes only
(image file headers, WAV headers, array shapes, parameter values), before any frame is decoded or any
graph runs. A refusal is an :class:`~runtime.errors.InputError` naming the bound, its value and the
flag or argument that raises it. The defaults (:data:`DEFAULT_BUDGET`) keep one request of the
default server under about 2 GiB of memory and a few minutes of CPU; raise them deliberately with
``runtime.load(..., budget=Budget(...))`` or the ``avs serve`` flags.

Deadline: :func:`deadline` sets one for the code it wraps (a context variable, so threads and
requests do not share it); :func:`checkpoint` raises :class:`DeadlineExceeded` once it has passed.
The runtime calls :func:`checkpoint` between decoder batches (every graph call of
``Pipeline.run``, every SAM encoder batch and prompt-decoder chunk, every AMG point batch) and so
between frames: an over-deadline request stops within one batch and the instance serves the next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.errors import AVSError, InputError

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_DEADLINE_S",
    "Budget",
    "DeadlineExceeded",
    "checkpoint",
    "deadline",
    "parse_params_json",
]

# The served default per request (``avs serve --deadline-s``); the in-process default is no deadline.
DEFAULT_DEADLINE_S = 120.0


class DeadlineExceeded(AVSError, TimeoutError):
    """A request ran past its deadline; its work was cancelled between two batches."""


@dataclass(frozen=True)
class Budget:
    """Bounds on the work of one ``segment`` request (all checked before decoding or inference).

    ``max_frames``: frames per request. ``max_total_pixels``: sum of H x W over the request's frames
    (from headers or shapes). ``max_decoded_mb``: MiB the decoded frames may take at the depth their
    files decode to (e.g. 16-bit RGBA = 8 bytes per pixel) and as uint8 RGB after conversion, the
    larger of the two. ``max_audio_seconds``: length of the audio (samples / rate, from the WAV header
    for files). ``max_points_per_side``, ``max_crop_n_layers``, ``max_points_per_batch``: bounds of
    the automatic mask generator's ``amg`` parameters (modes ``no-prompt``, ``random-sam``);
    ``max_amg_points``: prompted grid points per frame over all crops (points_per_side^2 on the
    image plus, per crop layer i, 4^i crops of (points_per_side / downscale^i)^2).
    ``max_dense_points``: ``max_points`` of ``point-dense``. ``max_box_labels``: ``k`` of ``box``.
    ``max_params_bytes`` / ``max_params_depth``: size and nesting of the ``params`` JSON.
    ``deadline_s``: seconds a request may run (None: no deadline, the in-process default).
    """

    max_frames: int = 64
    max_total_pixels: int = 160_000_000  # 64 frames of 1920 x 1080 (132.7 MP) fit
    max_decoded_mb: float = 1024.0
    max_audio_seconds: float = 600.0
    max_points_per_side: int = 64
    max_crop_n_layers: int = 2
    max_points_per_batch: int = 256
    max_amg_points: int = 8192
    max_dense_points: int = 4096
    max_box_labels: int = 32
    max_params_bytes: int = 65536
    max_params_depth: int = 8
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "deadline_s" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise InputError(f"Budget.{f.name} must be a positive number, got {v!r}")
            if f.type == "int" and int(v) != v:
                raise InputError(f"Budget.{f.name} must be a positive int, got {v!r}")
            if not math.isfinite(float(v)):
                raise InputError(f"Budget.{f.name} must be finite, got {v!r}")

    def replace(self, **changes: Any) -> Budget:
        """A copy with some bounds changed (e.g. ``DEFAULT_BUDGET.replace(max_frames=128)``)."""
        return dataclasses.replace(self, **changes)

    # --- frames --------------------------------------------------------------------------------
    def check_frames(
        self, sizes: Sequence[tuple[int, int]], bytes_per_pixel: Sequence[int] | None = None
    ) -> None:
        """Refuse frames whose count, total pixels or decoded bytes are over the budget.

        sizes: (H, W) of every frame (from image headers or array shapes, before decoding);
        bytes_per_pixel: per frame, bytes per pixel of its decoded form (default 3, uint8 RGB).
        """
        n = len(sizes)
        if n > self.max_frames:
            raise InputError(
                f"{n} frames is over the budget of {self.max_frames} frames per request "
                "(server flag --max-frames; in-process Budget.max_frames)"
            )
        pixels = sum(int(h) * int(w) for h, w in sizes)
        if pixels > self.max_total_pixels:
            raise InputError(
                f"the request's frames hold {pixels / 1e6:.1f} MP in all, over the budget of "
                f"{self.max_total_pixels / 1e6:.1f} MP per request (server flag --max-total-mp; "
                "in-process Budget.max_total_pixels); send fewer or smaller frames"
            )
        bpp = [3] * n if bytes_per_pixel is None else [max(3, int(b)) for b in bytes_per_pixel]
        decoded = sum(int(h) * int(w) * b for (h, w), b in zip(sizes, bpp, strict=True))
        if decoded > self.max_decoded_mb * 2**20:
            raise InputError(
                f"the request's frames decode to {decoded / 2**20:.0f} MiB, over the budget of "
                f"{self.max_decoded_mb:.0f} MiB per request (server flag --max-decoded-mb; "
                "in-process Budget.max_decoded_mb)"
            )

    def check_frame_inputs(self, frames: Any) -> None:
        """:meth:`check_frames` for ``segment``'s ``frames`` (arrays by shape, paths by header).

        Anything that is not an array or a path is left to the frame loader to refuse.
        """
        from pathlib import Path

        from runtime.preprocess import imagefile

        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            n, h, w = frames.shape[:3]
            if n > self.max_frames:
                self.check_frames([(h, w)] * n)
            bpp = frames.dtype.itemsize * max(1, int(frames.shape[3]))
            self.check_frames([(h, w)] * n, [bpp] * n)
            return
        if isinstance(frames, str | Path | np.ndarray) or not hasattr(frames, "__len__"):
            return
        if len(frames) > self.max_frames:
            self.check_frames([(1, 1)] * len(frames))
        sizes, bpp = [], []
        for i, f in enumerate(frames):
            if isinstance(f, np.ndarray) and f.ndim >= 2:
                sizes.append((int(f.shape[0]), int(f.shape[1])))
                bpp.append(f.dtype.itemsize * (int(f.shape[2]) if f.ndim == 3 else 1))
            elif isinstance(f, str | Path) and Path(f).is_file():
                h, w, b = imagefile.probe(f, name=f"frame {i} ({f})")
                sizes.append((h, w))
                bpp.append(b)
        self.check_frames(sizes, bpp)

    # --- audio ---------------------------------------------------------------------------------
    def check_audio_seconds(self, seconds: float, what: str = "audio") -> None:
        """Refuse audio longer than ``max_audio_seconds`` (seconds = samples / rate)."""
        if seconds > self.max_audio_seconds:
            raise InputError(
                f"{what}: {seconds:.1f} s of audio is over the budget of "
                f"{self.max_audio_seconds:g} s per request (server flag --max-audio-s; "
                "in-process Budget.max_audio_seconds)"
            )

    def check_audio(self, audio: Any, sample_rate: int | None) -> None:
        """Audio length from a float array's shape and ``sample_rate``, or a WAV file's header
        (path or bytes); anything else is left to the audio loader to refuse."""
        from pathlib import Path

        from runtime.preprocess.audio import _wav_header

        if isinstance(audio, bytes | bytearray):
            f, size, what = io.BytesIO(audio), len(audio), "audio_encoded"
        elif isinstance(audio, str | Path):
            p = Path(audio)
            if not p.is_file():
                return
            with open(p, "rb") as fh:
                self._check_wav(fh, p, p.stat().st_size, str(p), _wav_header)
            return
        else:
            a = np.asarray(audio) if not isinstance(audio, np.ndarray) else audio
            n = int(a.shape[-1]) if a.ndim >= 1 else 0
            if sample_rate is not None and isinstance(sample_rate, int | np.integer):
                if int(sample_rate) > 0:
                    self.check_audio_seconds(n / int(sample_rate))
            return
        self._check_wav(f, Path(what), size, what, _wav_header)

    def _check_wav(self, f, p, size: int, what: str, header) -> None:
        try:
            tag, channels, rate, block, bits, _, nbytes = header(f, p, size)
        except InputError:
            return  # the loader refuses it with its own message
        if rate > 0 and block > 0:
            self.check_audio_seconds(nbytes / block / rate, what)

    # --- parameters ----------------------------------------------------------------------------
    def check_params(self, mode: str, values: Mapping[str, Any]) -> None:
        """Refuse work-determining mode parameters over the budget (``values``: checked params)."""
        amg = values.get("amg")
        if amg:
            self.check_amg(amg)
        mp = values.get("max_points")
        if mode == "point-dense" and mp is not None and mp > self.max_dense_points:
            raise InputError(
                f"mode 'point-dense': max_points = {mp} is over the budget of "
                f"{self.max_dense_points} (server flag --max-dense-points)"
            )
        k = values.get("k")
        if mode == "box" and k is not None and k > self.max_box_labels:
            raise InputError(
                f"mode 'box': k = {k} labels is over the budget of {self.max_box_labels} "
                "(server flag --max-box-labels)"
            )

    def check_amg(self, amg: Mapping[str, Any]) -> None:
        """Refuse automatic-mask-generator overrides whose work is over the budget."""

        def num(name: str, default: int) -> int:
            v = amg.get(name, default)
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                if isinstance(v, float) and math.isfinite(v) and v == int(v):
                    return int(v)
                raise InputError(f"amg.{name} must be a positive int, got {v!r}")
            return int(v)

        pps = num("points_per_side", 32)
        layers = num("crop_n_layers", 0)
        batch = num("points_per_batch", 64)
        down = num("crop_n_points_downscale_factor", 1)
        for name, v, cap, flag in (
            ("points_per_side", pps, self.max_points_per_side, "--max-points-per-side"),
            ("crop_n_layers", layers, self.max_crop_n_layers, "--max-crop-layers"),
            ("points_per_batch", batch, self.max_points_per_batch, "--max-points-per-batch"),
        ):
            if v > cap:
                raise InputError(
                    f"amg.{name} = {v} is over the budget of {cap} (server flag {flag})"
                )
        if pps < 1 or down < 1 or layers < 0:
            return  # AmgConfig refuses them with its own message
        total = pps * pps
        for i in range(1, layers + 1):
            total += 4**i * int(pps / down**i) ** 2
        if total > self.max_amg_points:
            raise InputError(
                f"amg: points_per_side = {pps}, crop_n_layers = {layers}, "
                f"crop_n_points_downscale_factor = {down} prompt {total} grid points per frame, "
                f"over the budget of {self.max_amg_points} (server flag --max-amg-points)"
            )


DEFAULT_BUDGET = Budget()


# --- params JSON ---------------------------------------------------------------------------------


def _depth(x: Any, limit: int) -> int:
    """Nesting depth of a JSON value (stops counting past ``limit``)."""
    best, todo = 0, [(x, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, dict | list):
            best = max(best, d)
            if best > limit:
                return best
            todo.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return best


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_params_json(raw: bytes, budget: Budget = DEFAULT_BUDGET) -> dict[str, Any]:
    """``params`` bytes (a UTF-8 JSON object) -> dict; InputError for anything else.

    Refused: more than ``max_params_bytes``; nesting deeper than ``max_params_depth``; NaN and
    Infinity (not JSON); text that is not UTF-8 JSON; a JSON value that is not an object.
    """
    if len(raw) > budget.max_params_bytes:
        raise InputError(
            f"params: {len(raw)} bytes of JSON is over the budget of {budget.max_params_bytes} "
            "bytes (server flag --max-params-bytes)"
        )
    if not raw.strip():
        return {}
    # a cheap bound on nesting before the parser recurses: count the brackets
    opened = max(raw.count(b"["), raw.count(b"{"))
    try:
        text = raw.decode("utf-8")
        if opened > budget.max_params_depth:
            # only parse what cannot blow Python's recursion limit (max_params_bytes is small)
            depth = 0
            in_str = esc = False
            for ch in text:
                if in_str:
                    if esc:
                        esc = False
                    elif ch == "\\":
                        esc = True
                    elif ch == '"':
                        in_str = False
                elif ch == '"':
                    in_str = True
                elif ch in "[{":
                    depth += 1
                    if depth > budget.max_params_depth:
                        raise InputError(
                            f"params: JSON nested deeper than {budget.max_params_depth} levels "
                            "(mode parameters are at most a few levels deep)"
                        )
                elif ch in "]}":
                    depth -= 1
        params = json.loads(text, parse_constant=_no_constant)
    except InputError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(
            f'params: expected a JSON object of mode parameters (e.g. {{"threshold": 0.5}}), '
            f"got text that is not JSON ({str(e)[:200]})"
        ) from None
    if not isinstance(params, dict):
        raise InputError(
            f"params: expected a JSON object of mode parameters, got a JSON {type(params).__name__}"
        )
    if _depth(params, budget.max_params_depth) > budget.max_params_depth:
        raise InputError(f"params: JSON nested deeper than {budget.max_params_depth} levels")
    return params


# --- deadline ------------------------------------------------------------------------------------

_clock = time.monotonic  # the deadline's clock (a test may replace it)
_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("avs_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Run the wrapped code under a deadline of ``seconds`` from now (None: none).

    A deadline already set by an outer block stays in force if it is earlier.
    """
    if seconds is None:
        yield
        return
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise InputError(f"deadline must be a positive number of seconds, got {seconds!r}")
    end = _clock() + float(seconds)
    outer = _DEADLINE.get()
    if outer is not None and outer[0] <= end:
        yield
        return
    token = _DEADLINE.set((end, float(seconds)))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def checkpoint(where: str = "") -> None:
    """Raise :class:`DeadlineExceeded` when the current deadline (if any) has passed."""
    d = _DEADLINE.get()
    if d is not None and _clock() > d[0]:
        at = f" (stopped before {where})" if where else ""
        raise DeadlineExceeded(
            f"the request ran past its deadline of {d[1]:g} s and was cancelled{at}; send less "
            "work (fewer frames, a smaller AMG grid) or raise the deadline (server flag "
            "--deadline-s; in-process Budget.deadline_s)"
        )
