"""GroundingDINO (the original classes, offline): detector graph parity with precomputed text features,
the per-label text bank, checkpoint loading, and the reference's image preprocessing.

"test-tiny" configuration (small Swin, 1 encoder / 2 decoder layers, 20 queries, 1-layer BERT) with
random weights and a tiny WordPiece tokenizer written by the test. The reference for the detector is
the original ``GroundingDINO.forward(image, captions=[caption])`` (its own tokenizer and BERT).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
if __import__("importlib").util.find_spec("groundingdino") is None:
    pytest.skip(
        "GroundingDINO not installed (pip install --no-deps rf-groundingdino)",
        allow_module_level=True,
    )

from PIL import Image  # noqa: E402

from export.detector_export import export_detector  # noqa: E402
from export.onnx_utils import cpu_session  # noqa: E402
from models.checkpoints import CheckpointError  # noqa: E402
from models.clap import TokenizerError, load_tokenizer, write_tiny_tokenizer  # noqa: E402
from models.grounding_dino import (  # noqa: E402
    DETECTOR_INPUTS,
    GroundingDinoDetector,
    build_grounding_dino,
    caption_features,
    encode_caption,
    load_grounding_dino,
    preprocess_caption,
)
from runtime.preprocess.detector import detector_input, detector_size  # noqa: E402

HW = (224, 224)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    write_tiny_tokenizer("bert", d / "bert-base-uncased")
    return load_tokenizer("bert", d)


@pytest.fixture(scope="module")
def model(tok):
    return build_grounding_dino("test-tiny", tok, seed=0)


@pytest.fixture(scope="module")
def graph(model, tmp_path_factory):
    return export_detector(model, tmp_path_factory.mktemp("det") / "detector.onnx", HW, atol=1e-4)


def _original(model, image: torch.Tensor, label: str):
    with torch.no_grad():
        out = model(image, captions=[preprocess_caption(label)])
    return out["pred_logits"].sigmoid().max(-1).values, out["pred_boxes"]


def test_caption():
    assert preprocess_caption("  Dog Barking ") == "dog barking."
    assert preprocess_caption("Car.") == "car."


@pytest.mark.parametrize("label", ["Speech", "Male speech, man speaking", "Dog? Bark. Cat"])
def test_detector_wrapper_equals_original_forward(model, label):
    img = torch.randn(1, 3, *HW, generator=torch.Generator().manual_seed(1))
    ref_s, ref_b = _original(model, img, label)
    t = encode_caption(model, preprocess_caption(label))
    with torch.no_grad():
        s, b = GroundingDinoDetector(model)(img, *[t[k] for k in DETECTOR_INPUTS[1:]])
    assert torch.equal(s, ref_s) and torch.equal(b, ref_b)


def test_graph_parity_other_label(graph, model):
    assert graph.parity_max_abs_err <= 1e-4
    shapes = {i["name"]: i["shape"] for i in graph.inputs}
    assert shapes["image"] == [1, 3, *HW] and shapes["encoded_text"][1] == "L"
    sess = cpu_session(graph.path, 2)
    for label in ("Female speech, woman speaking", "Siren"):  # lengths unlike the export's examples
        img = torch.randn(1, 3, *HW, generator=torch.Generator().manual_seed(2))
        t = encode_caption(model, preprocess_caption(label))
        feeds = {"image": img.numpy(), **{k: t[k].numpy() for k in DETECTOR_INPUTS[1:]}}
        s, b = sess.run(None, feeds)
        ref_s, ref_b = _original(model, img, label)
        assert np.abs(s - ref_s.numpy()).max() <= 1e-4 and np.abs(b - ref_b.numpy()).max() <= 1e-4


def test_text_bank_shape_and_order(model):
    labels = ["Speech", "Dog", "Male speech, man speaking", "Music"]
    f = caption_features(model, labels)
    n, lmax = len(labels), int(f["length"].max())
    assert f["encoded_text"].shape == (n, lmax, 256) and f["text_self_attention_masks"].shape == (
        n,
        lmax,
        lmax,
    )
    assert f["captions"] == [preprocess_caption(s) for s in labels]
    for i, s in enumerate(labels):
        t = encode_caption(model, preprocess_caption(s))
        k = t["encoded_text"].shape[1]
        assert f["length"][i] == k
        np.testing.assert_array_equal(f["encoded_text"][i, :k], t["encoded_text"][0].numpy())
        np.testing.assert_array_equal(
            f["text_self_attention_masks"][i, :k, :k], t["text_self_attention_masks"][0].numpy()
        )
        assert not f["text_token_mask"][i, k:].any() and not f["encoded_text"][i, k:].any()


def test_checkpoint_strict(tmp_path, model, tok):
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    sd["module.bert.embeddings.position_ids"] = torch.arange(64)[
        None
    ]  # older transformers stored it
    path = tmp_path / "gd.pth"
    torch.save({"model": sd}, path)
    m2, prov = load_grounding_dino(path, tok, config="test-tiny", seed=5)
    assert prov["config"] == "test-tiny"
    for k, v in model.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v), k
    sd.pop("module.feat_map.bias")
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match="missing 1 keys"):
        load_grounding_dino(path, tok, config="test-tiny")


def test_tokenizer_required(tmp_path):
    with pytest.raises(TokenizerError):
        build_grounding_dino("test-tiny", None)


@pytest.mark.parametrize("hw", [(224, 224), (180, 320), (500, 375), (100, 1000)])
def test_image_preprocessing_matches_reference(hw):
    import groundingdino.datasets.transforms as T

    rng = np.random.default_rng(hw[0])
    frame = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    tr = T.Compose(
        [
            T.RandomResize([800], max_size=1333),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    ref, _ = tr(Image.fromarray(frame), None)
    size = detector_size(*hw, 800, 1333)
    assert size == tuple(ref.shape[1:])
    pre = {
        "short_side": 800,
        "max_size": 1333,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    got, how = detector_input(frame, pre, size)
    assert how == "reference"
    np.testing.assert_array_equal(got[0], ref.numpy())
