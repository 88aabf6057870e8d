"""Runtime core: bundle checks, sessions, image/audio preprocessing vs the reference chains, heatmap."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import runtime
from runtime.backends._onnxruntime import create_session, resolve_providers
from runtime.bundle import Bundle
from runtime.errors import BundleError, InputError, ProviderError
from runtime.preprocess.audio import (
    chunk_per_frame,
    load_audio,
    prepare_audioclip_audio,
    read_wav,
    to_mono_float,
)
from runtime.preprocess.image import clip_preprocess, load_frame
from runtime.preprocess.resize import resize
from runtime.prompting.heatmap import audio_image_heatmap

REPO = Path(__file__).resolve().parents[2]
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


# --- torch-free runtime --------------------------------------------------------------------------


def test_runtime_import_never_loads_torch(tiny_bundle):
    code = f"""
import sys, numpy as np
import runtime
from runtime.media.demo import demo_inputs
frames, audio, rate = demo_inputs()
res = runtime.load({str(tiny_bundle)!r}).segment(frames, audio, rate, mode="heatmap")
assert len(res.masks) == 5
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "models", "export")))
print("LOADED", bad)
sys.exit(1 if bad else 0)
"""
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_runtime_sources_do_not_import_torch():
    bad = []
    for p in (REPO / "runtime").rglob("*.py"):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            s = line.strip()
            if s.startswith(
                (
                    "import torch",
                    "from torch",
                    "import models",
                    "from models",
                    "import export",
                    "from export",
                )
            ):
                bad.append(f"{p.name}:{i}: {s}")
    assert not bad, bad


# --- bundle -------------------------------------------------------------------------------------


def test_bundle_opens_and_records_random_weights(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    assert b.random_weights
    assert set(b.graphs) >= {"audioclip_audio", "audioclip_image"}
    for g in b.graphs.values():
        assert g["parity_max_abs_err"] <= 1e-4
    assert b.manifest["weights"]["audioclip"]["source"] == "random-init"
    assert b.preset("sam4avs")["audio_input_scale"] == 1.0
    assert b.preset()["audio_input_scale"] == 32768.0


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bundle_tampered_file_is_refused(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path / "b")
    f = b / "audioclip_image.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum"):
        runtime.load(b)


def test_bundle_missing_file_and_manifest(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path / "b")
    (b / "audioclip_audio.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        runtime.load(b)
    (b / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        runtime.load(b)
    with pytest.raises(BundleError, match="not found"):
        runtime.load(tmp_path / "nope")


def test_bundle_bad_schema(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["schema_version"] = 99
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="schema_version 99"):
        runtime.load(b)
    (b / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        runtime.load(b)
    m["schema_version"] = 1
    m["graphs"]["audioclip_audio"]["file"] = "../../etc/passwd"
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="outside the bundle"):
        runtime.load(b)


# --- sessions -----------------------------------------------------------------------------------


def test_session_reports_real_provider(tiny_bundle):
    sess, info = create_session(tiny_bundle / "audioclip_image.onnx", graph="audioclip_image")
    assert info.providers == sess.get_providers()
    assert info.provider == "CPUExecutionProvider"  # no GPU on CI: the fallback is reported


def test_provider_table_rejects_unknown():
    with pytest.raises(ProviderError, match="unknown provider"):
        resolve_providers(["metal"])
    with pytest.raises(ProviderError, match="does not take options"):
        resolve_providers(["cpu"], {"cpu": {"trt_fp16_enable": True}})
    assert resolve_providers(["cpu"])[-1][0] == "CPUExecutionProvider"


# --- image preprocessing vs torchvision -----------------------------------------------------------


def _torchvision_chain(img: np.ndarray, antialias: bool) -> np.ndarray:
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode

    tf = T.Compose(
        [
            T.ToTensor(),
            T.Resize(224, interpolation=InterpolationMode.BICUBIC, antialias=antialias),
            T.CenterCrop(224),
            T.Normalize(MEAN, STD),
        ]
    )
    return tf(img).numpy()


@pytest.mark.parametrize("antialias", [True, False])
def test_clip_preprocess_matches_torchvision_on_real_photos(demo_dir, antialias):
    for name in ("cat_1.jpg", "cars_2.jpg", "clock_1.jpg"):
        img = load_frame(demo_dir / name)
        got = clip_preprocess([img], size=224, mean=MEAN, std=STD, antialias=antialias)[0]
        ref = _torchvision_chain(img, antialias)
        # float32 separable matrices vs torchvision's kernels: agreement to ~1e-5 after normalisation
        assert np.abs(got - ref).max() < 2e-4, name


def test_clip_preprocess_identity_at_224():
    img = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    got = clip_preprocess([img], size=224, mean=MEAN, std=STD)[0]
    ref = _torchvision_chain(img, True)
    assert np.abs(got - ref).max() < 1e-5


def test_frames_grayscale_rgba_16bit_and_limits(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    assert load_frame(gray).shape == (40, 50, 3)
    rgba = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    np.testing.assert_array_equal(load_frame(rgba), rgba[:, :, :3])
    deep = (rng.integers(0, 65536, (40, 50, 3))).astype(np.uint16)
    got = load_frame(deep)
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - deep / 257.0).max() <= 0.5 + 1e-9
    from PIL import Image

    Image.fromarray(gray).save(tmp_path / "g.png")
    assert load_frame(tmp_path / "g.png").shape == (40, 50, 3)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert load_frame(tmp_path / "a.png").shape == (40, 50, 3)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "d.png")
    np.testing.assert_array_equal(load_frame(tmp_path / "d.png")[:, :, 0], gray)
    with pytest.raises(InputError, match="too large"):
        load_frame(np.zeros((9000, 100, 3), np.uint8))
    with pytest.raises(InputError, match="too small"):
        load_frame(np.zeros((4, 100, 3), np.uint8))
    with pytest.raises(InputError, match="dtype uint8"):
        load_frame(np.zeros((40, 40, 3), np.float32))
    with pytest.raises(InputError, match="shape"):
        load_frame(np.zeros((40, 40, 2), np.uint8))
    with pytest.raises(InputError, match="not found"):
        load_frame(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read"):
        load_frame(tmp_path / "junk.png")


def test_resize_matches_torch_interpolate():
    rng = np.random.default_rng(1)
    for h, w, oh, ow in [
        (300, 500, 224, 373),
        (7, 7, 224, 224),
        (720, 1280, 224, 398),
        (64, 64, 1500, 2250),
    ]:
        x = rng.random((2, h, w)).astype(np.float32)
        for mode in ("bilinear", "bicubic"):
            for aa in (False, True):
                ref = F.interpolate(
                    torch.from_numpy(x)[None],
                    size=(oh, ow),
                    mode=mode,
                    align_corners=False,
                    antialias=aa,
                )[0].numpy()
                assert np.abs(resize(x, (oh, ow), mode, aa) - ref).max() < 5e-6, (
                    h,
                    w,
                    oh,
                    ow,
                    mode,
                    aa,
                )


# --- audio preprocessing vs librosa -------------------------------------------------------------


def test_read_wav_formats(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((2, 1000)) * 2 - 1) * 0.9
    for width, dt in ((2, "<i2"), (4, "<i4")):
        scale = 2 ** (8 * width - 1)
        ints = np.round(x.T * (scale - 1)).astype(dt)
        with wave.open(str(tmp_path / f"w{width}.wav"), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(width)
            w.setframerate(22050)
            w.writeframes(ints.tobytes())
        got, rate = read_wav(tmp_path / f"w{width}.wav")
        assert rate == 22050 and got.shape == (2, 1000)
        assert np.abs(got - x).max() < 2.0 / scale + 1e-7  # quantisation + float32 rounding
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(InputError):
        read_wav(tmp_path / "bad.wav")


def test_load_audio_matches_librosa_on_real_wavs(demo_dir):
    librosa = pytest.importorskip("librosa")
    for name in ("cat_3-95694-A-5.wav", "thunder_3-144891-B-19.wav"):
        path = demo_dir / name
        for target in (44100, 48000, 16000):
            ref, _ = librosa.load(path, sr=target, mono=True, dtype=np.float32)
            got = load_audio(path, None, target)
            assert got.shape == ref.shape
            assert np.abs(got - ref).max() < 1e-5, (name, target)


def test_audio_arrays_stereo_int16_and_rates():
    rng = np.random.default_rng(0)
    mono = (rng.random(16000) * 2 - 1).astype(np.float32) * 0.5
    stereo_ct = np.stack([mono, mono])
    np.testing.assert_allclose(to_mono_float(stereo_ct), mono, atol=1e-7)
    np.testing.assert_allclose(to_mono_float(stereo_ct.T), mono, atol=1e-7)
    i16 = np.round(mono * 32767).astype(np.int16)
    np.testing.assert_allclose(to_mono_float(i16), mono, atol=1 / 32768 + 1e-6)
    x = load_audio(mono, 16000, 44100)
    assert x.shape == (44100,)
    with pytest.raises(InputError, match="sample_rate is required"):
        load_audio(mono, None, 44100)
    with pytest.raises(InputError, match="empty"):
        load_audio(np.zeros(0, np.float32), 16000, 44100)
    with pytest.raises(InputError, match="NaN"):
        load_audio(np.full(100, np.nan, np.float32), 16000, 44100)
    with pytest.raises(InputError, match="sample rate"):
        load_audio(mono, 10, 44100)
    with pytest.raises(InputError, match="dtype"):
        load_audio(mono.astype(np.complex64), 16000, 44100)


def _reference_chunking(x: np.ndarray, sr: int) -> np.ndarray:
    """Sam4AVS load_audio_wav steps 2-4 written out (for clips of at least one second)."""
    if x.shape[0] >= sr * 5:
        x = x[: sr * 5]
    else:
        keep = x.shape[0] // sr
        x = np.concatenate([x[: keep * sr]] + [x[-sr:]] * (5 - keep))
    chunks = x.reshape(5, 1, sr)
    return np.tile(chunks, (1, 1, 5))[:, 0]


def test_chunking_follows_the_avsbench_convention():
    sr = 100
    rng = np.random.default_rng(0)
    for n in (700, 500, 430, 250, 100):
        x = rng.random(n).astype(np.float32)
        got = np.tile(chunk_per_frame(x, sr, 5), (1, 5))
        np.testing.assert_array_equal(got, _reference_chunking(x, sr))
    short = rng.random(40).astype(np.float32)  # < 1 s: repeated to fill one second
    c = chunk_per_frame(short, sr, 5)
    assert c.shape == (5, 100)
    np.testing.assert_array_equal(c[0], np.tile(short, 3)[:100])


def test_prepare_audio_scale_and_tiling(demo_dir):
    wav = demo_dir / "cat_3-95694-A-5.wav"
    a1 = prepare_audioclip_audio(
        wav, None, 5, target_rate=44100, chunk_seconds=1.0, tile=5, input_scale=1.0
    )
    a2 = prepare_audioclip_audio(
        wav, None, 5, target_rate=44100, chunk_seconds=1.0, tile=5, input_scale=32768.0
    )
    assert a1.shape == (5, 220500)
    np.testing.assert_allclose(a2, a1 * 32768.0, rtol=1e-6)
    np.testing.assert_array_equal(a1[2, :44100], a1[2, 44100:88200])


# --- heatmap ------------------------------------------------------------------------------------


def _torch_heatmap(dense, audio, reverse):
    r = torch.from_numpy(dense)
    r = r / r.norm(dim=1, keepdim=True)
    a = torch.from_numpy(audio)
    a = a / a.norm(dim=-1, keepdim=True)
    out = []
    for i in range(r.shape[0]):
        sim = a[i : i + 1] @ r[i].reshape(r.shape[1], -1)
        if reverse:
            sim = 1 - sim
        sim = (sim - sim.min()) / (sim.max() - sim.min())
        sim = sim.reshape(1, 1, 7, 7)
        out.append(F.interpolate(sim, (224, 224), mode="bilinear")[0, 0].numpy())
    return np.stack(out)


@pytest.mark.parametrize("reverse", [False, True])
def test_heatmap_matches_reference(reverse):
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(3, 64, 7, 7)).astype(np.float32)
    audio = rng.normal(size=(3, 64)).astype(np.float32)
    got = audio_image_heatmap(dense, audio, out_size=(224, 224), reverse=reverse)
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    assert np.abs(got - _torch_heatmap(dense, audio, reverse)).max() < 1e-5
    assert got.min() >= -1e-6 and got.max() <= 1 + 1e-6


def test_heatmap_flat_map_is_zero_not_nan():
    dense = np.ones((1, 8, 7, 7), np.float32)
    got = audio_image_heatmap(dense, np.ones((1, 8), np.float32), out_size=(224, 224))
    assert np.all(got == 0)
    with pytest.raises(InputError):
        audio_image_heatmap(dense, np.ones((2, 8), np.float32), out_size=(224, 224))


# --- end to end ---------------------------------------------------------------------------------


def test_segment_heatmap_end_to_end(tiny_bundle, demo_dir):
    frames = [demo_dir / "cat_1.jpg", demo_dir / "cars_2.jpg", demo_dir / "clock_1.jpg"]
    pipe = runtime.load(tiny_bundle)
    res = pipe.segment(frames, demo_dir / "cat_3-95694-A-5.wav", mode="heatmap")
    assert len(res.masks) == 3 and res.random_weights
    for f, m in zip(frames, res.masks, strict=True):
        assert m.dtype == bool and m.shape == load_frame(f).shape[:2]
    assert res.providers == {
        "audioclip_audio": "CPUExecutionProvider",
        "audioclip_image": "CPUExecutionProvider",
    }
    assert "total" in res.timings
    with pytest.raises(InputError, match="takes parameters"):
        pipe.segment(frames, demo_dir / "cat_3-95694-A-5.wav", mode="heatmap", thres=0.3)
    with pytest.raises(InputError, match="unknown mode"):
        pipe.segment(frames, demo_dir / "cat_3-95694-A-5.wav", mode="nope")


def test_segment_matches_pytorch_reference(tiny_bundle, demo_dir):
    """Runtime heatmap for the sam4avs preset vs the same steps in PyTorch on the bundle's model."""
    from models.audioclip import load_audioclip
    from models.random_init import randomize_batchnorm

    model, _ = load_audioclip(None, config="audioclip-tiny", with_text=False, seed=0)
    randomize_batchnorm(model, 0)
    wav = demo_dir / "coughing_1-58792-A-24.wav"
    frames = [load_frame(demo_dir / "coughing_1.jpg"), load_frame(demo_dir / "cat_2.jpg")]
    pipe = runtime.load(tiny_bundle, preset="sam4avs")
    res = pipe.segment(frames, wav, mode="heatmap", threshold=0.5)
    # the oracle's audio, independent of runtime.preprocess.audio: librosa at 44.1 kHz, one 1-s chunk per frame
    # tiled to AudioCLIP's 5 s, the sam4avs input scale 1.0
    import librosa

    x, _ = librosa.load(str(wav), sr=44100, mono=True)
    assert x.size >= 2 * 44100
    audio = np.tile(x[: 2 * 44100].reshape(2, 44100), (1, 5)).astype(np.float32)
    squashed = [
        F.interpolate(
            torch.from_numpy(f.transpose(2, 0, 1).copy()).float()[None],
            size=(224, 224),
            mode="bilinear",
        )
        .round()
        .clamp(0, 255)[0]
        .permute(1, 2, 0)
        .numpy()
        .astype(np.uint8)
        for f in frames
    ]  # AVSBench squashes frames to 224x224; the sam4avs preset resizes without antialiasing
    imgs = np.stack([_torchvision_chain(f, False) for f in squashed])
    with torch.no_grad():
        emb = model.encode_audio(torch.from_numpy(audio)).numpy()
        dense = model.visual.forward_features(torch.from_numpy(imgs))["surgery_dense"].numpy()
    ref = _torch_heatmap(dense, emb, reverse=True)
    for i, f in enumerate(frames):
        full = F.interpolate(torch.from_numpy(ref[i])[None, None], f.shape[:2], mode="bilinear")[
            0, 0
        ].numpy()
        # the uint8 squash may round a few pixels differently (+-1 level); the min-max normalised
        # map then moves by ~1e-3, so masks may differ only within that band around the threshold
        assert np.abs(full - res.scores[i]).max() < 5e-3
        differ = (full > 0.5) != res.masks[i]
        assert np.all(np.abs(full[differ] - 0.5) < 5e-3)
        assert np.mean(differ) < 0.005
