"""The int8 path (export/quantize.py, build_engines.py --int8): manifest fields, the runtime on an int8
bundle, the agreement gate, and the audio front end kept out of quantisation.

The tiny bundle has random weights, and how close their int8 graphs land to fp32 depends on the CPU's
kernels (the micro SAM encoder's cosine vs fp32 read ~0.98 on an AVX2-only AMD EPYC and above 0.99 on an
AVX-512 VNNI Xeon). So no test here depends on where they land: the tests that need an int8 bundle gate at
a cosine no int8 graph misses unless broken (GATE), and the gate's refusals are forced, by a gate of 1.0
(int8 is never bit-exact) or by a damaged graph.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import runtime
from export import quantize as q
from runtime.bundle import Bundle
from tests.helpers.avsbench import write_wav

GATE = 0.05  # low enough for any CPU: the module docstring says why
GRAPHS = ("audioclip_audio", "audioclip_image", "sam_image_encoder", "sam_prompt_decoder")


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> tuple[Path, Path]:
    """Two synthetic photos-like images (smooth colour fields + noise) and one 3-s 44.1 kHz WAV."""
    d = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(180, 240), (240, 200)]):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.stack([np.sin(3 * xx + i), np.cos(4 * yy), xx * yy], -1) * 100 + 120
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"frame{i}.png")
    t = np.arange(3 * 44100) / 44100
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (
        1 + np.sin(2 * np.pi * 3 * t)
    ) + 0.05 * rng.standard_normal(t.size)
    write_wav(d / "clip.wav", np.round(np.clip(x, -1, 1) * 32767), rate=44100)
    return d, d / "clip.wav"


def _subset(src: Path, dst: Path, graphs) -> Path:
    """A copy of bundle ``src`` holding only ``graphs``."""
    dst.mkdir(parents=True)
    m = json.loads((src / "manifest.json").read_text())
    m["graphs"] = {k: v for k, v in m["graphs"].items() if k in graphs}
    for g in m["graphs"].values():
        shutil.copy(src / g["file"], dst / g["file"])
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, calib, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(fp32 copy, int8 bundle, agreements) of the tiny bundle's point-mode graphs."""
    fp32 = _subset(tiny_bundle, tmp_path_factory.mktemp("b") / "fp32", GRAPHS)
    int8 = tmp_path_factory.mktemp("b") / "int8"
    shutil.copytree(fp32, int8)
    agr = q.quantize_bundle(int8, frames=[calib[0]], audio=[calib[1]], min_cosine=GATE, limit=2)
    return fp32, int8, agr


def test_manifest_records_int8_and_agreement(int8_bundle):
    fp32, int8, agr = int8_bundle
    b = Bundle.open(int8)  # the contract accepts it
    old = json.loads((fp32 / "manifest.json").read_text())["graphs"]
    assert set(agr) == set(q.INT8_GRAPHS)
    for g in q.INT8_GRAPHS:
        e = b.graphs[g]
        assert e["precision"] == "int8" and e["file"] == f"{g}.int8.onnx"
        assert not (int8 / f"{g}.onnx").exists()
        assert e["fp32_sha256"] == old[g]["sha256"]
        assert e["quantization"]["method"] == q.METHODS[g]
        a = e["agreement"]
        assert GATE <= a["cosine_min"] <= 1.0 and a["max_abs"] > 0 and "calib" in a["inputs"]
        assert a["cosine_min"] == min(a["per_output"].values())
        ops = {
            n.op_type for n in onnx.load(str(int8 / e["file"]), load_external_data=False).graph.node
        }
        assert ops & set(q.QUANT_OPS), g
    assert (
        b.graphs["sam_prompt_decoder"]["precision"] == "fp32"
        and "agreement" not in b.graphs["sam_prompt_decoder"]
    )


def test_agreement_is_measured_independently(int8_bundle, calib):
    """The recorded cosine is what numpy computes from the two graphs' outputs on a calibration input."""
    import onnxruntime as ort

    fp32, int8, _ = int8_bundle
    e = Bundle.open(int8).graphs["audioclip_image"]
    feeds, _ = q.calibration_feeds(
        Bundle.open(fp32), "audioclip_image", [calib[0] / "frame0.png"], [calib[1]]
    )
    a = (
        ort.InferenceSession(str(fp32 / "audioclip_image.onnx"))
        .run(["global"], feeds[0])[0]
        .ravel()
    )
    b = ort.InferenceSession(str(int8 / e["file"])).run(["global"], feeds[0])[0].ravel()
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos < 1.0 and e["agreement"]["per_output"]["global"] <= cos + 1e-6


def test_runtime_runs_a_point_mode_and_reports_int8(int8_bundle, calib):
    _, int8, _ = int8_bundle
    pipe = runtime.load(int8, precision="auto")  # the suite pins fp32; int8 graphs run as stored
    frames = [np.asarray(Image.open(calib[0] / "frame0.png").convert("RGB"))]
    res = pipe.segment(frames, calib[1], mode="point-global")
    assert res.masks[0].shape == frames[0].shape[:2] and res.masks[0].dtype == bool
    assert res.precision == {
        "audioclip_audio": "int8",
        "audioclip_image": "int8",
        "sam_image_encoder": "int8",
        "sam_prompt_decoder": "fp32",
    }
    info = res.info()
    assert info["precision"]["sam_image_encoder"] == "int8"
    assert set(info["agreement"]) == set(q.INT8_GRAPHS)
    assert info["agreement"]["sam_image_encoder"]["cosine_min"] >= GATE
    assert "sam_image_encoder=int8 (cosine >=" in res.summary()


