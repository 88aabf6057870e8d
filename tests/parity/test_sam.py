"""SAM: registry and checkpoint loading, ONNX export of encoder and decoder, the numpy runtime.

Everything runs on the ``micro`` configuration (real SAM modules, 256 px input, 16x16 embedding
grid, full-size mask decoder) with random weights. References are segment_anything's own code
paths: ``SamPredictor`` (set_image / predict / predict_torch), ``ResizeLongestSide``,
``Sam.preprocess`` and ``Sam.postprocess_masks``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from segment_anything import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide

from export.onnx_utils import cpu_session
from export.sam_export import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    export_sam_decoder,
    export_sam_encoder,
)
from models.sam import SAM_CONFIGS, get_sam_config, load_sam
from runtime.errors import InputError
from runtime.sam.predictor import (
    SamRunner,
    apply_boxes,
    apply_coords,
    get_preprocess_shape,
    postprocess_masks,
    preprocess,
)
from tests.helpers import shared_data_dir

DATA = shared_data_dir() / "audioclip-demo"
TOL = 1e-4  # max abs error on logits / embeddings, ORT + numpy vs PyTorch
SIZES = [(224, 224), (720, 1280), (1500, 2250)]


def _photo(name: str) -> np.ndarray:
    path = DATA / name
    if not path.exists():
        pytest.skip(
            f"real media not found: {path} (set AVS_SHARED_DATA, or put shared/ beside the repository)"
        )
    return np.asarray(Image.open(path).convert("RGB"))


pytestmark = pytest.mark.torch_threads(1)


@pytest.fixture(scope="module")
def cfg():
    return get_sam_config("micro")


@pytest.fixture(scope="module")
def sam():
    return load_sam("micro", seed=0)


@pytest.fixture(scope="module")
def exported(micro_sam_graphs):
    # export_graph checks the example batch (2); test_encoder_graph_vs_torch checks batches 1 and 3.
    enc, dec = micro_sam_graphs
    assert enc.parity_max_abs_err <= TOL and dec.parity_max_abs_err <= TOL
    return enc, dec


@pytest.fixture(scope="module", params=["prompt-decoder", "point-decoder"])
def runner(request, exported, cfg):
    """The runner without, then with, the ``sam_point_decoder`` graph: every decoder test runs on both."""
    enc, dec = exported
    point = None
    if request.param == "point-decoder":
        point = cpu_session(request.getfixturevalue("micro_point_decoder").path, 1)
    return SamRunner(
        cpu_session(enc.path, 1),
        cpu_session(dec.path, 1),
        cfg["image_size"],
        cfg["pixel_mean"],
        cfg["pixel_std"],
        patch_size=cfg["patch_size"],
        mask_threshold=cfg["mask_threshold"],
        max_batch=3,
        point_decoder=point,
    )


def _predictor_with_features(sam, features: torch.Tensor, orig_hw) -> SamPredictor:
    """A SamPredictor whose image state is set directly (decoder-only comparisons)."""
    pred = SamPredictor(sam)
    pred.features = features
    pred.original_size = tuple(orig_hw)
    pred.input_size = ResizeLongestSide.get_preprocess_shape(*orig_hw, sam.image_encoder.img_size)
    pred.is_image_set = True
    return pred


def _reference(
    pred: SamPredictor, coords=None, labels=None, boxes=None, mask_input=None, multimask=True
):
    """SamPredictor.predict_torch on prompts given in original-frame pixels (batched prompt sets)."""
    tr, orig = pred.transform, pred.original_size
    c = l_ = b = m = None
    if coords is not None:
        c = torch.as_tensor(tr.apply_coords(coords, orig), dtype=torch.float)
        l_ = torch.as_tensor(labels, dtype=torch.int)
    if boxes is not None:
        b = torch.as_tensor(tr.apply_boxes(boxes, orig), dtype=torch.float)
    if mask_input is not None:
        m = torch.as_tensor(mask_input, dtype=torch.float)
    masks, iou, low = pred.predict_torch(c, l_, b, m, multimask, return_logits=True)
    return masks.numpy(), iou.numpy(), low.numpy()


def _max_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# --- registry and loading --------------------------------------------------------------------------


def test_registry_entries():
    assert {"vit_h", "vit_l", "vit_b", "micro"} <= set(SAM_CONFIGS)
    names = {k: get_sam_config(k)["checkpoint"] for k in ("vit_h", "vit_l", "vit_b")}
    assert names == {
        "vit_h": "sam_vit_h_4b8939.pth",
        "vit_l": "sam_vit_l_0b3195.pth",
        "vit_b": "sam_vit_b_01ec64.pth",
    }
    assert get_sam_config("default")["name"] == "vit_h"
    micro = get_sam_config("micro")
    assert (micro["image_size"], micro["embedding_size"]) == (256, 16)
    assert micro["pixel_mean"] == (123.675, 116.28, 103.53)
    with pytest.raises(KeyError, match="vit_b"):
        get_sam_config("vit_x")


def test_micro_model_structure(sam):
    enc = sam.image_encoder
    assert enc.img_size == 256 and len(enc.blocks) == 4
    assert [b.window_size for b in enc.blocks] == [8, 0, 8, 0]
    assert sam.prompt_encoder.image_embedding_size == (16, 16)
    assert sam.prompt_encoder.input_image_size == (256, 256)
    assert sam.provenance == {"config": "micro", "weights": "random-init, seed 0"}


def test_load_sam_seeded_and_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load_sam("micro", seed=0)
    after = torch.rand(1)
    assert torch.equal(before, after), "load_sam must not consume the global RNG"
    b = load_sam("micro", seed=0)
    c = load_sam("micro", seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_load_sam_checkpoint_strict(tmp_path, sam):
    state = sam.state_dict()
    good = tmp_path / "micro.pth"
    torch.save(state, good)
    loaded = load_sam("micro", checkpoint=good, seed=5)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    assert loaded.provenance["weights"] == str(good) and len(loaded.provenance["sha256"]) == 64

    missing = dict(state)
    del missing["mask_decoder.iou_token.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(KeyError, match=r"missing keys: mask_decoder\.iou_token\.weight"):
        load_sam("micro", checkpoint=tmp_path / "missing.pth")

    extra = dict(state, **{"image_encoder.extra.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(KeyError, match=r"unexpected keys: image_encoder\.extra\.weight"):
        load_sam("micro", checkpoint=tmp_path / "extra.pth")

    wrong = dict(state, **{"mask_decoder.iou_token.weight": torch.zeros(2, 256)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not fit"):
        load_sam("micro", checkpoint=tmp_path / "wrong.pth")

    with pytest.raises(FileNotFoundError):
        load_sam("micro", checkpoint=tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="no official checkpoint"):
        load_sam("micro", checkpoint=tmp_path)  # a folder needs a registry file name


# --- export ----------------------------------------------------------------------------------------


def test_encoder_graph_vs_torch(exported, sam):
    enc, _ = exported
    assert enc.inputs == [{"name": "image", "dtype": "float32", "shape": ["batch", 3, 256, 256]}]
    assert enc.outputs == [
        {"name": "image_embeddings", "dtype": "float32", "shape": ["batch", 256, 16, 16]}
    ]
    assert enc.parity_max_abs_err <= TOL
    sess = cpu_session(enc.path, 1)
    g = torch.Generator().manual_seed(7)
    for b in (1, 3):
        x = torch.randn(b, 3, 256, 256, generator=g)
        with torch.no_grad():
            ref = sam.image_encoder(x).numpy()
        (got,) = sess.run(None, {"image": x.numpy()})
        assert _max_err(got, ref) <= TOL


def test_decoder_graph_contract(exported):
    _, dec = exported
    assert [i["name"] for i in dec.inputs] == list(DECODER_INPUTS)
    assert [o["name"] for o in dec.outputs] == list(DECODER_OUTPUTS)
    shapes = {i["name"]: i["shape"] for i in dec.inputs + dec.outputs}
    assert shapes["image_embeddings"] == [1, 256, 16, 16]
    assert shapes["point_coords"] == ["num_prompts", "num_points", 2]
    assert shapes["point_labels"] == ["num_prompts", "num_points"]
    assert shapes["mask_input"] == ["num_prompts", 1, 64, 64]
    assert shapes["iou_predictions"] == ["num_prompts", 4]
    assert shapes["low_res_masks"] == ["num_prompts", 4, 64, 64]
    assert dec.parity_max_abs_err <= TOL


# --- runtime: geometry and postprocessing ---------------------------------------------------------


@pytest.mark.parametrize("name", ["cars_1.jpg", "clock_1.jpg", "coughing_1.jpg"])
def test_preprocess_matches_segment_anything(name, sam, cfg):
    img = _photo(name)
    x, hw = preprocess(img, cfg["image_size"], cfg["pixel_mean"], cfg["pixel_std"])
    resized = ResizeLongestSide(256).apply_image(img)
    ref = sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None]).numpy()
    assert hw == resized.shape[:2]
    assert x.shape == ref.shape == (1, 3, 256, 256) and x.dtype == np.float32
    # Same PIL bilinear resize, same float32 arithmetic: bit-identical (tolerance 0).
    assert np.array_equal(x, ref)


@pytest.mark.parametrize("hw", [(224, 224), (720, 1280), (1500, 2250), (1023, 627), (17, 3001)])
def test_preprocess_shape_and_coords(hw):
    tr = ResizeLongestSide(1024)
    assert get_preprocess_shape(*hw, 1024) == tr.get_preprocess_shape(*hw, 1024)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (3, 5, 2)) * [hw[1], hw[0]]
    assert np.array_equal(apply_coords(pts, hw, 1024), tr.apply_coords(pts, hw).astype(np.float32))
    boxes = np.sort(rng.uniform(0, 1, (4, 2, 2)) * [hw[1], hw[0]], axis=1).reshape(4, 4)
    assert np.array_equal(
        apply_boxes(boxes, hw, 1024), tr.apply_boxes(boxes, hw).astype(np.float32)
    )


@pytest.mark.parametrize(
    "orig_hw,low",
    [(hw, 64) for hw in SIZES + [(17, 3001), (256, 256)]] + [((720, 1280), 256), ((99, 40), 256)],
)
def test_postprocess_masks_vs_torch(sam, orig_hw, low):
    """Low-res (64) or already input-size (256 = S) logits -> frame size, vs Sam.postprocess_masks."""
    rng = np.random.default_rng(1)
    m = rng.standard_normal((2, 2, low, low)).astype(np.float32) * 4
    input_hw = get_preprocess_shape(*orig_hw, 256)
    ref = sam.postprocess_masks(torch.from_numpy(m), input_hw, orig_hw).numpy()
    got = postprocess_masks(m, input_hw, orig_hw, 256)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert _max_err(got, ref) <= TOL


# --- runtime: decoder vs SamPredictor --------------------------------------------------------------


def _random_points(rng, p, n, hw):
    h, w = hw
    pts = rng.uniform(0, 1, (p, n, 2)) * [w, h]
    labels = rng.integers(0, 2, (p, n)).astype(np.float64)
    return pts, labels


def _random_boxes(rng, k, hw):
    h, w = hw
    xy = np.sort(rng.uniform(0, 1, (k, 2, 2)) * [w, h], axis=1)
    return xy.reshape(k, 4)


@pytest.mark.parametrize("orig_hw", SIZES)
@pytest.mark.parametrize(
    "num_prompts,num_points,multimask", [(1, 1, True), (5, 3, True), (5, 3, False), (1, 200, False)]
)
def test_decoder_points_vs_sam(runner, sam, orig_hw, num_prompts, num_points, multimask):
    rng = np.random.default_rng(num_prompts * 1000 + num_points)
    feats = torch.from_numpy(rng.standard_normal((1, 256, 16, 16)).astype(np.float32))
    pred = _predictor_with_features(sam, feats, orig_hw)
    pts, labels = _random_points(rng, num_prompts, num_points, orig_hw)
    ref_m, ref_iou, ref_low = _reference(pred, pts, labels, multimask=multimask)
    arg_pts, arg_lab = (pts[0], labels[0]) if num_prompts == 1 else (pts, labels)
    m, iou, low = runner.predict(
        feats.numpy(),
        orig_hw,
        point_coords=arg_pts,
        point_labels=arg_lab,
        multimask_output=multimask,
        return_logits=True,
    )
    nm = 3 if multimask else 1
    assert m.shape == (num_prompts, nm, *orig_hw) and iou.shape == (num_prompts, nm)
    assert low.shape == (num_prompts, nm, 64, 64)
    assert _max_err(m, ref_m) <= TOL
    assert _max_err(iou, ref_iou) <= TOL
    assert _max_err(low, ref_low) <= TOL


@pytest.mark.parametrize("orig_hw", SIZES)
def test_decoder_boxes_and_points_vs_sam(runner, sam, orig_hw):
    rng = np.random.default_rng(3)
    feats = torch.from_numpy(rng.standard_normal((1, 256, 16, 16)).astype(np.float32))
    pred = _predictor_with_features(sam, feats, orig_hw)
    boxes = _random_boxes(rng, 5, orig_hw)
    # boxes only, single mask per box (the Box-Prompt strategy)
    ref = _reference(pred, boxes=boxes, multimask=False)
    got = runner.predict(
        feats.numpy(), orig_hw, boxes=boxes, multimask_output=False, return_logits=True
    )
    for g, r in zip(got, ref, strict=True):
        assert _max_err(g, r) <= TOL
    # one shared point set + 5 boxes; SAM takes the points per box
    pts, labels = _random_points(rng, 1, 2, orig_hw)
    ref = _reference(pred, np.repeat(pts, 5, 0), np.repeat(labels, 5, 0), boxes, multimask=True)
    got = runner.predict(
        feats.numpy(),
        orig_hw,
        point_coords=pts[0],
        point_labels=labels[0],
        boxes=boxes,
        return_logits=True,
    )
    for g, r in zip(got, ref, strict=True):
        assert _max_err(g, r) <= TOL


def test_decoder_64_prompt_sets_in_chunks(runner, sam):
    """The automatic-mask-generator shape: 64 single-point prompt sets, multimask, in calls of
    ``max_prompts`` (16 by default, 64 in one call when asked), through the point decoder when
    the runner has one and no mask input is given."""
    orig_hw = (224, 224)
    rng = np.random.default_rng(4)
    feats = torch.from_numpy(rng.standard_normal((1, 256, 16, 16)).astype(np.float32))
    pred = _predictor_with_features(sam, feats, orig_hw)
    pts = rng.uniform(0, 224, (64, 1, 2))
    labels = np.ones((64, 1))
    calls = []

    class Spy:
        def __init__(self, session):
            self.session = session

        def run(self, *a, **k):
            calls.append((self.session, k or a[1]))
            return self.session.run(*a, **k)

        def __getattr__(self, name):
            return getattr(self.session, name)

    used = runner.point_decoder or runner.decoder
    point = None if runner.point_decoder is None else Spy(runner.point_decoder)
    spy_runner = SamRunner(
        runner.encoder,
        Spy(runner.decoder),
        256,
        runner.pixel_mean,
        runner.pixel_std,
        point_decoder=point,
    )
    m, iou, low = spy_runner.predict(
        feats.numpy(), orig_hw, point_coords=pts, point_labels=labels, return_logits=True
    )
    assert [(s, f["point_coords"].shape) for s, f in calls] == [(used, (16, 2, 2))] * 4
    calls.clear()
    spy_runner.max_prompts = 64
    m1, iou1, _ = spy_runner.predict(
        feats.numpy(), orig_hw, point_coords=pts, point_labels=labels, return_logits=True
    )
    assert len(calls) == 1 and _max_err(m1, m) <= 1e-5 and _max_err(iou1, iou) <= 1e-5
    calls.clear()
    spy_runner.predict(
        feats.numpy(),
        orig_hw,
        point_coords=pts[:2],
        point_labels=labels[:2],
        mask_input=np.zeros((64, 64), np.float32),
    )
    assert [s for s, _ in calls] == [runner.decoder]  # a mask input needs the full decoder
    ref_m, ref_iou, ref_low = _reference(pred, pts, labels)
    assert (
        _max_err(m, ref_m) <= TOL
        and _max_err(iou, ref_iou) <= TOL
        and _max_err(low, ref_low) <= TOL
    )
    # chunking gives the same answer
    small = SamRunner(
        runner.encoder, runner.decoder, 256, runner.pixel_mean, runner.pixel_std, max_prompts=10
    )
    m2, iou2, _ = small.predict(
        feats.numpy(), orig_hw, point_coords=pts, point_labels=labels, return_logits=True
    )
    assert _max_err(m2, m) <= 1e-5 and _max_err(iou2, iou) <= 1e-5


def test_decoder_mask_input_vs_sam(runner, sam):
    orig_hw = (720, 1280)
    rng = np.random.default_rng(5)
    feats = torch.from_numpy(rng.standard_normal((1, 256, 16, 16)).astype(np.float32))
    pred = _predictor_with_features(sam, feats, orig_hw)
    pts, labels = _random_points(rng, 1, 2, orig_hw)
    prev = rng.standard_normal((1, 64, 64)).astype(np.float32) * 3
    ref = pred.predict(
        pts[0], labels[0], mask_input=prev, multimask_output=False, return_logits=True
    )
    got = runner.predict(
        feats.numpy(),
        orig_hw,
        point_coords=pts[0],
        point_labels=labels[0],
        mask_input=prev,
        multimask_output=False,
        return_logits=True,
    )
    for g, r in zip(got, ref, strict=True):
        assert _max_err(g[0], r) <= TOL
    no_mask = runner.predict(
        feats.numpy(),
        orig_hw,
        point_coords=pts[0],
        point_labels=labels[0],
        multimask_output=False,
        return_logits=True,
    )
    assert _max_err(no_mask[2], got[2]) > 1e-3  # the mask input is really used


# --- runtime: end to end on real photos -------------------------------------------------------------


def test_embed_batches_vs_torch(runner, sam):
    frames = [
        _photo(n)
        for n in ("cars_1.jpg", "clock_1.jpg", "coughing_1.jpg", "cat_1.jpg", "cars_2.jpg")
    ]
    embs = runner.embed(frames)  # max_batch=3: chunks of 3 and 2
    assert len(embs) == 5 and all(
        e.shape == (1, 256, 16, 16) and e.dtype == np.float32 for e in embs
    )
    tr = ResizeLongestSide(256)
    for f, e in zip(frames, embs, strict=True):
        x = torch.as_tensor(tr.apply_image(f)).permute(2, 0, 1).contiguous()[None]
        with torch.no_grad():
            ref = sam.image_encoder(sam.preprocess(x)).numpy()
        assert _max_err(e, ref) <= TOL
    single = runner.embed(frames[1])
    assert _max_err(single[0], embs[1]) <= 1e-5


@pytest.mark.parametrize("name", ["cars_1.jpg", "clock_1.jpg"])
def test_predict_matches_sampredictor_on_photo(runner, sam, name):
    img = _photo(name)
    h, w = img.shape[:2]
    pred = SamPredictor(sam)
    pred.set_image(img)
    (emb,) = runner.embed([img])
    prompts = [
        {"point_coords": np.array([[0.4 * w, 0.5 * h]]), "point_labels": np.array([1])},
        {
            "point_coords": np.array([[0.3 * w, 0.6 * h], [0.8 * w, 0.2 * h]]),
            "point_labels": np.array([1, 0]),
        },
        {"box": np.array([0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h])},
    ]
    for pr in prompts:
        for multimask in (True, False):
            ref_m, ref_iou, _ = pred.predict(**pr, multimask_output=multimask)
            kw = {"boxes": pr["box"]} if "box" in pr else pr
            m, iou, _ = runner.predict(emb, (h, w), **kw, multimask_output=multimask)
            assert m.dtype == bool and m.shape == (1, *ref_m.shape)
            assert _max_err(iou[0], ref_iou) <= TOL
            for a, b in zip(m[0], ref_m, strict=True):
                assert _iou(a, b) >= 0.999


# --- runtime: bad input ------------------------------------------------------------------------------


def test_bad_frames(runner):
    rgb = np.zeros((64, 80, 3), np.uint8)
    bad = {
        "grayscale HxW": np.zeros((64, 80), np.uint8),
        "grayscale HxWx1": np.zeros((64, 80, 1), np.uint8),
        "RGBA": np.zeros((64, 80, 4), np.uint8),
        "float": rgb.astype(np.float32),
        "CHW": np.zeros((3, 64, 80), np.uint8),
        "below patch": np.zeros((8, 80, 3), np.uint8),
        "list": rgb.tolist(),
    }
    assert issubclass(InputError, ValueError)
    for frame in bad.values():
        with pytest.raises(InputError):
            runner.preprocess(frame)
        with pytest.raises(InputError, match=r"frames\[1\]"):
            runner.embed([rgb, frame])
    with pytest.raises(InputError, match="at least one"):
        runner.embed([])
    with pytest.raises(InputError, match="too elongated"):
        runner.preprocess(np.zeros((16, 9000, 3), np.uint8))


def test_bad_prompts(runner):
    emb = np.zeros((1, 256, 16, 16), np.float32)
    hw = (100, 200)
    ok_pts, ok_lab = np.array([[10.0, 20.0]]), np.array([1])
    cases = [
        ({"point_coords": [[250.0, 20.0]], "point_labels": [1]}, "lie in the frame"),
        ({"point_coords": [[-1.0, 20.0]], "point_labels": [1]}, "lie in the frame"),
        ({"point_coords": [[10.0, 101.0]], "point_labels": [1]}, "lie in the frame"),
        ({"point_coords": [[np.nan, 1.0]], "point_labels": [1]}, "finite"),
        ({"point_coords": ok_pts, "point_labels": [2]}, "point_labels must be"),
        ({"point_coords": ok_pts, "point_labels": [0.5]}, "point_labels must be"),
        ({"point_coords": ok_pts, "point_labels": [1, 0]}, "shape"),
        ({"point_coords": ok_pts}, "point_labels must be given"),
        ({"point_labels": ok_lab}, "without point_coords"),
        ({"point_coords": np.zeros((3,)), "point_labels": ok_lab}, "point_coords must be"),
        ({"boxes": [50.0, 20.0, 10.0, 90.0]}, "x0 <= x1"),
        ({"boxes": [0.0, 0.0, 201.0, 90.0]}, "lie in the frame"),
        ({"boxes": [[0.0, 0.0, 5.0]]}, "boxes must be"),
        (
            {
                "boxes": np.zeros((2, 4)),
                "point_coords": np.zeros((3, 1, 2)),
                "point_labels": np.ones((3, 1)),
            },
            "with 2 boxes",
        ),
        ({}, "at least one prompt"),
        (
            {
                "point_coords": ok_pts,
                "point_labels": ok_lab,
                "mask_input": np.zeros((32, 32), np.float32),
            },
            "mask_input must be",
        ),
        ({"point_coords": ok_pts, "point_labels": ok_lab, "multimask_output": "yes"}, "bool"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(InputError, match=msg):
            runner.predict(emb, hw, **kwargs)
    with pytest.raises(InputError, match="embedding must"):
        runner.predict(
            np.zeros((1, 256, 8, 8), np.float32), hw, point_coords=ok_pts, point_labels=ok_lab
        )
    with pytest.raises(InputError, match="embedding must"):
        runner.predict(emb.astype(np.float64), hw, point_coords=ok_pts, point_labels=ok_lab)
    with pytest.raises(InputError, match="orig_hw"):
        runner.predict(emb, (0, 5), point_coords=ok_pts, point_labels=ok_lab)
    with pytest.raises(InputError, match="orig_hw"):
        runner.predict(emb, (10.5, 5), point_coords=ok_pts, point_labels=ok_lab)
    # a label of -1 (padding) and the frame's far edge are accepted
    m, _, _ = runner.predict(
        emb, hw, point_coords=[[200.0, 100.0], [0.0, 0.0]], point_labels=[1, -1]
    )
    assert m.shape == (1, 3, 100, 200)


def test_runtime_does_not_import_torch():
    code = "import sys, runtime.sam.predictor; assert 'torch' not in sys.modules, 'torch imported'"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


# --- full size (slow) ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_vit_b_export_parity(tmp_path):
    sam = load_sam("vit_b", seed=0)
    enc = export_sam_encoder(sam, tmp_path / "enc.onnx", parity_batches=(1,), atol=TOL)
    assert enc.outputs[0]["shape"] == ["batch", 256, 64, 64]
    dec = export_sam_decoder(sam, tmp_path / "dec.onnx", atol=TOL)
    assert dec.outputs[1]["shape"] == ["num_prompts", 4, 256, 256]
    cfg = get_sam_config("vit_b")
    runner = SamRunner(
        cpu_session(enc.path, 1),
        cpu_session(dec.path, 1),
        cfg["image_size"],
        cfg["pixel_mean"],
        cfg["pixel_std"],
    )
    img = _photo("cars_1.jpg")
    pred = SamPredictor(sam)
    pred.set_image(img)
    (emb,) = runner.embed([img])
    assert _max_err(emb, pred.features.numpy()) <= TOL
    box = np.array([200.0, 300.0, 1400.0, 1200.0])
    ref_m, ref_iou, _ = pred.predict(box=box, multimask_output=True, return_logits=True)
    m, iou, _ = runner.predict(pred.features.numpy(), img.shape[:2], boxes=box, return_logits=True)
    assert _max_err(m[0], ref_m) <= TOL and _max_err(iou[0], ref_iou) <= TOL
