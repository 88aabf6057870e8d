"""Box-Prompt mode end to end: a tiny bundle built by build_engines.py vs a PyTorch reference pipeline
that follows zero_shot/*/box_prompt.py step by step (CLAP get_audio_embedding, text bank, topk,
GroundingDINO forward per label with box threshold 0.3, SamPredictor boxes without multimask, union;
``reference.box.reference_box_pipeline``).

Same seeded random weights on both sides (test-tiny CLAP / GroundingDINO, micro SAM), tiny
tokenizers written by the test, the AVSBench 23-category list from ../shared/data as the labels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
for _pkg in ("laion_clap", "groundingdino"):
    if __import__("importlib").util.find_spec(_pkg) is None:
        pytest.skip(f"{_pkg} not installed (see docs/box-prompt.md)", allow_module_level=True)

from PIL import Image  # noqa: E402

import runtime  # noqa: E402
from models.clap import build_clap_test_tiny, load_tokenizer, write_tiny_tokenizer  # noqa: E402
from models.grounding_dino import build_grounding_dino, preprocess_caption  # noqa: E402
from models.sam import load_sam  # noqa: E402
from reference.box import reference_box_pipeline  # noqa: E402
from runtime.errors import InputError  # noqa: E402
from runtime.prompting.labels import top_labels  # noqa: E402
from tests.helpers.cache import BUILD_SOURCES, cached_build, check_bundle, tree_digest  # noqa: E402

GRAPHS = "clap_audio,detector,sam_image_encoder,sam_prompt_decoder"
PHOTOS = ("cat_1.jpg", "cars_1.jpg", "clock_1.jpg")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tokenizers")
    write_tiny_tokenizer("roberta", d / "roberta-base")
    write_tiny_tokenizer("bert", d / "bert-base-uncased")
    return d


@pytest.fixture(scope="module")
def label_file(shared_data):
    return shared_data / "avsbench_categories.json"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tok_dir, label_file):
    """The Box-Prompt bundle, built once and cached across sessions (tests/helpers/cache.py); the key
    holds the tokenizers' and the label list's bytes besides the sources."""
    from export.build_engines import main

    argv = ["--profile", "tiny", "--graphs", GRAPHS, "--quiet"]
    inputs = ["--tokenizers", str(tok_dir), "--labels", str(label_file)]

    def build(d):
        assert main([*argv, *inputs, "--out", str(d)]) == 0

    key = {"argv": argv, "tokenizers": tree_digest(tok_dir), "labels": tree_digest(label_file)}
    out = tmp_path_factory.mktemp("box") / "bundle"
    cached_build("box_bundle", BUILD_SOURCES, key, build, out, check=check_bundle)
    return out


@pytest.fixture(scope="module")
def pipe(bundle):
    return runtime.load(bundle, threads=2)


@pytest.fixture(scope="module")
def frames(demo_dir):
    return [
        np.asarray(
            Image.open(demo_dir / p).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
        )
        for p in PHOTOS
    ]


@pytest.fixture(scope="module")
def audio(demo_dir):
    return demo_dir / "cat_3-95694-A-5.wav"


@pytest.fixture(scope="module")
def ref_models(tok_dir):
    rt = load_tokenizer("roberta", tok_dir)
    bt = load_tokenizer("bert", tok_dir)
    return {
        "clap": build_clap_test_tiny(len(rt), seed=0),
        "rtok": rt,
        "gdino": build_grounding_dino("test-tiny", bt, seed=0),
        "sam": load_sam("micro", seed=0),
    }


def _iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else np.logical_and(a, b).sum() / u


def test_bundle_label_bank(bundle, pipe, label_file, ref_models):
    labels = json.loads(label_file.read_text())
    m = pipe.manifest
    assert m["labels"]["box_prompt"]["names"] == labels
    assert m["graphs"]["clap_audio"]["inputs"][0]["shape"] == [1, 480000]
    bank = np.load(bundle / m["banks"]["clap_text"]["file"])
    assert bank.shape == (len(labels), 512)
    tok = ref_models["rtok"](
        labels, padding="max_length", truncation=True, max_length=77, return_tensors="pt"
    )
    with torch.no_grad():
        ref = ref_models["clap"].get_text_embedding(
            {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}
        )
    assert np.abs(bank - ref.numpy()).max() < 1e-5
    length = np.load(bundle / m["banks"]["detector_length"]["file"])
    assert length.shape == (len(labels),) and m["graphs"]["detector"]["captions"][
        0
    ] == preprocess_caption(labels[0])


def test_box_mode_vs_reference(pipe, frames, audio, ref_models, label_file):
    labels = json.loads(label_file.read_text())
    k = 2  # MS3's; S4's k = 1 picks the first of these (checked below)
    res = pipe.segment(frames, audio, mode="box", k=k)
    one = pipe.segment(frames, audio, mode="box", k=1)
    assert [p["labels"] for p in one.prompts] == [p["labels"][:1] for p in res.prompts]
    ref = reference_box_pipeline(
        ref_models, frames, audio, labels, k, pipe.manifest["preprocessing"]["detector"]
    )
    assert res.mode == "box" and len(res.masks) == len(frames)
    n_boxes = 0
    for got, want in zip(res.prompts, ref, strict=True):
        assert got["labels"] == want["labels"]
        b = np.asarray(got["boxes_xyxy"], np.float32).reshape(-1, 4)
        assert b.shape == want["boxes"].shape
        if len(b):
            assert np.abs(b - want["boxes"]).max() < 1e-2  # pixels
        n_boxes += len(b)
    for m, want, f in zip(res.masks, ref, frames, strict=True):
        assert m.shape == f.shape[:2] and m.dtype == bool
        assert _iou(m, want["mask"]) >= 0.999
    assert n_boxes > 0, "random weights gave no box: the comparison would be vacuous"


def test_no_box_above_threshold(pipe, frames, audio, bundle):
    res = runtime.segment(
        bundle, frames[:2], audio, mode="box", box_threshold=1.0
    )  # scores are sigmoids: none is > 1
    assert all(not m.any() for m in res.masks)
    assert all(p["empty_reason"] and p["boxes_xyxy"] == [] for p in res.prompts)
    assert {"clap", "detector", "sam_encoder"} <= set(res.timings)  # each stage timed itself


def test_k_checks(pipe, frames, audio):
    n = pipe.manifest["banks"]["clap_text"]["shape"][0]
    with pytest.raises(InputError, match="larger than the label bank"):
        pipe.segment(frames[:1], audio, mode="box", k=n + 1)
    with pytest.raises(InputError, match="positive int"):
        pipe.segment(frames[:1], audio, mode="box", k=0)
    with pytest.raises(InputError, match="box_threshold"):
        pipe.segment(frames[:1], audio, mode="box", box_threshold=1.5)


def test_top_labels():
    bank = np.eye(4, dtype=np.float32)
    a = np.array([0.5, 0.9, 0.5, 0.1], np.float32)
    idx, s = top_labels(a, bank, 3)
    assert idx.tolist() == [1, 0, 2] and np.allclose(s, [0.9, 0.5, 0.5])
    with pytest.raises(InputError):
        top_labels(a, bank, 5)
    with pytest.raises(InputError):
        top_labels(a[:3], bank, 1)


def test_many_boxes_one_frame(pipe, frames, ref_models):
    """150 boxes (more than one decoder call's 64 prompt sets), some past the frame's edges."""
    from segment_anything import SamPredictor

    sam = pipe.stages(["sam"]).sam
    frame = frames[0]
    rng = np.random.default_rng(0)
    xy = rng.uniform(-10, 200, (150, 2))
    wh = rng.uniform(5, 60, (150, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    got = sam.box_masks(sam.embeddings([frame])[0], frame.shape[:2], boxes)
    pred = SamPredictor(ref_models["sam"])
    pred.set_image(frame)
    tb = pred.transform.apply_boxes_torch(torch.from_numpy(boxes), frame.shape[:2])
    with torch.no_grad():
        masks, _, _ = pred.predict_torch(None, None, boxes=tb, multimask_output=False)
    assert _iou(got, masks[:, 0].any(0).numpy()) >= 0.999
    empty = sam.box_masks(sam.embeddings([frame])[0], frame.shape[:2], np.zeros((0, 4)))
    assert empty.shape == frame.shape[:2] and not empty.any()
