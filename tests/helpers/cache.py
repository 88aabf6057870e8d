"""Expensive test fixtures built once and cached across pytest sessions.

An entry is a folder ``<cache>/<name>-<key>`` where ``key`` is a sha256 of everything that decides
what the build writes: the bytes of every file under the source folders named by the caller (e.g.
``export/``, ``models/``, ``runtime/bundle/``), the build arguments, the versions of the packages that
write or check the graphs (torch, onnx, onnxruntime, segment-anything, numpy), the Python version and
the CPU model (the parity figures recorded at build time are measured on it). Any change to those
gives a new key, so a stale entry is never used: it is rebuilt, and the oldest entries of a name
are removed once newer ones crowd them out. An entry is written into a temporary folder and renamed
into place (atomic) under a lock file, so two pytest processes never see half an entry; its files
are made read-only, and each session works on its own writable copy, checked again after copying
(for a bundle: its own sha256 check), so a damaged entry is rebuilt, never used.

The cache folder is ``$AVS_TEST_CACHE``, else ``~/.cache/avs-runtime/tests``; ``AVS_TEST_CACHE=off``
builds in the session's temporary folder every time (the old behaviour).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

from tests.helpers import REPO

#: packages whose version changes what an export writes or how it is checked
PACKAGES = ("torch", "onnx", "onnxruntime", "onnxscript", "segment-anything", "numpy")
COMPLETE = ".complete"
#: what decides a built graph or bundle (see tests/helpers/cache.py): export and the model definitions,
#: the bundle format, the numpy preprocessing and sessions export uses (the installed packages'
#: versions are part of the key too)
BUILD_SOURCES = (
    "export",
    "models",
    "runtime/bundle",
    "runtime/preprocess",
    "runtime/backends",
)
#: entries kept per fixture name (branches sharing one cache do not evict each other at once)
KEEP = 4


def cache_root() -> Path | None:
    """The cache folder (created), or None when ``AVS_TEST_CACHE=off``."""
    env = os.environ.get("AVS_TEST_CACHE")
    if env and env.lower() in ("off", "0", "no", "false"):
        return None
    root = Path(env) if env else Path.home() / ".cache" / "avs-runtime" / "tests"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "absent"


def source_key(sources: Iterable[str], args: object) -> str:
    """Hex sha256 of the files under ``sources`` (paths relative to the repository; folders are
    walked, ``__pycache__`` skipped), of ``args`` (JSON), of :data:`PACKAGES`' versions, the Python
    version and the CPU model."""
    h = hashlib.sha256()
    for src in sorted(sources):
        base = REPO / src
        if not base.exists():
            raise FileNotFoundError(f"cache key source {src!r} not found under {REPO}")
        files = [base] if base.is_file() else sorted(base.rglob("*"))
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                h.update(str(f.relative_to(REPO)).encode() + b"\0")
                h.update(hashlib.sha256(f.read_bytes()).digest())
    env = {
        "args": args,
        "packages": {p: _version(p) for p in PACKAGES},
        "python": sys.version.split()[0],
        "cpu": _cpu_model(),
    }
    h.update(json.dumps(env, sort_keys=True, default=str).encode())
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _make_read_only(d: Path) -> None:
    for f in d.rglob("*"):
        if f.is_file():
            f.chmod(f.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def drop(entry: Path) -> None:
    """Remove a cache entry (e.g. one that failed its check)."""
    shutil.rmtree(entry, ignore_errors=True)


def cached_build(
    name: str,
    sources: Iterable[str],
    args: object,
    build: Callable[[Path], None],
    dest: Path,
    check: Callable[[Path], None] | None = None,
) -> bool:
    """Build (or take from the cache) the entry ``name`` and leave a writable copy at ``dest``;
    True when it came from the cache.

    ``build(out)`` must write the entry into the (non-existent) folder ``out``. Without a cache
    (``AVS_TEST_CACHE=off``) it builds straight into ``dest``. The copy is taken under the cache's
    lock, so no other process removes the entry meanwhile. ``check(dest)`` (e.g. the bundle's own
    sha256 check) runs on the copy; when a cached entry fails it, the entry is dropped and rebuilt
    once (a fresh build that fails it raises). The newest :data:`KEEP`
    entries of each name are kept (several branches may share one cache), older ones removed.
    """
    root = cache_root()
    if root is None:
        build(dest)
        if check is not None:
            check(dest)
        return False
    hit = _cached_copy(root, name, sources, args, build, dest)
    if check is not None:
        try:
            check(dest)
        except Exception:
            if not hit:
                raise
            drop(root / f"{name}-{source_key(sources, args)[:20]}")
            shutil.rmtree(dest)
            hit = _cached_copy(root, name, sources, args, build, dest)
            check(dest)
    return hit


def _cached_copy(root, name, sources, args, build, dest) -> bool:
    key = source_key(sources, args)[:20]
    entry = root / f"{name}-{key}"
    with _locked(root / f".{name}.lock"):
        hit = (entry / COMPLETE).is_file()
        if not hit:
            drop(entry)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
            try:
                build(tmp / "out")
                stamp = json.dumps({"key": key, "args": args}, default=str)
                (tmp / "out" / COMPLETE).write_text(stamp)
                _make_read_only(tmp / "out")
                os.replace(tmp / "out", entry)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        os.utime(entry)  # last use, for the pruning below
        olds = sorted(
            (d for d in root.glob(f"{name}-*") if d.is_dir() and d != entry),
            key=lambda d: d.stat().st_mtime,
            reverse=True,
        )
        for old in olds[KEEP - 1 :]:
            drop(old)
        shutil.copytree(
            entry, dest, copy_function=shutil.copyfile, ignore=shutil.ignore_patterns(COMPLETE)
        )
    return hit


def tree_digest(path: Path) -> str:
    """Hex sha256 of a file, or of a folder's files (names and bytes): for build inputs outside the
    repository (tokenizers written by a test, a label list from ../shared/data) in a cache key."""
    path = Path(path)
    h = hashlib.sha256()
    for f in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def check_bundle(d: Path) -> None:
    """The bundle's own checks: schema and every file's sha256 (raises BundleError)."""
    from runtime.bundle import Bundle

    Bundle.open(d, verify=True)
