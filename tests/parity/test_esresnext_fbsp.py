"""ESResNeXt-FBSP (AudioCLIP audio tower): official layout, original numerics, folded form, ONNX export.

References used here are independent of the code under test: the official key layout is checked
against torchvision's ResNeXt-50 and the counts of the reference note; the FBSP filterbank against
a step-by-step torch transcription of the original formula and a numpy complex128 formula; the
whole analytic model against an eager original-form forward written out below (gather framing,
F.linear filterbank, torchvision trunk, functional attention gates).
"""

from __future__ import annotations

import math
import wave
from collections import Counter

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
import torchvision

from export.audioclip_audio import (
    StaticAdaptiveMaxPool2d,
    adaptive_bins,
    export_audioclip_audio,
    fold_audio_encoder,
)
from export.onnx_utils import cpu_session
from models.checkpoints import load_strict
from models.esresnext_fbsp import ESResNeXtFBSP
from models.registry import get_config
from tests.helpers import shared_data_dir

DATA = shared_data_dir() / "audioclip-demo"
WAVS = ["cat_3-95694-A-5.wav", "car_horn_1-24074-A-43.wav", "thunder_3-144891-B-19.wav"]
SR = 44100


def _read_wav(name: str) -> np.ndarray:
    """int16 WAV -> float32 [T] in [-1, 1) (librosa convention)."""
    path = DATA / name
    if not path.is_file():
        pytest.skip(
            f"real media not found: {path} (set AVS_SHARED_DATA, or put shared/ beside the repository)"
        )
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getframerate() == SR
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        data = data.reshape(-1, w.getnchannels()).mean(axis=1)
    return (data / 32768.0).astype(np.float32)


