"""The bundle contract as typed code: graph I/O specs, preprocessing sections, presets.

This module is the one place that spells out the bundle format. ``export/`` imports it to name graph
inputs and outputs and to write the manifest; :class:`runtime.bundle.Bundle` validates a manifest
against it at load time, so a malformed field is refused with a :class:`~runtime.errors.BundleError`
naming the field (``graphs.acfpn.inputs[0].name``), never a ``KeyError`` at ``segment`` time.

Manifest layout (``manifest.json``)::

    schema            "avs-runtime-bundle"
    schema_version    1 (an int)
    graphs            name -> {file, sha256, bytes, inputs, outputs, opset, precision, ...}; a graph
                      with ONNX external data lists its files in ``extra_files`` ([{file, sha256,
                      bytes}]: every location its initializers name); a graph
                      not in fp32 also carries ``agreement`` (AGREEMENT_FIELDS: its measured
                      agreement with the fp32 graph it was made from)
    preprocessing     section name -> constants (SECTIONS below)
    presets           preset name -> constants (PRESET_CONSTANTS below)
    default_preset    a key of presets (optional, "default")
    weights           provenance of every weight file, or {"source": "random-init", "seed": N}
    banks             name -> {file, sha256, ...}: .npy arrays (label banks)
    labels            list name -> {names: [...]}

numpy-free and onnxruntime-free: plain Python only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.errors import BundleError
from runtime.preprocess.audio import INT16_SCALE

SCHEMA = "avs-runtime-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


# --- graphs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, element type and symbolic shape (ints fixed, strs free)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class GraphSpec:
    """A graph of the bundle: inputs and outputs in call order, and what it computes."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    doc: str
    entry_fields: tuple[str, ...] = ()  # extra manifest fields this graph's entry must carry

    @property
    def input_names(self) -> tuple[str, ...]:
        """Input names in call order."""
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Output names in the order the graph returns them."""
        return tuple(t.name for t in self.outputs)


def _t(name: str, *shape: int | str, dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, dtype, tuple(shape))


_WAVEFORM = (_t("waveform", "batch", "num_samples"),)
_EMBEDDING = (_t("embedding", "batch", "dim"),)

GRAPHS: dict[str, GraphSpec] = {
    g.name: g
    for g in (
        GraphSpec(
            "audioclip_audio",
            _WAVEFORM,
            _EMBEDDING,
            "AudioCLIP audio tower: waveform (int16 units x preset scale, preprocessing.audio rate) -> embedding",
            ("num_samples",),
        ),
        GraphSpec(
            "audioclip_audio_1s",
            _WAVEFORM,
            _EMBEDDING,
            "AudioCLIP audio tower for untiled 1-s clips (No-Prompt's reference input)",
            ("num_samples", "sample_rate"),
        ),
        GraphSpec(
            "acfpn_audio",
            _WAVEFORM,
            _EMBEDDING,
            "the AC-FPN checkpoint's own audio tower (same input as audioclip_audio)",
            ("num_samples",),
        ),
        GraphSpec(
            "audioclip_image",
            (_t("image", "batch", 3, "size", "size"),),
            (
                _t("global", "batch", "dim"),
                _t("dense", "batch", "dim", "grid", "grid"),
                _t("surgery_dense", "batch", "dim", "grid", "grid"),
            ),
            "CLIP RN50 visual tower: normalised image -> global, dense and CLIP-Surgery dense tokens",
        ),
        GraphSpec(
            "acfpn",
            (_t("image", "batch", 3, "size", "size"), _t("audio_embedding", "batch", "dim")),
            (_t("logits", "batch", 1, "size", "size"),),
            "supervised AC-FPN: image + audio embedding -> mask logits",
        ),
        GraphSpec(
            "sam_image_encoder",
            (_t("image", "batch", 3, "sam_size", "sam_size"),),
            (_t("image_embeddings", "batch", "channels", "grid", "grid"),),
            "SAM image encoder: normalised, padded image -> embedding",
        ),
        GraphSpec(
            "sam_prompt_decoder",
            (
                _t("image_embeddings", 1, "channels", "grid", "grid"),
                _t("point_coords", "prompts", "points", 2),
                _t("point_labels", "prompts", "points"),
                _t("mask_input", "prompts", 1, "low", "low"),
                _t("has_mask_input", 1),
            ),
            (_t("iou_predictions", "prompts", 4), _t("low_res_masks", "prompts", 4, "low", "low")),
            "SAM prompt decoder: one embedding + P prompt sets -> IoU predictions and low-res logits of 4 masks",
        ),
        GraphSpec(
            "sam_point_decoder",
            (
                _t("image_embeddings", 1, "channels", "grid", "grid"),
                _t("point_coords", "prompts", "points", 2),
                _t("point_labels", "prompts", "points"),
            ),
            (_t("iou_predictions", "prompts", 4), _t("low_res_masks", "prompts", 4, "low", "low")),
            "SAM prompt decoder without mask input (the image side shared by the P prompt sets; optional)",
        ),
        GraphSpec(
            "sam_point_iou",
            (
                _t("image_embeddings", 1, "channels", "grid", "grid"),
                _t("point_coords", "prompts", "points", 2),
                _t("point_labels", "prompts", "points"),
            ),
            (
                _t("iou_predictions", "prompts", 4),
                _t("image_tokens", "prompts", "hw", "channels"),
                _t("mask_hyper", "prompts", 4, "hyper"),
            ),
            "first half of sam_point_decoder: IoU predictions, and the image tokens and mask "
            "hypernetwork outputs the second half needs (optional; No-Prompt upscales only the "
            "prompt sets whose IoU can pass)",
        ),
        GraphSpec(
            "sam_mask_upscaler",
            (
                _t("image_tokens", "prompts", "hw", "channels"),
                _t("mask_hyper", "prompts", 4, "hyper"),
            ),
            (_t("low_res_masks", "prompts", 4, "low", "low"),),
            "second half of sam_point_decoder: output upscaling + mask product -> low-res logits "
            "of 4 masks (optional, with sam_point_iou)",
        ),
        GraphSpec(
            "clap_audio",
            _WAVEFORM,
            _EMBEDDING,
            "CLAP audio tower (HTSAT): 48 kHz waveform -> embedding",
            ("num_samples", "sample_rate"),
        ),
        GraphSpec(
            "detector",
            (
                _t("image", "batch", 3, "height", "width"),
                _t("encoded_text", "batch", "tokens", "width"),
                _t("text_token_mask", "batch", "tokens", dtype="bool"),
                _t("position_ids", "batch", "tokens", dtype="int64"),
                _t("text_self_attention_masks", "batch", "tokens", "tokens", dtype="bool"),
            ),
            (_t("scores", "batch", "queries"), _t("boxes", "batch", "queries", 4)),
            "GroundingDINO: image + one label's text tensors -> query scores and normalised cxcywh boxes",
        ),
    )
}
KNOWN_GRAPHS = tuple(GRAPHS)

# Output names of audioclip_image, by role.
IMAGE_GLOBAL, IMAGE_DENSE, IMAGE_SURGERY_DENSE = GRAPHS["audioclip_image"].output_names

# Banks (.npy arrays beside the graphs) and label lists: names as export writes them.
CLAP_TEXT_BANK = "clap_text"  # float32 [N, D] CLAP text embeddings of the box_prompt labels
DETECTOR_LENGTH_BANK = "detector_length"  # int [N]: tokens of each label's caption
BOX_PROMPT_LABELS = "box_prompt"


def detector_bank(input_name: str) -> str:
    """The bank holding the per-label values of detector input ``input_name`` ([N, L, ...], padded)."""
    return f"detector_{input_name}"


_GRAPH_FIELDS = ("file", "sha256", "inputs", "outputs", "opset", "precision")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# ``graphs.<name>.agreement`` of a graph not in fp32: the minimum cosine between its outputs and the fp32
# graph's (each output flattened per sample), the max abs difference, and which inputs were compared.
AGREEMENT_FIELDS = {"cosine_min": "cosine", "max_abs": "non_neg_number", "inputs": "text"}


# --- preprocessing sections ----------------------------------------------------------------------


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pos_number(v: Any) -> bool:
    return _number(v) and v > 0


def _triple(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(_number(x) for x in v)


def _pos_triple(v: Any) -> bool:
    return _triple(v) and all(x > 0 for x in v)


def _hw(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_pos_int(x) for x in v)


_CHECKS: dict[str, tuple[Any, str]] = {
    "pos_int": (_pos_int, "a positive integer"),
    "pos_number": (_pos_number, "a positive finite number"),
    "number": (_number, "a finite number"),
    "triple": (_triple, "a list of 3 finite numbers (R, G, B)"),
    "pos_triple": (_pos_triple, "a list of 3 positive finite numbers (R, G, B)"),
    "hw": (_hw, "a [height, width] list of positive integers"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "pos_int_or_null": (lambda v: v is None or _pos_int(v), "a positive integer or null"),
    "unit": (lambda v: _number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "short_clip": (lambda v: v in ("repeat", "refuse"), "'repeat' or 'refuse'"),
    "cosine": (lambda v: _number(v) and -1.0 <= v <= 1.0, "a number in [-1, 1]"),
    "non_neg_number": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
    "text": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string"),
}


@dataclass(frozen=True)
class ImageSection:
    """``preprocessing.image``: CLIP input size (px), mean and std on the 0..1 scale (RGB)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class AudioSection:
    """``preprocessing.audio``: AudioCLIP's rate (Hz), per-frame chunk (s) and how often it is tiled."""

    sample_rate: int
    chunk_seconds: float
    tile: int


