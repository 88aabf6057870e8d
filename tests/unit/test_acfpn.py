"""AC-FPN: shapes, parameter counts, fusion modes, an independent functional reference of the
neck and head, the reference key layout, checkpoint formats and the ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.acfpn import (
    ACFPN,
    FUSIONS,
    FPNHead,
    FPNNeck,
    canonical_fusion,
    fuse_features,
    fusion_in_channels,
    fusions_for_channels,
    load_acfpn,
    map_reference_state_dict,
    read_acfpn_checkpoint,
    save_acfpn,
)
from models.checkpoints import CheckpointError
from models.random_init import randomize_batchnorm

TINY = "audioclip-tiny"
SMALL = {"neck_channels": 64, "head_channels": 32}  # narrow decoder: same code, 16x fewer FLOPs


def small(fusion: str = "hadamard", **kw) -> ACFPN:
    """A tiny-config AC-FPN with a narrow decoder (random weights)."""
    return ACFPN(fusion, TINY, **SMALL, **kw)


def _perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BN statistics and GroupNorm affines, so the checks bite."""
    randomize_batchnorm(module, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
    return module


@pytest.fixture(scope="module")
def tiny() -> ACFPN:
    return _perturb(small(seed=3), 7).eval()


def _inputs(b: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 224, 224, generator=g), torch.randn(b, d, generator=g)


# ------------------------------------------------------------------------------------------------
# shapes and modes


def test_forward_shapes_and_input_checks(tiny):
    img, emb = _inputs(2, tiny.embed_dim)
    with torch.no_grad():
        out = tiny(img, emb)
    assert out.shape == (2, 1, 224, 224) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.std() > 0
    with pytest.raises(ValueError, match=r"\[B, 3, 224, 224\]"):
        tiny(torch.randn(2, 3, 112, 112), emb)
    with pytest.raises(ValueError, match="batch"):
        tiny(img, emb[:1])
    with pytest.raises(ValueError, match=str(tiny.embed_dim)):
        tiny(img, torch.randn(2, tiny.embed_dim + 1))
    with pytest.raises(TypeError):
        tiny(img.to(torch.int64), emb)


def test_forward_from_waveform_uses_the_audio_tower(tiny):
    img, _ = _inputs(2, tiny.embed_dim)
    wav = torch.randn(2, 4000) * 3000.0  # short clips keep the audio tower cheap
    with torch.no_grad():
        a = tiny.encode_audio(wav)
        direct = tiny(img, a)
    via = tiny.forward_from_waveform(img, wav[:, None, :])
    assert a.shape == (2, tiny.embed_dim)
    torch.testing.assert_close(via, direct, rtol=0, atol=0)


def test_audio_modes():
    m = small(audio_mode="frozen")
    m.train()
    assert m.visual.training and not m.audio.training
    assert not any(p.requires_grad for p in m.audio.parameters())
    m.set_audio_mode("paper")
    m.train()
    assert m.audio.training and all(p.requires_grad for p in m.audio.parameters())
    m.eval()
    assert not m.audio.training
    with pytest.raises(ValueError, match="audio_mode"):
        m.set_audio_mode("half")


@pytest.mark.parametrize(
    "fusion,c4",
    [
        ("hadamard", 3072),
        ("concatenation", 4096),
        ("normed_hadamard", 3072),
        ("audio_only", 3072),
        ("score", 2049),
    ],
)
def test_fusion_channels_full_config(fusion, c4):
    assert fusion_in_channels(fusion) == c4
    assert fusion_in_channels(FUSIONS[fusion]) == c4  # reference code names are accepted
    assert fusion in fusions_for_channels(c4)
    with torch.device("meta"):
        m = ACFPN(fusion, "audioclip")
    assert m.neck.lateral_convs[3].in_channels == c4


def test_fusion_names():
    assert canonical_fusion("concate") == "hadamard"
    assert canonical_fusion("naive_concate") == "concatenation"
    assert canonical_fusion("noprior") == "audio_only"
    with pytest.raises(ValueError, match="hadamard"):
        canonical_fusion("skip")
    assert fusions_for_channels(3072) == ["hadamard", "normed_hadamard", "audio_only"]


def _reference_fusion(fusion: str, x4, dense, a):
    """The reference's fusion written out (Pred_endecoder.forward)."""
    a = a.unsqueeze(2).unsqueeze(3)
    h, w = dense.shape[2], dense.shape[3]
    if fusion in ("normed_concate", "score_fusion"):
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
        dense = dense / dense.norm(dim=1, keepdim=True).clamp_min(1e-12)
    amap = a.expand(-1, -1, h, w)
    x0 = dense * amap
    if fusion in ("concate", "normed_concate"):
        return torch.cat([x4, x0], 1)
    if fusion == "naive_concate":
        return torch.cat([x4, dense, amap], 1)
    if fusion == "noprior":
        return torch.cat([x4, amap], 1)
    return torch.cat([x4, x0.sum(1, keepdim=True)], 1)


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_fuse_features_matches_reference(fusion):
    g = torch.Generator().manual_seed(1)
    x4, dense, a = (
        torch.randn(2, 6, 3, 3, generator=g),
        torch.randn(2, 5, 3, 3, generator=g),
        torch.randn(2, 5, generator=g),
    )
    got = fuse_features(fusion, x4, dense, a)
    want = _reference_fusion(FUSIONS[fusion], x4, dense, a)
    assert got.shape[1] == fusion_in_channels(fusion, 6, 5)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    if fusion == "score":  # a cosine map
        assert got[:, 6].abs().max() <= 1 + 1e-6


# ------------------------------------------------------------------------------------------------
# parameter counts (spec 1.4), on the meta device


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_spec():
    with torch.device("meta"):
        had = ACFPN("hadamard", "audioclip")
        cat = ACFPN("concatenation", "audioclip")
    assert round(_count(had.audio) / 1e6, 3) == 32.105
    assert round(_count(had.visual) / 1e6, 3) == 38.317
    assert round(_count(had.neck) / 1e6, 3) == 3.607
    assert round(_count(had.head) / 1e6, 3) == 0.183
    assert round((_count(had.visual) + _count(had.neck) + _count(had.head)) / 1e6, 2) == 42.11
    # concatenation adds a 1024 x 256 slice to the 4th lateral conv (paper: 68.2M vs 68.0M)
    assert _count(cat.neck) - _count(had.neck) == 1024 * 256


# ------------------------------------------------------------------------------------------------
# key layout vs the reference names


NECK_KEYS = {
    f"neck.{t}.{i}.{p}"
    for t in ("lateral_convs", "fpn_convs")
    for i in range(4)
    for p in ("weight", "bias")
}
HEAD_SLOTS = {0: (0, 1), 1: (0, 1), 2: (0, 1, 4, 5), 3: (0, 1, 4, 5, 8, 9)}
HEAD_KEYS = {
    f"head.scale_heads.{lvl}.{s}.{p}"
    for lvl, slots in HEAD_SLOTS.items()
    for s in slots
    for p in ("weight", "bias")
} | {"head.seg_conv.weight", "head.seg_conv.bias"}


def test_key_layout_matches_reference():
    with torch.device("meta"):
        m = ACFPN("hadamard", "audioclip")
    keys = list(m.state_dict())
    assert {k for k in keys if k.startswith("neck.")} == NECK_KEYS and len(NECK_KEYS) == 16
    assert {k for k in keys if k.startswith("head.")} == HEAD_KEYS and len(HEAD_KEYS) == 30
    assert sum(k.startswith("visual.") for k in keys) == 339
    assert sum(k.startswith("audio.") for k in keys) == 370
    sd = m.state_dict()
    assert tuple(sd["head.scale_heads.3.8.weight"].shape) == (128, 128, 1, 1)  # 3rd block's conv
    assert tuple(sd["head.scale_heads.3.9.weight"].shape) == (128,)  # its GroupNorm
    assert tuple(sd["neck.fpn_convs.0.weight"].shape) == (256, 256, 3, 3)


# ------------------------------------------------------------------------------------------------
# independent functional reference of neck + head


def _reference_neck_head(sd: dict, feats: list[torch.Tensor]) -> torch.Tensor:
    """FPN_Neck + FPN_Head of the reference, step by step, from reference key names."""
    w = lambda k: sd[k]  # noqa: E731
    lat = [
        F.conv2d(feats[i], w(f"neck.lateral_convs.{i}.weight"), w(f"neck.lateral_convs.{i}.bias"))
        for i in range(4)
    ]
    for i in (3, 2, 1):  # coarse to fine, in place like `laterals[i - 1] += ...`
        lat[i - 1] = lat[i - 1] + F.interpolate(
            lat[i], scale_factor=2, mode="bilinear", align_corners=False
        )
    fpn = [
        F.conv2d(lat[i], w(f"neck.fpn_convs.{i}.weight"), w(f"neck.fpn_convs.{i}.bias"), padding=1)
        for i in range(4)
    ]

    def block(x, lvl, slot, up):
        x = F.conv2d(
            x, w(f"head.scale_heads.{lvl}.{slot}.weight"), w(f"head.scale_heads.{lvl}.{slot}.bias")
        )
        x = F.group_norm(
            x,
            32,
            w(f"head.scale_heads.{lvl}.{slot + 1}.weight"),
            w(f"head.scale_heads.{lvl}.{slot + 1}.bias"),
            eps=1e-5,
        )
        x = F.relu(x)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True) if up else x

    out = block(fpn[0], 0, 0, False)  # stride 4: one block, no upsampling
    y = block(fpn[1], 1, 0, True)  # stride 8: one block + x2
    out = out + y
    y = block(block(fpn[2], 2, 0, True), 2, 4, True)  # stride 16: two blocks (slots 0, 4)
    out = out + y
    y = block(block(block(fpn[3], 3, 0, True), 3, 4, True), 3, 8, True)  # stride 32: three
    out = out + y
    out = F.conv2d(out, w("head.seg_conv.weight"), w("head.seg_conv.bias"))
    return F.interpolate(out, scale_factor=4, mode="bilinear", align_corners=True)