def _clips(
    batch: int,
    num_samples: int,
    scale: float = 32768.0,
    channels: int | None = None,
    noise_floor: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """Real audio [B, T] (or [B, C, T]) float32 in int16 units (scale 32768) or [-1, 1] (scale 1).

    ``noise_floor``: RMS, in int16 units, of seeded white noise added to every clip (see the note on
    conditioning above :func:`test_folded_matches_analytic`).
    """
    rows = []
    for i in range(batch * (channels or 1)):
        a = _read_wav(WAVS[i % len(WAVS)])
        if i >= len(WAVS):
            a = a[::-1].copy()
        if num_samples <= a.size:
            start = (a.size - num_samples) // 2
            a = a[start : start + num_samples]
        else:
            a = np.pad(a, (0, num_samples - a.size))
        rows.append(a * scale)
    x = np.stack(rows).astype(np.float64)
    if noise_floor:
        x += noise_floor * scale / 32768.0 * np.random.default_rng(seed).standard_normal(x.shape)
    x = torch.from_numpy(x.astype(np.float32))
    return x if channels is None else x.reshape(batch, channels, num_samples)


def _randomize(model: ESResNeXtFBSP, seed: int, calibrate: bool = True) -> ESResNeXtFBSP:
    """Non-trivial FBSP parameters and BatchNorm stats, in eval mode.

    ``calibrate``: set the running stats from a train-mode pass over real audio (activations of
    unit scale, as in a trained net), then perturb them; otherwise perturb the init values only.
    Random weights with calibrated BN are far more sensitive to float32 rounding than the mild
    variant (see the conditioning note below).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        n = model.fbsp.m.numel()
        model.fbsp.m.copy_(0.2 + 1.8 * torch.rand(n, generator=g))
        model.fbsp.fb.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
        model.fbsp.fc.add_(0.6 * torch.rand(n, generator=g) - 0.3)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        if calibrate:
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average over the calibration pass
            model.train()
            model(_clips(2, SR))
            for bn in bns:
                bn.momentum = 0.1
        for bn in bns:
            c = bn.num_features
            bn.weight.mul_(0.8 + 0.4 * torch.rand(c, generator=g))
            bn.bias.add_(0.1 * torch.randn(c, generator=g))
            bn.running_mean.add_(0.05 * bn.running_var.sqrt() * torch.randn(c, generator=g))
            bn.running_var.mul_(0.8 + 0.45 * torch.rand(c, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> ESResNeXtFBSP:
    torch.manual_seed(0)
    return _randomize(ESResNeXtFBSP(**get_config("audioclip-tiny")["audio"]), seed=1).eval()


# --- official layout ---------------------------------------------------------------------------


def test_official_key_layout_and_param_count():
    cfg = get_config("audioclip")["audio"]
    with torch.device("meta"):
        model = ESResNeXtFBSP(**cfg)
        tv = torchvision.models.resnext50_32x4d()
    sd = model.state_dict()
    assert len(sd) == 370
    counts = Counter(k.split(".")[0] for k in sd)
    expected = {
        "window": 1,
        "conv1": 1,
        "bn1": 5,
        "layer1": 60,
        "layer2": 78,
        "layer3": 114,
        "layer4": 60,
        "fc": 2,
        "fbsp": 4,
        **{f"att{i}": 9 for i in range(1, 6)},
    }
    assert dict(counts) == expected
    assert sum(p.numel() for p in model.parameters()) == 32_104_771
    assert next(iter(sd)) == "window"
    assert tuple(sd["window"].shape) == (1654,)
    for k in ("m", "fb", "fc"):
        assert tuple(sd[f"fbsp.{k}"].shape) == (1025,)
    assert tuple(sd["fbsp.bias"].shape) == (0,)
    assert tuple(sd["fc.weight"].shape) == (1024, 2048)
    att = {
        1: (64, 256, (3, 1)),
        2: (256, 512, (1, 5)),
        3: (512, 1024, (3, 1)),
        4: (1024, 2048, (1, 5)),
        5: (2048, 2048, (3, 5)),
    }
    for i, (cin, cout, k) in att.items():
        assert tuple(sd[f"att{i}.conv_depth.weight"].shape) == (cin, 1, *k)
        assert tuple(sd[f"att{i}.conv_point.weight"].shape) == (cout, cin, 1, 1)
        assert tuple(sd[f"att{i}.bn.running_var"].shape) == (cout,)
    # the trunk is torchvision's ResNeXt-50 32x4d key for key, shape for shape
    tv_sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    ours = {
        k: v
        for k, v in sd.items()
        if k.split(".")[0] not in {"window", "fbsp", "fc"} and not k.startswith("att")
    }
    assert set(ours) == set(tv_sd)
    assert all(tuple(ours[k].shape) == tuple(tv_sd[k].shape) for k in ours)


def test_tiny_builds_and_round_trips_strictly(tmp_path):
    cfg = get_config("audioclip-tiny")["audio"]
    torch.manual_seed(3)
    a = ESResNeXtFBSP(**cfg)
    path = tmp_path / "tiny.pt"
    torch.save(a.state_dict(), path)
    b = ESResNeXtFBSP(**cfg)
    load_strict(b, torch.load(path, map_location="cpu", weights_only=True))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert b.fc.out_features == 64 and tuple(b.fbsp.bias.shape) == (0,)


def test_window_is_periodic_blackman_harris():
    with torch.device("meta"):
        model = ESResNeXtFBSP(**get_config("audioclip")["audio"])
    ref = scipy.signal.windows.blackmanharris(1654, sym=False)
    np.testing.assert_allclose(model.window.numpy(), ref.astype(np.float32), rtol=0, atol=0)


# --- FBSP filterbank -----------------------------------------------------------------------------


def _fbsp_transcribed(m, fb, fc, n, eps=1e-8):
    """The original LinearFBSP weight formula, transcribed with the complex parts as a last dim."""
    t = np.pi * torch.linspace(-1.0, 1.0, n, dtype=m.dtype).reshape(1, -1, 1) + eps
    m, fb, fc = m.reshape(-1, 1, 1), fb.reshape(-1, 1, 1), fc.reshape(-1, 1, 1)
    kernel = torch.cat((torch.cos(fc * t), -torch.sin(fc * t)), dim=-1)
    scale = fb.sqrt()
    z = fb * t / (m + eps)
    win = torch.where(z == 0, torch.ones_like(z), torch.sin(z) / z)
    x1 = torch.cat((win, torch.zeros_like(win)), dim=-1)  # complex base
    x2 = torch.cat((m, torch.zeros_like(m)), dim=-1)  # complex exponent
    mags = (x1[..., 0] ** 2 + x1[..., 1] ** 2) ** 0.5
    phases = x1[..., 1].atan2(x1[..., 0])
    pr, pi = x2[..., 0], x2[..., 1]
    mag_out = (mags**2) ** (0.5 * pr) * torch.exp(-pi * phases)
    ang = pr * phases + 0.5 * pi * (mags**2).log()
    win = mag_out.unsqueeze(-1) * torch.stack((ang.cos(), ang.sin()), dim=-1)
    w = scale * torch.cat(
        (
            win[..., :1] * kernel[..., :1] - win[..., 1:] * kernel[..., 1:],
            win[..., :1] * kernel[..., 1:] + win[..., 1:] * kernel[..., :1],
        ),
        dim=-1,
    )
    return w / (n**0.5)


def test_filterbank_matches_reference_formula(tiny):
    fbsp = tiny.fbsp
    got = tiny.filterbank().detach()
    assert tuple(got.shape) == (1025, 2048, 2) and got.dtype == torch.float32
    with torch.no_grad():
        ref = _fbsp_transcribed(fbsp.m, fbsp.fb, fbsp.fc, 2048)
    assert (got - ref).abs().max().item() <= 1e-7
    # the same maths in complex128: sqrt(fb) * sinc(fb t / (m + eps)) ** m * exp(-i fc t) / sqrt(n)
    m, fb, fc = (p.detach().double().numpy()[:, None] for p in (fbsp.m, fbsp.fb, fbsp.fc))
    t = np.pi * np.linspace(-1.0, 1.0, 2048)[None, :] + 1e-8
    z = fb * t / (m + 1e-8)
    sinc = np.where(z == 0, 1.0, np.sin(z) / np.where(z == 0, 1.0, z))
    w = np.sqrt(fb) * (sinc + 0j) ** m * np.exp(-1j * fc * t) / math.sqrt(2048)
    err = np.abs(got[..., 0].double().numpy() + 1j * got[..., 1].double().numpy() - w).max()
    assert err <= 1e-3 * np.abs(w).max()
    assert (sinc < 0).any() and np.abs(w.imag).max() > 0.1 * np.abs(w).max()  # phase pi exercised


# --- analytic model vs the original form --------------------------------------------------------


def _frame_signal(signal, frame_length, hop, window):
    n = signal.shape[-1]
    frames = 1 if n <= frame_length else 1 + int(math.ceil((1.0 * n - frame_length) / hop))
    pad_len = (frames - 1) * hop + frame_length
    if pad_len > n:
        zeros = torch.zeros(signal.shape[0], pad_len - n, dtype=signal.dtype)
        half = zeros.shape[-1] // 2
        signal = torch.cat((zeros[:, :half], signal, zeros[:, half:]), dim=-1)
    idx = torch.arange(frame_length).repeat(frames, 1)
    idx += torch.arange(0, frames * hop, hop).repeat(frame_length, 1).t()
    return signal[..., idx] * window


def _gate(sd, i, x, size):
    p = F.adaptive_max_pool2d(x, size)
    wd = sd[f"att{i}.conv_depth.weight"]
    pad = (wd.shape[-2] // 2, wd.shape[-1] // 2)
    p = F.conv2d(p, wd, sd[f"att{i}.conv_depth.bias"], padding=pad, groups=wd.shape[0])
    p = F.conv2d(p, sd[f"att{i}.conv_point.weight"], sd[f"att{i}.conv_point.bias"])
    p = F.batch_norm(
        p,
        sd[f"att{i}.bn.running_mean"],
        sd[f"att{i}.bn.running_var"],
        sd[f"att{i}.bn.weight"],
        sd[f"att{i}.bn.bias"],
        training=False,
        eps=1e-5,
    )
    return torch.sigmoid(p)


@pytest.fixture(scope="module")
def original(tiny):
    """Original-form pieces built once from the tiny model's weights: torchvision trunk, filterbank."""
    sd = {k: v.detach().clone() for k, v in tiny.state_dict().items()}
    cfg = get_config("audioclip-tiny")["audio"]
    tv = torchvision.models.resnet.ResNet(
        torchvision.models.resnet.Bottleneck,
        list(cfg["layers"]),
        num_classes=cfg["num_classes"],
        groups=cfg["groups"],
        width_per_group=cfg["width_per_group"],
    )
    tv.load_state_dict(
        {
            k: v
            for k, v in sd.items()
            if k.split(".")[0] not in {"window", "fbsp"} and not k.startswith("att")
        },
        strict=True,
    )
    with torch.no_grad():
        w = _fbsp_transcribed(sd["fbsp.m"], sd["fbsp.fb"], sd["fbsp.fc"], 2048)
    return sd, tv.eval(), w


def _original_forward(original, x: torch.Tensor) -> torch.Tensor:
    """Eager original-form forward: own framing/filterbank, torchvision trunk, functional gates."""
    sd, tv, w = original
    batch = x.shape[0]
    x = ((x.float() - -32768.0) * 2.0) / 65535.0 + -1.0
    frames = _frame_signal(x.reshape(-1, x.shape[-1]), 1654, 561, sd["window"])
    frames = F.pad(frames, [197, 197])
    spec = torch.stack((F.linear(frames, w[..., 0]), F.linear(frames, w[..., 1])), dim=-1)
    spec = spec.transpose(-2, -3)  # [N, 1025, F, 2]
    spec = spec[:, :1023].reshape(batch, -1, 341, *spec.shape[-2:])
    power = spec[..., 0] ** 2 + spec[..., 1] ** 2
    power = torch.where(power > 0.0, power, torch.full_like(power, 1e-18))
    db = torch.log10(power.reshape(batch, -1, 3, *power.shape[-2:])).mul(10.0)
    pooled = []
    for c in range(db.shape[1]):
        h = tv.maxpool(tv.relu(tv.bn1(tv.conv1(db[:, c]))))
        for i, layer in enumerate((tv.layer1, tv.layer2, tv.layer3, tv.layer4)):
            h_in = h
            h = layer(h)
            h = h * _gate(sd, i + 1, h_in, h.shape[-2:])
        y = tv.avgpool(h)
        y = y * _gate(sd, 5, h, y.shape[-2:])
        pooled.append(torch.flatten(y, 1))
    return tv.fc(torch.stack(pooled, dim=-1).sum(dim=-1))


@pytest.mark.parametrize("shape", [(2, SR), (2, 2, SR), (1, 1000)])
def test_analytic_model_matches_original_form(tiny, original, shape):
    x = _clips(shape[0], shape[-1], channels=shape[1] if len(shape) == 3 else None)
    with torch.no_grad():
        got = tiny(x)
        ref = _original_forward(original, x)
    assert got.shape == (shape[0], 64) and got.dtype == torch.float32
    assert ref.abs().max().item() > 0.05  # a non-degenerate output
    assert (got - ref).abs().max().item() <= 1e-6
    spec = tiny.spectrogram(x)
    n_frames = 1 + math.ceil((shape[-1] - 1654) / 561) if shape[-1] > 1654 else 1
    assert tuple(spec.shape) == (math.prod(shape[:-1]), 3, 341, n_frames)


def test_input_validation(tiny):
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        tiny(torch.zeros(SR))
    with pytest.raises(TypeError):
        tiny(np.zeros((1, SR), np.float32))
    with pytest.raises(TypeError):
        tiny(torch.zeros(1, SR, dtype=torch.bool))
    with pytest.raises(ValueError):
        tiny.embed_from_spectrogram(torch.zeros(1, 2, 341, 77))
    folded = fold_audio_encoder(tiny, SR)
    with pytest.raises(ValueError, match="44100"):
        folded(torch.zeros(1, SR + 1))
    with pytest.raises(TypeError):
        folded(torch.zeros(1, SR, dtype=torch.int16))
    with pytest.raises(ValueError):
        fold_audio_encoder(tiny, 0)


# --- folded form -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_in", "n_out"),
    [
        ((43, 10), (22, 5)),
        ((11, 3), (6, 2)),
        ((86, 20), (43, 10)),
        ((22, 5), (11, 3)),
        ((11, 13), (1, 1)),
        ((86, 98), (86, 98)),
        ((7, 9), (3, 4)),
        ((5, 1), (3, 1)),
        ((20, 43), (10, 22)),
    ],
)
def test_static_pool_equals_adaptive_max_pool(n_in, n_out):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *n_in, generator=g)
    x[0, 0] = torch.randint(-3, 3, n_in, generator=g).float()  # ties
    pool = StaticAdaptiveMaxPool2d(n_in, n_out)
    assert torch.equal(pool(x), F.adaptive_max_pool2d(x, n_out))
    with pytest.raises(ValueError):
        pool(torch.zeros(1, 3, n_in[0] + 1, n_in[1]))


