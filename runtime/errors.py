"""Errors the runtime raises. All are ValueError subclasses except bundle and provider problems."""

from __future__ import annotations


class AVSError(Exception):
    """Base class of every error raised on purpose by avs-runtime."""


class InputError(AVSError, ValueError):
    """An argument has the wrong shape, dtype, range or format; the message says what was expected."""


class BundleError(AVSError, RuntimeError):
    """A bundle is missing, incomplete, tampered with (sha256) or of an unknown schema."""


class ProviderError(AVSError, RuntimeError):
    """An execution provider was requested that this onnxruntime build cannot give."""
