"""The Triton python-backend model ``avs``: ``runtime.load`` at start-up, ``Pipeline.segment`` per request.

Triton's python-backend stub imports this module (through the two-line ``model.py`` that the repository
writers put in ``avs/1/``) and calls :class:`TritonPythonModel`. The request handling itself,
:func:`decode_request` and :func:`run_request`, is plain numpy and is tested without a server.

Every :class:`~runtime.errors.AVSError` (bad input, ...) becomes an error response that carries its
message; any other exception becomes an error response too ("internal error: ..."), so nothing a client
sends ends the model's process. The wire contract is :mod:`runtime.serving.wire`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtime.budget import DEFAULT_BUDGET, Budget, checkpoint, deadline, parse_params_json
from runtime.errors import AVSError, InputError
from runtime.preprocess import imagefile
from runtime.preprocess.image import MIN_SIDE
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


# ``segment``'s own arguments: a ``params`` key of one of these names is refused, never passed twice
RESERVED_PARAMS = ("frames", "audio", "sample_rate", "mode")


def _probe_images(items: np.ndarray, budget: Budget) -> list[tuple[int, int, int]]:
    """Headers of ``frames_encoded`` BYTES [N] -> [(H, W, bytes per pixel)], checked against the
    per-frame limit and ``budget`` before anything is decoded."""
    from runtime.preprocess.image import MAX_PIXELS, MAX_SIDE

    if items.size == 0:
        raise InputError(
            "frames_encoded: expected at least 1 frame (BYTES [N] of PNG/JPEG files), got 0"
        )
    budget.check_frames([(1, 1)] * items.size)  # the count first: no header is read past it
    heads = []
    for i, raw in enumerate(items):
        name = f"frames_encoded[{i}]"
        if not isinstance(raw, bytes) or not raw:
            raise InputError(
                f"{name}: expected the bytes of a PNG or JPEG file, got an empty element"
            )
        h, w, bpp = imagefile.probe(raw, name=name, formats=imagefile.WIRE_FORMATS)
        if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
            raise InputError(
                f"{name}: image of {h}x{w} px is over the limit of {MAX_SIDE} px per side "
                f"and {MAX_PIXELS // 1_000_000} MP"
            )
        heads.append((h, w, bpp))
    budget.check_frames([(h, w) for h, w, _ in heads], [b for _, _, b in heads])
    return heads


def _decode_images(items: np.ndarray) -> np.ndarray:
    """``frames_encoded`` BYTES [N] (PNG/JPEG/MPO) -> uint8 [N, H, W, 3] with the runtime's one decoder
    (:mod:`runtime.preprocess.imagefile`, as image paths in-process); all frames must share one size. Frames
    are decoded one at a time into one preallocated array (no second copy)."""
    out: np.ndarray | None = None
    for i, raw in enumerate(items):
        checkpoint("decoding frames_encoded")
        name = f"frames_encoded[{i}]"
        f = imagefile.decode(raw, name=name, formats=imagefile.WIRE_FORMATS)
        if min(f.shape[:2]) < MIN_SIDE:
            raise InputError(
                f"{name}: frame of {f.shape[0]}x{f.shape[1]} px is too small (each side must be >= {MIN_SIDE} px)"
            )
        if out is None:
            out = np.empty((items.size, *f.shape), dtype=np.uint8)
        elif f.shape != out.shape[1:]:
            raise InputError(
                "frames_encoded: all frames of a request must have one size (masks come back as "
                f"BOOL [N, H, W]); frame 0 is {out.shape[1]}x{out.shape[2]}, {name} is "
                f"{f.shape[0]}x{f.shape[1]} (after EXIF orientation)"
            )
        out[i] = f
    assert out is not None
    return out


def decode_request(
    inputs: dict[str, np.ndarray],
    *,
    max_request_bytes: int,
    budget: Budget = DEFAULT_BUDGET,
    check_mode: Callable[[str | None, dict[str, Any]], tuple[Any, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Check one request's inputs and turn them into ``segment`` arguments.

    ``inputs``: wire input name -> numpy array as the server delivers it (BYTES as object arrays of
    ``bytes``). Order of the checks: names and total bytes; ``mode`` and ``params`` (JSON size, depth,
    NaN, reserved names; ``check_mode(mode, params)``, e.g. ``Pipeline.check_mode``, then the
    ``budget``'s bounds on the parameters); frame count, sizes and decoded bytes from shapes or file
    headers; audio length from its shape or WAV header; only then are frames decoded.
    Returns ``{"frames": uint8 [N, H, W, 3], "audio": float32 [T] or WAV bytes,
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

    # mode and params, before any frame is looked at
    mode = None
    if "mode" in inputs:
        try:
            mode = _one_bytes(inputs["mode"], "mode").decode("utf-8").strip() or None
        except UnicodeDecodeError as e:
            raise InputError(
                f"mode: expected a UTF-8 mode name, got undecodable bytes ({e})"
            ) from None
    params: dict[str, Any] = {}
    if "params" in inputs:
        params = parse_params_json(_one_bytes(inputs["params"], "params"), budget)
        clash = sorted(set(params) & set(RESERVED_PARAMS))
        if clash:
            raise InputError(
                f"params: {clash} are request inputs, not mode parameters; send them as the "
                "inputs of the same name"
            )
    if check_mode is not None:
        spec, values = check_mode(mode, params)
        budget.check_params(spec.name, values)

    # frames: count, sizes and bytes from shapes / headers
    has_raw, has_enc = "frames" in inputs, "frames_encoded" in inputs
    if has_raw == has_enc:
        raise InputError(
            "send exactly one of `frames` (UINT8 [N, H, W, 3]) and `frames_encoded` "
            f"(BYTES [N], PNG/JPEG); got {'both' if has_raw else 'neither'}"
        )
    enc_items = None
    if has_raw:
        f = np.asarray(inputs["frames"])
        if f.dtype != np.uint8:
            raise InputError(f"frames: expected UINT8 [N, H, W, 3] (0..255), got dtype {f.dtype}")
        if f.ndim != 4 or f.shape[3] != 3:
            raise InputError(f"frames: expected UINT8 [N, H, W, 3], got shape {list(f.shape)}")
        if f.shape[0] == 0:
            raise InputError("frames: expected at least 1 frame in UINT8 [N, H, W, 3], got N = 0")
        budget.check_frames([tuple(f.shape[1:3])] * f.shape[0])
        frames = f
    else:
        enc_items = np.asarray(inputs["frames_encoded"], dtype=object).ravel()
        _probe_images(enc_items, budget)
        frames = None

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
        if sample_rate < 1:
            raise InputError(f"sample_rate: expected a positive rate in Hz, got {sample_rate}")
        budget.check_audio(audio, sample_rate)
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
        budget.check_audio(audio, None)
        sample_rate = None

    if enc_items is not None:  # every check passed: decode
        frames = _decode_images(enc_items)
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

    Checked against ``pipe.budget`` (:class:`runtime.budget.Budget`) before any decoding, and run
    under its ``deadline_s`` (decoding included). Returns ``{"masks": bool [N, H, W], "info":
    object [1] holding UTF-8 JSON bytes}``. Raises :class:`~runtime.errors.AVSError` for anything
    wrong with the request (:class:`runtime.budget.DeadlineExceeded` past the deadline).
    """
    budget = pipe.budget
    with deadline(budget.deadline_s):
        req = decode_request(
            inputs, max_request_bytes=max_request_bytes, budget=budget, check_mode=pipe.check_mode
        )
        audio = req["audio"]
        if isinstance(audio, bytes):
            with tempfile.TemporaryDirectory(prefix="avs-wav-") as tmp:
                path = Path(tmp) / "audio.wav"
                path.write_bytes(audio)
                try:
                    res = pipe.segment(req["frames"], path, mode=req["mode"], **req["params"])
                except AVSError as e:  # name the wire input, not the temporary file
                    raise type(e)(str(e).replace(str(path), "audio_encoded")) from None
        else:
            res = pipe.segment(
                req["frames"], audio, req["sample_rate"], mode=req["mode"], **req["params"]
            )
    masks = np.stack([np.asarray(m, dtype=bool) for m in res.masks])
    info = json.dumps(res.info(), allow_nan=False).encode("utf-8")
    return {"masks": masks, "info": np.array([info], dtype=object)}


