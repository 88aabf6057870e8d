"""The Box-Prompt reference pipeline in PyTorch, following zero_shot/*/box_prompt.py step by step.

CLAP ``get_audio_embedding`` on the frame's 1-s chunk, the text bank, top-k labels, GroundingDINO
per label, SAM box prompts (``SamPredictor``), masks united. The oracle of tests/parity/test_box_mode.py
and the baseline of benchmarks/bench_box.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.clap import build_clap_test_tiny, load_clap, load_tokenizer
from models.grounding_dino import build_grounding_dino, load_grounding_dino, preprocess_caption
from models.sam import load_sam

__all__ = ["reference_box_pipeline", "reference_models"]


def reference_models(manifest: dict[str, Any], tokenizers: str | Path | None) -> dict[str, Any]:
    """The PyTorch models a bundle was built from (by the manifest's weight provenance)."""
    rt = load_tokenizer("roberta", tokenizers)
    bt = load_tokenizer("bert", tokenizers)
    w = manifest["weights"]
    c, g, s = w["clap"], w["grounding_dino"], w["sam"]
    if c.get("config") == "test-tiny":
        clap = build_clap_test_tiny(len(rt), seed=c.get("seed", 0))
    else:
        clap, _ = load_clap(c.get("path"), amodel=c.get("config"), seed=c.get("seed", 0))
    if g.get("source") == "random-init":
        gd = build_grounding_dino(g["config"], bt, seed=g.get("seed", 0))
    else:
        gd, _ = load_grounding_dino(g["path"], bt, config=g["config"])
    sam = load_sam(s["config"], s.get("path"), seed=s.get("seed", 0))
    return {"clap": clap, "rtok": rt, "gdino": gd, "sam": sam}


def reference_chunks(path, rate: int, num_frames: int) -> np.ndarray:
    """The original loader's audio: ``librosa.load(path, sr=rate, mono=True)``, one 1-s chunk per
    frame; a longer clip truncated, a shorter one (of at least 1 s) keeps its whole seconds and is
    extended with copies of its last second. float32 [F, rate]."""
    import librosa

    x, _ = librosa.load(str(path), sr=rate, mono=True)
    if x.size < rate:
        raise ValueError(
            f"{path}: the reference chunks clips of at least 1 s, got {x.size} samples"
        )
    total = rate * num_frames
    if x.size >= total:
        return x[:total].reshape(num_frames, rate).astype(np.float32)
    whole = (x.size // rate) * rate
    parts = [x[:whole]] + [x[x.size - rate :]] * ((total - whole) // rate)
    return np.concatenate(parts).reshape(num_frames, rate).astype(np.float32)


def reference_box_pipeline(
    m: dict[str, Any],
    frames: list[np.ndarray],
    audio_path,
    labels: list[str],
    k: int,
    pre: dict[str, Any],
) -> list[dict[str, Any]]:
    """The reference's Box-Prompt per frame in PyTorch. frames: uint8 [H, W, 3] RGB; audio_path: a WAV
    (loaded with librosa and chunked as the original loader does, :func:`reference_chunks`; not with
    the runtime's code under test). Returns per frame the chosen labels, the boxes (x0, y0, x1, y1
    pixels, float32 [K, 4]) and the mask (bool [H, W])."""
    import groundingdino.datasets.transforms as T
    from groundingdino.util import box_ops
    from segment_anything import SamPredictor

    clap, gd = m["clap"], m["gdino"]
    with torch.no_grad():
        tok = m["rtok"](
            labels, padding="max_length", truncation=True, max_length=77, return_tensors="pt"
        )
        text = clap.get_text_embedding(
            {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}
        )
        text = text / text.norm(dim=-1, keepdim=True)
        chunks = reference_chunks(audio_path, 48000, len(frames))
        data = []
        for c in chunks:
            w = torch.from_numpy(
                ((np.clip(c, -1.0, 1.0) * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)
            )
            n = int(480000 / len(w))
            w = torch.nn.functional.pad(w.repeat(n), (0, 480000 - n * len(w)))
            data.append({"waveform": w, "longer": torch.tensor([False])})
        aud = clap.get_audio_embedding(data)
        aud = aud / aud.norm(dim=-1, keepdim=True)
    tr = T.Compose(
        [
            T.RandomResize([pre["short_side"]], max_size=pre["max_size"]),
            T.ToTensor(),
            T.Normalize(pre["mean"], pre["std"]),
        ]
    )
    predictor = SamPredictor(m["sam"])
    out = []
    for i, frame in enumerate(frames):
        scores = (text @ aud[i].reshape(1, -1).T)[:, 0]
        _, indices = scores.topk(k)
        image, _ = tr(Image.fromarray(frame), None)
        all_boxes = []
        for j in indices.tolist():
            with torch.no_grad():
                o = gd(image[None], captions=[preprocess_caption(labels[j])])
            logits = o["pred_logits"].sigmoid()[0]
            keep = logits.max(dim=1)[0] > pre["box_threshold"]
            if keep.any():
                all_boxes.append(o["pred_boxes"][0][keep])
        mask = np.zeros(frame.shape[:2], bool)
        xyxy = np.zeros((0, 4), np.float32)
        if all_boxes:
            boxes = torch.cat(all_boxes)
            H, W, _ = frame.shape
            bx = box_ops.box_cxcywh_to_xyxy(boxes) * torch.Tensor([W, H, W, H])
            xyxy = bx.numpy()
            predictor.set_image(frame)
            tb = predictor.transform.apply_boxes_torch(bx, frame.shape[:2])
            with torch.no_grad():
                masks, _, _ = predictor.predict_torch(
                    point_coords=None, point_labels=None, boxes=tb, multimask_output=False
                )
            mask = masks[:, 0].any(0).numpy()
        out.append({"labels": [labels[j] for j in indices.tolist()], "boxes": xyxy, "mask": mask})
    return out