def test_adaptive_bins_definition():
    assert adaptive_bins(5, 3) == [[0, 1, 1], [1, 2, 3], [3, 4, 4]]
    assert adaptive_bins(43, 22)[-1] == [41, 42, 42]
    for n_in, n_out in [(43, 22), (11, 6), (5, 3), (7, 7)]:
        bins = adaptive_bins(n_in, n_out)
        assert len(bins) == n_out and len({len(b) for b in bins}) == 1
        assert set().union(*map(set, bins)) == set(range(n_in))


# Conditioning. The CNN reads 10*log10(power) per bin. Real clips are band-limited: in the top band
# many bins lie > 100 dB below the loudest bin, under float32's resolution (~ -140 dB re the frame
# energy), so their dB value is rounding noise in *any* float32 evaluation, the original included
# (conv vs GEMM, ORT vs PyTorch, even batch 1 vs 2 reorder the sums). The attention gates max-pool
# exactly these extreme values, and the embedding then moves by up to ~1e-3. Parity at 1e-5 is
# therefore checked on real clips with a white-noise floor of 100 int16 units RMS (about -50 dB re
# the clips), which keeps every bin within float32's range; the raw clips get a documented bound.
NOISE_FLOOR = 100.0
RAW_BOUND = 5e-3


@pytest.mark.parametrize(
    ("num_samples", "channels"), [(SR, None), (5 * SR, None), (SR, 2), (1000, None)]
)
def test_folded_matches_analytic(tiny, num_samples, channels):
    x = _clips(2, num_samples, channels=channels, noise_floor=NOISE_FLOOR)
    folded = fold_audio_encoder(tiny, num_samples)
    assert folded.filterbank.shape == (2 * 1023, 1, 1654)
    for batch in (2, 1):
        with torch.no_grad():
            ref = tiny(x[:batch])
            got = folded(x[:batch])
        assert got.shape == ref.shape == (batch, 64)
        assert ref.abs().max().item() > 0.05
        assert (got - ref).abs().max().item() <= 1e-5


