"""Execution backends: what turns a bundle's checked ONNX bytes into a callable session.

Today one backend, onnxruntime (providers TensorRT -> CUDA -> CPU, :mod:`._onnxruntime`), and the
memory policy of the SAM encoder's batch (:mod:`._memory`). A second backend lives beside it as its own
private module; the pipeline reaches every backend through :func:`create_session` only.
"""

from runtime.backends._onnxruntime import SessionInfo, create_session, resolve_providers

__all__ = ["SessionInfo", "create_session", "resolve_providers"]
