"""The bundle format: a folder of ONNX graphs and banks described by ``manifest.json``.

The runtime owns this schema; ``export/build_engines.py`` writes bundles through :func:`write_manifest`
and :func:`file_entry`. A bundle whose schema, files or checksums do not check out is refused with a
:class:`~runtime.errors.BundleError` that names the problem.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.bundle.contract import (
    MANIFEST,
    SCHEMA,
    SCHEMA_VERSION,
    Contract,
    Preset,
    validate_manifest,
)
from runtime.bundle.verified import VerifiedGraph, read_verified_graph
from runtime.errors import BundleError
from runtime.safefiles import check_file, inside, read_checked

log = logging.getLogger(__name__)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(bundle_dir: str | Path, path: str | Path) -> dict[str, Any]:
    """``{"file": name relative to the bundle, "sha256", "bytes"}`` for a file inside ``bundle_dir``."""
    bundle_dir, path = Path(bundle_dir), Path(path)
    return {
        "file": str(path.resolve().relative_to(bundle_dir.resolve())),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }


def write_manifest(bundle_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Validate ``manifest`` against the contract (:mod:`runtime.bundle.contract`) and write it as ``manifest.json``."""
    manifest = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **manifest}
    out = Path(bundle_dir) / MANIFEST
    validate_manifest(manifest, str(out))
    out.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return out


@dataclass
class Bundle:
    """A checked bundle on disk: its folder and parsed manifest."""

    root: Path
    manifest: dict[str, Any]
    contract: Contract
    verify: bool = True
    _warned: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def open(cls, root: str | Path, *, verify: bool = True) -> Bundle:
        """Read ``root/manifest.json``, check the schema and (``verify``) every file's sha256."""
        root = Path(root)
        if not root.is_dir():
            raise BundleError(
                f"bundle folder not found: {root} (build one with `python export/build_engines.py`)"
            )
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{root} is not a bundle: {MANIFEST} is missing")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{mpath} is not valid JSON: {e}") from e
        contract = validate_manifest(manifest, str(mpath))
        bundle = cls(root, manifest, contract, verify)
        for entry in bundle._all_file_entries():
            bundle._check_file(entry, verify)
        return bundle

    def _all_file_entries(self) -> list[dict[str, Any]]:
        """Every file the manifest names: graphs, their external data (``extra_files``), TensorRT
        plans (``tensorrt``) and banks; a malformed entry is a BundleError naming it."""
        entries = []

        def add(entry: Any, where: str) -> None:
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("file"), str)
                or not isinstance(entry.get("sha256"), str)
            ):
                raise BundleError(
                    f"bundle {self.root}: manifest {where} must be an object with a 'file' name "
                    f"and its 'sha256', got {str(entry)[:120]!r}; rebuild the bundle"
                )
            entries.append(entry)

        for name, g in self.manifest["graphs"].items():
            entries.append(g)
            extra = g.get("extra_files", [])
            if not isinstance(extra, list):
                raise BundleError(
                    f"bundle {self.root}: manifest graphs.{name}.extra_files must be a list of "
                    f"file entries, got {type(extra).__name__}"
                )
            for i, e in enumerate(extra):
                add(e, f"graphs.{name}.extra_files[{i}]")
            if "tensorrt" in g:
                add(g["tensorrt"], f"graphs.{name}.tensorrt")
        for name, b in self.manifest.get("banks", {}).items():
            add(b, f"banks.{name}")
        return entries

    def file_path(self, entry: dict[str, Any]) -> Path:
        """The path of a manifest file entry, contained in the bundle, no symlink on the way."""
        return inside(self.root, entry["file"])

    def _check_file(self, entry: dict[str, Any], verify: bool) -> None:
        path = self.file_path(entry)
        if not path.is_file():
            raise BundleError(f"bundle file missing: {path}")
        if verify:  # streamed: the bytes that run are read and checked again when a session is made
            check_file(path, entry["sha256"])

    def read_file(self, entry: dict[str, Any]) -> bytes:
        """The bytes of a manifest file entry (bank, plan, external data), checked against its
        sha256 as they are read (unless the bundle was opened with ``verify=False``)."""
        return read_checked(self.file_path(entry), entry["sha256"] if self.verify else None)

    @property
    def graphs(self) -> dict[str, dict[str, Any]]:
        """Graph name -> manifest entry."""
        return self.manifest["graphs"]

    def has(self, graph: str) -> bool:
        """Whether the bundle holds ``graph``."""
        return graph in self.manifest["graphs"]

    def graph_path(self, graph: str) -> Path:
        """Path of a graph's ONNX file; a clear error lists the graphs the bundle holds."""
        if graph not in self.graphs:
            raise BundleError(
                f"bundle {self.root} has no graph {graph!r} (it has {sorted(self.graphs)}); "
                f"rebuild with `python export/build_engines.py --graphs ...{graph}`"
            )
        return inside(self.root, self.graphs[graph]["file"])

    def preset(self, name: str | None = None) -> Preset:
        """The named preset's constants (default: the bundle's default preset)."""
        name = name or self.contract.default_preset
        if name not in self.contract.presets:
            raise BundleError(
                f"unknown preset {name!r}; this bundle has {sorted(self.contract.presets)}"
            )
        return self.contract.presets[name]

    def section(self, name: str) -> Any:
        """A preprocessing section as its typed contract class (``runtime.bundle.contract.SECTIONS``)."""
        if name not in self.contract.sections:
            raise BundleError(
                f"bundle {self.root} has no preprocessing section {name!r} (it has "
                f"{sorted(self.contract.sections)}); rebuild it with the graphs that need it"
            )
        return self.contract.sections[name]

    def verified_graph(self, graph: str) -> VerifiedGraph:
        """The graph's ONNX file and its external-data files, read into memory and checked against the
        manifest's sha256 as they are read (:func:`runtime.bundle.verified.read_verified_graph`).

        What a session is created from is therefore exactly what was checked, even if a file was
        replaced after :meth:`open`. Where external data may point is always checked; with
        ``verify=False`` the checksums are not, and a warning is logged once per bundle.
        """
        path = self.graph_path(graph)
        entry = self.graphs[graph]
        inside(self.root, entry["file"], what=f"graph {graph!r}")  # contained, no symlink
        for extra in entry.get("extra_files", []):
            inside(
                self.root,
                extra.get("file") if isinstance(extra, dict) else extra,
                what=f"graph {graph!r} external data",
            )
        if not self.verify and "unverified" not in self._warned:
            self._warned.add("unverified")
            log.warning(
                "bundle %s was loaded with verify=False: its graphs run without a checksum check",
                self.root,
            )
        try:
            return read_verified_graph(self.root, graph, self.graphs[graph], verify=self.verify)
        except BundleError as e:
            if "fails its checksum" in str(e):
                raise BundleError(
                    f"{e} (checked again as it was read for its session: it was changed after the bundle was loaded)"
                ) from None
            raise BundleError(f"{e} ({path.name} of bundle {self.root})") from None

    def graph_bytes(self, graph: str) -> bytes:
        """The graph's ONNX file as bytes, checked as :meth:`verified_graph` checks it (external data
        included); the bytes alone cannot run a graph with external data: use :meth:`verified_graph`."""
        return self.verified_graph(graph).model

    @property
    def random_weights(self) -> bool:
        """True when any graph was built from random weights, wholly or in part (``random_parts``:
        e.g. an audio tower whose projection stayed random); its results mean nothing."""
        return any(
            w.get("source") == "random-init" or bool(w.get("random_parts"))
            for w in self.manifest["weights"].values()
        )
