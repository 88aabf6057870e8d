"""A bundle graph read into memory and checked: its ONNX bytes and its external-data files.

A graph over protobuf's 2 GB limit (SAM vit_h's encoder: ~2.5 GB) keeps its weights in ONNX *external
data*: files next to the ``.onnx`` that its initializers point into (location, offset, length). An
execution backend that opened those files by path would read them after the bundle's checksum check,
leaving a window in which a file could be swapped. :func:`read_verified_graph` closes it: it reads the
graph file and every external file it references into private memory, checks each against the
manifest's sha256 as it reads, and returns the bytes (:class:`VerifiedGraph`); backends build their
sessions from these bytes only (onnxruntime: the model from bytes, the files handed over as
in-memory external files, see :func:`runtime.backends._onnxruntime.create_session`).

Where a graph may point is checked too (always, also with ``verify=False``): every location its
initializers name must be a relative path inside the bundle that the manifest lists under the graph's
``extra_files``; anything else (an absolute path, ``..``, an unlisted file) is refused. onnxruntime
would otherwise resolve a location of a model loaded from bytes against the process's working folder.

The ONNX file is read with a small protobuf walker (no ``onnx`` dependency in the runtime): it visits
the initializers of the main graph, of sub-graphs (If/Loop/Scan bodies) and tensor attributes, and
collects their ``external_data`` entries. Only initializers of the main graph may be external:
onnxruntime takes in-memory external files for those alone and looks for any other on disk (in the
working folder, for a model loaded from bytes), so a graph with external data elsewhere is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from runtime.errors import BundleError

_CHUNK = 1 << 24  # 16 MiB per read while hashing


@dataclass(frozen=True)
class ExternalTensor:
    """One initializer stored as external data: its name and where its bytes are (``location`` as the
    model names it, byte ``offset`` into that file, ``length`` in bytes; None = to the end of the file)."""

    name: str
    location: str
    offset: int
    length: int | None
    top: bool = True  # an initializer of the main graph (not of a sub-graph, attribute or function)


@dataclass
class VerifiedGraph:
    """A graph's bytes as they were checked (see the module docstring).

    name: the graph's name in the manifest. model: the ``.onnx`` file's bytes. external: location (as the
    model's initializers name it) -> that file's bytes (a private ``bytearray``; empty for a graph
    without external data). tensors: the external initializers, in file order.
    """

    name: str
    model: bytes
    external: dict[str, bytearray] = field(default_factory=dict)
    tensors: list[ExternalTensor] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes held: the model plus its external files."""
        return len(self.model) + sum(len(b) for b in self.external.values())


# --- a minimal protobuf walker ---------------------------------------------------------------------


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a message: ints for varints, memoryviews for LEN fields."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = None, i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            if i + ln > n:
                raise ValueError("truncated field")
            v, i = buf[i : i + ln], i + ln
        elif wt == 5:
            v, i = None, i + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        if i > n:
            raise ValueError("truncated field")
        yield num, wt, v


# Field numbers of onnx.proto3 (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ...).
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_NODE_ATTRIBUTE = 5
_FUNCTION_NODE = 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14


def _tensor(buf: memoryview, out: list[ExternalTensor], top: bool = False) -> None:
    name, entries, external = "", {}, False
    for num, wt, v in _fields(buf):
        if num == _TENSOR_NAME and wt == 2:
            name = bytes(v).decode("utf-8", "replace")
        elif num == _TENSOR_LOCATION and wt == 0:
            external = v == 1
        elif num == _TENSOR_EXTERNAL and wt == 2:
            kv = {k: bytes(x).decode("utf-8", "replace") for k, w, x in _fields(v) if w == 2}
            entries[kv.get(1, "")] = kv.get(2, "")
    if external or entries:
        if "location" not in entries:
            raise ValueError(f"initializer {name!r} is external data without a location")
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries["length"]) if "length" in entries else None
        except ValueError:
            raise ValueError(f"initializer {name!r}: offset/length are not integers") from None
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"initializer {name!r}: negative offset or length")
        out.append(ExternalTensor(name, entries["location"], offset, length, top))


def _sparse(buf: memoryview, out: list[ExternalTensor]) -> None:
    for num, wt, v in _fields(buf):
        if num in (_SPARSE_VALUES, _SPARSE_INDICES) and wt == 2:
            _tensor(v, out)


def _node(buf: memoryview, out: list[ExternalTensor]) -> None:
    for num, wt, v in _fields(buf):
        if num != _NODE_ATTRIBUTE or wt != 2:
            continue
        for anum, awt, av in _fields(v):
            if awt != 2:
                continue
            if anum in (_ATTR_T, _ATTR_TENSORS):
                _tensor(av, out)
            elif anum in (_ATTR_G, _ATTR_GRAPHS):
                _graph(av, out)
            elif anum in (_ATTR_SPARSE, _ATTR_SPARSES):
                _sparse(av, out)


def _graph(buf: memoryview, out: list[ExternalTensor], top: bool = False) -> None:
    for num, wt, v in _fields(buf):
        if wt != 2:
            continue
        if num == _GRAPH_INITIALIZER:
            _tensor(v, out, top)
        elif num == _GRAPH_SPARSE:
            _sparse(v, out)
        elif num == _GRAPH_NODE:
            _node(v, out)