@dataclass(frozen=True)
class SamSection:
    """``preprocessing.sam``: SAM's square input size, patch size, pixel mean/std (0..255) and logit threshold."""

    image_size: int
    patch_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    mask_threshold: float


@dataclass(frozen=True)
class ClapSection:
    """``preprocessing.clap``: CLAP's rate (Hz), per-frame chunk (s) and clip length (samples)."""

    sample_rate: int
    chunk_seconds: float
    clip_samples: int


@dataclass(frozen=True)
class DetectorSection:
    """``preprocessing.detector``: GroundingDINO's resize (short side, max long side), mean/std, box threshold."""

    short_side: int
    max_size: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    box_threshold: float


# section name -> (dataclass, field -> check, graphs that need the section)
SECTIONS: dict[str, tuple[type, dict[str, str], tuple[str, ...]]] = {
    "image": (ImageSection, {"size": "pos_int", "mean": "triple", "std": "pos_triple"}, ()),
    "audio": (
        AudioSection,
        {"sample_rate": "pos_int", "chunk_seconds": "pos_number", "tile": "pos_int"},
        (),
    ),
    "sam": (
        SamSection,
        {
            "image_size": "pos_int",
            "patch_size": "pos_int",
            "pixel_mean": "triple",
            "pixel_std": "pos_triple",
            "mask_threshold": "number",
        },
        ("sam_image_encoder", "sam_prompt_decoder", "sam_point_decoder"),
    ),
    "clap": (
        ClapSection,
        {"sample_rate": "pos_int", "chunk_seconds": "pos_number", "clip_samples": "pos_int"},
        ("clap_audio",),
    ),
    "detector": (
        DetectorSection,
        {
            "short_side": "pos_int",
            "max_size": "pos_int_or_null",
            "mean": "triple",
            "std": "pos_triple",
            "box_threshold": "unit",
        },
        ("detector",),
    ),
}
REQUIRED_SECTIONS = ("image", "audio")


