"""One builder per bundle graph, the build profiles, and the state they share while a bundle is built."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.checkpoints import CheckpointError
from models.random_init import randomize_batchnorm
from models.registry import AUDIOCLIP_CHECKPOINTS, get_config
from runtime.bundle import file_entry
from runtime.bundle.contract import BUILTIN_PRESETS

log = logging.getLogger(__name__)

# What each profile builds, and with which model configurations.
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "audioclip": "audioclip",
        "sam": "vit_b",
        "graphs": (
            "audioclip_audio",
            "audioclip_audio_1s",
            "audioclip_image",
            "acfpn",
            "sam_image_encoder",
            "sam_prompt_decoder",
            "sam_point_decoder",
            "sam_point_iou",
            "sam_mask_upscaler",
        ),
    },
    "tiny": {
        "audioclip": "audioclip-tiny",
        "sam": "micro",
        "graphs": (
            "audioclip_audio",
            "audioclip_audio_1s",
            "audioclip_image",
            "acfpn",
            "sam_image_encoder",
            "sam_prompt_decoder",
            "sam_point_decoder",
            "sam_point_iou",
            "sam_mask_upscaler",
        ),
    },
}


@dataclass
class BuildContext:
    """Options of one build plus what the builders share: loaded models, provenance, banks, labels."""

    out: Path
    profile: str = "full"
    checkpoints: Path | None = None
    seed: int = 0
    audio_seconds: float = 5.0
    audioclip_variant: str = "full"
    acfpn_checkpoint: Path | None = None
    acfpn_fusion: str | None = None  # None: read from --acfpn's checkpoint, else "hadamard"
    sam: str | None = None
    atol: float = 1e-4
    weights: dict[str, dict[str, Any]] = field(default_factory=dict)
    banks: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    extra_graphs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def known_files() -> dict[str, str]:
        """Checkpoint role -> file name looked for in ``--checkpoints``."""
        return {
            f"audioclip-{k}" if k in ("full", "partial") else k: v
            for k, v in AUDIOCLIP_CHECKPOINTS.items()
        }

    def find(self, filename: str) -> Path | None:
        """The checkpoint file ``filename`` in the checkpoint folder, if present."""
        if self.checkpoints is None:
            return None
        p = self.checkpoints / filename
        return p if p.is_file() else None

    @property
    def cfg(self) -> dict[str, Any]:
        return PROFILES[self.profile]

    def audioclip(self):
        """The AudioCLIP model of this build (official file if found, else seeded random weights)."""
        if "audioclip" not in self._cache and self.audioclip_variant == "towers":
            self._cache["audioclip"] = self._audioclip_from_towers()
        if "audioclip" not in self._cache:
            from models.audioclip import load_audioclip

            name = AUDIOCLIP_CHECKPOINTS[self.audioclip_variant]
            path = self.find(name)
            config = self.cfg["audioclip"]
            if path is not None and config != "audioclip":
                raise ValueError(
                    f"profile {self.profile!r} builds {config}; official weights need --profile full"
                )
            model, prov = load_audioclip(path, config=config, with_text=False, seed=self.seed)
            if path is None:
                randomize_batchnorm(model, self.seed)
                log.warning(
                    "AudioCLIP: %s not found, using RANDOM weights (seed %d)", name, self.seed
                )
            self.weights["audioclip"] = {**prov, "config": config}
            self._cache["audioclip"] = model
        return self._cache["audioclip"]

    def _audioclip_from_towers(self):
        """``--audioclip-variant towers``: AudioCLIP from the separate tower files, ``CLIP.pt`` (visual)
        and ``ESRNXFBSP.pt`` (audio), both required in ``--checkpoints`` (the Sam4AVS weight ablations).

        ESRNXFBSP.pt's 527-class AudioSet ``fc`` does not fit the embedding: it is skipped and stays
        seeded random (the ablations train it), which the provenance records under ``skipped``.
        """
        from models.audioclip import load_audioclip, load_tower_file

        files = {t: AUDIOCLIP_CHECKPOINTS[t] for t in ("clip", "esrnxfbsp")}
        paths = {t: self.find(f) for t, f in files.items()}
        missing = [files[t] for t, p in paths.items() if p is None]
        if missing:
            raise CheckpointError(
                f"--audioclip-variant towers needs {missing} in --checkpoints ({self.checkpoints})"
            )
        config = self.cfg["audioclip"]
        model, _ = load_audioclip(None, config=config, with_text=True, seed=self.seed)
        clip = load_tower_file(model, paths["clip"], "clip")
        audio = load_tower_file(model, paths["esrnxfbsp"], "audio")
        if audio["skipped"]:
            log.warning(
                "ESRNXFBSP.pt: %s do not fit the embedding; they stay RANDOM (seed %d)",
                audio["skipped"],
                self.seed,
            )
        self.weights["audioclip"] = {
            "source": "towers",
            "clip": clip,
            "esrnxfbsp": audio,
            "config": config,
            **({"random_parts": audio["skipped"], "seed": self.seed} if audio["skipped"] else {}),
        }
        return model.eval()

    def sam_model(self):
        """The SAM of this build (``--sam`` or the profile's; official file if found, else random)."""
        if "sam" not in self._cache:
            from models.sam import get_config as get_sam_config
            from models.sam import load_sam

            name = self.sam or self.cfg["sam"]
            cfg = get_sam_config(name)
            path = self.find(cfg["checkpoint"]) if cfg.get("checkpoint") else None
            model = load_sam(name, path, seed=self.seed)
            if path is None:
                log.warning(
                    "SAM %s: %s not found, using RANDOM weights (seed %d)",
                    name,
                    cfg.get("checkpoint"),
                    self.seed,
                )
                self.weights["sam"] = {
                    "source": "random-init",
                    "seed": self.seed,
                    "config": cfg["name"],
                }
            else:
                from models.checkpoints import sha256_file

                self.weights["sam"] = {
                    "path": str(path.resolve()),
                    "sha256": sha256_file(path),
                    "config": cfg["name"],
                }
            self._cache["extra_preprocessing"] = {
                **self._cache.get("extra_preprocessing", {}),
                "sam": {
                    "config": cfg["name"],
                    "image_size": cfg["image_size"],
                    "patch_size": cfg["patch_size"],
                    "pixel_mean": list(cfg["pixel_mean"]),
                    "pixel_std": list(cfg["pixel_std"]),
                    "mask_threshold": cfg["mask_threshold"],
                    "resize": "longest side, PIL bilinear, zero pad",
                },
            }
            self._cache["sam"] = model
        return self._cache["sam"]

    def entry(self, result, **extra: Any) -> dict[str, Any]:
        """Manifest entry of an exported graph (files with sha256, I/O, opset, parity error)."""
        main = file_entry(self.out, result.path)
        e = {
            **main,
            "inputs": result.inputs,
            "outputs": result.outputs,
            "opset": result.opset,
            "precision": "fp32",
            "exporter": "torch.onnx dynamo",
            "parity_max_abs_err": result.parity_max_abs_err,
            "parity_per_output": result.parity_per_output,
            **extra,
        }
        extras = [file_entry(self.out, f) for f in result.files if f != result.path]
        if extras:
            e["extra_files"] = extras
        return e

    def preprocessing(self) -> dict[str, Any]:
        """All preprocessing constants the runtime needs, from the model registry."""
        c = get_config(self.cfg["audioclip"])
        pre: dict[str, Any] = {
            "image": {
                "size": c["image_size"],
                "mean": list(c["image_mean"]),
                "std": list(c["image_std"]),
                "interpolation": "bicubic",
                "resize": "shorter-side",
                "crop": "center",
            },
            "audio": {
                "sample_rate": c["sample_rate"],
                "chunk_seconds": 1.0,
                "tile": int(round(self.audio_seconds)),
                "clip_samples": int(round(self.audio_seconds * c["sample_rate"])),
                "units": "waveform x input_scale (AudioCLIP rescales [-32768, 32767] to [-1, 1] inside)",
            },
        }
        pre.update(self._cache.get("extra_preprocessing", {}))
        return pre

    def presets(self) -> dict[str, dict[str, Any]]:
        """The named presets (runtime.bundle.contract.BUILTIN_PRESETS): `default` (corrected
        behaviour) and `sam4avs` (the reference exactly), as manifest objects."""
        return {name: p.manifest() for name, p in BUILTIN_PRESETS.items()}


def build_audioclip_audio(ctx: BuildContext) -> dict[str, Any]:
    """``audioclip_audio``: waveform [B, T] (T = audio_seconds at 44.1 kHz) -> embedding [B, D]."""
    from export.audioclip_audio import export_audioclip_audio

    model = ctx.audioclip()
    n = int(round(ctx.audio_seconds * get_config(ctx.cfg["audioclip"])["sample_rate"]))
    res = export_audioclip_audio(model.audio, ctx.out / "audioclip_audio.onnx", n, atol=ctx.atol)
    return ctx.entry(res, weights="audioclip", num_samples=n)


def build_audioclip_audio_1s(ctx: BuildContext) -> dict[str, Any]:
    """``audioclip_audio_1s``: the audio tower for 48,000-sample clips, No-Prompt's reference input.

    The Sam4AVS No-Prompt script feeds AudioCLIP untiled 1-s clips loaded at 48 kHz; the
    ``sam4avs`` preset reproduces that through this graph.
    """
    from export.audioclip_audio import export_audioclip_audio

    res = export_audioclip_audio(
        ctx.audioclip().audio, ctx.out / "audioclip_audio_1s.onnx", 48000, atol=ctx.atol
    )
    return ctx.entry(res, weights="audioclip", num_samples=48000, sample_rate=48000)


def build_audioclip_image(ctx: BuildContext) -> dict[str, Any]:
    """``audioclip_image``: image [B, 3, 224, 224] -> global [B, D], dense and surgery_dense [B, D, 7, 7]."""
    from export.audioclip_image import export_audioclip_image

    model = ctx.audioclip()
    res = export_audioclip_image(model.visual, ctx.out / "audioclip_image.onnx", atol=ctx.atol)
    return ctx.entry(res, weights="audioclip")


def build_acfpn(ctx: BuildContext) -> dict[str, Any]:
    """``acfpn``: image [B, 3, 224, 224] + audio embedding [B, D] -> logits [B, 1, 224, 224].

    With ``--acfpn PATH`` the trained checkpoint (this project's or the Sam4AVS training script's
    format) is loaded; its fusion mode is read from the checkpoint itself (stored name, or the
    reference neck's stride-32 input channels: Hadamard 3072, Concatenation 4096) and a
    contradicting ``--acfpn-fusion`` is refused (CheckpointError naming both). Without it the
    neck and head are seeded random (fusion ``--acfpn-fusion``, default hadamard) and the towers
    are the build's AudioCLIP towers. When the checkpoint's audio tower differs from AudioCLIP's
    (the reference trains with audio BatchNorm in train mode), it is exported as ``acfpn_audio``.
    """
    from export.acfpn_export import export_acfpn
    from export.audioclip_audio import export_audioclip_audio
    from models.acfpn import ACFPN, load_acfpn

    clip = ctx.audioclip()
    if ctx.acfpn_checkpoint is not None:
        ac_name = AUDIOCLIP_CHECKPOINTS.get(ctx.audioclip_variant)  # None for "towers"
        ac_file = ctx.find(ac_name) if ac_name else None
        model = load_acfpn(ctx.acfpn_checkpoint, fusion=ctx.acfpn_fusion, audioclip=ac_file)
        if model.config_name != ctx.cfg["audioclip"]:
            raise CheckpointError(
                f"--acfpn {ctx.acfpn_checkpoint} holds an AC-FPN of configuration {model.config_name!r}, "
                f"but profile {ctx.profile!r} builds {ctx.cfg['audioclip']!r}; pick the profile that fits"
            )
        ctx.weights["acfpn"] = {**(model.checkpoint_provenance or {}), "fusion": model.fusion}
    else:
        model = ACFPN(ctx.acfpn_fusion or "hadamard", ctx.cfg["audioclip"], seed=ctx.seed)
        model.visual.load_state_dict(clip.visual.state_dict())
        model.audio.load_state_dict(clip.audio.state_dict())
        ctx.weights["acfpn"] = {
            "source": "random-init",
            "seed": ctx.seed,
            "fusion": model.fusion,
            "towers": "audioclip",
        }
    model.eval()
    res = export_acfpn(model, ctx.out / "acfpn.onnx", atol=ctx.atol)
    own_audio = any(
        not torch.equal(a, b)
        for a, b in zip(
            model.audio.state_dict().values(), clip.audio.state_dict().values(), strict=True
        )
    )
    audio_graph = "audioclip_audio"
    if own_audio:
        n = int(round(ctx.audio_seconds * get_config(ctx.cfg["audioclip"])["sample_rate"]))
        ares = export_audioclip_audio(model.audio, ctx.out / "acfpn_audio.onnx", n, atol=ctx.atol)
        ctx.extra_graphs["acfpn_audio"] = ctx.entry(ares, weights="acfpn", num_samples=n)
        audio_graph = "acfpn_audio"
    return ctx.entry(
        res,
        weights="acfpn",
        fusion=model.fusion,
        audio_input_scale=model.audio_input_scale,
        audio_graph=audio_graph,
    )


def build_sam_image_encoder(ctx: BuildContext) -> dict[str, Any]:
    """``sam_image_encoder``: normalised padded image [B, 3, S, S] -> embedding [B, 256, S/16, S/16]."""
    from export.sam_export import export_sam_encoder, measure_encoder_memory

    sam = ctx.sam_model()
    res = export_sam_encoder(sam, ctx.out / "sam_image_encoder.onnx", atol=ctx.atol * 10)
    memory = measure_encoder_memory(res.path, int(sam.image_encoder.img_size))
    return ctx.entry(res, weights="sam", **({"memory": memory} if memory else {}))


def build_sam_prompt_decoder(ctx: BuildContext) -> dict[str, Any]:
    """``sam_prompt_decoder``: embedding + P prompt sets of N points (+ mask input) -> IoU [P, 4], low-res logits."""
    from export.sam_export import export_sam_decoder

    res = export_sam_decoder(
        ctx.sam_model(), ctx.out / "sam_prompt_decoder.onnx", atol=ctx.atol * 10
    )
    return ctx.entry(res, weights="sam")


def build_sam_point_decoder(ctx: BuildContext) -> dict[str, Any]:
    """``sam_point_decoder``: ``sam_prompt_decoder`` without mask input, the image side shared by the prompt sets."""
    from export.sam_export import export_sam_decoder

    res = export_sam_decoder(
        ctx.sam_model(),
        ctx.out / "sam_point_decoder.onnx",
        atol=ctx.atol * 10,
        with_mask_input=False,
    )
    return ctx.entry(res, weights="sam")


_AMG_HALVES: dict[str, dict[str, Any]] = {}


def _build_amg_halves(ctx: BuildContext, graph: str) -> dict[str, Any]:
    """``sam_point_iou`` and ``sam_mask_upscaler``: both exported on the first call, entries kept."""
    from export.sam_export import export_sam_amg_halves

    key = str(ctx.out.resolve())
    if graph not in _AMG_HALVES.get(key, {}):
        r1, r2 = export_sam_amg_halves(
            ctx.sam_model(),
            ctx.out / "sam_point_iou.onnx",
            ctx.out / "sam_mask_upscaler.onnx",
            atol=ctx.atol * 10,
        )
        _AMG_HALVES[key] = {
            "sam_point_iou": ctx.entry(r1, weights="sam"),
            "sam_mask_upscaler": ctx.entry(r2, weights="sam"),
        }
    return _AMG_HALVES[key].pop(graph)


def build_sam_point_iou(ctx: BuildContext) -> dict[str, Any]:
    """``sam_point_iou``: the IoU half of ``sam_point_decoder`` (No-Prompt's IoU-first path)."""
    return _build_amg_halves(ctx, "sam_point_iou")


def build_sam_mask_upscaler(ctx: BuildContext) -> dict[str, Any]:
    """``sam_mask_upscaler``: the mask half of ``sam_point_decoder``, run on the kept prompt sets."""
    return _build_amg_halves(ctx, "sam_mask_upscaler")


BUILDERS: dict[str, Callable[[BuildContext], dict[str, Any]]] = {
    "sam_point_iou": build_sam_point_iou,
    "sam_mask_upscaler": build_sam_mask_upscaler,
    "sam_image_encoder": build_sam_image_encoder,
    "sam_prompt_decoder": build_sam_prompt_decoder,
    "sam_point_decoder": build_sam_point_decoder,
    "acfpn": build_acfpn,
    "audioclip_audio": build_audioclip_audio,
    "audioclip_audio_1s": build_audioclip_audio_1s,
    "audioclip_image": build_audioclip_image,
}

# Box-Prompt graphs (CLAP audio, GroundingDINO detector): opt-in with --graphs, see docs/box-prompt.md
from export.box_builders import build_clap_audio, build_detector  # noqa: E402

BUILDERS["clap_audio"] = build_clap_audio
BUILDERS["detector"] = build_detector
