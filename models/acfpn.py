"""AC-FPN: the supervised audio-visual segmenter of Sam4AVS (spec sam4avs-reference 1.1-1.4).

CLIP RN50 stages x1..x4 of AudioCLIP's visual tower plus its dense attention-pool tokens feed an
FPN neck (256 channels) and a semantic-FPN head (128 channels) that outputs 1-channel logits at
the input resolution. The AudioCLIP audio embedding enters at stride 32 only, fused with the
dense tokens and concatenated to x4 (``fusion``).

Fusion modes (project name -> the reference's ``--fusion`` code name; D = embedding width,
C4 = channels of the 4th neck input, with x4 of 2048 channels and D = 1024 for AudioCLIP):

============== ================ ======================================== ======
name           reference        4th neck input                           C4
============== ================ ======================================== ======
hadamard       concate          cat(x4, dense * a)  (paper's main model) 3072
concatenation  naive_concate    cat(x4, dense, a broadcast)              4096
normed_hadamard normed_concate  cat(x4, norm(dense) * norm(a))           3072
audio_only     noprior          cat(x4, a broadcast)                     3072
score          score_fusion     cat(x4, sum_c norm(dense) * norm(a))     2049
============== ================ ======================================== ======

``norm`` is the L2 normalisation over channels (``F.normalize``, eps 1e-12); nothing else is
normalised. Module names follow the reference so that ``neck.*`` (16 keys) and ``head.*``
(30 keys) match its checkpoints.

Checkpoints (see :func:`load_acfpn`):

- official AudioCLIP files (861 keys) give the towers: :meth:`ACFPN.load_audioclip`;
- the reference training script's files (1616 keys) map through :func:`map_reference_state_dict`;
- this project's own files (:func:`save_acfpn`) hold only the trained parameters (visual, neck,
  head; plus the audio BN buffers when the audio tower ran in the reference's train mode), the
  fusion mode, the configuration and the provenance of each tower.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoints import (
    CheckpointError,
    check_keys,
    load_strict,
    read_checkpoint,
    sha256_file,
)
from models.clip_visual import ModifiedResNet
from models.esresnext_fbsp import ESResNeXtFBSP
from models.registry import AUDIOCLIP_CHECKPOINTS, get_config, list_configs
from runtime.preprocess.audio import INT16_SCALE

__all__ = [
    "ACFPN",
    "AUDIO_MODES",
    "CHECKPOINT_FORMAT",
    "FPNHead",
    "FPNNeck",
    "FUSIONS",
    "canonical_fusion",
    "detect_reference_config",
    "detect_reference_fusion",
    "fuse_features",
    "fusion_in_channels",
    "fusions_for_channels",
    "load_acfpn",
    "map_reference_state_dict",
    "read_acfpn_checkpoint",
    "save_acfpn",
]

# project (paper) name -> the reference's --fusion value
FUSIONS: dict[str, str] = {
    "hadamard": "concate",
    "concatenation": "naive_concate",
    "normed_hadamard": "normed_concate",
    "audio_only": "noprior",
    "score": "score_fusion",
}
_FROM_REFERENCE = {v: k for k, v in FUSIONS.items()}

# "frozen": audio tower always in eval mode, no gradients (clean default).
# "paper": the reference's behaviour: audio BN follows model.train() (batch statistics, running
#          statistics updated) and gradients are computed for the audio parameters, which are
#          nevertheless left out of the optimizer.
AUDIO_MODES = ("frozen", "paper")

# Decoder widths of the reference (FPN neck 256, semantic-FPN head 128); a registry config may
# override them with an "acfpn" entry {"neck_channels", "head_channels"} (small test configs).
DECODER_DEFAULTS = {"neck_channels": 256, "head_channels": 128}

CHECKPOINT_FORMAT = "avs-runtime/acfpn"
CHECKPOINT_VERSION = 1

# Top-level keys of an official AudioCLIP file that AC-FPN does not use (text tower, scales).
_TEXT_PREFIXES = ("transformer.", "token_embedding.", "ln_final.")
_TEXT_KEYS = (
    "positional_embedding",
    "text_projection",
    "logit_scale",
    "logit_scale_ai",
    "logit_scale_at",
)


def _is_text_key(key: str) -> bool:
    return key in _TEXT_KEYS or key.startswith(_TEXT_PREFIXES)


def canonical_fusion(name: str) -> str:
    """The project's fusion name for a project name or a reference ``--fusion`` code name.

    ``"concate"`` -> ``"hadamard"``, ``"hadamard"`` -> ``"hadamard"``, etc.; anything else raises
    ValueError listing the accepted names.
    """
    if not isinstance(name, str):
        raise TypeError(f"fusion must be a string, got {type(name).__name__}")
    if name in FUSIONS:
        return name
    if name in _FROM_REFERENCE:
        return _FROM_REFERENCE[name]
    raise ValueError(
        f"unknown fusion {name!r}; expected one of {sorted(FUSIONS)} "
        f"(or the reference names {sorted(_FROM_REFERENCE)})"
    )


def fusion_in_channels(fusion: str, x4_channels: int = 2048, embed_dim: int = 1024) -> int:
    """Channels C4 of the 4th neck input for a fusion mode (3072 for ``hadamard`` on AudioCLIP)."""
    f = canonical_fusion(fusion)
    extra = {
        "hadamard": embed_dim,
        "normed_hadamard": embed_dim,
        "audio_only": embed_dim,
        "concatenation": 2 * embed_dim,
        "score": 1,
    }[f]
    return int(x4_channels) + extra


def fusions_for_channels(c4: int, x4_channels: int = 2048, embed_dim: int = 1024) -> list[str]:
    """Every fusion mode whose 4th neck input has ``c4`` channels (C4 alone cannot tell
    ``hadamard``, ``normed_hadamard`` and ``audio_only`` apart)."""
    return [f for f in FUSIONS if fusion_in_channels(f, x4_channels, embed_dim) == int(c4)]


def fuse_features(
    fusion: str, x4: torch.Tensor, dense: torch.Tensor, audio: torch.Tensor
) -> torch.Tensor:
    """The 4th neck input from stride-32 features.

    ``x4``: [B, Cx, h, w] layer-4 features; ``dense``: [B, D, h, w] dense CLIP tokens (not
    normalised); ``audio``: [B, D] audio embedding (not normalised). Returns
    [B, fusion_in_channels(fusion, Cx, D), h, w] in the dtype type promotion gives.
    """
    f = canonical_fusion(fusion)
    if x4.dim() != 4 or dense.dim() != 4 or audio.dim() != 2:
        raise ValueError(
            f"expected x4 [B, C, h, w], dense [B, D, h, w], audio [B, D]; got "
            f"{list(x4.shape)}, {list(dense.shape)}, {list(audio.shape)}"
        )
    a = audio[:, :, None, None]
    if f in ("normed_hadamard", "score"):
        a = F.normalize(a, dim=1)
        dense = F.normalize(dense, dim=1)
    a_map = a.expand(-1, -1, dense.shape[2], dense.shape[3])
    if f in ("hadamard", "normed_hadamard"):
        return torch.cat((x4, dense * a_map), dim=1)
    if f == "concatenation":
        return torch.cat((x4, dense, a_map), dim=1)
    if f == "audio_only":
        return torch.cat((x4, a_map), dim=1)
    return torch.cat((x4, (dense * a_map).sum(dim=1, keepdim=True)), dim=1)  # score


class FPNNeck(nn.Module):
    """FPN neck: 1x1 lateral convs (with bias) -> top-down x2 upsample-and-add -> 3x3 convs.

    ``in_channels``: the channels of the 4 inputs (strides 4..32); every output has
    ``out_channels``. No normalisation, no activation, no extra levels. Keys:
    ``lateral_convs.{0..3}.{weight,bias}``, ``fpn_convs.{0..3}.{weight,bias}``.
    """

    def __init__(
        self, in_channels: Sequence[int], out_channels: int = 256, upmode: str = "bilinear"
    ):
        super().__init__()
        if upmode not in ("bilinear", "nearest"):
            raise ValueError(f"upmode must be 'bilinear' or 'nearest', got {upmode!r}")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.out_channels = int(out_channels)
        self.upmode = upmode
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in self.in_channels)
        self.fpn_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in self.in_channels
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """feats: one [B, C_i, H_i, W_i] tensor per level, H_{i} = 2 * H_{i+1} -> tuple of
        [B, out_channels, H_i, W_i]."""
        if len(feats) != len(self.lateral_convs):
            raise ValueError(f"expected {len(self.lateral_convs)} feature maps, got {len(feats)}")
        lat = [conv(x) for conv, x in zip(self.lateral_convs, feats, strict=True)]
        for i in range(len(lat) - 1, 0, -1):
            if self.upmode == "bilinear":
                up = F.interpolate(lat[i], scale_factor=2.0, mode="bilinear", align_corners=False)
            else:
                up = F.interpolate(lat[i], scale_factor=2.0, mode="nearest")
            lat[i - 1] = lat[i - 1] + up
        return tuple(conv(x) for conv, x in zip(self.fpn_convs, lat, strict=True))


class FPNHead(nn.Module):
    """Semantic-FPN head: per level ``max(1, log2(s / s0))`` blocks of 1x1 conv -> GroupNorm ->
    ReLU (-> x2 bilinear upsample, align_corners=True, for levels other than the first), a sum
    over levels, a 1x1 ``seg_conv`` and a x``strides[0]`` bilinear upsample (align_corners=True).

    Keys follow the reference's ``nn.Sequential`` slots: ``scale_heads.0.{0,1}``,
    ``scale_heads.i.{0,1,4,5,8,9}`` (3 or 4 slots per block) and ``seg_conv``.
    """

    def __init__(
        self,
        feature_strides: Sequence[int] = (4, 8, 16, 32),
        in_channels: int = 256,
        channels: int = 128,
        groups: int = 32,
        num_classes: int = 1,
    ):
        super().__init__()
        self.feature_strides = tuple(int(s) for s in feature_strides)
        s0 = self.feature_strides[0]
        self.scale_heads = nn.ModuleList()
        for s in self.feature_strides:
            n = max(1, int(math.log2(s) - math.log2(s0)))
            mods: list[nn.Module] = []
            for k in range(n):
                mods += [
                    nn.Conv2d(in_channels if k == 0 else channels, channels, 1),
                    nn.GroupNorm(groups, channels),
                    nn.ReLU(inplace=True),
                ]
                if s != s0:
                    mods.append(nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True))
            self.scale_heads.append(nn.Sequential(*mods))
        self.seg_conv = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """feats: [B, in_channels, H0 / 2^i, W0 / 2^i] per level -> logits
        [B, num_classes, H0 * s0, W0 * s0]."""
        if len(feats) != len(self.scale_heads):
            raise ValueError(f"expected {len(self.scale_heads)} feature maps, got {len(feats)}")
        out = self.scale_heads[0](feats[0])
        for head, x in zip(self.scale_heads[1:], feats[1:], strict=True):
            out = out + head(x)
        out = self.seg_conv(out)
        return F.interpolate(
            out, scale_factor=float(self.feature_strides[0]), mode="bilinear", align_corners=True
        )


def _random_provenance(seed: int) -> dict:
    return {"source": "random-init", "seed": int(seed)}


class ACFPN(nn.Module):
    """AC-FPN: AudioCLIP visual + audio towers, fusion at stride 32, FPN neck, semantic-FPN head.

    ``fusion``: a name of :data:`FUSIONS` (or its reference code name); ``config``: a name of
    ``models.registry`` ("audioclip", "audioclip-tiny"); ``seed``: random initialisation (the
    visual tower is built after ``torch.manual_seed(seed)``, the audio tower after
    ``seed + 1``, neck and head after ``seed + 2``; the global RNG state is left unchanged);
    ``audio_mode``: "frozen" (default: audio tower in eval mode, no gradients) or "paper"
    (the reference: audio BN follows ``train()``, gradients computed); ``neck_channels`` /
    ``head_channels``: decoder widths (default: the config's "acfpn" entry, else 256 / 128);
    ``audio_input_scale``: the factor the training waveforms ([-1, 1] floats) were multiplied by
    before the audio tower (default 1.0 for "paper", else 32768), kept with the checkpoint so an
    inference pipeline feeds the audio tower as in training.

    Children: ``visual`` (ModifiedResNet), ``audio`` (ESResNeXtFBSP), ``neck``, ``head``.
    ``tower_provenance`` records where the tower weights came from.
    """

    def __init__(
        self,
        fusion: str = "hadamard",
        config: str = "audioclip",
        *,
        seed: int = 0,
        audio_mode: str = "frozen",
        fpn_upmode: str = "bilinear",
        neck_channels: int | None = None,
        head_channels: int | None = None,
        audio_input_scale: float | None = None,
    ):
        super().__init__()
        self.fusion = canonical_fusion(fusion)
        self.config_name = config
        cfg = get_config(config)
        self.config = cfg
        c = cfg["clip"]
        self.image_size = int(c["image_resolution"])
        self.embed_dim = int(c["embed_dim"])
        self.fpn_upmode = fpn_upmode
        width = int(c["vision_width"])
        self.stage_channels = (width * 4, width * 8, width * 16, width * 32)
        self.c4 = fusion_in_channels(self.fusion, self.stage_channels[3], self.embed_dim)
        self.seed = int(seed)
        dec = {**DECODER_DEFAULTS, **cfg.get("acfpn", {})}
        self.neck_channels = int(
            neck_channels if neck_channels is not None else dec["neck_channels"]
        )
        self.head_channels = int(
            head_channels if head_channels is not None else dec["head_channels"]
        )
        if self.head_channels % 32:
            raise ValueError(
                f"head_channels must be a multiple of 32 (GroupNorm with 32 groups), got {self.head_channels}"
            )
        neck_channels, head_channels = self.neck_channels, self.head_channels
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.visual = ModifiedResNet(
                layers=tuple(c["vision_layers"]),
                output_dim=c["embed_dim"],
                heads=c["vision_heads"],
                input_resolution=c["image_resolution"],
                width=width,
            )
            torch.manual_seed(self.seed + 1)
            self.audio = ESResNeXtFBSP(**cfg["audio"])
            torch.manual_seed(self.seed + 2)
            self.neck = FPNNeck([*self.stage_channels[:3], self.c4], neck_channels, fpn_upmode)
            self.head = FPNHead((4, 8, 16, 32), neck_channels, head_channels, 32, 1)
        if int(cfg["audio"]["num_classes"]) != self.embed_dim:
            raise ValueError(
                f"config {config!r}: audio embedding width {cfg['audio']['num_classes']} differs "
                f"from the CLIP embedding width {self.embed_dim}"
            )
        self.tower_provenance: dict[str, dict] = {
            "visual": _random_provenance(self.seed),
            "audio": _random_provenance(self.seed + 1),
        }
        self.checkpoint_provenance: dict | None = None
        if audio_input_scale is None:
            audio_input_scale = 1.0 if audio_mode == "paper" else INT16_SCALE
        self.audio_input_scale = float(audio_input_scale)
        self.audio_mode = "frozen"
        self.set_audio_mode(audio_mode)

    # -- modes ------------------------------------------------------------------------------------

    def set_audio_mode(self, mode: str) -> ACFPN:
        """Select "frozen" (eval + no grad; ``requires_grad`` off) or "paper" (reference quirks)."""
        if mode not in AUDIO_MODES:
            raise ValueError(f"audio_mode must be one of {AUDIO_MODES}, got {mode!r}")
        self.audio_mode = mode
        self.audio.requires_grad_(mode == "paper")
        if mode == "frozen":
            self.audio.eval()
        else:
            self.audio.train(self.training)
        return self

    def train(self, mode: bool = True) -> ACFPN:
        """As ``nn.Module.train``; in "frozen" audio mode the audio tower stays in eval mode."""
        super().train(mode)
        if self.audio_mode == "frozen":
            self.audio.eval()
        return self

    # -- forward ----------------------------------------------------------------------------------

    def _check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        r = self.image_size
        if (
            images.dim() != 4
            or images.shape[1] != 3
            or images.shape[2] != r
            or images.shape[3] != r
        ):
            raise ValueError(
                f"images must be [B, 3, {r}, {r}] CLIP-normalised float, got {list(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(f"images must be floating point (CLIP-normalised), got {images.dtype}")

    def encode_audio(self, waveform: torch.Tensor) -> torch.Tensor:
        """Audio embedding of 44.1 kHz clips: waveform [B, T] or [B, 1, T] float in the audio
        tower's input units (int16 units for AudioCLIP; the reference feeds [-1, 1]) -> [B, D]
        float32, not normalised. Runs under ``no_grad`` in "frozen" mode."""
        if not isinstance(waveform, torch.Tensor) or not waveform.is_floating_point():
            raise TypeError(
                f"waveform must be a float torch.Tensor [B, T], got {getattr(waveform, 'dtype', type(waveform))}"
            )
        if waveform.dim() == 3 and waveform.shape[1] == 1:
            waveform = waveform[:, 0]
        if waveform.dim() != 2:
            raise ValueError(
                f"waveform must be [B, T] or [B, 1, T] (mono), got {list(waveform.shape)}"
            )
        if self.audio_mode == "frozen":
            with torch.no_grad():
                return self.audio(waveform)
        return self.audio(waveform)

    def forward(self, images: torch.Tensor, audio_embedding: torch.Tensor) -> torch.Tensor:
        """Segmentation logits.

        ``images``: [B, 3, R, R] float, CLIP-normalised RGB (R = 224); ``audio_embedding``:
        [B, D] float, the unnormalised AudioCLIP audio embedding of each frame's audio chunk.
        Returns logits [B, 1, R, R] (sigmoid > 0.5 = sounding object), pixel (row, col) in
        image orientation.
        """
        self._check_images(images)
        if not isinstance(audio_embedding, torch.Tensor) or audio_embedding.dim() != 2:
            raise ValueError(
                f"audio_embedding must be a [B, {self.embed_dim}] tensor, got {getattr(audio_embedding, 'shape', type(audio_embedding))}"
            )
        if audio_embedding.shape[1] != self.embed_dim:
            raise ValueError(
                f"audio_embedding must be [B, {self.embed_dim}], got {list(audio_embedding.shape)}"
            )
        if audio_embedding.shape[0] != images.shape[0]:
            raise ValueError(
                f"images and audio_embedding disagree on the batch: {images.shape[0]} vs {audio_embedding.shape[0]}"
            )
        f = self.visual.forward_features(images)
        c4 = fuse_features(self.fusion, f["x4"], f["dense"], audio_embedding.to(f["dense"].dtype))
        return self.head(self.neck([f["x1"], f["x2"], f["x3"], c4]))

    def forward_from_waveform(self, images: torch.Tensor, waveform: torch.Tensor) -> torch.Tensor:
        """``forward(images, encode_audio(waveform))``: images [B, 3, R, R], waveform [B, T]
        (one clip per image, in the audio tower's input units) -> logits [B, 1, R, R]."""
        self._check_images(images)
        if waveform.shape[0] != images.shape[0]:
            raise ValueError(
                f"images and waveform disagree on the batch: {images.shape[0]} vs {waveform.shape[0]}"
            )
        return self.forward(images, self.encode_audio(waveform))

    # -- parameters ---------------------------------------------------------------------------

    def trained_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups of the reference recipe: {"head": neck + head, "backbone": visual}.
        The audio tower is never trained."""
        return {
            "head": [*self.neck.parameters(), *self.head.parameters()],
            "backbone": list(self.visual.parameters()),
        }

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What this project's checkpoints hold: ``visual.*``, ``neck.*``, ``head.*`` and, in
        "paper" audio mode (where BN statistics change during training), the audio buffers."""
        sd = self.state_dict()
        keep = ("visual.", "neck.", "head.")
        out = {k: v for k, v in sd.items() if k.startswith(keep)}
        if self.audio_mode == "paper":
            out.update({f"audio.{k}": v for k, v in self.audio.named_buffers()})
        return out

    def load_trained_state_dict(
        self, sd: Mapping[str, torch.Tensor], source: str = "checkpoint"
    ) -> None:
        """Load exactly the keys of :meth:`trained_state_dict` (strict on keys and shapes).

        Raises CheckpointError naming missing keys, unexpected keys and shape mismatches."""
        self.check_fusion_of(sd, source)
        check_keys(
            self.trained_state_dict(),
            sd,
            f"{source} does not fit ACFPN({self.fusion!r}, {self.config_name!r}, audio_mode={self.audio_mode!r}):",
        )
        self.load_state_dict(dict(sd), strict=False)

    # -- loading --------------------------------------------------------------------------------

    def load_audioclip(self, path: str | Path) -> dict:
        """Load both towers from an official AudioCLIP file (861 keys; the text tower and the
        logit scales are skipped; ``visual.*`` and ``audio.*`` must fit exactly). A folder is
        searched for ``AudioCLIP-Full-Training.pt``. Returns and records the provenance
        ``{"path", "sha256"}``; raises CheckpointError naming missing or unexpected keys."""
        path = Path(path)
        if path.is_dir():
            path = path / AUDIOCLIP_CHECKPOINTS["full"]
        sd = _load_tensors(path)
        self.load_audioclip_state_dict(sd, source=str(path))
        prov = {"path": str(path.resolve()), "sha256": sha256_file(path)}
        self.tower_provenance = {"visual": dict(prov), "audio": dict(prov)}
        return prov

    def load_audioclip_state_dict(
        self, sd: Mapping[str, torch.Tensor], source: str = "AudioCLIP state dict"
    ) -> None:
        """Load ``visual.*`` and ``audio.*`` of an official-layout AudioCLIP state dict strictly."""
        if any(k.startswith(("neck.", "head.", "aclp.")) for k in sd):
            raise CheckpointError(
                f"{source} is an AC-FPN checkpoint, not an AudioCLIP file; use load_acfpn"
            )
        other = sorted(
            k for k in sd if not k.startswith(("visual.", "audio.")) and not _is_text_key(k)
        )
        if other:
            raise CheckpointError(f"{source}: unexpected keys for AudioCLIP: {other[:12]}")
        load_strict(self.visual, _strip(sd, "visual."), source=f"{source} [visual.*]")
        load_strict(self.audio, _strip(sd, "audio."), source=f"{source} [audio.*]")

    def check_fusion_of(
        self, sd: Mapping[str, torch.Tensor], source: str = "checkpoint", fusion: str | None = None
    ) -> None:
        """Refuse a state dict whose neck was built for another fusion mode.

        The 4th lateral conv's input channels tell C4; a stored ``fusion`` name (own format) is
        compared directly. Raises CheckpointError naming the modes involved."""
        if fusion is not None and canonical_fusion(fusion) != self.fusion:
            raise CheckpointError(
                f"{source} was trained with fusion {canonical_fusion(fusion)!r}, this model uses "
                f"{self.fusion!r}; build ACFPN(fusion={canonical_fusion(fusion)!r})"
            )
        key = "neck.lateral_convs.3.weight"
        if key in sd:
            c4 = int(sd[key].shape[1])
            if c4 != self.c4:
                modes = fusions_for_channels(c4, self.stage_channels[3], self.embed_dim) or [
                    "none known"
                ]
                raise CheckpointError(
                    f"{source}: its neck takes {c4} channels at stride 32 (fusion {' / '.join(modes)}), "
                    f"but fusion {self.fusion!r} of config {self.config_name!r} needs {self.c4}"
                )


# ------------------------------------------------------------------------------------------------
# checkpoint formats


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    obj = read_checkpoint(path)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is an avs-runtime AC-FPN checkpoint, not an AudioCLIP file")
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def map_reference_state_dict(
    sd: Mapping[str, torch.Tensor], source: str = "reference checkpoint"
) -> dict[str, torch.Tensor]:
    """Map the Sam4AVS training script's state dict (``Pred_endecoder.state_dict()``) to ACFPN keys.

    Key map (an optional leading ``module.`` from DataParallel is stripped first):

    - ``aclp.visual.K`` and ``visual_encoder.K`` -> ``visual.K`` (the same tensors registered
      twice; both copies must be equal, otherwise CheckpointError);
    - ``aclp.audio.K`` and ``audio_encoder.K`` -> ``audio.K`` (likewise);
    - ``neck.K`` -> ``neck.K``, ``head.K`` -> ``head.K``;
    - the text tower and the logit scales under ``aclp.`` are dropped;
    - any other key raises CheckpointError.
    """
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unexpected = []
    for k, v in sd.items():
        if k.startswith("aclp."):
            rest = k[len("aclp.") :]
            if rest.startswith(("visual.", "audio.")):
                new = rest
            elif _is_text_key(rest):
                continue
            else:
                unexpected.append(k)
                continue
        elif k.startswith("visual_encoder."):
            new = "visual." + k[len("visual_encoder.") :]
        elif k.startswith("audio_encoder."):
            new = "audio." + k[len("audio_encoder.") :]
        elif k.startswith(("neck.", "head.")):
            new = k
        else:
            unexpected.append(k)
            continue
        if new in out:
            prev = out[new]
            if prev is v:
                continue
            if prev.shape != v.shape or prev.dtype != v.dtype or not torch.equal(prev, v):
                raise CheckpointError(
                    f"{source}: duplicate entries {origin[new]!r} and {k!r} differ; the reference "
                    f"registers the same module twice, so they must be equal"
                )
            continue
        out[new] = v
        origin[new] = k
    if unexpected:
        raise CheckpointError(
            f"{source}: keys outside the reference layout: {sorted(unexpected)[:12]}"
        )
    return out


def _stage_widths(config: str) -> tuple[int, int]:
    """(x4 channels, embedding width D) of a registry configuration."""
    c = get_config(config)["clip"]
    return int(c["vision_width"]) * 32, int(c["embed_dim"])


def detect_reference_fusion(
    sd: Mapping[str, torch.Tensor],
    config: str = "audioclip",
    *,
    fusion: str | None = None,
    source: str = "checkpoint",
) -> str:
    """The fusion mode a reference-layout state dict (mapped to ACFPN keys) was trained with.

    Read from ``neck.lateral_convs.3.weight`` [256, C4, 1, 1]: C4 = x4 + 2 D is ``concatenation``
    (reference ``naive_concate``), x4 + 1 is ``score``, x4 + D is ``hadamard``,
    ``normed_hadamard`` or ``audio_only`` (same shapes: ``hadamard``, the paper's main model,
    unless ``fusion`` names one of the other two). ``fusion`` (a project or reference name),
    when given, must be among the modes C4 allows, otherwise CheckpointError names both the
    checkpoint's mode(s) and the requested one. Returns the project's fusion name.
    """
    key = "neck.lateral_convs.3.weight"
    if key not in sd:
        raise CheckpointError(f"{source}: no {key!r}, cannot tell the fusion mode")
    c4 = int(sd[key].shape[1])
    x4, d = _stage_widths(config)
    modes = fusions_for_channels(c4, x4, d)
    if not modes:
        known = {f: fusion_in_channels(f, x4, d) for f in FUSIONS}
        raise CheckpointError(
            f"{source}: its neck takes {c4} channels at stride 32, which fits no fusion mode of "
            f"config {config!r} (channels per mode: {known})"
        )
    if fusion is not None:
        want = canonical_fusion(fusion)
        if want not in modes:
            raise CheckpointError(
                f"{source} is a {' / '.join(modes)} checkpoint (reference --fusion "
                f"{' / '.join(FUSIONS[m] for m in modes)}: its neck takes {c4} channels at stride 32), "
                f"but fusion {want!r} (reference {FUSIONS[want]!r}, {fusion_in_channels(want, x4, d)} "
                f"channels) was requested; drop the fusion option or pass {modes[0]!r}"
            )
        return want
    return "hadamard" if "hadamard" in modes else modes[0]


def detect_reference_config(sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> str:
    """The registry configuration whose visual and audio towers have exactly the shapes of ``sd``
    (a reference-layout state dict mapped to ACFPN keys). Raises CheckpointError when none or
    several fit."""
    fits = []
    for name in list_configs():
        with torch.device("meta"):
            towers = ACFPN("hadamard", name)
        own = {k: v for k, v in towers.state_dict().items() if k.startswith(("visual.", "audio."))}
        if own.keys() == {k for k in sd if k.startswith(("visual.", "audio."))} and all(
            tuple(sd[k].shape) == tuple(v.shape) for k, v in own.items()
        ):
            fits.append(name)
    if len(fits) != 1:
        raise CheckpointError(
            f"{source}: its towers fit {'no' if not fits else 'several'} known configuration(s) "
            f"{fits or list_configs()}; pass config=<name>"
        )
    return fits[0]


def read_acfpn_checkpoint(path: str | Path) -> dict:
    """Read any AC-FPN checkpoint into a description (``torch.load(weights_only=True)``).

    Returns {"kind": "acfpn" | "reference", "state_dict", "fusion" (None when not stored),
    "config", "audio_mode", "towers", "payload"}. An official AudioCLIP file raises
    CheckpointError (load it with :meth:`ACFPN.load_audioclip`).
    """
    obj = read_checkpoint(path)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        ver = obj.get("version")
        if ver != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint version {ver!r}, this code reads {CHECKPOINT_VERSION}"
            )
        for field in ("state_dict", "fusion", "config", "towers"):
            if field not in obj:
                raise CheckpointError(f"{path}: AC-FPN checkpoint lacks {field!r}")
        return {
            "kind": "acfpn",
            "state_dict": dict(obj["state_dict"]),
            "fusion": obj["fusion"],
            "config": obj["config"],
            "audio_mode": obj.get("audio_mode", "frozen"),
            "audio_input_scale": float(obj.get("audio_input_scale", INT16_SCALE)),
            "fpn_upmode": obj.get("fpn_upmode", "bilinear"),
            "neck_channels": obj.get("neck_channels", DECODER_DEFAULTS["neck_channels"]),
            "head_channels": obj.get("head_channels", DECODER_DEFAULTS["head_channels"]),
            "towers": obj["towers"],
            "payload": obj,
        }
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    keys = [k[len("module.") :] if k.startswith("module.") else k for k in obj]
    if any(k.startswith("neck.") for k in keys) and any(
        k.startswith(("aclp.", "visual_encoder.")) for k in keys
    ):
        return {
            "kind": "reference",
            "state_dict": map_reference_state_dict(obj, source=str(path)),
            "fusion": None,
            "config": None,
            "audio_mode": "paper",
            "audio_input_scale": 1.0,  # the reference feeds librosa's [-1, 1] floats
            "fpn_upmode": "bilinear",
            "neck_channels": None,  # read from the tensors in load_acfpn
            "head_channels": None,
            "towers": None,
            "payload": None,
        }
    if any(k.startswith("visual.") for k in keys) and any(k.startswith("audio.") for k in keys):
        raise CheckpointError(
            f"{path} is an AudioCLIP file (towers only, no neck/head); use ACFPN.load_audioclip"
        )
    raise CheckpointError(f"{path}: not an AC-FPN checkpoint (no neck.*/head.* keys)")


def save_acfpn(model: ACFPN, path: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write this project's AC-FPN checkpoint: trained params + fusion + config + provenance.

    ``extra`` adds plain entries (epoch, optimizer state, metrics, ...) that must be loadable with
    ``weights_only=True`` (tensors, numbers, strings, lists, dicts). Never writes the audio weights
    or the text tower: the audio tower is found again from ``towers["audio"]``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "fusion": model.fusion,
        "reference_fusion": FUSIONS[model.fusion],
        "config": model.config_name,
        "fpn_upmode": model.fpn_upmode,
        "neck_channels": model.neck_channels,
        "head_channels": model.head_channels,
        "audio_mode": model.audio_mode,
        "audio_input_scale": model.audio_input_scale,
        "towers": {k: dict(v) for k, v in model.tower_provenance.items()},
        "state_dict": {k: v.detach().cpu() for k, v in model.trained_state_dict().items()},
    }
    for k, v in (extra or {}).items():
        if k in payload:
            raise ValueError(f"extra entry {k!r} would overwrite a checkpoint field")
        payload[k] = v
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def _restore_audio_tower(
    model: ACFPN, prov: Mapping[str, Any], audioclip: str | Path | None, source: str
) -> None:
    """Bring the audio tower back to the weights named by ``prov``."""
    if audioclip is not None:
        path = Path(audioclip)
        if path.is_dir():
            path = path / AUDIOCLIP_CHECKPOINTS["full"]
        want = prov.get("sha256")
        if want is not None and sha256_file(path) != want:
            raise CheckpointError(
                f"{source} was trained with the audio tower of {prov.get('path')} (sha256 {want[:12]}...), "
                f"but {path} has another checksum"
            )
        if want is None:
            raise CheckpointError(
                f"{source} was trained with a random-init audio tower ({prov}); do not pass an AudioCLIP file"
            )
        sd = _load_tensors(path)
        load_strict(model.audio, _strip(sd, "audio."), source=f"{path} [audio.*]")
        model.tower_provenance["audio"] = {"path": str(path.resolve()), "sha256": want}
        return
    if prov.get("source") == "random-init":
        seed = int(prov["seed"])
        if seed != model.seed + 1:
            raise CheckpointError(
                f"{source}: random audio tower seed {seed} does not fit model seed {model.seed}"
            )
        return  # ACFPN(seed=seed - 1) already rebuilt it
    path = prov.get("path")
    if path is None or not Path(path).is_file():
        raise CheckpointError(
            f"{source}: its audio tower came from {path!r}, which is not found; pass audioclip=<AudioCLIP file>"
        )
    _restore_audio_tower(model, prov, path, source)


def load_acfpn(
    path: str | Path,
    *,
    fusion: str | None = None,
    config: str | None = None,
    audioclip: str | Path | None = None,
    audio_mode: str | None = None,
) -> ACFPN:
    """Build an ACFPN from a checkpoint file and load it strictly (returned in eval mode).

    - This project's format: ``fusion`` / ``config`` default to the stored ones (a different
      ``fusion`` is refused); the audio tower comes from ``audioclip`` (checked against the
      stored sha256) or from the stored provenance (path, or random-init seed).
    - The reference format (1616 keys, no fusion name stored): the fusion is read from the
      checkpoint itself (:func:`detect_reference_fusion`: the channels of the stride-32 lateral
      conv; 4096 = ``concatenation``, the paper's "AC-FPN (Concatenation)" row, 3072 =
      ``hadamard`` unless ``fusion`` picks ``normed_hadamard`` / ``audio_only``, which have the
      same shapes); a ``fusion`` that contradicts the checkpoint is refused with a message naming
      both. ``config`` defaults to the registry configuration whose shapes the checkpoint fits
      (:func:`detect_reference_config`). Every tower comes from the file itself (the audio BN
      statistics included) and ``audio_mode`` defaults to "paper".
    Raises CheckpointError on a mismatch (missing/unexpected keys, shapes, fusion).
    """
    info = read_acfpn_checkpoint(path)
    src = str(path)
    if info["kind"] == "acfpn":
        stored = canonical_fusion(info["fusion"])
        if fusion is not None and canonical_fusion(fusion) != stored:
            raise CheckpointError(
                f"{src} was trained with fusion {stored!r}, not {canonical_fusion(fusion)!r}"
            )
        cfg = config or info["config"]
        if cfg != info["config"]:
            raise CheckpointError(f"{src} was trained with config {info['config']!r}, not {cfg!r}")
        towers = info["towers"]
        vis = towers.get("visual", {})
        seed = int(vis["seed"]) if vis.get("source") == "random-init" else 0
        aud = towers.get("audio", {})
        if aud.get("source") == "random-init":
            seed = int(aud["seed"]) - 1
        model = ACFPN(
            stored,
            cfg,
            seed=seed,
            audio_mode=info["audio_mode"],
            fpn_upmode=info["fpn_upmode"],
            neck_channels=info["neck_channels"],
            head_channels=info["head_channels"],
            audio_input_scale=info["audio_input_scale"],
        )
        sd = info["state_dict"]
        model.check_fusion_of(sd, src)
        _restore_audio_tower(model, aud, audioclip, src)
        model.load_trained_state_dict(sd, source=src)
        model.tower_provenance = {
            "visual": dict(vis),
            "audio": dict(model.tower_provenance["audio"]),
        }
        model.checkpoint_provenance = {
            "path": str(Path(path).resolve()),
            "sha256": sha256_file(path),
        }
        if audio_mode is not None:
            model.set_audio_mode(audio_mode)
        return model.eval()
    # reference
    sd = info["state_dict"]
    neck_w = (
        sd["neck.lateral_convs.0.weight"].shape[0] if "neck.lateral_convs.0.weight" in sd else None
    )
    head_w = sd["head.seg_conv.weight"].shape[1] if "head.seg_conv.weight" in sd else None
    cfg = config or detect_reference_config(sd, src)
    found = detect_reference_fusion(sd, cfg, fusion=fusion, source=src)
    model = ACFPN(
        found,
        cfg,
        audio_mode=audio_mode or "paper",
        neck_channels=neck_w,
        head_channels=head_w,
        audio_input_scale=1.0,
    )
    model.check_fusion_of(sd, src)
    load_strict(model, sd, source=src)
    prov = {"path": str(Path(path).resolve()), "sha256": sha256_file(path), "format": "sam4avs"}
    model.tower_provenance = {"visual": dict(prov), "audio": dict(prov)}
    model.checkpoint_provenance = dict(prov)
    return model.eval()
