"""File-system safety of the runtime and its tools: no symlinks inside bundles and repositories, reads
checked against the manifest's sha256, temporary outputs created exclusively, deletions limited to
folders a tool wrote itself (a marker file).

* :func:`inside` -- a manifest's relative file name resolved under a root: absolute names, ``..``
  escapes and symlinks anywhere below the root are refused (:class:`~runtime.errors.BundleError`).
* :func:`read_checked` / :func:`copy_checked` -- the bytes of such a file, hashed as they are read
  (and, for a copy, as they are written): what is used is what was checked.
* :func:`check_file` -- such a file streamed through sha256 and compared, nothing kept (a bundle's
  check at open; its graphs are read and checked again when a session is made).
* :func:`open_exclusive` -- a new file opened with ``O_CREAT | O_EXCL | O_NOFOLLOW``: a planted
  symlink or file at a ``.part`` name is never written through (a leftover of ours is removed
  first, without following it).
* :func:`mark_owned` / :func:`remove_owned` -- a marker file that says "this tool wrote this
  folder"; only a folder holding it is ever deleted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path
from typing import IO

from runtime.errors import BundleError

__all__ = [
    "check_file",
    "copy_checked",
    "inside",
    "mark_owned",
    "open_exclusive",
    "owned_by",
    "read_checked",
    "remove_owned",
]

_CHUNK = 1 << 20


def inside(root: str | Path, name: object, *, what: str = "bundle file") -> Path:
    """``root / name`` for a manifest's relative file ``name``; BundleError when ``name`` is not a
    non-empty relative path, climbs out of ``root``, or passes through or ends at a symlink."""
    root = Path(root)
    if not isinstance(name, str) or not name or "\0" in name:
        raise BundleError(f"{what} {name!r}: expected a relative file name (a non-empty string)")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise BundleError(
            f"{what} {name!r} points outside the bundle or repository (absolute or '..')"
        )
    p = root
    for part in rel.parts:
        p = p / part
        if p.is_symlink():
            raise BundleError(
                f"{what} {name!r}: {part!r} is a symbolic link; links are refused inside bundles "
                "and model repositories (copy the file in instead)"
            )
    try:
        p.resolve().relative_to(root.resolve())
    except ValueError:
        raise BundleError(f"{what} {name!r} points outside the bundle or repository") from None
    return p


def _open_nofollow(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"{path} is not a regular file")
    return fd


def read_checked(path: str | Path, sha256: str | None, *, what: str = "bundle file") -> bytes:
    """The bytes of ``path`` (no symlink followed), checked against ``sha256`` (None: unchecked)."""
    path = Path(path)
    with os.fdopen(_open_nofollow(path), "rb") as f:
        data = f.read()
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise _mismatch(what, path, digest, sha256)
    return data


def check_file(path: str | Path, sha256: str, *, what: str = "bundle file") -> None:
    """Hash ``path`` (no symlink followed) block by block; BundleError unless it matches ``sha256``."""
    path = Path(path)
    with os.fdopen(_open_nofollow(path), "rb") as f:
        digest = _hash_stream(f)
    if digest != sha256:
        raise _mismatch(what, path, digest, sha256)


def _hash_stream(fin: IO, fout: IO | None = None) -> str:
    """Hex sha256 of what ``fin`` holds from here on, read in blocks (each written to ``fout`` too)."""
    h = hashlib.sha256()
    while block := fin.read(_CHUNK):
        h.update(block)
        if fout is not None:
            fout.write(block)
    return h.hexdigest()


def _mismatch(what: str, path: Path, digest: str, sha256: str) -> BundleError:
    return BundleError(
        f"{what} {path.name} fails its checksum (sha256 {digest[:12]}..., manifest says "
        f"{str(sha256)[:12]}...): it was changed or damaged; rebuild the bundle"
    )


def open_exclusive(path: str | Path, mode: str = "wb") -> IO:
    """A new file at ``path`` for writing, created with ``O_EXCL | O_NOFOLLOW`` (mode 0o644).

    A file or symlink already at ``path`` (e.g. a ``.part`` left by a crash, or one planted there)
    is unlinked first, never followed; if another one appears in between, FileExistsError.
    """
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    return os.fdopen(fd, mode)


def copy_checked(
    src: str | Path, dst: str | Path, sha256: str | None, *, what: str = "bundle file"
) -> Path:
    """Copy ``src`` (no symlink followed) to a new file ``dst`` (created exclusively), hashing the
    bytes as they are copied; on a checksum mismatch ``dst`` is removed and BundleError raised."""
    src, dst = Path(src), Path(dst)
    try:
        with os.fdopen(_open_nofollow(src), "rb") as fin, open_exclusive(dst) as fout:
            digest = _hash_stream(fin, fout)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    if sha256 is not None and digest != sha256:
        dst.unlink(missing_ok=True)
        raise BundleError(
            f"{what} {src.name} fails its checksum while being copied (sha256 "
            f"{digest[:12]}..., manifest says {str(sha256)[:12]}...); rebuild the bundle"
        )
    return dst


def mark_owned(folder: str | Path, marker: str) -> None:
    """Write the marker file ``folder/marker`` (the folder was created by this tool)."""
    with open_exclusive(Path(folder) / marker, "w") as f:
        f.write("written by avs-runtime; this folder may be replaced by the tool that wrote it\n")


def owned_by(folder: str | Path, marker: str) -> bool:
    """Whether ``folder`` is a real folder (not a symlink) holding the regular file ``marker``."""
    folder = Path(folder)
    m = folder / marker
    return folder.is_dir() and not folder.is_symlink() and m.is_file() and not m.is_symlink()


def remove_owned(folder: str | Path, marker: str, *, what: str) -> None:
    """Delete ``folder`` only if it holds ``marker`` (see :func:`owned_by`); else FileExistsError
    saying so. Symlinks inside are removed, never followed."""
    folder = Path(folder)
    if not owned_by(folder, marker):
        raise FileExistsError(
            f"{folder} exists and was not written by {what} (no {marker} marker in it); "
            "choose a new folder or remove it yourself"
        )
    shutil.rmtree(folder)
