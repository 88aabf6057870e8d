"""A client for the served pipeline (``avs serve`` or a cluster running ``avs triton-repo`` output).

    from runtime.serving.client import TritonClient
    with TritonClient("127.0.0.1:8000") as c:            # or ("127.0.0.1:8001", protocol="grpc")
        result = c.segment(frames, audio, 16000, mode="heatmap", threshold=0.4)

``segment`` takes the same arguments as :meth:`runtime.Pipeline.segment` and returns the same
:class:`~runtime.result.SegmentResult` (masks bit for bit; scores as the server's ``info`` carries them).
tritonclient (``pip install "tritonclient[http,grpc]"``) is imported only when a client is created.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import AVSError, InputError
from runtime.result import SegmentResult
from runtime.serving import wire


class ClientError(AVSError):
    """Base class of the client's errors."""


class ServerUnavailable(ClientError, ConnectionError):
    """The server cannot be reached, went away mid-request, or did not answer within the timeout."""


class RequestRejected(ClientError, ValueError):
    """The server answered the request with an error; the message is the server's."""


_UNAVAILABLE = (
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "CANCELLED",
    "ABORTED",
    "Deadline Exceeded",
    "failed to connect",
    "Connection refused",
    "Socket closed",
)


def _import(protocol: str):
    try:
        if protocol == "http":
            import tritonclient.http as mod
        else:
            import tritonclient.grpc as mod
        from tritonclient.utils import InferenceServerException
    except ImportError as e:
        raise ClientError(
            'runtime.serving.client needs tritonclient: pip install "tritonclient[http,grpc]"'
        ) from e
    return mod, InferenceServerException


def _strip_scheme(url: str) -> str:
    for prefix in ("http://", "https://", "grpc://"):
        if url.startswith(prefix):
            url = url[len(prefix) :]
    return url.rstrip("/")


def _bytes_array(values: list[bytes]) -> np.ndarray:
    a = np.empty(len(values), dtype=object)
    a[:] = values
    return a


