"""AudioCLIP: CLIP RN50 (visual + text) and the ESResNeXt-FBSP audio tower in the official key layout."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from models.checkpoints import CheckpointError, load_checkpoint, load_strict, sha256_file
from models.clip_text import CLIPTextTower
from models.clip_visual import ModifiedResNet
from models.esresnext_fbsp import ESResNeXtFBSP
from models.registry import get_config

_TEXT_KEYS = (
    "transformer",
    "token_embedding",
    "positional_embedding",
    "ln_final",
    "text_projection",
)


class AudioCLIP(nn.Module):
    """The three AudioCLIP towers with the official 861-key state-dict layout.

    ``visual``: CLIP ModifiedResNet-50; ``audio``: ESResNeXt-FBSP; the text tower's modules sit at the
    top level as in the official files; plus ``logit_scale`` (image-text), ``logit_scale_ai``
    (audio-image) and ``logit_scale_at`` (audio-text).
    """

    def __init__(self, config: str = "audioclip", *, with_text: bool = True):
        super().__init__()
        cfg = get_config(config)
        self.config_name = config
        self.config = cfg
        c = cfg["clip"]
        self.visual = ModifiedResNet(
            layers=tuple(c["vision_layers"]),
            output_dim=c["embed_dim"],
            heads=c["vision_heads"],
            input_resolution=c["image_resolution"],
            width=c["vision_width"],
        )
        self.audio = ESResNeXtFBSP(**cfg["audio"])
        self.with_text = with_text
        if with_text:
            text = CLIPTextTower(
                embed_dim=c["embed_dim"],
                context_length=c["context_length"],
                vocab_size=c["vocab_size"],
                width=c["transformer_width"],
                heads=c["transformer_heads"],
                layers=c["transformer_layers"],
            )
            object.__setattr__(self, "_text", text)  # not a child: its parts are mounted below
            for name in _TEXT_KEYS:
                setattr(self, name, getattr(text, name))
        self.logit_scale = nn.Parameter(torch.tensor(1.0))
        self.logit_scale_ai = nn.Parameter(torch.tensor(math.log(100.0)))
        self.logit_scale_at = nn.Parameter(torch.tensor(math.log(100.0)))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """[B, 3, 224, 224] CLIP-normalised float32 -> global image embedding [B, D] (not normalised)."""
        return self.visual(image)

    def encode_audio(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, T] or [B, C, T] float32 at 44.1 kHz in int16 units -> audio embedding [B, D]."""
        return self.audio(waveform)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, 77] int64 CLIP BPE tokens -> text embedding [B, D] (not normalised)."""
        if not self.with_text:
            raise RuntimeError("this AudioCLIP was built with with_text=False")
        return self._text(tokens)


def load_audioclip(
    checkpoint: str | Path | None = None,
    *,
    config: str = "audioclip",
    with_text: bool = True,
    seed: int = 0,
) -> tuple[AudioCLIP, dict]:
    """Build AudioCLIP and load an official file (``AudioCLIP-{Full,Partial}-Training.pt``) strictly.

    Without a checkpoint the weights are random (``torch.manual_seed(seed)``). Returns the model in
    eval mode and its provenance: ``{"path", "sha256"}`` or ``{"source": "random-init", "seed"}``.
    """
    torch.manual_seed(seed)
    model = AudioCLIP(config, with_text=with_text)
    if checkpoint is None:
        return model.eval(), {"source": "random-init", "seed": seed}
    sd = load_checkpoint(checkpoint)
    drop = set()
    if not with_text:
        drop = {k for k in sd if k.split(".")[0] in _TEXT_KEYS}
    load_strict(model, sd, ignore=drop, source=str(checkpoint))
    return model.eval(), {
        "path": str(Path(checkpoint).resolve()),
        "sha256": sha256_file(checkpoint),
    }


def load_tower_file(model: AudioCLIP, path: str | Path, tower: str) -> dict:
    """Load ``CLIP.pt`` (tower "clip": visual + text keys) or ``ESRNXFBSP.pt`` (tower "audio").

    ESRNXFBSP.pt holds the audio net with a 527-class AudioSet ``fc``: when its fc does not fit the
    embedding width it is skipped (the Sam4AVS ablations train it) and the result lists it under
    ``skipped``; every other key must fit exactly.
    """
    sd = load_checkpoint(path)
    skipped: list[str] = []
    if tower == "audio":
        own = model.audio.state_dict()
        skipped = sorted(
            k
            for k in ("fc.weight", "fc.bias")
            if k in sd and k in own and sd[k].shape != own[k].shape
        )
        if skipped:
            sd = {k: v for k, v in sd.items() if k not in skipped}
            sd.update({k: own[k] for k in skipped})
        load_strict(model.audio, sd, source=str(path))
    elif tower == "clip":
        clip_keys = {k: v for k, v in sd.items() if not k.startswith("audio.")}
        own = {
            k
            for k in model.state_dict()
            if not k.startswith("audio.") and not k.startswith("logit_scale_a")
        }
        extra = set(clip_keys) - own
        if extra:
            raise CheckpointError(
                f"{path}: unexpected keys for the CLIP towers: {sorted(extra)[:10]}"
            )
        missing = own - set(clip_keys)
        if missing:
            raise CheckpointError(
                f"{path}: missing keys for the CLIP towers: {sorted(missing)[:10]}"
            )
        model.load_state_dict(clip_keys, strict=False)
    else:
        raise ValueError(f"tower must be 'clip' or 'audio', got {tower!r}")
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(path), "skipped": skipped}
