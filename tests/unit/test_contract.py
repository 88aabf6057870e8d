"""The bundle contract: a malformed manifest is refused at load with the field named; what runs is what
was checked (tampering after load, broken or swapped graphs); sessions are made once per graph."""

from __future__ import annotations

import copy
import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.bundle import Bundle, sha256_file
from runtime.bundle.contract import GRAPHS, validate_manifest
from runtime.errors import BundleError


@pytest.fixture(scope="module")
def manifest(tiny_bundle) -> dict:
    return json.loads((tiny_bundle / "manifest.json").read_text())


def _set(m: dict, path: str, value) -> dict:
    m = copy.deepcopy(m)
    *parents, last = path.split(".")
    node = m
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return m


_DELETE = object()

# (what is changed, new value, the field the error must name), one row per kind of field
MALFORMED = [
    ("schema_version", "1", "schema_version"),
    ("schema", "other-bundle", "schema"),
    ("graphs", [], "graphs"),
    ("graphs.acfpn", "acfpn.onnx", "graphs.acfpn"),
    ("graphs.acfpn.sha256", 12, "graphs.acfpn.sha256"),
    ("graphs.acfpn.opset", "18", "graphs.acfpn.opset"),
    ("graphs.acfpn.precision", "fp8", "graphs.acfpn.precision"),
    (
        "graphs.acfpn.precision",
        "int8",
        "graphs.acfpn.agreement",
    ),  # int8 without its measured agreement
    (
        "graphs.acfpn.agreement",
        {"cosine_min": 1.5, "max_abs": 0.1, "inputs": "x"},
        "graphs.acfpn.agreement.cosine_min",
    ),
    (
        "graphs.acfpn.agreement",
        {"cosine_min": 0.999, "max_abs": -1, "inputs": "x"},
        "graphs.acfpn.agreement.max_abs",
    ),
    (
        "graphs.acfpn.agreement",
        {"cosine_min": 0.999, "max_abs": 0.1},
        "graphs.acfpn.agreement.inputs",
    ),
    ("graphs.acfpn.inputs.0.name", "img", "graphs.acfpn.inputs[0].name"),
    ("graphs.acfpn.inputs.1.dtype", "float64", "graphs.acfpn.inputs[1].dtype"),
    ("graphs.acfpn.outputs.0.shape", [1, 1], "graphs.acfpn.outputs[0].shape"),
    ("graphs.acfpn.audio_graph", "clap_audio", "graphs.acfpn.audio_graph"),
    ("graphs.audioclip_audio.num_samples", -5, "graphs.audioclip_audio.num_samples"),
    ("preprocessing.image", _DELETE, "preprocessing.image"),
    ("preprocessing.image.size", 0, "preprocessing.image.size"),
    ("preprocessing.image.mean", [0.5, 0.5], "preprocessing.image.mean"),
    ("preprocessing.image.std", [0.2, 0.0, 0.2], "preprocessing.image.std"),
    ("preprocessing.audio.sample_rate", 44100.5, "preprocessing.audio.sample_rate"),
    ("preprocessing.sam", _DELETE, "preprocessing.sam"),
    ("preprocessing.sam.mask_threshold", "0", "preprocessing.sam.mask_threshold"),
    ("presets.default.heatmap_reverse", "no", "presets.default.heatmap_reverse"),
    ("presets.sam4avs.audio_input_scale", 0, "presets.sam4avs.audio_input_scale"),
    ("default_preset", "fast", "default_preset"),
    ("weights", [], "weights"),
    ("banks", [], "banks"),
    ("labels", {"box_prompt": {"names": "dog"}}, "labels.box_prompt.names"),
]


@pytest.mark.parametrize(("path", "value", "field"), MALFORMED, ids=[r[0] for r in MALFORMED])
def test_malformed_manifest_is_refused_at_load_naming_the_field(
    manifest, tmp_path, path, value, field
):
    assert validate_manifest(manifest, "ok")  # the real one passes
    bad = _set(manifest, path, value)
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(BundleError) as e:
        runtime.load(tmp_path)
    assert repr(field) in str(e.value) or field in str(e.value), str(e.value)


def test_a_graph_the_contract_does_not_know_is_refused(manifest, tmp_path):
    bad = _set(manifest, "graphs.resnet", manifest["graphs"]["acfpn"])
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(BundleError, match="graphs.resnet"):
        runtime.load(tmp_path)


def test_export_names_come_from_the_contract():
    from export.acfpn_export import INPUT_NAMES as ACFPN_IN
    from export.audioclip_image import OUTPUT_NAMES as IMAGE_OUT
    from export.sam_export import DECODER_INPUTS

    assert tuple(ACFPN_IN) == GRAPHS["acfpn"].input_names
    assert tuple(IMAGE_OUT) == GRAPHS["audioclip_image"].output_names
    assert tuple(DECODER_INPUTS) == GRAPHS["sam_prompt_decoder"].input_names


# --- what runs is what was checked ---------------------------------------------------------------------


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    return out


def _frames_audio():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)], rng.uniform(
        -0.3, 0.3, 16000
    ).astype(np.float32)


def test_a_graph_replaced_after_load_does_not_run(bundle_copy):
    pipe = runtime.load(bundle_copy)
    shutil.copy(bundle_copy / "audioclip_image.onnx", bundle_copy / "acfpn.onnx")
    frames, audio = _frames_audio()
    with pytest.raises(BundleError, match="changed after the bundle was loaded"):
        pipe.segment(frames, audio, 16000, mode="acfpn")


@pytest.mark.parametrize("damage", ["truncated", "swapped"])
def test_a_broken_graph_with_a_recomputed_hash_is_refused_naming_it(bundle_copy, damage):
    target = bundle_copy / "acfpn.onnx"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:5000])
    else:
        shutil.copy(bundle_copy / "audioclip_image.onnx", target)
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["graphs"]["acfpn"]["sha256"] = sha256_file(target)
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    pipe = runtime.load(bundle_copy)
    frames, audio = _frames_audio()
    with pytest.raises(BundleError, match="graph 'acfpn'"):
        pipe.segment(frames, audio, 16000, mode="acfpn")
    assert pipe.segment(frames, audio, 16000, mode="heatmap").masks[0].shape == (
        32,
        32,
    )  # the rest still runs


def test_verify_false_warns_once(bundle_copy, caplog):
    pipe = runtime.load(bundle_copy, verify=False)
    frames, audio = _frames_audio()
    with caplog.at_level(logging.WARNING, logger="runtime.bundle"):
        pipe.segment(frames, audio, 16000, mode="heatmap")
        pipe.segment(frames, audio, 16000, mode="acfpn")
    assert sum("verify=False" in r.getMessage() for r in caplog.records) == 1


def test_sessions_are_created_once_under_concurrent_first_use(tiny_bundle):
    pipe = runtime.load(tiny_bundle)
    got, errors = [], []
    start = threading.Barrier(4)

    def worker():
        try:
            start.wait(timeout=30)
            got.append(pipe.session("audioclip_image"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(got) == 4 and all(s is got[0] for s in got)


def test_typed_sections_and_presets(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    assert b.section("image").size == 224 and len(b.section("image").mean) == 3
    assert b.preset("sam4avs").zero_shot_quirks and not b.preset().zero_shot_quirks
    with pytest.raises(BundleError, match="no preprocessing section 'clap'"):
        b.section("clap")
