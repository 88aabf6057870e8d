"""Safe checkpoint loading with strict key checks that name what is missing and what is unexpected."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, or its keys or shapes do not fit the model."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> Any:
    """The object stored in a checkpoint file, read with ``torch.load(weights_only=True)`` on the CPU.

    The one place that opens checkpoint files. Raises :class:`CheckpointError` for a missing or
    unreadable file (pickled code, truncated files: ``weights_only`` refuses anything but tensors and
    plain containers).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, non-tensor payloads
        raise CheckpointError(f"cannot read checkpoint {path} with weights_only=True: {e}") from e


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict (:func:`read_checkpoint`).

    Accepts a plain state dict (the official AudioCLIP / SAM files) or a dict that nests one under
    ``state_dict`` / ``model``. Raises :class:`CheckpointError` for a missing or unreadable file.
    """
    obj = read_checkpoint(path)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if (
                key in obj
                and isinstance(obj[key], Mapping)
                and not isinstance(obj[key], torch.Tensor)
            ):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def _fmt(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_keys(
    own: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], header: str
) -> None:
    """Raise :class:`CheckpointError` (``header`` + missing, unexpected, shape-mismatched keys) unless
    ``sd`` holds exactly the keys of ``own`` with the same shapes."""
    missing = set(own) - set(sd)
    unexpected = set(sd) - set(own)
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(sd))
        if tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [header]
        if missing:
            parts.append(f"missing {len(missing)} keys: {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_fmt(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {'; '.join(shapes[:8])}")
        raise CheckpointError("\n  ".join(parts))


def load_strict(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    ignore: Iterable[str] = (),
    source: str = "checkpoint",
) -> None:
    """Load ``state_dict`` into ``module`` requiring exactly the module's keys and shapes.

    ``ignore`` lists keys of the file to skip (e.g. an unused tower). Empty tensors in the file
    that the module also holds empty (AudioCLIP's ``audio.fbsp.bias`` of shape (0,)) load as is.
    Raises :class:`CheckpointError` naming missing keys, unexpected keys and shape mismatches.
    """
    ignore = set(ignore)
    sd = {k: v for k, v in state_dict.items() if k not in ignore}
    check_keys(module.state_dict(), sd, f"{source} does not fit {type(module).__name__}:")
    module.load_state_dict(sd, strict=True)
