"""The bundle format: a folder of ONNX graphs and banks described by ``manifest.json``.

The runtime owns this schema; ``export/build_engines.py`` writes bundles through :func:`write_manifest`
and :func:`file_entry`. A bundle whose schema, files or checksums do not check out is refused with a
:class:`~runtime.errors.BundleError` that names the problem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import BundleError

SCHEMA = "avs-runtime-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

KNOWN_GRAPHS = (
    "audioclip_audio",
    "audioclip_audio_1s",
    "audioclip_image",
    "acfpn",
    "acfpn_audio",
    "sam_image_encoder",
    "sam_prompt_decoder",
    "clap_audio",
    "detector",
)
_REQUIRED_TOP = ("schema", "schema_version", "graphs", "preprocessing", "presets", "weights")
_REQUIRED_GRAPH = ("file", "sha256", "inputs", "outputs", "opset", "precision")


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
    """Validate ``manifest`` against the schema and write it as ``manifest.json``."""
    manifest = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **manifest}
    _validate(manifest, Path(bundle_dir))
    out = Path(bundle_dir) / MANIFEST
    out.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return out


def _validate(m: dict[str, Any], root: Path) -> None:
    missing = [k for k in _REQUIRED_TOP if k not in m]
    if missing:
        raise BundleError(f"{root / MANIFEST}: missing top-level fields {missing}")
    if m["schema"] != SCHEMA:
        raise BundleError(f"{root / MANIFEST}: schema is {m['schema']!r}, expected {SCHEMA!r}")
    if m["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"{root / MANIFEST}: schema_version {m['schema_version']} is not supported by this "
            f"runtime (supports {SCHEMA_VERSION}); rebuild the bundle with export/build_engines.py"
        )
    if not isinstance(m["graphs"], dict) or not m["graphs"]:
        raise BundleError(f"{root / MANIFEST}: 'graphs' must be a non-empty mapping")
    for name, g in m["graphs"].items():
        if name not in KNOWN_GRAPHS:
            raise BundleError(f"{root / MANIFEST}: unknown graph {name!r}; known: {list(KNOWN_GRAPHS)}")
        gm = [k for k in _REQUIRED_GRAPH if k not in g]
        if gm:
            raise BundleError(f"{root / MANIFEST}: graph {name!r} lacks fields {gm}")
    if m["presets"] and "default_preset" in m and m["default_preset"] not in m["presets"]:
        raise BundleError(f"{root / MANIFEST}: default_preset {m['default_preset']!r} not in presets")


@dataclass
class Bundle:
    """A checked bundle on disk: its folder and parsed manifest."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path, *, verify: bool = True) -> Bundle:
        """Read ``root/manifest.json``, check the schema and (``verify``) every file's sha256."""
        root = Path(root)
        if not root.is_dir():
            raise BundleError(f"bundle folder not found: {root} (build one with `python export/build_engines.py`)")
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{root} is not a bundle: {MANIFEST} is missing")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{mpath} is not valid JSON: {e}") from e
        if not isinstance(manifest, dict):
            raise BundleError(f"{mpath} must hold a JSON object")
        _validate(manifest, root)
        bundle = cls(root, manifest)
        for entry in bundle._all_file_entries():
            bundle._check_file(entry, verify)
        return bundle

    def _all_file_entries(self) -> list[dict[str, Any]]:
        entries = []
        for g in self.manifest["graphs"].values():
            entries.append(g)
            entries.extend(g.get("extra_files", []))
        entries.extend(self.manifest.get("banks", {}).values())
        return entries

    def _check_file(self, entry: dict[str, Any], verify: bool) -> None:
        path = self.root / entry["file"]
        try:
            path.resolve().relative_to(self.root.resolve())
        except ValueError:
            raise BundleError(f"bundle file {entry['file']!r} points outside the bundle") from None
        if not path.is_file():
            raise BundleError(f"bundle file missing: {path}")
        if verify:
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                raise BundleError(
                    f"bundle file {path} fails its checksum (sha256 {digest[:12]}..., manifest says "
                    f"{entry['sha256'][:12]}...): the file was changed or damaged; rebuild the bundle"
                )

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
        return self.root / self.graphs[graph]["file"]

    def preset(self, name: str | None = None) -> dict[str, Any]:
        """The named preset's constants (or the bundle's default preset)."""
        presets = self.manifest["presets"]
        name = name or self.manifest.get("default_preset", "default")
        if name not in presets:
            raise BundleError(f"unknown preset {name!r}; this bundle has {sorted(presets)}")
        return {"name": name, **presets[name]}

    @property
    def random_weights(self) -> bool:
        """True when any graph was built from random weights (results mean nothing)."""
        return any(w.get("source") == "random-init" for w in self.manifest["weights"].values())