def encode_request(
    frames,
    audio,
    sample_rate: int | None = None,
    *,
    mode: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """The wire inputs of one request (name -> numpy array), as :mod:`runtime.serving.wire` defines them.

    ``frames``: uint8 [N, H, W, 3] array, a list of frame arrays (any :func:`runtime.preprocess.image.load_frame`
    accepts; all of one size), or a list of PNG/JPEG paths (sent as ``frames_encoded``). ``audio``:
    an array (mono or multichannel, float in [-1, 1] or PCM ints) with ``sample_rate`` in Hz, sent as
    FP32 mono; or a WAV path (sent as ``audio_encoded``). ``params``: mode parameters (JSON-able).
    """
    from runtime.preprocess.audio import to_mono_float
    from runtime.preprocess.image import load_frame

    out: dict[str, np.ndarray] = {}
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    if isinstance(frames, str | Path | np.ndarray) or not hasattr(frames, "__iter__"):
        raise InputError(
            "frames must be a sequence of frames (arrays or image paths), or an [N, H, W, 3] array"
        )
    frames = list(frames)
    if not frames:
        raise InputError("no frames given")
    if all(isinstance(f, str | Path) for f in frames):
        out["frames_encoded"] = _bytes_array([Path(f).read_bytes() for f in frames])
    else:
        arrs = [load_frame(f, name=f"frame {i}") for i, f in enumerate(frames)]
        if len({a.shape for a in arrs}) != 1:
            raise InputError(
                f"frames: all frames must have one size to be sent as UINT8 [N, H, W, 3]; "
                f"got {sorted({a.shape[:2] for a in arrs})}"
            )
        out["frames"] = np.ascontiguousarray(np.stack(arrs))
    if isinstance(audio, str | Path):
        if sample_rate is not None:
            raise InputError("leave sample_rate out with a WAV path (the file holds its rate)")
        p = Path(audio)
        if not p.is_file():
            raise InputError(f"audio file not found: {p}")
        out["audio_encoded"] = _bytes_array([p.read_bytes()])
    else:
        if sample_rate is None:
            raise InputError("sample_rate is required with an audio array (e.g. sample_rate=16000)")
        out["audio"] = np.ascontiguousarray(to_mono_float(np.asarray(audio)), dtype=np.float32)
        out["sample_rate"] = np.array([int(sample_rate)], dtype=np.int32)
    if mode is not None:
        out["mode"] = _bytes_array([str(mode).encode("utf-8")])
    if params:
        out["params"] = _bytes_array([json.dumps(params).encode("utf-8")])
    return out


def decode_response(masks: np.ndarray, info_bytes: bytes) -> SegmentResult:
    """A :class:`SegmentResult` from the wire outputs ``masks`` BOOL [N, H, W] and ``info`` JSON bytes.

    ``scores[i]``: the score values when ``info`` carries them (up to 1024 values per frame), else an
    empty float32 array (the summary stays in ``result.info_json["frames"][i]["score"]``).
    """
    info = json.loads(info_bytes.decode("utf-8") if isinstance(info_bytes, bytes) else info_bytes)
    frames = info.get("frames", [])
    scores = []
    for f in frames:
        s = f.get("score", {})
        if "values" in s:
            scores.append(np.asarray(s["values"], dtype=np.float32).reshape(s.get("shape", [-1])))
        else:
            scores.append(np.zeros(0, np.float32))
    res = SegmentResult(
        mode=info["mode"],
        preset=info["preset"],
        masks=[np.asarray(m, dtype=bool) for m in masks],
        scores=scores,
        prompts=[f.get("prompt", {}) for f in frames],
        timings=info.get("timings", {}),
        providers=info.get("providers", {}),
        random_weights=bool(info.get("random_weights", False)),
        precision=info.get("precision", {}),
        agreement=info.get("agreement", {}),
    )
    res.info_json = info  # the server's info as sent
    return res


class TritonClient:
    """Client of the ``avs`` model on a Triton server.

    ``url``: "host:port" (a leading http:// or grpc:// is dropped); HTTP is port 8000 and gRPC 8001 by
    default. ``protocol``: "http" or "grpc". ``timeout``: seconds a request may take (connect
    included) before :class:`ServerUnavailable`. ``model``: model name (default "avs").
    """

    def __init__(
        self,
        url: str = "127.0.0.1:8000",
        protocol: str = "http",
        *,
        timeout: float = 60.0,
        model: str = wire.MODEL_NAME,
    ):
        if protocol not in ("http", "grpc"):
            raise InputError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        if not timeout or timeout <= 0:
            raise InputError(f"timeout must be > 0 seconds, got {timeout}")
        self.url, self.protocol, self.timeout, self.model = (
            _strip_scheme(url),
            protocol,
            float(timeout),
            model,
        )
        self._mod, self._exc = _import(protocol)
        if protocol == "http":
            self._client = self._mod.InferenceServerClient(
                self.url, connection_timeout=self.timeout, network_timeout=self.timeout
            )
        else:
            self._client = self._mod.InferenceServerClient(self.url)

    def _unavailable(self, e: Exception) -> ServerUnavailable:
        return ServerUnavailable(
            f"no answer from Triton at {self.url} over {self.protocol} within "
            f"{self.timeout:.0f} s ({type(e).__name__}: {e}); is the server "
            "(`avs serve BUNDLE`) running and ready?"
        )

    def _call(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except self._exc as e:
            status = str(e.status() or "")
            msg = e.message() or str(e)
            if any(s in status or s in msg for s in _UNAVAILABLE):
                raise self._unavailable(e) from e
            raise RequestRejected(msg) from None
        except (OSError, TimeoutError, ConnectionError) as e:
            raise self._unavailable(e) from e
        except Exception as e:  # gevent / grpc raise their own types for a vanished server
            if type(e).__module__.split(".")[0] in (
                "gevent",
                "geventhttpclient",
                "grpc",
                "socket",
                "ssl",
            ):
                raise self._unavailable(e) from e
            raise

    def is_ready(self) -> bool:
        """The server and the model are ready (False when unreachable)."""
        try:
            kw = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
            return bool(self._call(self._client.is_server_ready, **kw)) and bool(
                self._call(self._client.is_model_ready, self.model, **kw)
            )
        except ClientError:
            return False

    def infer_raw(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, bytes]:
        """Send wire inputs as they are (name -> array; dtype from the array) -> (masks, info bytes)."""
        tensors = []
        for name, arr in inputs.items():
            arr = np.asarray(arr)
            dtype = "BYTES" if arr.dtype == object else self._np_to_triton(arr.dtype)
            t = self._mod.InferInput(name, list(arr.shape), dtype)
            t.set_data_from_numpy(arr)
            tensors.append(t)
        outputs = [self._mod.InferRequestedOutput(n) for n in wire.OUTPUT_NAMES]
        kw = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        r = self._call(self._client.infer, self.model, tensors, outputs=outputs, **kw)
        return r.as_numpy("masks"), r.as_numpy("info").ravel()[0]

    @staticmethod
    def _np_to_triton(dtype: np.dtype) -> str:
        from tritonclient.utils import np_to_triton_dtype

        name = np_to_triton_dtype(np.dtype(dtype))
        if name is None:
            raise InputError(f"dtype {dtype} has no Triton equivalent")
        return name

    def segment(
        self,
        frames,
        audio,
        sample_rate: int | None = None,
        *,
        mode: str | None = None,
        **params: Any,
    ) -> SegmentResult:
        """Segment a clip on the server; arguments as :meth:`runtime.Pipeline.segment`.

        Returns a :class:`SegmentResult` (``masks``: N bool [H, W] arrays). Raises
        :class:`RequestRejected` with the server's message for a bad request and
        :class:`ServerUnavailable` when the server cannot be reached or times out.
        """
        inputs = encode_request(frames, audio, sample_rate, mode=mode, params=params)
        masks, info = self.infer_raw(inputs)
        return decode_response(masks, info)

    def close(self) -> None:
        """Close the connection(s)."""
        try:
            self._client.close()
        except Exception:  # closing a client of a dead server must not raise
            pass

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
