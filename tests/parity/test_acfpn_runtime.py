"""Runtime ``segment(mode="acfpn")`` vs the PyTorch reference pipeline, on real photos and real audio.

The reference (``reference.acfpn``) is independent of the runtime: the AC-FPN rebuilt in
PyTorch from the bundle manifest's weight provenance, torchvision's ``ToTensor -> Resize(bicubic)
-> CenterCrop -> Normalize``, ``librosa.load(sr=44100)`` with the AVSBench chunking written out
again, an eager forward, and ``F.interpolate`` back to each frame's size. The runtime's logits are
the ``acfpn`` graph output of the very ``segment`` call (``evaluation.predictors.segment_with_logits``).
"""

from __future__ import annotations

import json
import shutil
from functools import cache

import numpy as np
import pytest
import torch

import runtime
from evaluation.predictors import segment_with_logits
from reference.acfpn import reference_audio, reference_frames, reference_model
from reference.media import make_demo_clip
from runtime.bundle import Bundle
from runtime.errors import BundleError, InputError
from runtime.preprocess.image import load_frame

WAV = "cat_3-95694-A-5.wav"  # 5 s, 44.1 kHz, 16-bit mono (ESC-50)
PHOTOS_224 = (
    "cat_1.jpg",
    "cars_2.jpg",
    "clock_1.jpg",
    "coughing_1.jpg",
    "lightning_1.jpg",
    "cat_2.jpg",
)
PHOTOS_OWN = ("cat_1.jpg", "cars_2.jpg", "coughing_1.jpg")  # 1280x1244, 1024x768, 634x951


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return reference_model(tiny_bundle)


@pytest.fixture(scope="module")
def scale(tiny_bundle) -> float:
    return float(Bundle.open(tiny_bundle).graphs["acfpn"]["audio_input_scale"])


@cache
def _ref_embedding(model, wav: str, n: int, scale: float) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_audio(reference_audio(wav, n, input_scale=scale))


def _torch_squash(frame, antialias: bool) -> np.ndarray:
    """AVSBench's frame squashing in torch: bilinear resize to 224x224 ignoring aspect, rounded to uint8."""
    x = torch.from_numpy(np.ascontiguousarray(load_frame(frame).transpose(2, 0, 1))).float()[None]
    y = torch.nn.functional.interpolate(
        x, size=(224, 224), mode="bilinear", align_corners=False, antialias=antialias
    )
    return y.round().clamp(0, 255)[0].permute(1, 2, 0).numpy().astype(np.uint8)


def _ref_logits(model, frames, wav, scale, antialias):
    """Reference logits at each frame's own size, float32 [H, W] each (frames squashed to 224x224)."""
    imgs = reference_frames([_torch_squash(f, antialias) for f in frames], antialias=antialias)
    emb = _ref_embedding(model, str(wav), len(frames), scale)
    sizes = [load_frame(f).shape[:2] for f in frames]
    with torch.no_grad():
        z = model(imgs, emb)
        return [
            torch.nn.functional.interpolate(
                z[i : i + 1], size=s, mode="bilinear", align_corners=False
            )[0, 0].numpy()
            for i, s in enumerate(sizes)
        ]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def _check(res, got, ref, frames):
    """Runtime logits within 1e-3 of the reference; masks at threshold t of IoU >= 0.999."""
    t = res.prompts[0]["threshold"]
    cut = np.log(t / (1 - t))
    assert len(res.masks) == len(frames) == len(ref)
    cover = []
    for f, m, g, r in zip(frames, res.masks, got, ref, strict=True):
        shape = load_frame(f).shape[:2]
        assert m.dtype == bool and m.shape == shape and g.shape == shape == r.shape
        assert float(np.max(np.abs(g - r))) < 1e-3
        assert _iou(m, r > cut) >= 0.999
        cover.append(m.mean())
    # the threshold sits at the reference's median logit: the masks are far from trivial
    assert 0.2 < float(np.mean(cover)) < 0.8


def _median_threshold(ref) -> float:
    med = float(np.median(np.concatenate([r.ravel() for r in ref])))
    return float(1.0 / (1.0 + np.exp(-med)))


def test_acfpn_224_frames_match_reference(tiny_bundle, demo_dir, model, scale, tmp_path):
    """Six AVSBench-like frames (real photos squashed to 224x224 PNG) and a real clip resampled to
    a 16 kHz wav: 6 frames with 5 s of audio, so the last second is repeated (AVSBench rule)."""
    frames, wav = make_demo_clip(demo_dir, tmp_path, frames=PHOTOS_224)
    assert all(load_frame(f).shape == (224, 224, 3) for f in frames)
    ref = _ref_logits(model, frames, wav, scale, antialias=True)
    pipe = runtime.load(tiny_bundle)
    res, got = segment_with_logits(pipe, frames, wav, threshold=_median_threshold(ref))
    assert res.mode == "acfpn" and res.random_weights
    _check(res, got, ref, frames)
    # the scores are the sigmoid of those logits
    for p, g in zip(res.scores, got, strict=True):
        assert p.dtype == np.float32
        np.testing.assert_allclose(p, 1 / (1 + np.exp(-g.astype(np.float64))), atol=1e-6)


