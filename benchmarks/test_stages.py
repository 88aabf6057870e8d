"""Stage benchmarks of small configurations, under pytest-benchmark; they assert shapes, never times.

    pytest benchmarks --benchmark-only                                 # run and print the table
    pytest benchmarks --benchmark-only --benchmark-save=baseline       # store a run in benchmarks/.benchmarks
    pytest benchmarks --benchmark-only --benchmark-compare             # compare with the latest stored run
    pytest benchmarks --benchmark-only --benchmark-compare=0001 --benchmark-compare-fail=median:25%

Stages: the micro SAM image encoder (one frame, and a clip of 5), the prompt decoder at 1, 16 and
64 prompt sets, AMG postprocessing on synthetic logits (upscaling, stability score, boxes, NMS), the
tiny AudioCLIP towers and the preprocessing of frames (SAM, CLIP) and audio. Not part of the default
``pytest`` run (``testpaths = tests``).
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.sam.amg import batched_mask_to_box, box_nms, stability_score
from runtime.sam.predictor import postprocess_masks

pytest.importorskip("pytest_benchmark")


@pytest.fixture(scope="module")
def runner(stage_pipe):
    return stage_pipe.sam_runner(max_batch=5)


@pytest.fixture(scope="module")
def embedding(runner, frames):
    return runner.embed(frames[:1])[0]


def test_sam_encoder_one_frame(benchmark, runner, frames):
    out = benchmark(runner.embed, frames[:1])
    assert out[0].shape == runner.embedding_shape


def test_sam_encoder_clip(benchmark, runner, frames):
    out = benchmark(runner.embed, frames)
    assert len(out) == 5 and out[0].shape == runner.embedding_shape


@pytest.mark.parametrize("prompts", [1, 16, 64])
def test_sam_decoder(benchmark, runner, embedding, prompts):
    rng = np.random.default_rng(prompts)
    coords = rng.uniform(0, runner.image_size, (prompts, 2, 2)).astype(np.float32)
    labels = np.tile(np.array([[1, -1]], np.float32), (prompts, 1))
    g = runner.low_res_size
    mask_input = np.zeros((prompts, 1, g, g), np.float32)
    iou, low = benchmark(
        runner.decode, embedding, coords, labels, mask_input, np.zeros(1, np.float32)
    )
    assert iou.shape == (prompts, 4) and low.shape == (prompts, 4, g, g)


@pytest.fixture(scope="module")
def logits(runner):
    """64 synthetic low-res mask logits (blobs), float32 [64, 4g, 4g]."""
    g = runner.low_res_size
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:g, 0:g] / g
    c = rng.uniform(0.2, 0.8, (64, 2, 1, 1))
    r = rng.uniform(0.05, 0.3, (64, 1, 1))
    return (8.0 * (r - np.hypot(yy - c[:, 0], xx - c[:, 1]))).astype(np.float32)


def test_amg_upscale(benchmark, runner, logits):
    out = benchmark(
        postprocess_masks,
        logits,
        (runner.image_size, runner.image_size),
        (224, 224),
        runner.image_size,
    )
    assert out.shape == (64, 224, 224)


def test_amg_stability_score(benchmark, runner, logits):
    big = postprocess_masks(logits, (runner.image_size,) * 2, (224, 224), runner.image_size)
    out = benchmark(stability_score, big, 0.0, 1.0)
    assert out.shape == (64,)


def test_amg_boxes_and_nms(benchmark, runner, logits):
    masks = postprocess_masks(logits, (runner.image_size,) * 2, (224, 224), runner.image_size) > 0
    scores = np.random.default_rng(2).uniform(0.8, 1.0, 64).astype(np.float32)

    def boxes_nms():
        return box_nms(batched_mask_to_box(masks).astype(np.float32), scores, 0.7)

    keep = benchmark(boxes_nms)
    assert keep.ndim == 1 and 1 <= keep.size <= 64


def test_nms_1000_boxes(benchmark):
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 200, (1000, 2))
    wh = rng.uniform(5, 60, (1000, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    keep = benchmark(box_nms, boxes, rng.uniform(0, 1, 1000).astype(np.float32), 0.7)
    assert keep.ndim == 1 and 1 <= keep.size <= 1000


def test_audioclip_audio_tower(benchmark, stage_pipe):
    t = stage_pipe.bundle.graphs["audioclip_audio"]["inputs"][0]["shape"][1]
    wav = (np.random.default_rng(4).standard_normal((5, t)) * 3000).astype(np.float32)
    (emb,) = benchmark(stage_pipe.run, "audioclip_audio", wav)
    assert emb.shape[0] == 5


def test_audioclip_image_tower(benchmark, stage_pipe, frames):
    images = stage_pipe.clip_images(frames)
    out = benchmark(stage_pipe.run, "audioclip_image", images)
    assert out[0].shape[0] == 5


def test_preprocess_sam(benchmark, runner, frames):
    x, hw = benchmark(runner.preprocess, frames[0])
    assert (
        x.shape == (1, 3, runner.image_size, runner.image_size) and hw == (runner.image_size,) * 2
    )


def test_preprocess_clip(benchmark, stage_pipe, frames):
    out = benchmark(stage_pipe.clip_images, frames)
    assert out.shape == (5, 3, 224, 224)


def test_preprocess_audio(benchmark, stage_pipe):
    x = (np.random.default_rng(5).standard_normal(5 * 16000) * 0.1).astype(np.float32)
    out = benchmark(stage_pipe.audioclip_audio_input, x, 16000, 5)
    assert out.shape[0] == 5
