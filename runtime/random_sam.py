"""The "Random-SAM" baseline of the paper's zero-shot table (spec sam4avs-reference 4.7).

The paper reports a Random-SAM row (S4 mIoU 7.0, F 0.240; MS3 11.5, 0.187) but the released code
holds no rule for it. **Our reading of the paper**, documented as such: for every frame, SAM's
automatic mask generator runs with SAM's default settings (the No-Prompt configuration, spec 4.5)
on the frame, and *one* of its masks is chosen uniformly at random; a frame without any automatic
mask gets an empty mask. No audio is used. The choice is seeded: ``seed`` (default 0) starts one
``numpy.random.default_rng(seed)`` per ``segment`` call, which draws one index per frame in frame
order (``rng.integers(M)`` over the frame's M masks), so a call is reproducible and does not depend
on anything else (thread count, other frames' masks beyond their count).

Registered as the runtime mode ``random-sam`` (graphs: the SAM encoder and decoder only). Frames
are processed as No-Prompt processes them: ``frame_policy`` ``"native"`` (default preset: SAM on the
frame at its size) or ``"reference"`` (preset ``sam4avs``: the frame squashed to the CLIP input
size, the mask brought back by nearest sampling). numpy + onnxruntime only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.amg import generate_masks
from runtime.errors import InputError
from runtime.pipeline import SegmentResult, _timed
from runtime.zero_shot import (
    _amg_factory,
    _check_sam_frames,
    _frame_policy,
    _nearest_to,
    _no_prompt_config,
    _quirks,
    _squash,
    sam_runner,
)

__all__ = ["RANDOM_SAM_GRAPHS", "pick_random_masks", "run_random_sam"]

RANDOM_SAM_GRAPHS = ("sam_image_encoder", "sam_prompt_decoder")


def pick_random_masks(counts: list[int], seed: int) -> list[int | None]:
    """The rule: for frames with ``counts[i]`` automatic masks, the index chosen in each (None when
    the frame has none). ``numpy.random.default_rng(seed)``; one ``integers(counts[i])`` draw per
    frame with masks, in frame order."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    return [int(rng.integers(c)) if c > 0 else None for c in counts]


def run_random_sam(pipe, frames, audio, sample_rate, timings, *, seed=0, amg=None, frame_policy=None):
    """Mode ``random-sam``: one automatic SAM mask per frame, chosen uniformly at random (seeded).

    ``audio`` is accepted (every mode takes one) and ignored. Returns a SegmentResult: masks bool
    [H, W] per frame; scores float32 [1] = the chosen mask's predicted IoU ([0] without masks);
    prompts per frame: ``num_masks``, ``chosen`` (index into SAM's records, or None), ``seed``,
    ``sam_input_hw``, ``frame_policy``, and ``empty_reason`` when the generator found no mask.
    """
    del audio, sample_rate  # the baseline does not listen
    runner = sam_runner(pipe)
    cfg = _no_prompt_config(runner, amg, 0.5, 100.0)
    pick_random_masks([], seed)  # validate the seed before the heavy work
    policy = _frame_policy(pipe, frame_policy, _quirks(pipe, None))
    frames = list(frames)
    if policy == "reference":
        sam_frames = [_squash(pipe, f) for f in frames]
    else:
        _check_sam_frames(frames, runner.patch_size, "Random-SAM (automatic masks at the frame's size)")
        sam_frames = frames
    with _timed(timings, "sam_encoder"):
        embs = runner.embed(sam_frames)
    records = []
    with _timed(timings, "amg"):
        for sf, emb in zip(sam_frames, embs, strict=True):
            records.append(generate_masks(sf.shape[:2], _amg_factory(runner, sf, emb), cfg))
    chosen = pick_random_masks([len(r) for r in records], seed)
    masks, scores, prompts = [], [], []
    for frame, sf, recs, k in zip(frames, sam_frames, records, chosen, strict=True):
        rec: dict[str, Any] = {"num_masks": len(recs), "chosen": k, "seed": int(seed),
                               "sam_input_hw": tuple(int(v) for v in sf.shape[:2]), "frame_policy": policy}
        if k is None:
            m = np.zeros(sf.shape[:2], bool)
            scores.append(np.zeros(0, np.float32))
            rec["empty_reason"] = "the automatic mask generator found no mask"
        else:
            m = recs[k]["segmentation"]
            scores.append(np.array([recs[k]["predicted_iou"]], np.float32))
        masks.append(np.ascontiguousarray(_nearest_to(m, frame.shape[:2])))
        prompts.append(rec)
    return SegmentResult("", "", masks, scores=scores, prompts=prompts)


# --- registration (runtime.modes imports this module at its end) -----------------------------------
from runtime.modes import MODES, ModeSpec  # noqa: E402

MODES["random-sam"] = ModeSpec(
    graphs=RANDOM_SAM_GRAPHS, run=run_random_sam,
    params={"seed": 0, "amg": None, "frame_policy": None},
    doc="Baseline Random-SAM (our reading of the paper): one automatic SAM mask per frame, chosen "
        "uniformly at random (seeded); no audio.",
)
