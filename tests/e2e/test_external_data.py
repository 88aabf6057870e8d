"""Graphs with ONNX external data: built with ``build_engines.py --external-data``, run from checked bytes.

The external-data bundle is the tiny profile built with the same seed as ``tiny_bundle``, so its
weights are the same numbers stored differently and every mode must give the same masks bit for bit.
Set ``AVS_TEST_BUNDLE_EXT`` (and ``AVS_TEST_BUNDLE``) to reuse built bundles.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime
from runtime.backends._onnxruntime import create_session
from runtime.bundle import Bundle, sha256_file
from runtime.bundle.verified import external_tensors, read_verified_graph
from runtime.errors import BundleError
from runtime.modes import MODES

FAST_PARAMS = {"no-prompt": {"amg": {"points_per_side": 4}}}


@pytest.fixture(scope="module")
def plain_bundle(request) -> Path:
    env = os.environ.get("AVS_TEST_BUNDLE")
    return Path(env) if env else request.getfixturevalue("tiny_bundle")


@pytest.fixture(scope="module")
def ext_bundle(tmp_path_factory) -> Path:
    env = os.environ.get("AVS_TEST_BUNDLE_EXT")
    if env:
        return Path(env)
    from export.build_engines import main

    out = tmp_path_factory.mktemp("bundle-ext") / "tiny-ext"
    assert main(["--profile", "tiny", "--external-data", "--out", str(out), "--quiet"]) == 0
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _clip(n: int = 2):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (n, 48, 64, 3), dtype=np.uint8)
    t = np.arange(16000 * n) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32)
    return list(frames), audio, 16000


def test_every_graph_has_external_data_listed_with_its_checksum(ext_bundle):
    b = Bundle.open(ext_bundle)
    assert b.graphs
    for name, entry in b.graphs.items():
        extras = entry.get("extra_files", [])
        assert len(extras) == 1, name
        assert sha256_file(ext_bundle / extras[0]["file"]) == extras[0]["sha256"]
        assert extras[0]["bytes"] == (ext_bundle / extras[0]["file"]).stat().st_size
        model = onnx.load(str(ext_bundle / entry["file"]), load_external_data=False)
        ext = [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
        locs = {{kv.key: kv.value for kv in t.external_data}["location"] for t in ext}
        assert locs == {extras[0]["file"]}, name  # every external tensor lives in the listed file
        # the exporter keeps only tensors of at most 256 bytes inline
        inline = [t for t in model.graph.initializer if t.data_location != TensorProto.EXTERNAL]
        assert ext and all(len(t.raw_data) <= 256 for t in inline), name


def test_same_weights_as_the_bundle_without_external_data(ext_bundle, plain_bundle):
    """The comparison below means something: both bundles hold the same numbers (onnx reads them)."""
    for name in ("sam_image_encoder", "audioclip_image"):
        a = onnx.load(str(ext_bundle / f"{name}.onnx"))
        b = onnx.load(str(plain_bundle / f"{name}.onnx"))
        wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
        wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
        assert wa.keys() == wb.keys()
        assert all(np.array_equal(wa[k], wb[k]) for k in wa), name


def test_every_mode_gives_the_masks_of_the_bundle_without_external_data(ext_bundle, plain_bundle):
    ext = runtime.load(ext_bundle, threads=1)
    plain = runtime.load(plain_bundle, threads=1)
    modes = [m for m, s in MODES.items() if all(ext.bundle.has(g) for g in s.graphs)]
    assert {"heatmap", "acfpn", "no-prompt"} <= set(modes)
    frames, audio, rate = _clip()
    for mode in modes:
        params = FAST_PARAMS.get(mode, {})
        got = ext.segment(frames, audio, rate, mode=mode, **params)
        ref = plain.segment(frames, audio, rate, mode=mode, **params)
        assert len(got.masks) == len(frames), mode
        for g, r in zip(got.masks, ref.masks, strict=True):
            assert g.shape == r.shape and np.array_equal(g, r), mode
        gi, ri = got.info()["frames"], ref.info()["frames"]
        assert [f["score"] for f in gi] == [f["score"] for f in ri], mode
        assert [f["prompt"] for f in gi] == [f["prompt"] for f in ri], mode


def test_a_tampered_external_file_is_refused(ext_bundle, tmp_path):
    bad = _copy(ext_bundle, tmp_path / "b")
    data = bad / "sam_image_encoder.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"sam_image_encoder\.onnx\.data.*fails its checksum"):
        Bundle.open(bad)
    # swapped after the bundle was opened: refused when the session is made from the bytes read then
    good = _copy(ext_bundle, tmp_path / "g")
    pipe = runtime.load(good, threads=1)
    (good / "sam_image_encoder.onnx.data").write_bytes(bytes(raw))
    with pytest.raises(
        BundleError, match="fails its checksum.*changed after the bundle was loaded"
    ):
        pipe.session("sam_image_encoder")


def _repoint(bundle: Path, graph: str, location: str) -> None:
    """Rewrite ``graph``'s initializers to read ``location`` and fix the graph's sha256 in the manifest
    (so the graph file itself checks out and only the location is wrong)."""
    path = bundle / f"{graph}.onnx"
    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                kv.value = location
    onnx.save_model(model, str(path))
    m = json.loads((bundle / "manifest.json").read_text())
    m["graphs"][graph]["sha256"] = sha256_file(path)
    (bundle / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    "location", ["../outside.data", "/tmp/avs-outside.data", "sub/../../outside.data"]
)
def test_an_external_data_path_outside_the_bundle_is_refused(ext_bundle, tmp_path, location):
    bad = _copy(ext_bundle, tmp_path / "b")
    shutil.copy(
        bad / "audioclip_image.onnx.data", tmp_path / "outside.data"
    )  # valid bytes out there
    _repoint(bad, "audioclip_image", location)
    for verify in (True, False):  # the location is checked even without checksums
        pipe = runtime.load(bad, threads=1, verify=verify)
        with pytest.raises(BundleError, match="outside the bundle; refused"):
            pipe.session("audioclip_image")


def test_an_unlisted_external_file_is_refused(ext_bundle, tmp_path):
    bad = _copy(ext_bundle, tmp_path / "b")
    shutil.copy(bad / "audioclip_image.onnx.data", bad / "other.data")
    _repoint(bad, "audioclip_image", "other.data")
    with pytest.raises(BundleError, match="'other.data', which the manifest does not list"):
        runtime.load(bad, threads=1).session("audioclip_image")


def test_a_manifest_extra_file_outside_the_bundle_is_refused(ext_bundle, tmp_path):
    bad = _copy(ext_bundle, tmp_path / "b")
    m = json.loads((bad / "manifest.json").read_text())
    m["graphs"]["acfpn"]["extra_files"][0]["file"] = "../acfpn.onnx.data"
    shutil.copy(bad / "acfpn.onnx.data", tmp_path / "acfpn.onnx.data")
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="points outside the bundle"):
        Bundle.open(bad)
    m["graphs"]["acfpn"]["extra_files"] = [{"file": "acfpn.onnx.data", "sha256": "x"}]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"extra_files\[0\]\.sha256"):
        Bundle.open(bad)


def test_the_session_does_not_keep_the_verified_buffers(ext_bundle):
    """onnxruntime copies the in-memory external files: overwriting them afterwards changes nothing."""
    b = Bundle.open(ext_bundle)
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    size = b.graphs["audioclip_image"]["inputs"][0]["shape"][2]
    x = x[:, :, :size, :size] if isinstance(size, int) else x
    vg = b.verified_graph("audioclip_image")
    sess, info = create_session(vg, providers=["cpu"], threads=1)
    assert info.graph == "audioclip_image"
    ref = sess.run(None, {"image": x})
    for buf in vg.external.values():
        buf[:] = bytes(len(buf))
    got = sess.run(None, {"image": x})
    assert all(np.array_equal(a, c) for a, c in zip(ref, got, strict=True))


def test_external_tensor_walker_agrees_with_onnx(tmp_path):
    """The runtime's protobuf walker finds the external tensors onnx itself lists, sub-graphs included."""

    def build():
        w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
        v = numpy_helper.from_array(np.ones(3, np.float32), "v")
        then = helper.make_graph(
            [helper.make_node("Add", ["x", "v"], ["t"])],
            "then",
            [],
            [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3])],
            [v],
        )
        other = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["e"])],
            "else",
            [],
            [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 3])],
        )
        g = helper.make_graph(
            [
                helper.make_node("Mul", ["a", "w"], ["x"]),
                helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other),
            ],
            "g",
            [
                helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
                helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            ],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
            [w],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), w

    model, w = build()
    path = tmp_path / "m.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="m.bin", size_threshold=0
    )
    ref = {}
    loaded = onnx.load(str(path), load_external_data=False)
    for t in onnx.external_data_helper._get_all_tensors(loaded):
        if t.data_location == TensorProto.EXTERNAL:
            d = {kv.key: kv.value for kv in t.external_data}
            ref[t.name] = (d["location"], int(d.get("offset", 0)), int(d["length"]))
    found = external_tensors(path.read_bytes())
    got = {t.name: (t.location, t.offset, t.length) for t in found}
    assert got == ref and set(ref) == {"w", "v"}
    assert {t.name: t.top for t in found} == {"w": True, "v": False}
    entry = {
        "file": "m.onnx",
        "sha256": sha256_file(path),
        "extra_files": [{"file": "m.bin", "sha256": sha256_file(tmp_path / "m.bin")}],
    }
    # onnxruntime would read the If branch's tensor from disk: refused
    with pytest.raises(BundleError, match="tensor 'v' of a sub-graph"):
        read_verified_graph(tmp_path, "m", entry)
    # only main-graph initializers external: runs from memory, in a folder without the data file
    model, w = build()  # w (24 bytes) external, v (12) inline: onnx compares sys.getsizeof
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="m.bin", size_threshold=50
    )
    sub = tmp_path / "sub"
    sub.mkdir()
    shutil.move(path, sub / "m.onnx")
    shutil.move(tmp_path / "m.bin", sub / "m.bin")
    entry = {
        "file": "m.onnx",
        "sha256": sha256_file(sub / "m.onnx"),
        "extra_files": [{"file": "m.bin", "sha256": sha256_file(sub / "m.bin")}],
    }
    vg = read_verified_graph(sub, "m", entry)
    assert [t.name for t in vg.tensors] == ["w"]
    assert bytes(vg.external["m.bin"]) == (sub / "m.bin").read_bytes()
    sess, _ = create_session(vg, providers=["cpu"], threads=1)
    a = np.ones((2, 3), np.float32)
    (y,) = sess.run(None, {"a": a, "c": np.array(True)})
    assert np.array_equal(y, a * numpy_helper.to_array(w) + 1)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x0a\xff\xff\xff")
    with pytest.raises(BundleError, match="not a readable ONNX model"):
        read_verified_graph(tmp_path, "bad", {"file": "bad.onnx", "sha256": sha256_file(bad)})