@pytest.mark.parametrize("preset", ["default", "sam4avs"])
def test_acfpn_frames_of_their_own_sizes_match_reference(
    tiny_bundle, demo_dir, model, scale, preset
):
    """Three photos of different sizes and aspect ratios in one call (uint8 arrays), the real 44.1
    kHz wav (5 s for 3 frames: truncated). Resize antialiasing follows the preset; the AC-FPN audio
    scale is the one its weights were trained with, whatever the preset."""
    frames = [load_frame(demo_dir / p) for p in PHOTOS_OWN]
    assert len({f.shape for f in frames}) == 3
    antialias = Bundle.open(tiny_bundle).preset(preset)["image_antialias"]
    ref = _ref_logits(model, frames, demo_dir / WAV, scale, antialias=antialias)
    pipe = runtime.load(tiny_bundle, preset=preset)
    res, got = segment_with_logits(pipe, frames, demo_dir / WAV, threshold=_median_threshold(ref))
    assert res.preset == preset
    _check(res, got, ref, frames)


def test_acfpn_default_threshold_and_audio_array(tiny_bundle, demo_dir, model, scale):
    """Default threshold 0.5 (sigmoid > 0.5 <=> logit > 0) and audio passed as an int16 array."""
    from runtime.preprocess.audio import read_wav

    x, rate = read_wav(demo_dir / WAV)
    pcm = np.round(x[0] * 32768).astype(np.int16)
    frames = [load_frame(demo_dir / "clock_2.jpg")]
    ref = _ref_logits(model, frames, demo_dir / WAV, scale, antialias=True)
    res = runtime.load(tiny_bundle).segment(frames, pcm, rate, mode="acfpn")
    assert res.prompts[0]["threshold"] == 0.5
    assert _iou(res.masks[0], ref[0] > 0) >= 0.999
    np.testing.assert_allclose(
        res.scores[0], 1 / (1 + np.exp(-ref[0].astype(np.float64))), atol=3e-4
    )


def test_bundle_without_acfpn_is_refused_clearly(tiny_bundle, demo_dir, tmp_path):
    """A bundle holding only the AudioCLIP graphs: mode="acfpn" names the missing graph; the default
    mode falls back to what the bundle can do (heatmap)."""
    out = tmp_path / "no_acfpn"
    out.mkdir()
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    m["graphs"] = {
        g: e for g, e in m["graphs"].items() if g in ("audioclip_audio", "audioclip_image")
    }
    m["weights"].pop("acfpn")
    for g in m["graphs"].values():
        shutil.copy(tiny_bundle / g["file"], out / g["file"])
    (out / "manifest.json").write_text(json.dumps(m))
    frames = [load_frame(demo_dir / "cat_2.jpg")]
    pipe = runtime.load(out)
    with pytest.raises(InputError, match=r"mode 'acfpn' needs graphs \['acfpn'\]"):
        pipe.segment(frames, demo_dir / WAV, mode="acfpn")
    assert pipe.segment(frames, demo_dir / WAV).mode == "heatmap"
    with pytest.raises(BundleError, match="no acfpn graph"):
        reference_model(out)
    with pytest.raises(InputError, match="threshold must be in"):
        runtime.load(tiny_bundle).segment(frames, demo_dir / WAV, mode="acfpn", threshold=1.0)


@pytest.mark.slow
def test_bench_acfpn_smoke(tiny_bundle, tmp_path):
    """The benchmark runs end to end on the tiny bundle and writes its report (slow: ~1 min)."""
    from benchmarks.bench_acfpn import run

    rep = run(tiny_bundle, tmp_path, repeats=1, warmup=0)
    assert (tmp_path / "acfpn.json").is_file() and (tmp_path / "acfpn.md").is_file()
    assert len(rep.ratios) == 4
    assert any("parity on this clip" in n for n in rep.notes)
    d = json.loads((tmp_path / "acfpn.json").read_text())
    assert all(e["measurement"]["median_ms"] > 0 for e in d["entries"])


def test_reference_audio_follows_the_avsbench_rule(tmp_path):
    """The reference loader's chunking (written independently of the runtime): truncation, and
    extension with copies of the last second."""
    from reference.media import write_wav16 as _write_wav16

    rate = 44100
    x = (np.arange(int(2.5 * rate)) % 1000 / 1000.0 - 0.5).astype(np.float32)
    p = tmp_path / "a.wav"
    _write_wav16(p, x, rate)
    y = reference_audio(p, 4, input_scale=2.0, tile=2).numpy()
    assert y.shape == (4, 2 * rate)
    q = np.round(np.clip(x, -1.0, 32767 / 32768) * 32768) / 32768 * 2.0
    chunks = [q[:rate], q[rate : 2 * rate], q[len(q) - rate :], q[len(q) - rate :]]
    for k in range(4):
        np.testing.assert_allclose(y[k], np.tile(chunks[k], 2), atol=1e-6)
    y1 = reference_audio(p, 1, tile=1).numpy()
    np.testing.assert_allclose(y1[0], q[:rate] / 2.0, atol=1e-6)
