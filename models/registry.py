"""One registry of named configurations per model family, with preprocessing constants beside them.

Every model constant the export side writes into a bundle manifest comes from here (the presets come
from the bundle contract, runtime.bundle.contract.BUILTIN_PRESETS); the runtime then reads them from
the manifest and never keeps a copy of its own.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


class UnknownConfigError(KeyError, ValueError):
    """A configuration name no registry holds (a KeyError and a ValueError, so ``except`` of either
    catches it); the message lists the known names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ConfigRegistry:
    """The named configurations of one model family, one style for all (SAM's
    ``sam_model_registry`` / open_clip's ``get_model_config``): a dict name -> config dict, optional
    aliases, :meth:`get_config` (a deep copy) and :meth:`list_configs`.

    family: the family's name for messages ("SAM"); configs: name -> JSON-like dict (kept by
    reference, never handed out: callers get copies); aliases: extra name -> registered name.
    """

    def __init__(
        self,
        family: str,
        configs: Mapping[str, dict[str, Any]],
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.family = family
        self.configs = configs
        self.aliases = dict(aliases or {})
        for alias, target in self.aliases.items():
            if target not in configs:
                raise ValueError(f"{family} alias {alias!r} names no configuration: {target!r}")

    def list_configs(self) -> list[str]:
        """Sorted names of every registered configuration (aliases not included)."""
        return sorted(self.configs)

    def resolve(self, name: str) -> str:
        """The registered name for ``name`` (itself or an alias's target); UnknownConfigError else."""
        name = self.aliases.get(name, name)
        if name not in self.configs:
            known = self.list_configs() + sorted(self.aliases)
            raise UnknownConfigError(
                f"unknown {self.family} configuration {name!r}; known: {known}"
            )
        return name

    def get_config(self, name: str) -> dict[str, Any]:
        """A deep copy of the named configuration (aliases resolved); unknown names list the known."""
        return copy.deepcopy(self.configs[self.resolve(name)])


# --- preprocessing constants -------------------------------------------------------------------

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

AUDIOCLIP_SAMPLE_RATE = 44100
AUDIOCLIP_CLIP_SECONDS = 5.0  # AudioCLIP's ESC-50 training length: 220500 samples
# AudioCLIP's input units: INT16_SCALE (int16 PCM, from the shared audio preprocessing). The
# presets that pick 32768 or 1.0 live in the bundle contract (runtime.bundle.contract
# .BUILTIN_PRESETS), which export writes into every manifest.

# --- AudioCLIP family ----------------------------------------------------------------------------

_ESRESNEXT_FULL = {
    "n_fft": 2048,
    "hop_length": 561,
    "win_length": 1654,
    "window": "blackmanharris",
    "normalized": True,
    "onesided": True,
    "num_classes": 1024,
    "layers": (3, 4, 6, 3),
    "groups": 32,
    "width_per_group": 4,
    "apply_attention": True,
}

_CLIP_RN50 = {
    "embed_dim": 1024,
    "image_resolution": 224,
    "vision_layers": (3, 4, 6, 3),
    "vision_width": 64,
    "vision_heads": 32,  # vision_width * 32 // 64
    "context_length": 77,
    "vocab_size": 49408,
    "transformer_width": 512,
    "transformer_heads": 8,
    "transformer_layers": 12,
}

AUDIOCLIP_CONFIGS: dict[str, dict[str, Any]] = {
    # The official AudioCLIP (Full / Partial training share one architecture).
    "audioclip": {
        "clip": _CLIP_RN50,
        "audio": _ESRESNEXT_FULL,
        "image_size": 224,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "sample_rate": AUDIOCLIP_SAMPLE_RATE,
        "clip_seconds": AUDIOCLIP_CLIP_SECONDS,
    },
    # A small configuration of the same classes, for fast tests and the `tiny` bundle profile.
    # Same front end (FBSP, 224 px input, 7x7 attention grid); narrower and shallower trunks.
    "audioclip-tiny": {
        "clip": {
            **_CLIP_RN50,
            "embed_dim": 64,
            "vision_layers": (1, 1, 1, 1),
            "vision_width": 8,
            "vision_heads": 4,
            "context_length": 77,
            "vocab_size": 49408,
            "transformer_width": 32,
            "transformer_heads": 2,
            "transformer_layers": 1,
        },
        "audio": {
            **_ESRESNEXT_FULL,
            "num_classes": 64,
            "layers": (1, 1, 1, 1),
            "groups": 4,
            "width_per_group": 4,
        },
        "acfpn": {"neck_channels": 64, "head_channels": 32},
        "image_size": 224,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "sample_rate": AUDIOCLIP_SAMPLE_RATE,
        "clip_seconds": AUDIOCLIP_CLIP_SECONDS,
    },
}

# Official checkpoint files, found by name in a checkpoint folder.
AUDIOCLIP_CHECKPOINTS = {
    "full": "AudioCLIP-Full-Training.pt",
    "partial": "AudioCLIP-Partial-Training.pt",
    "clip": "CLIP.pt",
    "esrnxfbsp": "ESRNXFBSP.pt",
}


AUDIOCLIP = ConfigRegistry("AudioCLIP", AUDIOCLIP_CONFIGS)


def list_configs() -> list[str]:
    """Names of every registered AudioCLIP configuration."""
    return AUDIOCLIP.list_configs()


def get_config(name: str) -> dict[str, Any]:
    """A deep copy of the named AudioCLIP configuration; unknown names list the known ones."""
    return AUDIOCLIP.get_config(name)