def external_tensors(model: bytes) -> list[ExternalTensor]:
    """Every tensor of an ONNX model (bytes of a ``ModelProto``) that is stored as external data.

    Raises ValueError when the bytes are not a parseable protobuf message.
    """
    out: list[ExternalTensor] = []
    for num, wt, v in _fields(memoryview(model)):
        if num == _MODEL_GRAPH and wt == 2:
            _graph(v, out, top=True)
        elif num == _MODEL_FUNCTIONS and wt == 2:
            for fnum, fwt, fv in _fields(v):
                if fnum == _FUNCTION_NODE and fwt == 2:
                    _node(fv, out)
    return out


# --- reading a graph --------------------------------------------------------------------------------


def _read_checked(
    path: Path, entry: dict[str, Any], verify: bool, what: str, *, immutable: bool = False
) -> bytearray | bytes:
    """The file's bytes, read once into private memory and hashed as they are read.

    immutable: return ``bytes`` read in one piece (the model file: sessions take ``bytes``, and
    converting a bytearray would hold the file twice at once); else a ``bytearray`` filled in chunks.
    """
    h = hashlib.sha256()
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if immutable:
                buf: bytearray | bytes = f.read(size)
                got = len(buf)
                if verify:
                    h.update(buf)
            else:
                buf = bytearray(size)
                view = memoryview(buf)
                got = 0
                while got < size:
                    n = f.readinto(view[got : got + _CHUNK])
                    if not n:
                        break
                    if verify:
                        h.update(view[got : got + n])
                    got += n
            if got != size or f.read(1):
                raise BundleError(f"bundle file {path} changed size while it was read; rebuild it")
    except OSError as e:
        raise BundleError(f"bundle file {path} ({what}) cannot be read: {e}") from e
    if verify:
        digest = h.hexdigest()
        if digest != entry["sha256"]:
            raise BundleError(
                f"bundle file {path} ({what}) fails its checksum (sha256 {digest[:12]}..., manifest "
                f"says {str(entry['sha256'])[:12]}...): it was changed or damaged; rebuild the bundle"
            )
    return buf


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def read_verified_graph(
    root: str | Path, name: str, entry: dict[str, Any], *, verify: bool = True
) -> VerifiedGraph:
    """Read graph ``name`` of the bundle in ``root`` (manifest entry ``entry``) into memory, checked.

    ``entry["file"]`` is the ``.onnx`` file (relative to ``root``); ``entry["extra_files"]`` lists its
    external-data files (``file``, ``sha256``, ``bytes``). Every file is read once and, with ``verify``,
    its sha256 compared with the manifest's while it is read. The external-data locations the model
    names are checked against ``extra_files`` and the bundle folder whether or not ``verify`` is set.

    Returns a :class:`VerifiedGraph`; raises :class:`~runtime.errors.BundleError` naming the file and
    what is wrong (checksum, location outside the bundle, unlisted or missing file, unparseable model).
    """
    root = Path(root)
    gpath = root / entry["file"]
    if not _inside(root, gpath):
        raise BundleError(f"graph {name!r}: file {entry['file']!r} points outside the bundle")
    if not gpath.is_file():
        raise BundleError(f"bundle file missing: {gpath}")
    model = _read_checked(gpath, entry, verify, f"graph {name!r}", immutable=True)
    try:
        tensors = external_tensors(model)
    except ValueError as e:
        raise BundleError(
            f"graph {name!r}: {gpath} is not a readable ONNX model ({e}); rebuild the bundle"
        ) from None
    listed: dict[Path, dict[str, Any]] = {}
    for extra in entry.get("extra_files", []):
        p = root / extra["file"]
        if not _inside(root, p):
            raise BundleError(
                f"graph {name!r}: external-data file {extra['file']!r} points outside the bundle"
            )
        listed[p.resolve()] = extra
    external: dict[str, bytearray] = {}
    for t in tensors:
        if not t.top:  # onnxruntime looks for these on disk, not in the in-memory files
            raise BundleError(
                f"graph {name!r}: tensor {t.name!r} of a sub-graph, attribute or function is stored "
                "as external data, which cannot be loaded from checked memory; re-export the graph "
                "with only main-graph initializers external"
            )
        if t.location in external:
            continue
        loc = PurePosixPath(t.location)
        target = gpath.parent / t.location
        if (
            loc.is_absolute()
            or ".." in loc.parts
            or "\\" in t.location
            or not _inside(root, target)
        ):
            raise BundleError(
                f"graph {name!r}: initializer {t.name!r} points at external data {t.location!r} "
                "outside the bundle; refused (a bundle's graphs may only read the bundle's own files)"
            )
        extra = listed.get(target.resolve())
        if extra is None:
            raise BundleError(
                f"graph {name!r}: initializer {t.name!r} reads external data {t.location!r}, which the "
                "manifest does not list (graphs.<name>.extra_files) with a checksum; rebuild the bundle"
            )
        if not target.is_file():
            raise BundleError(f"bundle file missing: {target} (external data of graph {name!r})")
        external[t.location] = _read_checked(target, extra, verify, f"external data of {name!r}")
    for t in tensors:
        size = len(external[t.location])
        end = t.offset + (t.length or 0)
        if t.offset > size or end > size:
            raise BundleError(
                f"graph {name!r}: initializer {t.name!r} reads bytes {t.offset}..{end} of "
                f"{t.location!r}, which has {size}; the bundle is damaged, rebuild it"
            )
    return VerifiedGraph(name, model, external, tensors)
