"""PyTorch reference pipelines of the Sam4AVS zero-shot strategies, in the original control flow.

The oracle of tests/parity/test_zero_shot.py and the baseline of benchmarks/bench_zero_shot.py. Each
pipeline follows the original scripts step by step (spec sam4avs-reference 4.0-4.5):
``avs_scripts/avs_s4_zero_shot_sam/test_point_prompt.py`` (global / local / dense points),
``test_heatmap_prompt_box.py`` (heatmap box) and ``zero_shot/S4/no_prompt.py`` (No-Prompt):

* audio: ``librosa.load`` at 44.1 kHz, forced to 5 s (truncate, or pad with copies of the last
  second), reshaped to one 1-s chunk per frame, each chunk tiled 5x, times the preset's input
  scale (1.0 in the reference), ``AudioCLIP.audio`` (``encode_audio``), L2-normalised. No-Prompt's
  own loader: ``librosa.load`` at 48 kHz, the same 5-s logic, int16 round trip, untiled 1-s chunks;
* image: PIL frame -> torchvision ``ToTensor`` -> ``Resize(224, bicubic)`` (antialias per
  preset: the original torchvision 0.15 did not antialias tensors) -> ``CenterCrop`` ->
  ``Normalize``; ``AudioCLIP.visual.forward_features``: ``surgery_dense`` (CLIP-Surgery v-v
  attention) for heatmaps, ``global`` (plain CLIP q-k attention) for No-Prompt crops;
* heatmap: ``get_similarity_score`` (cosine per token, ``1 - cos`` with ``--reverse``, min-max,
  ``F.interpolate`` bilinear to 224 x 224);
* prompts: ``get_topk_points``, ``get_peak_points``, ``get_dense_points``,
  ``get_single_box_maxarea`` transcribed (OpenCV's ``connectedComponentsWithStats`` emulated with
  ``scipy.ndimage.label``, 8-connectivity, same raster-order numbering; OpenCV is not installed);
* SAM: ``segment_anything.SamPredictor``, ``set_image`` of the frame, ``predict`` per frame
  (multimask), the mask with the highest predicted IoU; ``SamAutomaticMaskGenerator`` for
  No-Prompt, then ``segment_image`` / PIL ``crop`` / ``retriev`` transcribed.

Two configurations, matching the runtime's presets (runtime/modes/heatmap_sam.py documents the policy).
Frames that are not 224 x 224 are first squashed to 224 x 224 (the AVSBench convention:
``F.interpolate`` bilinear, align_corners=False, antialias per configuration, rounded half to even
to uint8) for the CLIP models; AVSBench frames are already 224 x 224 and are not touched.
``sam4avs`` is the original exactly, run on the squashed frame (SAM's 224 x 224 mask is brought to
the frame's size with ``F.interpolate(mode="nearest-exact")``); No-Prompt likewise. ``default`` is
the corrected behaviour: x32768 audio, cosine (not reversed) heatmap, antialiased resizing,
pixel-centre peak points, SAM on the frame at its own size with every prompt scaled from the
224 x 224 heatmap to frame pixels, No-Prompt at the frame's own size with crops over the mask's
full extent and without the index shift, and the standard 44.1 kHz tiled audio for No-Prompt.

Where the original crashes or divides by zero (no box above the threshold, a constant heatmap,
no automatic mask or only zero-size crops) these pipelines return an all-False mask, as the
runtime does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from torchvision import transforms

IMAGE_SIZE = 224
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
THRESHOLDS = {
    "s4": {"point-local": 0.6, "point-dense": 0.85, "heatmap-box": 0.55},
    "ms3": {"point-local": 0.65, "point-dense": 0.7, "heatmap-box": 0.55},
}


@dataclass(frozen=True)
class RefConfig:
    """What differs between the original (``sam4avs``) and the corrected (``default``) behaviour."""

    name: str
    audio_input_scale: float
    reverse: bool
    antialias: bool
    quirks: bool  # (col, col) peaks, SAM on 224x224, No-Prompt crop/index quirks and 48 kHz audio


def ref_config(preset: str) -> RefConfig:
    """The reference configuration of a runtime preset name ("sam4avs" or "default")."""
    if preset == "sam4avs":
        return RefConfig("sam4avs", 1.0, True, False, True)
    if preset == "default":
        return RefConfig("default", 32768.0, False, True, False)
    raise ValueError(f"preset must be 'sam4avs' or 'default', got {preset!r}")


@dataclass
class ReferenceModels:
    """The PyTorch models of a bundle: ``aclp`` (models.audioclip.AudioCLIP) and ``sam``."""

    aclp: Any
    sam: Any


def load_reference_models(bundle_dir: str | Path) -> ReferenceModels:
    """The PyTorch AudioCLIP and SAM a bundle was exported from (same weights), in eval mode.

    Official files recorded in the manifest are loaded from their paths; random-init entries are
    rebuilt with their seeds (AudioCLIP: ``load_audioclip`` + ``randomize_batchnorm``, as
    export/graph_builders.py does).
    """
    import json

    from models.audioclip import load_audioclip
    from models.random_init import randomize_batchnorm
    from models.sam import load_sam

    m = json.loads((Path(bundle_dir) / "manifest.json").read_text())
    wa = m["weights"]["audioclip"]
    aclp, _ = load_audioclip(
        wa.get("path"), config=wa["config"], with_text=False, seed=wa.get("seed", 0)
    )
    if wa.get("source") == "random-init":
        randomize_batchnorm(aclp, wa.get("seed", 0))
    ws = m["weights"]["sam"]
    sam = load_sam(ws["config"], ws.get("path"), seed=ws.get("seed", 0))
    return ReferenceModels(aclp.eval(), sam.eval())


# --- audio (dataloader_point_prompt.load_audio_wav, zero_shot/S4/dataloader.load_audio_wav) -----------


def _librosa_load(audio, sample_rate: int | None, sr: int) -> np.ndarray:
    if isinstance(audio, (str, Path)):
        track, _ = librosa.load(str(audio), sr=sr)
        return track
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0 if x.shape[0] <= x.shape[1] else 1)
    return librosa.resample(x, orig_sr=sample_rate, target_sr=sr) if sample_rate != sr else x


def _force_length(track: np.ndarray, sr: int, seconds: int) -> np.ndarray:
    max_length = seconds * sr
    if track.shape[0] > max_length:
        track = track[:max_length]
    elif track.shape[0] < max_length:
        second = track.shape[0] // sr
        last_second = track[-sr:]
        track = np.concatenate((track[0 : second * sr], np.tile(last_second, seconds - second)))
    return track


def reference_audio_44k(
    audio, sample_rate: int | None = None, *, num_frames: int = 5, input_scale: float = 1.0
) -> torch.Tensor:
    """The point/box scripts' audio: [num_frames, 1, 220500] float32 (tiled 1-s chunks) x scale."""
    sr = 44100
    track = _force_length(_librosa_load(audio, sample_rate, sr), sr, num_frames)
    t = torch.from_numpy(track.astype(np.float32)).reshape(num_frames, 1, sr)
    return t.repeat((1, 1, 5)) * input_scale


