"""The SAM encoder export wrapper: global attention in query chunks, same numbers as segment_anything.

The reference is segment_anything's own ``ImageEncoderViT`` (the unchunked module), on the ``micro``
SAM with random relative-position tables (the checkpoint-free model has them at zero, which would
hide a wrong chunk slice of the decomposed rel-pos terms).
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from export.onnx_utils import cpu_session, export_graph
from export.sam_export import SamEncoderForExport, chunked_global_attention, export_sam_encoder
from models.sam import load_sam

TOL = 1e-4  # the SAM export tolerance (tests/parity/test_sam.py)

pytestmark = pytest.mark.torch_threads(1)


@pytest.fixture(scope="module")
def sam():
    s = copy.deepcopy(load_sam("micro", seed=0))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for blk in s.image_encoder.blocks:
            blk.attn.rel_pos_h.copy_(torch.randn(blk.attn.rel_pos_h.shape, generator=g))
            blk.attn.rel_pos_w.copy_(torch.randn(blk.attn.rel_pos_w.shape, generator=g))
    return s.eval()


def _images(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, 256, 256, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rows", [1, 3, 5, 16, 40, None])
def test_wrapper_matches_image_encoder(sam, rows):
    x = _images(2)
    with torch.no_grad():
        ref = sam.image_encoder(x)
        got = SamEncoderForExport(sam, attn_rows=rows)(x)
    assert float((got - ref).abs().max()) <= 1e-5


def test_chunked_attention_matches_attention_module(sam):
    blk = next(b for b in sam.image_encoder.blocks if b.window_size == 0)
    x = torch.randn(2, 16, 16, blk.attn.qkv.in_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = blk.attn(x)
        for rows in (1, 2, 7, 16):
            assert float((chunked_global_attention(blk.attn, x, rows) - ref).abs().max()) <= 1e-5


def test_wrapper_leaves_model_unchanged(sam):
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    with torch.no_grad():
        SamEncoderForExport(sam, attn_rows=3)(_images(1))
    assert all(torch.equal(before[k], v) for k, v in sam.state_dict().items())


@pytest.mark.parametrize("rows", [0, -1, 2.5, True])
def test_bad_rows(sam, rows):
    with pytest.raises(ValueError, match="attn_rows"):
        SamEncoderForExport(sam, attn_rows=rows)


def test_exported_chunked_graph_vs_segment_anything(sam, tmp_path):
    res = export_sam_encoder(sam, tmp_path / "enc.onnx", parity_batches=(), atol=TOL, attn_rows=5)
    assert res.parity_max_abs_err <= TOL
    # 16 grid rows in chunks of 5 (5, 5, 5, 1) -> 4 softmaxes per global block; one per windowed block
    ops = [n.op_type for n in onnx.load(str(res.path), load_external_data=False).graph.node]
    blocks = sam.image_encoder.blocks
    n_global = sum(b.window_size == 0 for b in blocks)
    assert ops.count("Softmax") == 4 * n_global + (len(blocks) - n_global)
    sess = cpu_session(res.path, 1)
    x = _images(3, seed=5)
    with torch.no_grad():
        ref = sam.image_encoder(x).numpy()
    (got,) = sess.run(None, {"image": x.numpy()})
    assert float(np.max(np.abs(got - ref))) <= TOL


def test_export_graph_checks_against_reference(tmp_path):
    # The build's parity check compares ORT with ``reference`` (for SAM: the original ImageEncoderViT),
    # so a wrapper that computes something else fails the build.
    torch.manual_seed(0)
    wrapper, other = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x = (torch.randn(2, 4),)
    ok = export_graph(
        wrapper,
        x,
        tmp_path / "a.onnx",
        input_names=["x"],
        output_names=["y"],
        atol=1e-5,
        reference=copy.deepcopy(wrapper),
    )
    assert ok.parity_max_abs_err <= 1e-5
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_graph(
            wrapper,
            x,
            tmp_path / "b.onnx",
            input_names=["x"],
            output_names=["y"],
            atol=1e-5,
            reference=other,
        )