def test_neck_head_match_functional_reference():
    torch.manual_seed(0)
    neck, head = FPNNeck([16, 24, 40, 72], 256, "bilinear"), _perturb(FPNHead(), 2)
    g = torch.Generator().manual_seed(5)
    feats = [torch.randn(2, c, s, s, generator=g) for c, s in ((16, 8), (24, 4), (40, 2), (72, 1))]
    with torch.no_grad():
        got = head(neck(feats))
        sd = {
            **{f"neck.{k}": v for k, v in neck.state_dict().items()},
            **{f"head.{k}": v for k, v in head.state_dict().items()},
        }
        want = _reference_neck_head(sd, feats)
    assert got.shape == (2, 1, 32, 32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fusion", ["hadamard", "concatenation", "score"])
def test_acfpn_matches_functional_reference(fusion):
    m = _perturb(small(fusion, seed=1), 4).eval()
    img, emb = _inputs(2, m.embed_dim, seed=2)
    with torch.no_grad():
        got = m(img, emb)
        f = m.visual.forward_features(img)
        c4 = _reference_fusion(FUSIONS[fusion], f["x4"], f["dense"], emb)
        want = _reference_neck_head(m.state_dict(), [f["x1"], f["x2"], f["x3"], c4])
    assert got.shape == (2, 1, 224, 224)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# checkpoints


def _reference_state_dict(model: ACFPN, text: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pred_endecoder.state_dict() layout: aclp.* (whole AudioCLIP), visual_encoder.*,
    audio_encoder.* (the same tensors), neck.*, head.*."""
    sd = model.state_dict()
    out = {}
    for k, v in sd.items():
        if k.startswith(("visual.", "audio.")):
            out[f"aclp.{k}"] = v
    out.update({f"aclp.{k}": v for k, v in text.items()})
    for k, v in sd.items():
        if k.startswith("visual."):
            out["visual_encoder." + k[len("visual.") :]] = v.clone()
    for k, v in sd.items():
        if k.startswith("audio."):
            out["audio_encoder." + k[len("audio.") :]] = v.clone()
    out.update({k: v for k, v in sd.items() if k.startswith(("neck.", "head."))})
    return out


def _text_state(config: str) -> dict[str, torch.Tensor]:
    from models.audioclip import AudioCLIP

    sd = AudioCLIP(config).state_dict()
    return {k: v for k, v in sd.items() if not k.startswith(("visual.", "audio."))}


def test_reference_layout_has_1616_keys_and_maps_back():
    from models.audioclip import AudioCLIP

    with torch.device("meta"):
        m = ACFPN("hadamard", "audioclip")
        aclp = AudioCLIP("audioclip")
    text = {k: v for k, v in aclp.state_dict().items() if not k.startswith(("visual.", "audio."))}
    ref = {k: v for k, v in _reference_state_dict(m, {}).items()}
    # meta tensors cannot be compared: give the duplicates the very same tensor objects
    for k in list(ref):
        if k.startswith("visual_encoder."):
            ref[k] = ref["aclp.visual." + k[len("visual_encoder.") :]]
        elif k.startswith("audio_encoder."):
            ref[k] = ref["aclp.audio." + k[len("audio_encoder.") :]]
    ref.update({f"aclp.{k}": v for k, v in text.items()})
    assert len(ref) == 1616
    assert sum(k.startswith("aclp.") for k in ref) == 861
    assert sum(k.startswith("visual_encoder.") for k in ref) == 339
    assert sum(k.startswith("audio_encoder.") for k in ref) == 370
    mapped = map_reference_state_dict(ref)
    assert set(mapped) == set(m.state_dict())


def test_reference_checkpoint_round_trip(tmp_path):
    src = _perturb(small(seed=11), 12).eval()
    ref = _reference_state_dict(src, _text_state(TINY))
    path = tmp_path / "S4_best.pth"
    torch.save(ref, path)
    m = load_acfpn(path, config=TINY)
    assert m.audio_mode == "paper" and not m.training and m.audio_input_scale == 1.0
    for k, v in src.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    img, emb = _inputs(1, src.embed_dim, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(m(img, emb), src(img, emb), rtol=0, atol=0)
    assert m.tower_provenance["visual"]["format"] == "sam4avs"
    # DataParallel prefix
    torch.save({f"module.{k}": v for k, v in ref.items()}, tmp_path / "dp.pth")
    load_acfpn(tmp_path / "dp.pth", config=TINY)


def test_reference_checkpoint_refuses_unequal_duplicates_and_strays():
    src = small(seed=1)
    ref = _reference_state_dict(src, {})
    bad = dict(ref)
    bad["visual_encoder.conv1.weight"] = bad["visual_encoder.conv1.weight"] + 1
    with pytest.raises(CheckpointError, match="visual_encoder.conv1.weight"):
        map_reference_state_dict(bad)
    stray = dict(ref)
    stray["tpavi.w"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="tpavi.w"):
        map_reference_state_dict(stray)


def test_wrong_fusion_is_refused(tmp_path):
    cat = small("concatenation", seed=1)
    ref_path = tmp_path / "ref_concat.pth"
    torch.save(_reference_state_dict(cat, _text_state(TINY)), ref_path)
    with pytest.raises(CheckpointError, match="concatenation"):
        load_acfpn(ref_path, fusion="hadamard", config=TINY)
    assert load_acfpn(ref_path, fusion="naive_concate", config=TINY).fusion == "concatenation"
    own = save_acfpn(cat, tmp_path / "own.pt")
    with pytest.raises(CheckpointError, match="concatenation"):
        load_acfpn(own, fusion="hadamard")
    with pytest.raises(CheckpointError, match="score"):
        small().load_trained_state_dict(small("score").trained_state_dict())


def test_own_checkpoint_round_trip(tmp_path, tiny):
    path = save_acfpn(tiny, tmp_path / "best.pt", extra={"epoch": 3})
    info = read_acfpn_checkpoint(path)
    keys = set(info["state_dict"])
    assert keys == {k for k in tiny.state_dict() if k.startswith(("visual.", "neck.", "head."))}
    assert info["fusion"] == "hadamard" and info["config"] == TINY and info["payload"]["epoch"] == 3
    assert info["towers"]["audio"] == {"source": "random-init", "seed": 4}
    m = load_acfpn(path)
    img, emb = _inputs(2, tiny.embed_dim, seed=9)
    wav = torch.randn(2, 3000) * 1000
    with torch.no_grad():
        torch.testing.assert_close(m(img, emb), tiny(img, emb), rtol=0, atol=0)
        # the audio tower is rebuilt from its recorded seed, not stored
        torch.testing.assert_close(m.encode_audio(wav), small(seed=3).encode_audio(wav))
    paper = small(audio_mode="paper")
    pinfo = read_acfpn_checkpoint(save_acfpn(paper, tmp_path / "paper.pt"))
    assert (
        "audio.bn1.running_mean" in pinfo["state_dict"]
        and "audio.conv1.weight" not in pinfo["state_dict"]
    )
    assert pinfo["audio_input_scale"] == 1.0 and m.audio_input_scale == 32768.0
    with torch.no_grad():
        paper.audio.bn1.running_mean.add_(0.5)  # as train-mode BN would have changed it
    save_acfpn(paper, tmp_path / "paper.pt")
    back = load_acfpn(tmp_path / "paper.pt")
    assert back.audio_mode == "paper" and torch.equal(
        back.audio.bn1.running_mean, paper.audio.bn1.running_mean
    )


def test_audioclip_file_loads_towers(tmp_path):
    from models.audioclip import AudioCLIP

    torch.manual_seed(21)
    ac = _perturb(AudioCLIP(TINY), 22)
    path = tmp_path / "AudioCLIP-Full-Training.pt"
    torch.save(ac.state_dict(), path)
    m = small()
    prov = m.load_audioclip(tmp_path)  # a folder is searched for the official name
    assert len(prov["sha256"]) == 64 and m.tower_provenance["audio"] == prov
    for k, v in ac.visual.state_dict().items():
        assert torch.equal(m.visual.state_dict()[k], v)
    for k, v in ac.audio.state_dict().items():
        assert torch.equal(m.audio.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="AudioCLIP"):
        load_acfpn(path)
    sd = ac.state_dict()
    del sd["visual.conv1.weight"]
    torch.save(sd, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="visual.*conv1.weight|conv1.weight"):
        m.load_audioclip(tmp_path / "broken.pt")
    # an AC-FPN checkpoint saved with these towers restores the audio tower from the file
    own = save_acfpn(m, tmp_path / "own.pt")
    back = load_acfpn(own)
    assert torch.equal(back.audio.fc.weight, ac.audio.fc.weight)
    with pytest.raises(CheckpointError, match="checksum"):
        torch.save(AudioCLIP(TINY).state_dict(), tmp_path / "other.pt")
        load_acfpn(own, audioclip=tmp_path / "other.pt")


# ------------------------------------------------------------------------------------------------
# ONNX export


@pytest.mark.parametrize("fusion", ["hadamard", "concatenation"])
def test_onnx_export_parity(tmp_path, fusion):
    from export.acfpn_export import export_acfpn
    from export.onnx_utils import cpu_session

    m = _perturb(small(fusion, seed=5), 6).eval()
    res = export_acfpn(m, tmp_path / "acfpn.onnx", atol=1e-4)
    assert res.parity_max_abs_err <= 1e-4
    assert [i["name"] for i in res.inputs] == ["image", "audio_embedding"]
    assert res.inputs[0]["shape"][0] == res.inputs[1]["shape"][0] and isinstance(
        res.inputs[0]["shape"][0], str
    )
    assert res.outputs[0]["shape"][1:] == [1, 224, 224]
    # batch 1, against the model itself (not the export wrapper)
    img, emb = _inputs(1, m.embed_dim, seed=8)
    got = cpu_session(res.path, threads=2).run(
        ["logits"], {"image": img.numpy(), "audio_embedding": emb.numpy()}
    )[0]
    with torch.no_grad():
        want = m(img, emb).numpy()
    assert np.abs(got - want).max() <= 1e-4
    assert want.std() > 1e-3 and math.isfinite(float(want.std()))


@pytest.mark.slow
def test_full_size_forward_and_export(tmp_path):
    """Full-size AudioCLIP AC-FPN (random weights): forward shapes and ORT parity."""
    from export.acfpn_export import export_acfpn

    m = _perturb(ACFPN("hadamard", "audioclip", seed=0), 1).eval()
    img, emb = _inputs(1, 1024, seed=4)
    with torch.no_grad():
        out = m(img, emb)
    assert out.shape == (1, 1, 224, 224) and torch.isfinite(out).all()
    res = export_acfpn(m, tmp_path / "acfpn.onnx", atol=None)
    scale = float(out.abs().max())
    assert res.parity_max_abs_err <= 1e-4 * max(1.0, scale), (res.parity_max_abs_err, scale)
