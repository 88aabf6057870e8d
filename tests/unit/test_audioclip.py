"""AudioCLIP: the official 861-key layout, strict loading of saved state dicts, refusal of wrong ones."""

from __future__ import annotations

import pytest
import torch

from models.audioclip import AudioCLIP, load_audioclip, load_tower_file
from models.checkpoints import CheckpointError, load_checkpoint


class NotATensor:
    """A pickled object that weights_only loading must refuse."""


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """An official-layout AudioCLIP state dict (full size, random weights) written with torch.save."""
    torch.manual_seed(0)
    model = AudioCLIP("audioclip")
    sd = model.state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "AudioCLIP-Full-Training.pt"
    torch.save(sd, path)
    return path, sd


def test_official_layout(official_file):
    _, sd = official_file
    assert len(sd) == 861
    prefixes: dict[str, int] = {}
    for k in sd:
        p = k.split(".")[0]
        prefixes[p] = prefixes.get(p, 0) + 1
    assert prefixes["visual"] == 339 and prefixes["audio"] == 370 and prefixes["transformer"] == 144
    assert sd["audio.fbsp.bias"].shape == (0,)
    assert tuple(sd["audio.window"].shape) == (1654,)
    assert tuple(sd["visual.attnpool.positional_embedding"].shape) == (50, 2048)
    n_params = sum(p.numel() for p in AudioCLIP("audioclip").parameters())
    assert n_params == 134_111_910


def test_saved_state_dict_loads_strictly(official_file):
    path, sd = official_file
    model, prov = load_audioclip(path, config="audioclip", seed=123)
    assert prov["sha256"] and prov["path"].endswith("AudioCLIP-Full-Training.pt")
    got = model.state_dict()
    for k in (
        "visual.conv1.weight",
        "audio.fbsp.m",
        "transformer.resblocks.0.attn.in_proj_weight",
        "logit_scale_ai",
    ):
        assert torch.equal(got[k], sd[k])
    # without the text tower the text keys of the file are skipped, the rest still loads strictly
    lean, _ = load_audioclip(path, config="audioclip", with_text=False)
    assert torch.equal(lean.state_dict()["audio.fc.weight"], sd["audio.fc.weight"])
    assert not any(k.startswith("transformer.") for k in lean.state_dict())


def test_wrong_state_dicts_are_refused(official_file, tmp_path):
    _, sd = official_file
    bad = dict(sd)
    del bad["visual.conv1.weight"]
    bad["audio.extra.weight"] = torch.zeros(3)
    bad["audio.fc.weight"] = torch.zeros(527, 2048)
    p = tmp_path / "bad.pt"
    torch.save(bad, p)
    with pytest.raises(CheckpointError) as e:
        load_audioclip(p)
    msg = str(e.value)
    assert "visual.conv1.weight" in msg and "audio.extra.weight" in msg and "audio.fc.weight" in msg


def test_unsafe_or_foreign_files_are_refused(tmp_path):
    p = tmp_path / "pickled.pt"
    torch.save({"x": NotATensor()}, p)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"model": {"a": torch.zeros(1)}}, p)
    assert set(load_checkpoint(p)) == {"a"}


def test_tower_files(official_file, tmp_path):
    _, sd = official_file
    model = AudioCLIP("audioclip")
    audio_sd = {k[len("audio.") :]: v for k, v in sd.items() if k.startswith("audio.")}
    esr = dict(audio_sd)
    esr["fc.weight"] = torch.randn(527, 2048)
    esr["fc.bias"] = torch.randn(527)
    p = tmp_path / "ESRNXFBSP.pt"
    torch.save(esr, p)
    prov = load_tower_file(model, p, "audio")
    assert prov["skipped"] == ["fc.bias", "fc.weight"]
    assert torch.equal(model.audio.fbsp.m, audio_sd["fbsp.m"])
    clip = {
        k: v
        for k, v in sd.items()
        if not k.startswith("audio.") and k not in ("logit_scale_ai", "logit_scale_at")
    }
    p2 = tmp_path / "CLIP.pt"
    torch.save(clip, p2)
    load_tower_file(model, p2, "clip")
    assert torch.equal(model.visual.conv1.weight, sd["visual.conv1.weight"])
    del clip["visual.conv1.weight"]
    torch.save(clip, p2)
    with pytest.raises(CheckpointError, match="visual.conv1.weight"):
        load_tower_file(model, p2, "clip")


def test_build_engines_reaches_the_tower_files(tmp_path):
    """`build_engines.py --audioclip-variant towers` builds AudioCLIP from CLIP.pt + ESRNXFBSP.pt."""
    from export.build_engines import parse_args
    from export.graph_builders import BuildContext

    assert parse_args(["--audioclip-variant", "towers"]).audioclip_variant == "towers"
    torch.manual_seed(11)
    src = AudioCLIP("audioclip-tiny").state_dict()
    clip = {k: v for k, v in src.items() if not k.startswith("audio.") and "logit_scale_a" not in k}
    audio = {k[len("audio.") :]: v for k, v in src.items() if k.startswith("audio.")}
    ctx = BuildContext(
        out=tmp_path, profile="tiny", checkpoints=tmp_path, audioclip_variant="towers"
    )
    torch.save(clip, tmp_path / "CLIP.pt")
    with pytest.raises(CheckpointError, match="ESRNXFBSP.pt"):
        ctx.audioclip()
    torch.save(audio, tmp_path / "ESRNXFBSP.pt")
    model = ctx.audioclip()
    assert torch.equal(model.visual.conv1.weight, src["visual.conv1.weight"])
    assert all(torch.equal(v, audio[k]) for k, v in model.audio.state_dict().items())
    w = ctx.weights["audioclip"]
    assert w["source"] == "towers" and "random_parts" not in w
    assert w["clip"]["path"].endswith("CLIP.pt") and w["esrnxfbsp"]["skipped"] == []
    # the 527-class AudioSet fc of the real ESRNXFBSP.pt does not fit: recorded as random
    audio["fc.weight"] = torch.randn(527, audio["fc.weight"].shape[1])
    audio["fc.bias"] = torch.randn(527)
    torch.save(audio, tmp_path / "ESRNXFBSP.pt")
    ctx = BuildContext(
        out=tmp_path, profile="tiny", checkpoints=tmp_path, audioclip_variant="towers"
    )
    ctx.audioclip()
    assert ctx.weights["audioclip"]["random_parts"] == ["fc.bias", "fc.weight"]