def reference_audio_48k_1s(
    audio, sample_rate: int | None = None, *, num_frames: int = 5, input_scale: float = 1.0
) -> torch.Tensor:
    """No-Prompt's audio: [num_frames, 1, 48000] float32, int16 round trip, untiled, x scale."""
    sr = 48000
    track = _force_length(_librosa_load(audio, sample_rate, sr), sr, num_frames)
    track = (np.clip(track, a_min=-1.0, a_max=1.0) * 32767.0).astype(np.int16)
    track = (track / 32767.0).astype(np.float32)
    return torch.from_numpy(track).float().reshape(num_frames, 1, -1) * input_scale


def audio_features(models: ReferenceModels, wave: torch.Tensor) -> torch.Tensor:
    """``aclp.encode_audio`` of [F, 1, T] -> L2-normalised [F, D]."""
    with torch.no_grad():
        f = models.aclp.encode_audio(wave)
    return f / f.norm(dim=-1, keepdim=True)


# --- image + heatmap (test_point_prompt.py) -------------------------------------------------------------


def image_transform(antialias: bool) -> transforms.Compose:
    """The scripts' CLIP transform on a PIL image (tensor resize, antialias as configured)."""
    return transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.Resize(
                IMAGE_SIZE, interpolation=transforms.InterpolationMode.BICUBIC, antialias=antialias
            ),
            transforms.CenterCrop(IMAGE_SIZE),
            transforms.Normalize(IMAGE_MEAN, IMAGE_STD),
        ]
    )


