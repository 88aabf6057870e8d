"""Both paper rows of AC-FPN (Hadamard and Concatenation) from a Sam4AVS-layout checkpoint to a
bundle to ``segment(mode="acfpn")``.

The checkpoints are written here in the reference training script's layout
(``Pred_endecoder.state_dict()``: ``aclp.*`` = the whole AudioCLIP, ``visual_encoder.*`` and
``audio_encoder.*`` = the same towers again, ``neck.*``, ``head.*``; no fusion name stored) from
a small-config AC-FPN with RANDOM weights. The bundle is built by ``export/build_engines.py
--acfpn`` without ``--acfpn-fusion``: the fusion must be read from the checkpoint itself. The
runtime's probabilities are compared with the source model run eagerly through the reference
preprocessing of ``benchmarks.bench_acfpn`` (torchvision transforms, ``librosa.load(sr=44100)``,
the AVSBench chunking, [-1, 1] audio as the reference feeds it) -- the model that wrote the
checkpoint, not one loaded by the code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import runtime
from export.build_engines import main as build_main
from models.acfpn import ACFPN, detect_reference_fusion, load_acfpn
from models.checkpoints import CheckpointError
from models.random_init import randomize_batchnorm
from reference.acfpn import reference_audio, reference_frames
from reference.media import make_demo_clip

TINY = "audioclip-tiny"
FRAMES = ("cat_1.jpg", "cars_2.jpg", "clock_1.jpg")


def _reference_layout(model: ACFPN) -> dict[str, torch.Tensor]:
    """The Sam4AVS training script's checkpoint layout (text tower omitted: the loader drops it)."""
    sd = model.state_dict()
    out = {f"aclp.{k}": v.clone() for k, v in sd.items() if k.startswith(("visual.", "audio."))}
    out.update(
        {"visual_encoder." + k[7:]: v.clone() for k, v in sd.items() if k.startswith("visual.")}
    )
    out.update(
        {"audio_encoder." + k[6:]: v.clone() for k, v in sd.items() if k.startswith("audio.")}
    )
    out.update({k: v.clone() for k, v in sd.items() if k.startswith(("neck.", "head."))})
    return out


def _source_model(fusion: str, seed: int) -> ACFPN:
    m = ACFPN(fusion, TINY, seed=seed)
    randomize_batchnorm(m, seed + 100)  # non-trivial BN statistics (audio and visual)
    return m.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, tuple[ACFPN, object]]:
    d = tmp_path_factory.mktemp("sam4avs_ckpt")
    out = {}
    for fusion, seed in (("hadamard", 21), ("concatenation", 31)):
        src = _source_model(fusion, seed)
        path = d / f"S4_{fusion}_best.pth"
        torch.save(_reference_layout(src), path)
        out[fusion] = (src, path)
    return out


def test_fusion_and_config_are_read_from_the_checkpoint(checkpoints):
    """No fusion and no config given: C4 = 2 * 64 ... tells the mode, the tower shapes the config."""
    for fusion, (src, path) in checkpoints.items():
        m = load_acfpn(path)
        assert m.fusion == fusion and m.config_name == TINY
        assert m.neck.lateral_convs[3].in_channels == src.c4
        for k, v in src.state_dict().items():
            assert torch.equal(m.state_dict()[k], v), k
    # concatenation: x4 (256) + dense (64) + audio (64) = 384 channels; hadamard 320
    assert checkpoints["concatenation"][0].c4 == 384 and checkpoints["hadamard"][0].c4 == 320


def test_contradicting_fusion_is_refused_naming_both(checkpoints):
    _, cat = checkpoints["concatenation"]
    with pytest.raises(CheckpointError, match=r"concatenation.*naive_concate.*'hadamard'"):
        load_acfpn(cat, fusion="hadamard")
    _, had = checkpoints["hadamard"]
    with pytest.raises(CheckpointError, match=r"hadamard.*'concatenation'"):
        load_acfpn(had, fusion="naive_concate")
    # shapes that C4 cannot tell apart: the option picks among them
    assert load_acfpn(had, fusion="normed_concate").fusion == "normed_hadamard"
    assert load_acfpn(cat, fusion="concatenation").fusion == "concatenation"
    with pytest.raises(CheckpointError, match="fits no fusion mode"):
        detect_reference_fusion({"neck.lateral_convs.3.weight": torch.zeros(64, 999, 1, 1)}, TINY)


def test_build_refuses_contradicting_acfpn_fusion(checkpoints, tmp_path, capsys):
    _, cat = checkpoints["concatenation"]
    rc = build_main(
        [
            "--profile",
            "tiny",
            "--out",
            str(tmp_path / "b"),
            "--graphs",
            "acfpn",
            "--acfpn",
            str(cat),
            "--acfpn-fusion",
            "hadamard",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "error: acfpn:" in err and "concatenation" in err and "'hadamard'" in err


def _probs_reference(src: ACFPN, frames, wav, tile: int) -> list[np.ndarray]:
    """sigmoid of the source model's logits, reference preprocessing, [-1, 1] audio (scale 1)."""
    with torch.no_grad():
        emb = src.encode_audio(reference_audio(wav, len(frames), input_scale=1.0, tile=tile))
        z = src(reference_frames(frames), emb)[:, 0].double()
    return [torch.sigmoid(z[i]).numpy() for i in range(len(frames))]


@pytest.mark.parametrize("fusion", ["hadamard", "concatenation"])
def test_paper_row_checkpoint_to_bundle_to_segment(fusion, checkpoints, demo_dir, tmp_path):
    src, ckpt = checkpoints[fusion]
    out = tmp_path / "bundle"
    # 1-s audio graphs (each 1-s chunk tiled once instead of 5 times): same code, 5x cheaper
    rc = build_main(
        [
            "--profile",
            "tiny",
            "--out",
            str(out),
            "--graphs",
            "audioclip_audio,acfpn",
            "--acfpn",
            str(ckpt),
            "--audio-seconds",
            "1",
            "--quiet",
        ]
    )
    assert rc == 0
    man = json.loads((out / "manifest.json").read_text())
    assert (
        man["graphs"]["acfpn"]["fusion"] == fusion and man["weights"]["acfpn"]["fusion"] == fusion
    )
    assert man["graphs"]["acfpn"]["audio_input_scale"] == 1.0
    # the reference's audio BN statistics differ from the build's AudioCLIP: its own audio graph
    assert man["graphs"]["acfpn"]["audio_graph"] == "acfpn_audio"
    assert man["preprocessing"]["audio"]["tile"] == 1

    frames, wav = make_demo_clip(demo_dir, tmp_path / "clip", frames=FRAMES)
    want = _probs_reference(src, frames, wav, tile=man["preprocessing"]["audio"]["tile"])
    res = runtime.load(out).segment(frames, wav, mode="acfpn")
    assert res.mode == "acfpn" and len(res.scores) == len(frames)
    for p, w in zip(res.scores, want, strict=True):
        assert p.shape == w.shape == (224, 224)
        assert float(np.max(np.abs(p.astype(np.float64) - w))) < 3e-4
    # masks at the reference's median probability: a threshold that cuts the map in two
    t = float(np.median(np.concatenate([w.ravel() for w in want])))
    t = min(max(t, 1e-3), 1 - 1e-3)
    res_t = runtime.load(out).segment(frames, wav, mode="acfpn", threshold=t)
    for m, w in zip(res_t.masks, want, strict=True):
        ref = w > t
        inter, union = np.logical_and(m, ref).sum(), np.logical_or(m, ref).sum()
        assert union == 0 or inter / union >= 0.99