def test_folded_matches_analytic_on_raw_clips(tiny):
    num_samples = SR
    x = _clips(3, num_samples)
    with torch.no_grad():
        ref = tiny(x)
        got = fold_audio_encoder(tiny, num_samples)(x)
        spec = tiny.spectrogram(x)
    # the premise of the looser bound: bins far below float32 resolution exist in raw clips
    assert (spec < spec.amax(dim=(1, 2, 3), keepdim=True) - 100).float().mean() > 0.01
    assert (got - ref).abs().max().item() <= RAW_BOUND


def test_folded_shares_trunk_weights(tiny):
    folded = fold_audio_encoder(tiny, SR)
    assert folded.encoder is tiny and folded.encoder.layer1 is tiny.layer1
    assert "filterbank" not in folded.state_dict()  # a derived snapshot, not a weight


# --- ONNX ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1, 5])
def test_onnx_export_tiny_matches_analytic(tiny, tmp_path, seconds):
    num_samples = seconds * SR
    res = export_audioclip_audio(
        tiny, tmp_path / f"audio_{seconds}s.onnx", num_samples, atol=1e-4, check_analytic=False
    )  # checked below on real audio
    assert res.inputs[0]["name"] == "waveform" and res.inputs[0]["shape"][1] == num_samples
    assert isinstance(res.inputs[0]["shape"][0], str)  # dynamic batch
    assert res.outputs[0]["name"] == "embedding" and res.outputs[0]["shape"][1] == 64
    assert res.parity_max_abs_err <= 1e-4  # ORT vs the folded module, batch 2 (trace) and 1
    sess = cpu_session(res.path, threads=2)
    # int16 units (wave's ints x 1.0 == librosa floats x 32768), with the noise floor, then raw;
    # at 1 s also the sam4avs preset's [-1, 1] input (x 1.0), where the DC offset dominates
    cases = [(32768.0, NOISE_FLOOR, 1e-4), (32768.0, 0.0, RAW_BOUND)]
    if seconds == 1:
        cases.append((1.0, 0.0, RAW_BOUND))
    for scale, floor, bound in cases:
        x = _clips(3, num_samples, scale=scale, noise_floor=floor)
        with torch.no_grad():
            ref = tiny(x).numpy()
        for batch in (3, 1):  # ORT at batch 1 against row 0 of the batch-3 reference
            got = sess.run(["embedding"], {"waveform": x[:batch].numpy()})[0]
            assert got.shape == (batch, 64) and got.dtype == np.float32
            assert np.abs(got - ref[:batch]).max() <= bound, (batch, scale, floor)


@pytest.mark.slow
def test_onnx_export_full_size_matches_analytic(tmp_path):
    # perturbed-init BN (not calibrated): the calibrated random full-size trunk is chaotic, its own
    # float32 error vs a float64 front end reaches ~1e-3 even with the noise floor
    torch.manual_seed(0)
    model = _randomize(ESResNeXtFBSP(**get_config("audioclip")["audio"]), seed=2, calibrate=False)
    res = export_audioclip_audio(model, tmp_path / "audio_5s.onnx", 5 * SR, atol=1e-4)
    assert res.outputs[0]["shape"][1] == 1024
    x = _clips(2, 5 * SR)  # raw clips
    with torch.no_grad():
        ref = model(x).numpy()
    got = cpu_session(res.path, threads=2).run(["embedding"], {"waveform": x.numpy()})[0]
    assert np.abs(ref).max() > 0.05
    assert np.abs(got - ref).max() <= 1e-4