def get_similarity_score(
    audio_feature: torch.Tensor,
    redundant_feature: torch.Tensor,
    region_feature: torch.Tensor,
    reverse: bool,
) -> np.ndarray:
    """The heatmap of one frame: float32 [224, 224] (NaN where the original divides 0 by 0)."""
    audio_feature = audio_feature - redundant_feature
    region_feature = region_feature / region_feature.norm(dim=1, keepdim=True)
    region_feature = region_feature.squeeze(0).reshape(-1, 49)
    similarity = audio_feature @ region_feature
    if reverse:
        similarity = 1 - similarity
    sm = (similarity - similarity.min()) / (similarity.max() - similarity.min())
    sm = sm.reshape((1, 7, 7)).unsqueeze(0)
    sm = F.interpolate(sm, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear")
    return sm.squeeze(0).squeeze(0).cpu().numpy()


def reference_heatmaps(
    models: ReferenceModels,
    frames: list[np.ndarray],
    audio,
    sample_rate: int | None = None,
    *,
    cfg: RefConfig,
) -> list[np.ndarray]:
    """Heatmaps of every frame (squashed to 224 x 224), one ``encode_image`` call per frame as the scripts."""
    feats = audio_features(
        models,
        reference_audio_44k(
            audio, sample_rate, num_frames=len(frames), input_scale=cfg.audio_input_scale
        ),
    )
    redundant = torch.zeros_like(feats[0])  # --noise none
    tf = image_transform(cfg.antialias)
    out = []
    with torch.no_grad():
        for i, frame in enumerate(frames):
            x = tf(Image.fromarray(squash(frame, cfg.antialias)).convert("RGB")).unsqueeze(0)
            region = models.aclp.visual.forward_features(x)["surgery_dense"]
            out.append(
                get_similarity_score(feats[i].reshape(1, -1), redundant, region, cfg.reverse)
            )
    return out


# --- prompt selection, transcribed -------------------------------------------------------------------------


def get_topk_points(similarity: np.ndarray):
    """Argmax pixel (label 1) and argmin pixel (label 0), pixel centres."""
    similarity = similarity.reshape(IMAGE_SIZE * IMAGE_SIZE)
    points, labels = [], []
    index = similarity.argmax()
    points.append([index % IMAGE_SIZE + 0.5, index // IMAGE_SIZE + 0.5])
    labels.append(1)
    index = similarity.argmin()
    points.append([index % IMAGE_SIZE + 0.5, index // IMAGE_SIZE + 0.5])
    labels.append(0)
    return np.array(points), np.array(labels)


def get_peak_points(similarity: np.ndarray, t: float, quirk: bool = True):
    """Strict 4-neighbour peaks > t and pits < 1 - t. quirk: the original's aliasing (col, col)
    result; otherwise pixel centres (col + 0.5, row + 0.5)."""
    padded = np.pad(similarity, [(2, 2), (2, 2)], mode="constant")
    h, w = padded.shape
    center = padded[1 : h - 1, 1 : w - 1]
    left = padded[1 : h - 1, 2:w]
    right = padded[1 : h - 1, 0 : w - 2]
    up = padded[2:h, 1 : w - 1]
    down = padded[0 : h - 2, 1 : w - 1]
    pos_peaks = (center > left) & (center > right) & (center > up) & (center > down)
    neg_peaks = (center < left) & (center < right) & (center < up) & (center < down)
    try_pos = pos_peaks & (center > t)
    if sum(try_pos.reshape(-1)) == 0:
        try_pos = center == center.max()
    try_neg = neg_peaks & (center < 1 - t)
    if sum(try_neg.reshape(-1)) == 0:
        try_neg = center == center.min()
    pos = try_pos[1 : center.shape[0] - 1, 1 : center.shape[1] - 1]
    neg = try_neg[1 : center.shape[0] - 1, 1 : center.shape[1] - 1]
    pos_points = np.argwhere(pos)
    neg_points = np.argwhere(neg)
    points = np.concatenate([pos_points, neg_points], axis=0)
    labels = np.concatenate([np.ones(pos_points.shape[0]), np.zeros(neg_points.shape[0])], axis=0)
    if quirk:
        swapped = points  # the original's alias: writing column 0 destroys the row
        swapped[:, 0] = points[:, 1]
        swapped[:, 1] = points[:, 0]
        return points, labels
    return np.stack([points[:, 1] + 0.5, points[:, 0] + 0.5], axis=1).astype(np.float64), labels


def get_dense_points(similarity: np.ndarray, t: float, downsample: int = 7):
    """The num highest (1) and num lowest (0) cells of the downsampled map, cell centres."""
    sim = torch.tensor(similarity.reshape((1, 1, IMAGE_SIZE, IMAGE_SIZE)))
    down_side = IMAGE_SIZE // downsample
    sim = F.interpolate(sim, (down_side, down_side), mode="bilinear")[0, 0].cpu().numpy()
    h, w = sim.shape
    scale_h, scale_w = IMAGE_SIZE / h, IMAGE_SIZE / w
    sim = sim.reshape(h * w)
    rank = sim.argsort(kind="stable")  # the original's quicksort orders ties arbitrarily (spec 4.8)
    num = max(1, min((sim >= t).sum(), sim.shape[0] // 2))
    labels = np.ones(num * 2).astype("uint8")
    labels[num:] = 0
    points = [[(i % h + 0.5) * scale_h, (i // w + 0.5) * scale_w] for i in rank[-num:]]
    points += [[(i % h + 0.5) * scale_h, (i // w + 0.5) * scale_w] for i in rank[:num]]
    return np.array(points), labels


def _connected_components_with_stats(image: np.ndarray):
    """(retval, labels, stats) of cv2.connectedComponentsWithStats(image, connectivity=8)."""
    labels, n = ndimage.label(image != 0, structure=np.ones((3, 3), dtype=int))
    stats = np.zeros((n + 1, 5), dtype=np.int32)
    areas = np.bincount(labels.reshape(-1), minlength=n + 1)
    for lab in range(n + 1):
        ys, xs = np.nonzero(labels == lab)
        if ys.size:
            stats[lab] = [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
                areas[lab],
            ]
    return n + 1, labels, stats


def get_single_box_maxarea(sm: np.ndarray, thres: float):
    """[[x0, y0, x1, y1]] (inclusive) of the largest region >= thres; None where the original raises."""
    similarity = copy.deepcopy(sm)
    similarity[similarity >= thres] = 1.0
    similarity[similarity < thres] = 0.0
    similarity = np.int8(similarity)
    retval, labels, stats = _connected_components_with_stats(similarity)
    remove_index = set(labels[np.where(similarity == 0)])
    new_index = [i for i in range(retval) if i not in remove_index]
    new_stats = stats[new_index]
    if new_stats.shape[0] == 0:
        return None  # the original: ValueError (argmax of an empty sequence)
    i = new_stats[:, 4].argmax()
    return np.hstack((new_stats[i, 0:2], new_stats[i, 0:2] + new_stats[i, 2:4] - 1))[np.newaxis,]


# --- SAM per frame ------------------------------------------------------------------------------------------


def squash(frame: np.ndarray, antialias: bool) -> np.ndarray:
    """The frame resized to 224 x 224 ignoring its aspect (AVSBench's frames), uint8 [224, 224, 3]."""
    if frame.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE):
        return frame
    x = torch.from_numpy(np.array(frame)).permute(2, 0, 1)[None].float()
    y = F.interpolate(
        x, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False, antialias=antialias
    )
    return torch.round(y).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()


def _to_frame(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(hw):
        return mask
    m = torch.from_numpy(np.array(mask))[None, None].float()
    return (F.interpolate(m, tuple(hw), mode="nearest-exact")[0, 0] > 0.5).numpy()


def reference_prompt_masks(
    models: ReferenceModels,
    frames: list[np.ndarray],
    maps: list[np.ndarray],
    strategy: str,
    *,
    cfg: RefConfig,
    t: float | None = None,
) -> tuple[list, list]:
    """SAM masks of every frame from its heatmap, the scripts' per-frame loop.

    Returns (masks bool [H, W] per frame, prompts per frame: dict of points/labels or box in the
    SAM input's pixels, None for an empty mask).
    """
    predictor = SamPredictor(models.sam)
    masks, prompts = [], []
    for frame, sm in zip(frames, maps, strict=True):
        h, w = frame.shape[:2]
        if not np.all(np.isfinite(sm)) or float(sm.max()) == float(sm.min()):
            masks.append(np.zeros((h, w), bool))
            prompts.append(None)
            continue
        points = labels = box = None
        if strategy == "point-global":
            points, labels = get_topk_points(sm)
        elif strategy == "point-local":
            points, labels = get_peak_points(sm, t, quirk=cfg.quirks)
        elif strategy == "point-dense":
            points, labels = get_dense_points(sm, t)
        elif strategy == "heatmap-box":
            box = get_single_box_maxarea(sm, t)
            if box is None:
                masks.append(np.zeros((h, w), bool))
                prompts.append(None)
                continue
        else:
            raise ValueError(f"unknown strategy {strategy!r}")
        if cfg.quirks:  # the original on the squashed frame
            image = squash(frame, cfg.antialias)
        else:  # corrected: SAM at the frame's size, prompts scaled from the 224 x 224 heatmap
            image = frame
            sx, sy = w / IMAGE_SIZE, h / IMAGE_SIZE
            if points is not None:
                points = np.stack([points[:, 0] * sx, points[:, 1] * sy], axis=1)
            else:
                b = box[0].astype(np.float64)
                box = np.array([[b[0] * sx, b[1] * sy, (b[2] + 1) * sx - 1, (b[3] + 1) * sy - 1]])
        predictor.set_image(image)
        if box is not None:
            sam_masks, scores, _ = predictor.predict(
                point_coords=None, point_labels=None, box=box[0][None, :], multimask_output=True
            )
        else:
            sam_masks, scores, _ = predictor.predict(
                point_coords=points, point_labels=labels, multimask_output=True
            )
        masks.append(_to_frame(sam_masks[scores.argmax()], (h, w)))
        prompts.append({"points": points, "labels": labels, "box": None if box is None else box[0]})
    return masks, prompts


def reference_point_prompt(
    models: ReferenceModels,
    frames: list[np.ndarray],
    audio,
    sample_rate: int | None = None,
    *,
    strategy: str,
    preset: str = "sam4avs",
    t: float | None = None,
    dataset: str = "s4",
) -> list[np.ndarray]:
    """A whole point / box script run on one clip: heatmaps, prompts, SAM; masks bool [H, W]."""
    cfg = ref_config(preset)
    if t is None and strategy != "point-global":
        t = THRESHOLDS[dataset][strategy]
    maps = reference_heatmaps(models, frames, audio, sample_rate, cfg=cfg)
    return reference_prompt_masks(models, frames, maps, strategy, cfg=cfg, t=t)[0]


# --- No-Prompt (zero_shot/S4/no_prompt.py) -------------------------------------------------------------------


def segment_image(image: Image.Image, segmentation_mask: np.ndarray) -> Image.Image:
    """The mask's pixels pasted onto a black image of the frame's size."""
    image_array = np.array(image)
    segmented = np.zeros_like(image_array)
    segmented[segmentation_mask] = image_array[segmentation_mask]
    black = Image.new("RGB", image.size, (0, 0, 0))
    transparency = np.zeros_like(segmentation_mask, dtype=np.uint8)
    transparency[segmentation_mask] = 255
    black.paste(Image.fromarray(segmented), mask=Image.fromarray(transparency, mode="L"))
    return black


def _crop_box(bbox, quirk: bool):
    x, y, w, h = bbox
    if quirk:  # convert_box_xywh_to_xyxy with SAM's w = x1 - x0
        return [x, y, x + w, y + h]
    return [x, y, x + w + 1, y + h + 1]


def retrieve(
    models: ReferenceModels,
    elements: list[Image.Image],
    audio_feature: torch.Tensor,
    antialias: bool,
    logit_scale: float = 100.0,
) -> torch.Tensor | None:
    """``retriev``: softmax over the non-empty crops of 100 * cos(crop, audio); None if none.

    ``logit_scale`` is the original's constant 100 unless changed (tests sharpen it).
    """
    tf = image_transform(antialias)
    pre = []
    for image in elements:
        w, h = image.size
        if h == 0 or w == 0:
            continue
        pre.append(tf(image.convert(mode="RGB")))
    if not pre:
        return None  # the original: torch.stack of an empty list raises
    with torch.no_grad():
        image_features = models.aclp.visual(torch.stack(pre))
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    audio_feature = audio_feature / audio_feature.norm(dim=-1, keepdim=True)
    probs = logit_scale * image_features @ audio_feature.T
    return probs[:, 0].softmax(dim=0)


def reference_select(
    models: ReferenceModels,
    frame: np.ndarray,
    records: list[dict],
    audio_feature: torch.Tensor,
    *,
    cfg: RefConfig,
    logit_scale: float = 100.0,
    score_threshold: float = 0.5,
) -> tuple[np.ndarray, list[int], torch.Tensor | None]:
    """Crops, retrieval and union for one frame's automatic masks: (mask, selected indices, scores).

    ``logit_scale`` (100) and ``score_threshold`` (0.5) are the original's constants by default.
    """
    h, w = frame.shape[:2]
    image = Image.fromarray(frame)
    crops, owners = [], []
    for j, rec in enumerate(records):
        if not cfg.quirks and not rec["segmentation"].any():
            continue  # corrected: an empty mask has no crop, and the indices stay aligned
        crop = segment_image(image, rec["segmentation"]).crop(_crop_box(rec["bbox"], cfg.quirks))
        crops.append(crop)
        owners.append(j)
    if not cfg.quirks:
        kept = [(c, o) for c, o in zip(crops, owners, strict=True) if c.size[0] and c.size[1]]
        crops, owners = [c for c, _ in kept], [o for _, o in kept]
    scores = retrieve(models, crops, audio_feature.reshape(1, -1), cfg.antialias, logit_scale)
    pred = torch.zeros([h, w])
    if scores is None:
        return pred.bool().numpy(), [], None
    idx = [i for i, v in enumerate(scores) if v > score_threshold]
    selected = idx if cfg.quirks else [owners[i] for i in idx]
    for k in selected:
        m = torch.from_numpy(records[k]["segmentation"]).to(torch.float32)
        pred = 1 - (1 - pred) * (1 - m)
    return pred.bool().numpy(), selected, scores


def reference_no_prompt(
    models: ReferenceModels,
    frames: list[np.ndarray],
    audio,
    sample_rate: int | None = None,
    *,
    preset: str = "sam4avs",
    amg: dict | None = None,
    logit_scale: float = 100.0,
    score_threshold: float = 0.5,
) -> tuple[list[np.ndarray], list[dict]]:
    """The No-Prompt script on one clip: masks bool [H, W] per frame and per-frame details
    (records, selected indices, scores). ``amg``: SamAutomaticMaskGenerator arguments (its
    defaults, as the original, when None)."""
    cfg = ref_config(preset)
    if cfg.quirks:
        wave = reference_audio_48k_1s(
            audio, sample_rate, num_frames=len(frames), input_scale=cfg.audio_input_scale
        )
    else:
        wave = reference_audio_44k(
            audio, sample_rate, num_frames=len(frames), input_scale=cfg.audio_input_scale
        )
    with torch.no_grad():
        feats = models.aclp.audio(wave)
    generator = SamAutomaticMaskGenerator(models.sam, **(amg or {}))
    masks, info = [], []
    for i, frame in enumerate(frames):
        image = squash(frame, cfg.antialias) if cfg.quirks else frame
        records = generator.generate(image)
        mask, selected, scores = reference_select(
            models,
            image,
            records,
            feats[i],
            cfg=cfg,
            logit_scale=logit_scale,
            score_threshold=score_threshold,
        )
        masks.append(_to_frame(mask, frame.shape[:2]))
        info.append(
            {
                "records": records,
                "selected": selected,
                "scores": None if scores is None else scores.numpy(),
            }
        )
    return masks, info
