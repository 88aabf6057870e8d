"""AVSBench loaders and AC-FPN training on a tiny on-disk AVSBench fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import avsbench  # noqa: E402
from models import train_acfpn as T  # noqa: E402
from models.acfpn import ACFPN, load_acfpn, read_acfpn_checkpoint  # noqa: E402
from models.checkpoints import CheckpointError, sha256_file  # noqa: E402
from models.registry import CLIP_MEAN, CLIP_STD  # noqa: E402
from tests.helpers.avsbench import make_avsbench, write_wav

pytestmark = pytest.mark.filterwarnings(
    "ignore:'.*' is deprecated and slated for removal:DeprecationWarning"
)
TINY = "audioclip-tiny"
NARROW = ["--neck-channels", "64", "--head-channels", "32"]


@pytest.fixture(scope="module")
def s4(tmp_path_factory) -> Path:
    return make_avsbench(tmp_path_factory.mktemp("avs") / "data", "s4", videos_per_split=2)


@pytest.fixture(scope="module")
def ms3(tmp_path_factory) -> Path:
    return make_avsbench(tmp_path_factory.mktemp("avs") / "data", "ms3", videos_per_split=2)


# ------------------------------------------------------------------------------------------------
# index and loaders


def test_s4_index_and_loaders(s4):
    train = avsbench.index_split(s4, "s4", "train", check_files=True)
    val = avsbench.index_split(s4 / "Single-source", "s4", "val", check_files=True)  # either root
    assert len(train) == 2 and len(val) == 2
    r = train[0]
    base = s4 / "Single-source" / "s4_data"
    assert r.frames[2] == base / "visual_frames" / "train" / r.category / r.name / f"{r.name}_3.png"
    assert r.wav == base / "audio_wav" / "train" / r.category / f"{r.name}.wav"
    assert r.masks == (base / "gt_masks" / "train" / r.category / r.name / f"{r.name}_1.png",)
    assert r.mask_frames == (1,) and val[0].mask_frames == (1, 2, 3, 4, 5)
    frame = avsbench.load_frame(r.frames[0])
    assert frame.shape == (224, 224, 3) and frame.dtype == np.uint8
    mask = avsbench.load_mask(r.masks[0], "s4")
    written = np.asarray(Image.open(r.masks[0]))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask, (written > 0).astype(np.uint8))
    from runtime.preprocess.audio import read_wav, to_mono_float

    pcm, rate = read_wav(r.wav)  # the one WAV reader, shared with the runtime
    assert rate == 16000 and pcm.dtype == np.float32 and pcm.shape == (1, 80000)
    stereo, _ = read_wav(train[1].wav)
    assert stereo.shape == (2, 80000)
    mono = to_mono_float(stereo)
    np.testing.assert_allclose(mono, stereo.mean(axis=0), atol=1e-7)


def test_ms3_index_layout(ms3):
    recs = avsbench.index_split(ms3, "ms3", "train", check_files=True)
    r = recs[0]
    base = ms3 / "Multi-sources" / "ms3_data"
    assert r.category is None
    assert r.frames[0] == base / "visual_frames" / r.name / f"{r.name}.mp4_1.png"  # no split level
    assert r.wav == base / "audio_wav" / "train" / f"{r.name}.wav"
    assert r.masks[4] == base / "gt_masks" / "train" / r.name / f"{r.name}_5.png"
    assert len(r.masks) == 5
    m = avsbench.load_mask(r.masks[0], "ms3")
    assert set(np.unique(m)) == {0, 1}


def test_missing_files_are_named(tmp_path):
    root = make_avsbench(tmp_path / "d", "s4", videos_per_split=1)
    r = avsbench.index_split(root, "s4", "val")[0]
    for victim in (r.frames[3], r.masks[4], r.wav):
        victim.rename(victim.with_suffix(".bak"))
        with pytest.raises(FileNotFoundError, match=str(victim).replace("\\", "\\\\")):
            avsbench.index_split(root, "s4", "val", check_files=True)
        with pytest.raises(FileNotFoundError, match=victim.name):
            T.AVSBenchVideos(root, "s4", "val", tile=1)[0]
        victim.with_suffix(".bak").rename(victim)
    with pytest.raises(FileNotFoundError, match="ms3_meta_data.csv"):
        avsbench.index_split(root, "ms3", "val")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        avsbench.load_frame(tmp_path / "nope.png")


# ------------------------------------------------------------------------------------------------
# preprocessing


def _reference_audio(path: Path) -> np.ndarray:
    """The reference's load_audio_wav, step by step (librosa.load at 44.1 kHz, force 5 s,
    [5, 1, 44100] chunks, each tiled 5x)."""
    librosa = pytest.importorskip("librosa")
    track, _ = librosa.load(str(path), sr=44100, dtype=np.float32)
    n = 5 * 44100
    if track.shape[0] > n:
        track = track[:n]
    elif track.shape[0] < n:
        second = track.shape[0] // 44100
        last = track[-44100:]
        track = np.concatenate((track[: second * 44100], np.tile(last, 5 - second)))
    return np.tile(track.reshape(5, 1, -1), (1, 1, 5))[:, 0]


@pytest.mark.parametrize("seconds", [5.0, 6.2, 3.5])
def test_audio_matches_reference_loader(tmp_path, seconds):
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal((int(seconds * 16000), 2)) * 4000).astype(np.int16)
    path = tmp_path / "a.wav"
    write_wav(path, pcm)
    got = T.prepare_audio(path, input_scale=1.0)
    want = _reference_audio(path)
    assert got.shape == (5, 220500) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(T.prepare_audio(path), got * 32768, rtol=1e-6)


def test_short_clips_and_runtime_agreement():
    from runtime.preprocess.audio import chunk_per_frame

    rng = np.random.default_rng(2)
    for n in (17640, 100_000, 300_000):  # 0.4 s, 2.27 s, 6.8 s at 44.1 kHz
        x = rng.standard_normal(n).astype(np.float32)
        got = chunk_per_frame(x, 44100, 5)  # the one chunker: training uses the runtime's
        assert got.shape == (5, 44100)
    x = rng.standard_normal(100_000).astype(np.float32)
    got = chunk_per_frame(x, 44100, 5)
    np.testing.assert_array_equal(got[:2].ravel(), x[:88200])  # whole seconds kept
    for k in (2, 3, 4):
        np.testing.assert_array_equal(got[k], x[-44100:])  # then the last second
    short = rng.standard_normal(17640).astype(np.float32)
    np.testing.assert_array_equal(
        chunk_per_frame(short, 44100, 5)[0], np.resize(short, 44100)
    )  # cyclic


def test_frame_preprocessing(s4, tmp_path):
    r = avsbench.index_split(s4, "s4", "val")[0]
    got = T.prepare_frames(r.frames)
    raw = (
        np.stack([np.asarray(Image.open(p).convert("RGB")) for p in r.frames]).astype(np.float32)
        / 255
    )
    want = (raw - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    np.testing.assert_allclose(got, want.transpose(0, 3, 1, 2), atol=1e-6)
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(
        big
    )
    assert T.prepare_frames([big]).shape == (1, 3, 224, 224)


# ------------------------------------------------------------------------------------------------
# training


def _batch(root: Path, kind: str, split: str, n: int, scale: float = 32768.0) -> dict:
    ds = T.AVSBenchVideos(root, kind, split, tile=1, input_scale=scale)
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


def test_s4_train_batch_supervises_frame_one_only(s4):
    b = _batch(s4, "s4", "train", 2)
    assert b["images"].shape == (2, 5, 3, 224, 224) and b["audio"].shape == (2, 5, 44100)
    assert b["masks"].shape == (2, 1, 224, 224)
    _, _, masks, idx = T._flatten_batch(b, torch.device("cpu"))
    assert idx.tolist() == [0, 5] and masks.shape == (2, 224, 224)
    v = _batch(s4, "s4", "val", 1)
    assert T._flatten_batch(v, torch.device("cpu"))[3].tolist() == [0, 1, 2, 3, 4]


def test_two_steps_on_a_fixed_batch_lower_the_loss(ms3):
    batch = _batch(ms3, "ms3", "train", 1)  # one video, 5 frames, 5 masks
    model = ACFPN("hadamard", TINY, neck_channels=64, head_channels=32, seed=0).train()
    opt = T.make_optimizer(model, lr=5e-5)
    assert [g["lr"] for g in opt.param_groups] == [5e-5, pytest.approx(5e-6)]
    assert not {id(p) for p in model.audio.parameters()} & {
        id(p) for g in opt.param_groups for p in g["params"]
    }
    losses = [T.train_step(model, batch, opt) for _ in range(2)]  # each: the loss before its update
    images, audio, masks, idx = T._flatten_batch(batch, torch.device("cpu"))
    with torch.no_grad():
        after = T.segmentation_loss(model(images, model.encode_audio(audio))[idx], masks).item()
    assert losses[1] < losses[0] and after < losses[1], (losses, after)


def test_paper_mode_differs_in_audio_handling(s4):
    default = T.parse_args(["--data-root", str(s4), "--out", "x", "--config", TINY, *NARROW])
    paper = T.parse_args(
        ["--data-root", str(s4), "--out", "x", "--config", TINY, "--paper", *NARROW]
    )
    assert (
        default.epochs == 70
        and T.parse_args(["--data-root", "d", "--out", "o", "--split-kind", "ms3"]).epochs == 200
    )
    assert (
        T.dataset_options(default)["input_scale"] == 32768.0
        and T.dataset_options(paper)["input_scale"] == 1.0
    )
    b_def = _batch(s4, "s4", "train", 1, T.dataset_options(default)["input_scale"])
    b_pap = _batch(s4, "s4", "train", 1, T.dataset_options(paper)["input_scale"])
    torch.testing.assert_close(b_def["audio"], b_pap["audio"] * 32768.0)
    for args, batch in ((default, b_def), (paper, b_pap)):
        model = T.build_model(args).train()
        opt = T.make_optimizer(model)
        stats = model.audio.bn1.running_mean.clone()
        T.train_step(model, batch, opt, paper=args.paper)
        grads = [p.grad for p in model.audio.parameters()]
        if args.paper:
            assert model.audio_mode == "paper" and model.audio.training
            assert not torch.equal(stats, model.audio.bn1.running_mean)  # BN batch statistics
            assert any(g is not None and g.abs().sum() > 0 for g in grads)  # grads computed
        else:
            assert model.audio_mode == "frozen" and not model.audio.training
            assert torch.equal(stats, model.audio.bn1.running_mean)
            assert all(g is None for g in grads)


def test_cli_checkpoint_and_resume(s4, tmp_path):
    from models.audioclip import AudioCLIP

    torch.manual_seed(5)
    audioclip = tmp_path / "AudioCLIP-Full-Training.pt"
    torch.save(AudioCLIP(TINY).state_dict(), audioclip)
    out = tmp_path / "run"
    common = [
        "--data-root",
        str(s4),
        "--split-kind",
        "s4",
        "--config",
        TINY,
        "--batch-size",
        "1",
        "--max-videos",
        "1",
        "--audio-tile",
        "1",
        "--num-workers",
        "0",
        "--no-progress",
        "--checkpoint-dir",
        str(tmp_path),
        "--out",
        str(out),
        *NARROW,
    ]
    first = T.main([*common, "--epochs", "1", "--skip-test"])
    assert [h["epoch"] for h in first["history"]] == [0]
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    last = read_acfpn_checkpoint(out / "last.pt")
    assert last["payload"]["epoch"] == 0 and not any(
        k.startswith("audio.") for k in last["state_dict"]
    )
    steps = {int(s["step"]) for s in last["payload"]["optimizer"]["state"].values()}
    assert steps == {1}

    with pytest.raises(CheckpointError, match="fusion"):
        T.main([*common, "--epochs", "2", "--resume", str(out / "last.pt"), "--fusion", "score"])

    second = T.main([*common, "--epochs", "2", "--resume", str(out / "last.pt")])
    from avs.cli import main as avs_main  # `avs train` exits 0 after a successful run

    assert (
        avs_main(["train", *common, "--epochs", "1", "--skip-test", "--out", str(tmp_path / "r2")])
        == 0
    )
    assert (tmp_path / "r2" / "best.pt").is_file()
    assert [h["epoch"] for h in second["history"]] == [0, 1]
    last = read_acfpn_checkpoint(out / "last.pt")
    assert {int(s["step"]) for s in last["payload"]["optimizer"]["state"].values()} == {2}
    assert set(second["test"]) >= {"miou", "fscore", "videos"}
    assert json.loads((out / "test_metrics.json").read_text())["videos"] == 1
    best = load_acfpn(out / "best.pt")
    assert (
        best.fusion == "hadamard" and best.neck_channels == 64 and best.audio_input_scale == 32768.0
    )
    assert best.tower_provenance["audio"]["sha256"] == sha256_file(audioclip)
    ref = torch.load(audioclip, weights_only=True)
    assert torch.equal(best.audio.fc.weight, ref["audio.fc.weight"])
