"""The Random-SAM baseline (runtime/modes/random_sam.py; spec sam4avs-reference 4.7, our reading of the
paper): one automatic SAM mask per frame, chosen uniformly at random with a seeded generator.

The reference is written here: segment_anything's ``SamAutomaticMaskGenerator`` on the bundle's
micro SAM (same weights, PyTorch) gives each frame's masks; ``numpy.random.default_rng(seed)``
draws one index per frame in frame order. The AMG thresholds are lowered (no filtering, no
suppression) so that every frame has many candidates and the test runs fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import runtime
from runtime.errors import InputError
from runtime.modes import MODES
from runtime.modes.random_sam import pick_random_masks
from tests.helpers.avsbench import make_avsbench

LOW_AMG = {
    "points_per_side": 3,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
}
PHOTOS = ("cat_1.jpg", "cars_2.jpg", "clock_1.jpg")


@pytest.fixture(scope="module")
def frames(demo_dir) -> list[np.ndarray]:
    return [
        np.asarray(
            Image.open(demo_dir / n).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
        )
        for n in PHOTOS
    ]


def _iou(a, b):
    u = np.count_nonzero(a | b)
    return 1.0 if u == 0 else np.count_nonzero(a & b) / u


def test_rule_is_seeded_and_uniform():
    assert pick_random_masks([5, 0, 3], 7) == pick_random_masks([5, 0, 3], 7)
    assert pick_random_masks([5, 0, 3], 7)[1] is None
    rng = np.random.default_rng(7)
    assert pick_random_masks([5, 0, 3], 7) == [int(rng.integers(5)), None, int(rng.integers(3))]
    counts = np.bincount([pick_random_masks([4], s)[0] for s in range(4000)], minlength=4)
    assert counts.min() > 850  # uniform over the 4 masks (expected 1000 each)
    for bad in (-1, 1.5, "0", True):
        with pytest.raises(InputError, match="seed"):
            pick_random_masks([3], bad)


def test_mode_matches_reference(tiny_bundle, demo_dir, frames):
    from segment_anything import SamAutomaticMaskGenerator

    from reference.zero_shot import load_reference_models

    assert "random-sam" in MODES and MODES["random-sam"].graphs == (
        "sam_image_encoder",
        "sam_prompt_decoder",
    )
    pipe = runtime.load(tiny_bundle, threads=2)
    wav = demo_dir / "cat_3-95694-A-5.wav"
    res = pipe.segment(frames, wav, mode="random-sam", seed=3, amg=LOW_AMG)
    again = pipe.segment(frames, wav, mode="random-sam", seed=3, amg=LOW_AMG)
    assert all(np.array_equal(a, b) for a, b in zip(res.masks, again.masks, strict=True))

    sam = load_reference_models(tiny_bundle).sam
    gen = SamAutomaticMaskGenerator(sam, **LOW_AMG)
    rng = np.random.default_rng(3)
    with torch.no_grad():
        for f, m, p in zip(frames, res.masks, res.prompts, strict=True):
            recs = gen.generate(f)
            assert p["num_masks"] == len(recs) > 1
            k = int(rng.integers(len(recs)))
            assert p["chosen"] == k and p["seed"] == 3
            assert _iou(m, recs[k]["segmentation"]) >= 0.99
    # another seed picks other masks somewhere
    other = pipe.segment(frames, wav, mode="random-sam", seed=4, amg=LOW_AMG)
    assert [p["chosen"] for p in other.prompts] != [p["chosen"] for p in res.prompts]
    with pytest.raises(InputError, match="seed"):
        pipe.segment(frames, wav, mode="random-sam", seed=-2)


def test_avs_eval_reports_it_beside_the_papers_row(tiny_bundle, tmp_path):
    from evaluation.run import evaluate

    root = tmp_path / "avsbench"
    make_avsbench(root, "s4", videos_per_split=1, seed=1)
    s = evaluate(
        tiny_bundle,
        root,
        kinds=("s4",),
        mode="random-sam",
        params={"amg": LOW_AMG},
        out=tmp_path / "out",
        progress=False,
    )
    assert s["paper_method"] == "Random-SAM"
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "paper: Random-SAM" in md and "| Full-mask |" in md
    r = s["results"]["s4"]
    assert 0.0 <= r["miou"] <= 1.0 and r["frames"] >= 1