def budget_from_parameters(p: dict[str, str]) -> Budget:
    """The :class:`~runtime.budget.Budget` of the model config's ``budget.<field>`` parameters
    (missing ones keep :data:`~runtime.budget.DEFAULT_BUDGET`'s; ``budget.deadline_s`` "" or "0" =
    none)."""
    import dataclasses

    changes: dict[str, Any] = {}
    for f in dataclasses.fields(Budget):
        raw = p.get(f"budget.{f.name}", "").strip()
        if not raw:
            continue
        if f.name == "deadline_s":
            changes[f.name] = float(raw) if float(raw) > 0 else None
        else:
            changes[f.name] = int(raw) if f.type == "int" else float(raw)
    return DEFAULT_BUDGET.replace(**changes)


class TritonPythonModel:
    """Triton python-backend entry points (``initialize``, ``execute``, ``finalize``).

    Model config ``parameters``: ``bundle`` (path; relative = relative to the model's version folder),
    ``preset`` (optional), ``threads`` (onnxruntime intra-op threads, 0 = default / ``AVS_THREADS``),
    ``max_request_bytes``, ``warmup`` ("1" = create every session at start-up), ``budget.<field>``
    (:func:`budget_from_parameters`; the deadline is ``budget.deadline_s``), ``graph_models``
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
        opts = {
            "preset": p.get("preset") or None,
            "threads": threads,
            "providers": providers,
            "budget": budget_from_parameters(p),
            "backend": p.get("backend") or None,
            "precision": p.get("precision") or None,
            "cache_dir": p.get("cache_dir") or None,
        }
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
        # paths a client must never see in an error message (longest first)
        hide = {str(bundle): "<bundle>", str(bundle.resolve()): "<bundle>"}
        hide.update({str(version_dir): "<model>", str(args["model_repository"]): "<model>"})
        self._hide = sorted(hide.items(), key=lambda kv: len(kv[0]), reverse=True)
        if p.get("warmup", "1") == "1":
            used = self.pipe.warmup()
        else:
            used = {}
        print(
            f"[avs] instance {args.get('model_instance_name')} loaded bundle {bundle} "
            f"(random weights: {self.pipe.bundle.random_weights}); providers {used}; "
            f"budget {self.pipe.budget}; pid {os.getpid()}",
            file=sys.stderr,
            flush=True,
        )

    def _client_message(self, text: str) -> str:
        for path, label in self._hide:
            text = text.replace(path, label)
        return text

    def execute(self, requests: list) -> list:
        """One response per request, in order; errors become error responses (no server paths)."""
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
                    pb.InferenceResponse(
                        output_tensors=[], error=pb.TritonError(self._client_message(str(e)))
                    )
                )
            except Exception as e:  # never let a request end the model
                traceback.print_exc(file=sys.stderr)
                responses.append(
                    pb.InferenceResponse(
                        output_tensors=[],
                        error=pb.TritonError(
                            f"internal error ({type(e).__name__}); the server log has the details"
                        ),
                    )
                )
        return responses

    def finalize(self) -> None:
        self.pipe = None
