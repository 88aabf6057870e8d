"""The AC-FPN reference pipeline in PyTorch, in the Sam4AVS control flow (``Pred_endecoder`` in eval mode).

The oracle of tests/parity/test_acfpn_runtime.py and the baseline of benchmarks/bench_acfpn.py:

- frames through torchvision's ``ToTensor -> Resize(224, bicubic) -> CenterCrop(224) -> Normalize``;
- the wav through ``librosa.load(sr=44100)``, forced to N seconds, cut into N 1-s chunks, each tiled
  5x (the 5-s clips), times the input scale the AC-FPN weights expect;
- the audio tower on the N clips, the visual tower + fusion + FPN neck + head on the N frames.

The model is rebuilt from the bundle manifest's weight provenance (:func:`reference_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from runtime.bundle import Bundle
from runtime.errors import BundleError

__all__ = [
    "REFERENCE_RATE",
    "REFERENCE_TILE",
    "reference_audio",
    "reference_frames",
    "reference_logits",
    "reference_model",
]

REFERENCE_RATE = 44100  # librosa.load(sr=44100) in the reference loader
REFERENCE_TILE = 5  # each 1-s chunk repeated to a 5-s clip


def reference_model(bundle: Bundle | str | Path):
    """The bundle's AC-FPN rebuilt in PyTorch with the same weights, in eval mode.

    Follows the manifest's ``weights`` provenance: a random-init AC-FPN is
    ``ACFPN(fusion, config, seed=seed)`` with the visual and audio towers copied from
    ``load_audioclip(<AudioCLIP file or None>, config, with_text=False, seed)`` (+ seeded random
    BatchNorm statistics when that is random too), as ``export/graph_builders.build_acfpn`` does;
    a trained one is ``load_acfpn(path, audioclip=<AudioCLIP file>)`` with its sha256 checked.
    Raises BundleError when the bundle has no ``acfpn`` graph or the files are gone / changed.
    """
    from models.acfpn import ACFPN, load_acfpn
    from models.audioclip import load_audioclip
    from models.random_init import randomize_batchnorm

    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    if not b.has("acfpn"):
        raise BundleError(f"bundle {b.root} has no acfpn graph (it has {sorted(b.graphs)})")
    weights = b.manifest["weights"]
    wa = weights.get("audioclip", {})
    w = weights.get("acfpn")
    if w is None:
        raise BundleError(
            f"bundle {b.root}: the manifest records no provenance for the acfpn weights"
        )
    ac_path = wa.get("path")
    if w.get("source") == "random-init":
        clip, _ = load_audioclip(
            ac_path, config=wa["config"], with_text=False, seed=int(wa.get("seed", 0))
        )
        if wa.get("source") == "random-init":
            randomize_batchnorm(clip, int(wa.get("seed", 0)))
        model = ACFPN(w["fusion"], wa["config"], seed=int(w["seed"]))
        model.visual.load_state_dict(clip.visual.state_dict())
        model.audio.load_state_dict(clip.audio.state_dict())
    else:
        path = w.get("path")
        if not path or not Path(path).is_file():
            raise BundleError(
                f"bundle {b.root}: the AC-FPN checkpoint {path!r} it was built from is not found"
            )
        model = load_acfpn(path, fusion=w.get("fusion"), audioclip=ac_path)
        got = (model.checkpoint_provenance or {}).get("sha256")
        if w.get("sha256") and got != w["sha256"]:
            raise BundleError(
                f"{path} has changed since bundle {b.root} was built (sha256 {str(got)[:12]}...)"
            )
    scale = b.graphs["acfpn"].get("audio_input_scale")
    if scale is not None and float(scale) != model.audio_input_scale:
        raise BundleError(
            f"bundle {b.root}: acfpn audio_input_scale {scale} differs from the model's {model.audio_input_scale}"
        )
    return model.eval()


def reference_frames(
    frames: Sequence[Any],
    *,
    size: int = 224,
    antialias: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """The reference's image transform: float32 [N, 3, size, size], CLIP-normalised.

    ``frames``: image paths or uint8 RGB [H, W, 3] arrays (read with PIL ``convert("RGB")``);
    ``ToTensor -> Resize(size, bicubic, antialias) -> CenterCrop(size) -> Normalize(mean, std)``
    (torchvision; CLIP's statistics by default). ``antialias=False`` is the original environment's
    (torchvision 0.15) tensor resize.
    """
    from torchvision import transforms as T

    from models.registry import CLIP_MEAN, CLIP_STD

    tf = T.Compose(
        [
            T.ToTensor(),
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC, antialias=antialias),
            T.CenterCrop(size),
            T.Normalize(mean or CLIP_MEAN, std or CLIP_STD),
        ]
    )
    out = []
    for f in frames:
        if isinstance(f, np.ndarray):
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise ValueError(f"expected uint8 [H, W, 3] frames, got {f.dtype} {f.shape}")
            img = Image.fromarray(f)
        else:
            with Image.open(f) as im:
                img = im.convert("RGB")
        out.append(tf(img))
    return torch.stack(out)


def reference_audio(
    wav: str | Path,
    num_frames: int = 5,
    *,
    input_scale: float = 1.0,
    rate: int = REFERENCE_RATE,
    tile: int = REFERENCE_TILE,
) -> torch.Tensor:
    """The reference's audio loader generalised to N frames: float32 [N, tile * rate].

    ``librosa.load(wav, sr=rate)`` (mono, soxr_hq), forced to N seconds (longer: truncated;
    shorter: the whole seconds kept, then copies of the last ``rate`` samples appended), cut into
    N 1-s chunks (chunk k for frame k), each tiled ``tile`` times, times ``input_scale``.
    """
    import librosa

    x, _ = librosa.load(str(wav), sr=rate, dtype=np.float32)
    if x.size < rate:
        raise ValueError(f"{wav}: shorter than one second; the reference has no rule for it")
    total = num_frames * rate
    if x.size >= total:
        x = x[:total]
    else:
        kept = x[: (x.size // rate) * rate]
        last = x[x.size - rate :]
        while kept.size < total:
            kept = np.concatenate([kept, last])
        x = kept
    chunks = torch.from_numpy(np.ascontiguousarray(x)).reshape(num_frames, 1, rate)
    clips = chunks.repeat(1, 1, tile)[:, 0]
    return (clips * float(input_scale)).float() if input_scale != 1.0 else clips.float()


def reference_logits(
    model,
    images: torch.Tensor,
    waveforms: torch.Tensor,
    frame_sizes: Sequence[tuple[int, int]] | None = None,
) -> list[np.ndarray]:
    """Eval-mode forward (audio tower on the clips, then visual + fusion + neck + head) -> logits.

    ``images``: [N, 3, 224, 224] from :func:`reference_frames`; ``waveforms``: [N, T] from
    :func:`reference_audio`. Returns N float32 arrays: [224, 224], or resized to
    ``frame_sizes[i]`` = (rows, cols) with bilinear interpolation (align_corners=False).
    """
    with torch.no_grad():
        emb = model.encode_audio(waveforms)
        z = model(images, emb)
        if frame_sizes is None:
            return [z[i, 0].numpy() for i in range(z.shape[0])]
        return [
            F.interpolate(z[i : i + 1], size=tuple(s), mode="bilinear", align_corners=False)[
                0, 0
            ].numpy()
            for i, s in enumerate(frame_sizes)
        ]
