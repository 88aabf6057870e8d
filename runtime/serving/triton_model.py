"""The Triton python-backend model ``avs``: ``runtime.load`` at start-up, ``Pipeline.segment`` per request.

Triton's python-backend stub imports this module (through the two-line ``model.py`` that the repository
writers put in ``avs/1/``) and calls :class:`TritonPythonModel`. The request handling itself,
:func:`decode_request` and :func:`run_request`, is plain numpy and is tested without a server.

Every :class:`~runtime.errors.AVSError` (bad input, ...) becomes an error response that carries its
message; any other exception becomes an error response too ("internal error: ..."), so nothing a client
sends ends the model's process. The wire contract is :mod:`runtime.serving.wire`.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import AVSError, InputError
from runtime.serving import wire


def _nbytes(a: np.ndarray) -> int:
    if a.dtype == object:
        return int(sum(len(x) if isinstance(x, bytes | str) else 0 for x in a.ravel()))
    return int(a.nbytes)


def _one_bytes(a: np.ndarray, name: str) -> bytes:
    """The single element of a BYTES [1] input as bytes."""
    flat = np.asarray(a).ravel()
    if flat.size != 1:
        raise InputError(f"{name}: expected BYTES [1] (one element), got {flat.size} elements")
    v = flat[0]
    if isinstance(v, str):
        v = v.encode()
    if not isinstance(v, bytes):
        raise InputError(f"{name}: expected BYTES, got {type(v).__name__}")
    return v


def _decode_images(a: np.ndarray) -> np.ndarray:
    """``frames_encoded`` BYTES [N] (PNG/JPEG) -> uint8 [N, H, W, 3]; all frames must share one size."""
    from PIL import Image

    from runtime.image import MAX_PIXELS, MAX_SIDE, load_frame

    items = np.asarray(a, dtype=object).ravel()
    if items.size == 0:
        raise InputError(
            "frames_encoded: expected at least 1 frame (BYTES [N] of PNG/JPEG files), got 0"
        )
    if items.size > wire.MAX_FRAMES:
        raise InputError(
            f"frames_encoded: {items.size} frames is over the limit of {wire.MAX_FRAMES} per request"
        )
    out = []
    for i, raw in enumerate(items):
        name = f"frames_encoded[{i}]"
        if not isinstance(raw, bytes) or not raw:
            raise InputError(
                f"{name}: expected the bytes of a PNG or JPEG file, got an empty element"
            )
        try:
            with Image.open(io.BytesIO(raw)) as img:
                if img.format not in ("PNG", "JPEG"):
                    raise InputError(f"{name}: expected a PNG or JPEG file, got {img.format}")
                w, h = img.size
                if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
                    raise InputError(
                        f"{name}: image of {h}x{w} px is over the limit of {MAX_SIDE} px per side "
                        f"and {MAX_PIXELS // 1_000_000} MP"
                    )
                arr = np.asarray(img.convert("RGB"))
        except InputError:
            raise
        except Exception as e:  # PIL raises many kinds for damaged files
            raise InputError(f"{name}: expected a PNG or JPEG file, cannot decode it ({e})") from e
        out.append(load_frame(arr, name=name))
    if len({f.shape for f in out}) != 1:
        raise InputError(
            "frames_encoded: all frames of a request must have one size (masks come back as "
            f"BOOL [N, H, W]); got sizes {sorted({f.shape[:2] for f in out})}"
        )
    return np.stack(out)


def decode_request(inputs: dict[str, np.ndarray], *, max_request_bytes: int) -> dict[str, Any]:
    """Check one request's inputs and turn them into ``segment`` arguments.

    ``inputs``: wire input name -> numpy array as the server delivers it (BYTES as object arrays of
    ``bytes``). Returns ``{"frames": uint8 [N, H, W, 3], "audio": float32 [T] or WAV bytes,
    "sample_rate": int or None, "mode": str or None, "params": dict}``. Raises
    :class:`~runtime.errors.InputError` naming the input and what was expected.
    """
    unknown = sorted(set(inputs) - set(wire.INPUT_NAMES))
    if unknown:
        raise InputError(f"unknown inputs {unknown}; the model takes {list(wire.INPUT_NAMES)}")
    total = sum(_nbytes(np.asarray(v)) for v in inputs.values())
    if total > max_request_bytes:
        raise InputError(
            f"request of {total / 2**20:.1f} MiB is over the limit of "
            f"{max_request_bytes / 2**20:.0f} MiB per request (server flag --max-request-mb)"
        )

    # frames
    has_raw, has_enc = "frames" in inputs, "frames_encoded" in inputs
    if has_raw == has_enc:
        raise InputError(
            "send exactly one of `frames` (UINT8 [N, H, W, 3]) and `frames_encoded` "
            f"(BYTES [N], PNG/JPEG); got {'both' if has_raw else 'neither'}"
        )
    if has_raw:
        f = np.asarray(inputs["frames"])
        if f.dtype != np.uint8:
            raise InputError(f"frames: expected UINT8 [N, H, W, 3] (0..255), got dtype {f.dtype}")
        if f.ndim != 4 or f.shape[3] != 3:
            raise InputError(f"frames: expected UINT8 [N, H, W, 3], got shape {list(f.shape)}")
        if f.shape[0] == 0:
            raise InputError("frames: expected at least 1 frame in UINT8 [N, H, W, 3], got N = 0")
        if f.shape[0] > wire.MAX_FRAMES:
            raise InputError(
                f"frames: {f.shape[0]} frames is over the limit of {wire.MAX_FRAMES} per request"
            )
        frames = f
    else:
        frames = _decode_images(inputs["frames_encoded"])

    # audio
    has_raw, has_enc = "audio" in inputs, "audio_encoded" in inputs
    if has_raw == has_enc:
        raise InputError(
            "send exactly one of `audio` (FP32 [T] with `sample_rate` INT32 [1]) and "
            f"`audio_encoded` (BYTES [1], a WAV file); got {'both' if has_raw else 'neither'}"
        )
    if has_raw:
        audio = np.asarray(inputs["audio"])
        if audio.dtype != np.float32 or audio.ndim != 1:
            raise InputError(
                f"audio: expected FP32 [T] (mono, in [-1, 1]), got {audio.dtype} {list(audio.shape)}"
            )
        if "sample_rate" not in inputs:
            raise InputError("sample_rate: expected INT32 [1] (Hz) with raw `audio`; it is missing")
        sr = np.asarray(inputs["sample_rate"]).ravel()
        if sr.size != 1 or not np.issubdtype(sr.dtype, np.integer):
            raise InputError(
                f"sample_rate: expected INT32 [1] (Hz), got {sr.dtype} with {sr.size} elements"
            )
        sample_rate: int | None = int(sr[0])
    else:
        if "sample_rate" in inputs:
            raise InputError(
                "sample_rate: leave it out with `audio_encoded` (the WAV header holds the rate)"
            )
        audio = _one_bytes(inputs["audio_encoded"], "audio_encoded")
        if len(audio) < 12 or audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
            raise InputError(
                "audio_encoded: expected a RIFF/WAVE file (BYTES [1]); these bytes are not one"
            )
        sample_rate = None

    mode = None
    if "mode" in inputs:
        try:
            mode = _one_bytes(inputs["mode"], "mode").decode("utf-8").strip() or None
        except UnicodeDecodeError as e:
            raise InputError(
                f"mode: expected a UTF-8 mode name, got undecodable bytes ({e})"
            ) from e
    params: dict[str, Any] = {}
    if "params" in inputs:
        raw = _one_bytes(inputs["params"], "params")
        try:
            params = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(
                f'params: expected a JSON object of mode parameters (e.g. {{"threshold": 0.5}}), '
                f"got text that is not JSON ({e})"
            ) from e
        if not isinstance(params, dict):
            raise InputError(
                f"params: expected a JSON object of mode parameters, got a JSON {type(params).__name__}"
            )
    return {
        "frames": frames,
        "audio": audio,
        "sample_rate": sample_rate,
        "mode": mode,
        "params": params,
    }


def run_request(
    pipe, inputs: dict[str, np.ndarray], *, max_request_bytes: int
) -> dict[str, np.ndarray]:
    """Decode a request, run ``pipe.segment`` and return the wire outputs.

    Returns ``{"masks": bool [N, H, W], "info": object [1] holding UTF-8 JSON bytes}``. Raises
    :class:`~runtime.errors.AVSError` for anything wrong with the request.
    """
    req = decode_request(inputs, max_request_bytes=max_request_bytes)
    audio = req["audio"]
    if isinstance(audio, bytes):
        with tempfile.TemporaryDirectory(prefix="avs-wav-") as tmp:
            path = Path(tmp) / "audio.wav"
            path.write_bytes(audio)
            try:
                res = pipe.segment(list(req["frames"]), path, mode=req["mode"], **req["params"])
            except AVSError as e:  # name the wire input, not the temporary file
                raise type(e)(str(e).replace(str(path), "audio_encoded")) from None
    else:
        res = pipe.segment(
            list(req["frames"]), audio, req["sample_rate"], mode=req["mode"], **req["params"]
        )
    masks = np.stack([np.asarray(m, dtype=bool) for m in res.masks])
    info = json.dumps(res.info(), allow_nan=False).encode("utf-8")
    return {"masks": masks, "info": np.array([info], dtype=object)}


class TritonPythonModel:
    """Triton python-backend entry points (``initialize``, ``execute``, ``finalize``).

    Model config ``parameters``: ``bundle`` (path; relative = relative to the model's version folder),
    ``preset`` (optional), ``threads`` (onnxruntime intra-op threads, 0 = default / ``AVS_THREADS``),
    ``max_request_bytes``, ``warmup`` ("1" = create every session at start-up), ``graph_models``
    ("1" = the composed pipeline: graphs run in their own models, :mod:`runtime.serving.composed`;
    ``graph_provider`` names what they run on).
    """

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # only inside Triton's stub

        import runtime

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        p = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        bundle = Path(p.get("bundle", "bundle"))
        if not bundle.is_absolute():
            bundle = version_dir / bundle
        self.max_request_bytes = int(
            p.get("max_request_bytes") or wire.DEFAULT_MAX_REQUEST_MB * 2**20
        )
        threads = int(p.get("threads") or 0) or None
        providers = [s for s in p.get("providers", "").split(",") if s] or None
        opts = {"preset": p.get("preset") or None, "threads": threads, "providers": providers}
        if p.get("graph_models") == "1":  # composed: every graph call is a BLS call to its model
            from runtime.bundle import Bundle
            from runtime.pipeline import Pipeline
            from runtime.serving.composed import bls_graph_runner

            b = Bundle.open(bundle, verify=True)
            provider = p.get("graph_provider") or "CPUExecutionProvider"
            self.pipe = Pipeline(
                b, graph_runner=bls_graph_runner(b, pb_utils, provider=provider), **opts
            )
        else:
            self.pipe = runtime.load(bundle, **opts)
        if p.get("warmup", "1") == "1":
            used = self.pipe.warmup()
        else:
            used = {}
        print(
            f"[avs] instance {args.get('model_instance_name')} loaded bundle {bundle} "
            f"(random weights: {self.pipe.bundle.random_weights}); providers {used}; pid {os.getpid()}",
            file=sys.stderr,
            flush=True,
        )

    def execute(self, requests: list) -> list:
        """One response per request, in order; errors become error responses."""
        pb = self._pb
        responses = []
        for request in requests:
            try:
                inputs = {}
                for name in wire.INPUT_NAMES:
                    t = pb.get_input_tensor_by_name(request, name)
                    if t is not None:
                        inputs[name] = t.as_numpy()
                out = run_request(self.pipe, inputs, max_request_bytes=self.max_request_bytes)
                responses.append(
                    pb.InferenceResponse(output_tensors=[pb.Tensor(k, v) for k, v in out.items()])
                )
            except AVSError as e:
                responses.append(
                    pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(e)))
                )
            except Exception as e:  # never let a request end the model
                traceback.print_exc(file=sys.stderr)
                responses.append(
                    pb.InferenceResponse(
                        output_tensors=[],
                        error=pb.TritonError(f"internal error: {type(e).__name__}: {e}"),
                    )
                )
        return responses

    def finalize(self) -> None:
        self.pipe = None