def test_audio_front_end_stays_fp32(int8_bundle):
    fp32, int8, _ = int8_bundle
    m32 = onnx.load(str(fp32 / "audioclip_audio.onnx"), load_external_data=False)
    front = q.frontend_nodes(m32)
    ops32 = {n.name: n.op_type for n in m32.graph.node}
    assert {"Log", "MatMul", "Pow"} <= {ops32[n] for n in front}  # filterbank, power, log
    m8 = onnx.load(str(int8 / "audioclip_audio.int8.onnx"), load_external_data=False)
    ops8 = {n.name: n.op_type for n in m8.graph.node}
    assert all(ops8.get(n) == ops32[n] for n in front)  # every front-end node is there, unchanged
    upstream = [ops8[n] for n in q.frontend_nodes(m8) if ops8[n] in q.QUANT_OPS]
    assert sorted(upstream) == [
        "DequantizeLinear",
        "QuantizeLinear",
    ]  # only the spectrogram, as the trunk reads it
    inits = {i.name: i for i in m8.graph.initializer}
    producer = {o: n for n in m8.graph.node for o in n.output}
    for name in front:  # the filterbank matmul still multiplies float64 by float64
        node = next(n for n in m8.graph.node if n.name == name)
        if node.op_type == "MatMul":
            w = inits.get(node.input[1])
            assert (w is not None and w.data_type == onnx.TensorProto.DOUBLE) or node.input[
                1
            ] in producer
    assert Bundle.open(int8).graphs["audioclip_audio"]["quantization"]["fp32_nodes"] == len(front)


def test_gate_refuses_a_corrupted_quantisation(int8_bundle, calib):
    """An int8 graph whose weights were damaged fails the agreement gate with a clear message."""
    fp32, int8, _ = int8_bundle
    m = onnx.load(str(int8 / "audioclip_image.int8.onnx"))
    for init in m.graph.initializer:  # flip the sign of every int8 weight
        if init.data_type == onnx.TensorProto.INT8:
            w = onnx.numpy_helper.to_array(init)
            init.CopyFrom(
                onnx.numpy_helper.from_array(
                    (-w.astype(np.int16)).clip(-127, 127).astype(np.int8), init.name
                )
            )
    bad = fp32.parent / "bad.onnx"
    onnx.save(m, str(bad))
    feeds, what = q.calibration_feeds(
        Bundle.open(fp32), "audioclip_image", sorted(calib[0].glob("*.png")), [calib[1]]
    )
    agr = {**q.agreement(fp32 / "audioclip_image.onnx", bad, feeds), "inputs": what}
    assert agr["cosine_min"] < 0.9
    with pytest.raises(
        q.QuantizationError,
        match=r"audioclip_image: the int8 graph agrees with fp32 only to cosine",
    ):
        q.check_agreement("audioclip_image", agr, q.DEFAULT_MIN_COSINE)


def test_failed_gate_leaves_the_fp32_bundle_untouched(tiny_bundle, calib, tmp_path):
    b = _subset(tiny_bundle, tmp_path / "b", ("audioclip_image", "sam_image_encoder"))
    before = {p.name: p.read_bytes() for p in b.iterdir()}
    with pytest.raises(
        q.QuantizationError, match=r"sam_image_encoder: .* \(gate 1.0\)"
    ):  # int8 is never exact
        q.quantize_bundle(b, frames=[calib[0]], audio=[calib[1]], min_cosine=1.0, limit=2)
    assert {p.name: p.read_bytes() for p in b.iterdir()} == before


def test_calibration_data_missing_is_a_clear_error(tmp_path, calib):
    with pytest.raises(q.QuantizationError, match="--calib-frames"):
        q.calibration_files(repo=tmp_path)  # no ../shared/data/audioclip-demo beside it
    with pytest.raises(q.QuantizationError, match="neither a file nor a folder"):
        q.calibration_files([tmp_path / "nope"], [calib[1]])
    imgs, wavs = q.calibration_files([calib[0]], [calib[1]], repo=tmp_path)
    assert [p.name for p in imgs] == ["frame0.png", "frame1.png"] and wavs == [calib[1]]


def test_build_engines_int8(tmp_path, calib, capsys):
    from export.build_engines import main

    out = tmp_path / "b"
    rc = main(
        [
            "--profile",
            "tiny",
            "--graphs",
            "audioclip_image",
            "--out",
            str(out),
            "--quiet",
            "--int8",
            "--int8-min-cosine",
            str(GATE),
            "--calib-frames",
            str(calib[0]),
            "--calib-audio",
            str(calib[1]),
        ]
    )
    assert rc == 0
    e = Bundle.open(out).graphs["audioclip_image"]
    assert e["precision"] == "int8" and e["agreement"]["cosine_min"] >= GATE
    assert "audioclip_image: int8, cosine vs fp32" in capsys.readouterr().out
    rc = main(
        [
            "--profile",
            "tiny",
            "--graphs",
            "audioclip_image",
            "--out",
            str(tmp_path / "c"),
            "--quiet",
            "--int8",
            "--calib-frames",
            str(tmp_path / "none"),
        ]
    )
    assert rc == 2 and "--int8: calibration frames" in capsys.readouterr().err