# --- presets ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A named set of behaviour constants (the manifest's ``presets.<name>``).

    audio_input_scale: the waveform in [-1, 1] is multiplied by this before AudioCLIP (32768 = the
    int16 units AudioCLIP was trained on; 1.0 = the reference's quirk). heatmap_reverse: the heatmap
    is ``1 - cosine`` (the reference's quirk). image_antialias: antialias when resizing frames for
    CLIP (the reference's torchvision did not). zero_shot_quirks: the zero-shot modes reproduce the
    reference's other quirks (peak points, crops, frame policy, No-Prompt audio). short_clip: what
    a clip shorter than one chunk gets: "repeat" (repeated to fill the chunk) or "refuse" (the
    reference gives every frame the whole short clip, which fixed-length graphs cannot reproduce).
    """

    name: str
    audio_input_scale: float
    heatmap_reverse: bool
    image_antialias: bool
    zero_shot_quirks: bool
    short_clip: str = "repeat"

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return key in PRESET_CONSTANTS or key == "name"

    def get(self, key: str, default: Any = None) -> Any:
        """The constant ``key``, or ``default``."""
        return getattr(self, key, default)

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``presets.<name>`` object: every constant of :data:`PRESET_CONSTANTS`."""
        return {key: getattr(self, key) for key in PRESET_CONSTANTS}


PRESET_CONSTANTS: dict[str, str] = {
    "audio_input_scale": "pos_number",
    "heatmap_reverse": "bool",
    "image_antialias": "bool",
    "zero_shot_quirks": "bool",
    "short_clip": "short_clip",
}
# The presets build_engines writes (a bundle may add others), the one table of their constants
# (spec sam4avs-reference 1.5 and 6.1): `default` is the corrected behaviour; `sam4avs` reproduces
# the reference, which feeds librosa's [-1, 1] waveform without AudioCLIP's x32768, reverses the
# heatmap, resizes without antialiasing, keeps its zero-shot quirks and cannot take clips under
# one chunk.
BUILTIN_PRESETS: dict[str, Preset] = {
    "default": Preset(
        "default",
        audio_input_scale=INT16_SCALE,
        heatmap_reverse=False,
        image_antialias=True,
        zero_shot_quirks=False,
        short_clip="repeat",
    ),
    "sam4avs": Preset(
        "sam4avs",
        audio_input_scale=1.0,
        heatmap_reverse=True,
        image_antialias=False,
        zero_shot_quirks=True,
        short_clip="refuse",
    ),
}
PRESET_NAMES = tuple(BUILTIN_PRESETS)


# --- validation ------------------------------------------------------------------------------------


def _fail(where: str, field_path: str, msg: str) -> BundleError:
    return BundleError(
        f"{where}: field {field_path!r} {msg}; rebuild the bundle with export/build_engines.py"
    )


def _check(where: str, path: str, value: Any, kind: str) -> None:
    ok, what = _CHECKS[kind]
    if not ok(value):
        raise _fail(where, path, f"must be {what}, got {value!r}")


def _check_tensors(where: str, path: str, got: Any, want: tuple[TensorSpec, ...]) -> None:
    if not isinstance(got, list) or len(got) != len(want):
        raise _fail(
            where,
            path,
            f"must be a list of {len(want)} tensor specs {[t.name for t in want]}, got {got!r}",
        )
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        p = f"{path}[{i}]"
        if not isinstance(g, dict):
            raise _fail(where, p, f"must be an object with name, dtype and shape, got {g!r}")
        if g.get("name") != w.name:
            raise _fail(where, f"{p}.name", f"must be {w.name!r}, got {g.get('name')!r}")
        if "dtype" in g and g["dtype"] != w.dtype:
            raise _fail(where, f"{p}.dtype", f"must be {w.dtype!r}, got {g['dtype']!r}")
        shape = g.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) != len(w.shape)
            or not all(
                (isinstance(d, int) and not isinstance(d, bool) and d > 0) or isinstance(d, str)
                for d in shape
            )
        ):
            raise _fail(
                where,
                f"{p}.shape",
                f"must be a list of {len(w.shape)} dims (positive ints or names), got {shape!r}",
            )
        for d, wd in zip(shape, w.shape, strict=True):
            if isinstance(wd, int) and isinstance(d, int) and d != wd:
                raise _fail(where, f"{p}.shape", f"must be {list(w.shape)}, got {shape!r}")


def _check_extra_files(where: str, path: str, extras: Any) -> None:
    """``graphs.<name>.extra_files``: the graph's external-data files, each ``{file, sha256, bytes}``
    (``file`` relative to the bundle; the ONNX initializers' locations must name these files)."""
    if not isinstance(extras, list):
        raise _fail(where, path, f"must be a list of file entries, got {extras!r}")
    for i, x in enumerate(extras):
        p = f"{path}[{i}]"
        if not isinstance(x, dict) or not isinstance(x.get("file"), str) or not x["file"]:
            raise _fail(
                where, p, f"must be an object with a file name, sha256 and bytes, got {x!r}"
            )
        sha = x.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64:
            raise _fail(where, f"{p}.sha256", f"must be a 64-character hex digest, got {sha!r}")
        if "bytes" in x:
            _check(where, f"{p}.bytes", x["bytes"], "non_neg_number")


def validate_graph_entry(where: str, name: str, g: Any, graphs: Mapping[str, Any]) -> None:
    """Check one ``graphs.<name>`` entry against :data:`GRAPHS`; BundleError names the bad field."""
    path = f"graphs.{name}"
    if name not in GRAPHS:
        raise _fail(where, path, f"is an unknown graph; known: {list(KNOWN_GRAPHS)}")
    if not isinstance(g, dict):
        raise _fail(where, path, f"must be an object, got {type(g).__name__}")
    missing = [k for k in _GRAPH_FIELDS if k not in g]
    if missing:
        raise _fail(where, path, f"lacks fields {missing}")
    if not isinstance(g["file"], str) or not g["file"]:
        raise _fail(where, f"{path}.file", f"must be a file name, got {g['file']!r}")
    if not isinstance(g["sha256"], str) or len(g["sha256"]) != 64:
        raise _fail(
            where, f"{path}.sha256", f"must be a 64-character hex digest, got {g['sha256']!r}"
        )
    _check(where, f"{path}.opset", g["opset"], "pos_int")
    _check_extra_files(where, f"{path}.extra_files", g.get("extra_files", []))
    if g["precision"] not in PRECISIONS:
        raise _fail(
            where, f"{path}.precision", f"must be one of {list(PRECISIONS)}, got {g['precision']!r}"
        )
    if g["precision"] != "fp32" or "agreement" in g:
        agr = g.get("agreement")
        if not isinstance(agr, dict):
            raise _fail(
                where,
                f"{path}.agreement",
                f"must be an object {sorted(AGREEMENT_FIELDS)} (the measured "
                f"agreement of this {g['precision']} graph with fp32), got {agr!r}",
            )
        for f, kind in AGREEMENT_FIELDS.items():
            _check(where, f"{path}.agreement.{f}", agr.get(f), kind)
    spec = GRAPHS[name]
    _check_tensors(where, f"{path}.inputs", g["inputs"], spec.inputs)
    _check_tensors(where, f"{path}.outputs", g["outputs"], spec.outputs)
    for f in spec.entry_fields:
        _check(where, f"{path}.{f}", g.get(f), "pos_int")
    if name == "acfpn":
        ag = g.get("audio_graph", "audioclip_audio")
        if ag not in ("audioclip_audio", "acfpn_audio") or ag not in graphs:
            raise _fail(
                where, f"{path}.audio_graph", f"must name an audio graph of the bundle, got {ag!r}"
            )
        s = g.get("audio_input_scale")
        if s is not None:
            _check(where, f"{path}.audio_input_scale", s, "pos_number")


def _section(where: str, name: str, raw: Any) -> Any:
    cls, checks, _ = SECTIONS[name]
    path = f"preprocessing.{name}"
    if not isinstance(raw, dict):
        raise _fail(where, path, f"must be an object, got {raw!r}")
    values = {}
    for f, kind in checks.items():
        if f not in raw:
            raise _fail(where, f"{path}.{f}", "is missing")
        _check(where, f"{path}.{f}", raw[f], kind)
        v = raw[f]
        values[f] = tuple(float(x) for x in v) if isinstance(v, list) else v
    return cls(**values)


def _preset(where: str, name: str, raw: Any) -> Preset:
    path = f"presets.{name}"
    if not isinstance(raw, dict):
        raise _fail(where, path, f"must be an object, got {raw!r}")
    builtin = BUILTIN_PRESETS.get(name)
    raw = {
        "zero_shot_quirks": builtin is not None and builtin.zero_shot_quirks,
        **raw,
    }  # bundles built before these constants existed
    raw = {"short_clip": "refuse" if raw["zero_shot_quirks"] is True else "repeat", **raw}
    for key, kind in PRESET_CONSTANTS.items():
        if key not in raw:
            raise _fail(where, f"{path}.{key}", "is missing")
        _check(where, f"{path}.{key}", raw[key], kind)
    return Preset(
        name,
        float(raw["audio_input_scale"]),
        raw["heatmap_reverse"],
        raw["image_antialias"],
        raw["zero_shot_quirks"],
        raw["short_clip"],
    )


@dataclass(frozen=True)
class Contract:
    """A manifest checked against the contract: typed sections and presets (only those present)."""

    sections: dict[str, Any]
    presets: dict[str, Preset]
    default_preset: str


def validate_manifest(m: Any, where: str) -> Contract:
    """Check a parsed manifest against the contract; return its typed sections and presets.

    where: what to name in messages (the manifest's path). Raises BundleError naming the bad field.
    """
    if not isinstance(m, dict):
        raise BundleError(f"{where}: the manifest must be a JSON object, got {type(m).__name__}")
    for k in ("schema", "schema_version", "graphs", "preprocessing", "presets", "weights"):
        if k not in m:
            raise _fail(where, k, "is missing")
    if m["schema"] != SCHEMA:
        raise _fail(where, "schema", f"must be {SCHEMA!r}, got {m['schema']!r}")
    v = m["schema_version"]
    if not isinstance(v, int) or isinstance(v, bool):
        raise _fail(
            where,
            "schema_version",
            f"must be an integer (this runtime reads {SCHEMA_VERSION}), got {v!r}",
        )
    if v != SCHEMA_VERSION:
        raise BundleError(
            f"{where}: schema_version {v} is not supported by this runtime (it reads "
            f"{SCHEMA_VERSION}); rebuild the bundle with export/build_engines.py"
        )
    graphs = m["graphs"]
    if not isinstance(graphs, dict) or not graphs:
        raise _fail(where, "graphs", f"must be a non-empty object of graph entries, got {graphs!r}")
    for name, g in graphs.items():
        validate_graph_entry(where, name, g, graphs)
    pre = m["preprocessing"]
    if not isinstance(pre, dict):
        raise _fail(where, "preprocessing", f"must be an object of sections, got {pre!r}")
    sections = {}
    for name, (_, _, needed_by) in SECTIONS.items():
        required = name in REQUIRED_SECTIONS or any(g in graphs for g in needed_by)
        if name in pre:
            sections[name] = _section(where, name, pre[name])
        elif required:
            raise _fail(
                where,
                f"preprocessing.{name}",
                "is missing"
                + (
                    f" (graphs {[g for g in needed_by if g in graphs]} need it)"
                    if needed_by
                    else ""
                ),
            )
    presets = m["presets"]
    if not isinstance(presets, dict) or not presets:
        raise _fail(where, "presets", f"must be a non-empty object of presets, got {presets!r}")
    typed = {name: _preset(where, name, p) for name, p in presets.items()}
    default = m.get("default_preset", "default")
    if default not in typed:
        raise _fail(
            where,
            "default_preset",
            f"must name one of the presets {sorted(typed)}, got {default!r}",
        )
    if not isinstance(m["weights"], dict):
        raise _fail(where, "weights", f"must be an object, got {m['weights']!r}")
    for key in ("banks", "labels"):
        if key in m and not isinstance(m[key], dict):
            raise _fail(where, key, f"must be an object, got {m[key]!r}")
    for name, b in m.get("banks", {}).items():
        if (
            not isinstance(b, dict)
            or not isinstance(b.get("file"), str)
            or not isinstance(b.get("sha256"), str)
        ):
            raise _fail(
                where, f"banks.{name}", f"must be an object with file and sha256, got {b!r}"
            )
    for name, lab in m.get("labels", {}).items():
        if (
            not isinstance(lab, dict)
            or not isinstance(lab.get("names"), list)
            or not all(isinstance(x, str) for x in lab["names"])
        ):
            raise _fail(where, f"labels.{name}.names", "must be a list of strings")
    return Contract(sections, typed, default)
