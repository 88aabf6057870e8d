"""The "Random-SAM" baseline of the paper's zero-shot table (spec sam4avs-reference 4.7).

The paper reports a Random-SAM row (S4 mIoU 7.0, F 0.240; MS3 11.5, 0.187) but the released code
holds no rule for it. **Our reading of the paper**, documented as such: for every frame, SAM's
automatic mask generator runs with SAM's default settings (the No-Prompt configuration, spec 4.5)
on the frame, and *one* of its masks is chosen uniformly at random; a frame without any automatic
mask gets an empty mask. No audio is used. The choice is seeded: ``seed`` (default 0) starts one
``numpy.random.default_rng(seed)`` per ``segment`` call, which draws one index per frame in frame
order (``rng.integers(M)`` over the frame's M masks), so a call is reproducible and does not depend
on anything else (thread count, other frames' masks beyond their count).

The runtime mode ``random-sam`` (graphs: the SAM encoder and decoder only). Frames
are processed as No-Prompt processes them: ``frame_policy`` ``"native"`` (default preset: SAM on the
frame at its size) or ``"reference"`` (preset ``sam4avs``: the frame squashed to the CLIP input
size, the mask brought back by nearest sampling). numpy + onnxruntime only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.errors import InputError
from runtime.modes.common import FRAME_POLICIES, SAM_GRAPHS, SAM_OPTIONAL
from runtime.modes.spec import ModeSpec, Param
from runtime.preprocess.resize import nearest_exact
from runtime.result import EMPTY_REASON, FrameOutput

__all__ = ["MODE", "pick_random_masks", "run_random_sam"]


def pick_random_masks(counts: list[int], seed: int) -> list[int | None]:
    """The rule: for frames with ``counts[i]`` automatic masks, the index chosen in each (None when
    the frame has none). ``numpy.random.default_rng(seed)``; one ``integers(counts[i])`` draw per
    frame with masks, in frame order."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    return [int(rng.integers(c)) if c > 0 else None for c in counts]


def run_random_sam(st, frames, audio, sample_rate, *, seed=0, amg=None, frame_policy=None):
    """Mode ``random-sam``: one automatic SAM mask per frame, chosen uniformly at random (seeded).

    ``audio`` is accepted (every mode takes one) and ignored. Per frame: mask bool [H, W]; score
    float32 [1] = the chosen mask's predicted IoU ([0] without masks); prompt: ``num_masks``,
    ``chosen`` (index into SAM's records, or None), ``seed``, ``sam_input_hw``, ``frame_policy``,
    and ``empty_reason`` when the generator found no mask.
    """
    del audio, sample_rate  # the baseline does not listen
    config = st.sam.amg_config(amg)
    policy = st.frame_policy(frame_policy)
    frames = list(frames)
    sam_in = st.sam.frames(frames, policy, "Random-SAM (automatic masks at the frame's size)")
    embs = st.sam.embeddings(sam_in)
    records = [st.sam.generate(sf, e, config) for sf, e in zip(sam_in, embs, strict=True)]
    chosen = pick_random_masks([len(r) for r in records], seed)
    out = []
    for frame, sf, recs, k in zip(frames, sam_in, records, chosen, strict=True):
        rec: dict[str, Any] = {
            "num_masks": len(recs),
            "chosen": k,
            "seed": int(seed),
            "sam_input_hw": tuple(int(v) for v in sf.shape[:2]),
            "frame_policy": policy,
        }
        if k is None:
            m = np.zeros(sf.shape[:2], bool)
            score = np.zeros(0, np.float32)
            rec[EMPTY_REASON] = "the automatic mask generator found no mask"
        else:
            m = recs[k]["segmentation"]
            score = np.array([recs[k]["predicted_iou"]], np.float32)
        out.append(FrameOutput(nearest_exact(m, frame.shape[:2]), score, rec))
    return out


MODE = ModeSpec(
    name="random-sam",
    graphs=SAM_GRAPHS,
    optional_graphs=SAM_OPTIONAL,
    stages=("sam",),
    run=run_random_sam,
    params=(
        Param("seed", 0, "int", "seed of the per-call random choice", low=0),
        Param("amg", None, "dict", "AutomaticMaskGenerator overrides", nullable=True),
        Param(
            "frame_policy",
            None,
            "str",
            "'native' or 'reference' (None: the preset's)",
            choices=FRAME_POLICIES,
            nullable=True,
        ),
    ),
    presets=("image_antialias", "zero_shot_quirks"),
    score_kind="the chosen automatic mask's predicted IoU float32 [1] ([0]: no mask)",
    doc="Baseline Random-SAM (our reading of the paper): one automatic SAM mask per frame, chosen "
    "uniformly at random (seeded); no audio.",
)
