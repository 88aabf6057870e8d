"""CLIP towers of AudioCLIP: key layout, parameter counts, independent references for the trunk,
the attention pool (plain, dense and CLIP-Surgery), the text transformer, ONNX parity, tokenizer."""

from __future__ import annotations

import copy
import gzip
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.checkpoints import sha256_file
from models.clip_text import CLIPTextTower
from models.clip_tokenizer import (
    OFFICIAL_VOCAB_SHA256,
    VOCAB_ENV,
    VOCAB_NAME,
    ClipTokenizer,
    find_vocab,
    tokenize,
)
from models.clip_visual import ModifiedResNet
from models.registry import get_config

# --------------------------------------------------------------------------------------------
# fixtures


def _perturb(visual: ModifiedResNet, seed: int = 1) -> ModifiedResNet:
    """Non-trivial BN statistics/affines, and sharper attention (q/k/v x8) so that the pool's
    attention is far from uniform and the plain, dense and surgery paths really differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
        for lin in (visual.attnpool.q_proj, visual.attnpool.k_proj, visual.attnpool.v_proj):
            lin.weight.mul_(8.0)
            lin.bias.normal_(0, 0.1, generator=g)
        visual.attnpool.c_proj.bias.normal_(0, 0.1, generator=g)
    return visual.eval()


@pytest.fixture(scope="module")
def tiny_visual() -> ModifiedResNet:
    torch.manual_seed(0)
    return _perturb(ModifiedResNet.from_config("audioclip-tiny"))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def tiny_features(tiny_visual, images) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return tiny_visual.forward_features(images)


# --------------------------------------------------------------------------------------------
# layout and parameter counts (meta device: no memory, no init cost)


def _meta(cls, name):
    with torch.device("meta"):
        return cls.from_config(name)


def test_visual_official_key_layout_and_count():
    v = _meta(ModifiedResNet, "audioclip")
    sd = v.state_dict()
    assert len(sd) == 339
    assert sum(p.numel() for p in v.parameters()) == 38_316_896
    per = {}
    for k in sd:
        head = k.split(".")[0]
        per[head if head.startswith(("layer", "attnpool")) else "stem"] = (
            per.get(head if head.startswith(("layer", "attnpool")) else "stem", 0) + 1
        )
    assert per == {
        "stem": 18,
        "layer1": 60,
        "layer2": 78,
        "layer3": 114,
        "layer4": 60,
        "attnpool": 9,
    }
    assert (
        sum(p.numel() for n, p in v.named_parameters() if n.startswith("attnpool.")) == 14_789_632
    )
    assert sd["attnpool.positional_embedding"].shape == (50, 2048)
    assert {k.split(".")[-2] for k in sd if ".downsample." in k} == {"0", "1"}
    for k in (
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_var",
        "layer2.0.downsample.1.num_batches_tracked",
        "layer4.2.bn3.weight",
        "attnpool.k_proj.weight",
        "attnpool.q_proj.bias",
        "attnpool.v_proj.weight",
        "attnpool.c_proj.weight",
        "conv3.weight",
        "bn3.running_mean",
    ):
        assert k in sd, k
    assert sd["attnpool.c_proj.weight"].shape == (1024, 2048)
    # CLIP-Surgery temperature of the official config: head_dim 2048 / 32 = 64 -> 0.125.
    assert v.attnpool.head_dim == 64 and v.attnpool.scale == 0.125


def test_text_official_key_layout_and_count():
    t = _meta(CLIPTextTower, "audioclip")
    sd = t.state_dict()
    assert sum(k.startswith("transformer.") for k in sd) == 144
    assert {k for k in sd if not k.startswith("transformer.")} == {
        "token_embedding.weight",
        "ln_final.weight",
        "ln_final.bias",
        "positional_embedding",
        "text_projection",
    }
    block = {k.split(".", 3)[3] for k in sd if k.startswith("transformer.resblocks.11.")}
    assert block == {
        "attn.in_proj_weight",
        "attn.in_proj_bias",
        "attn.out_proj.weight",
        "attn.out_proj.bias",
        "ln_1.weight",
        "ln_1.bias",
        "mlp.c_fc.weight",
        "mlp.c_fc.bias",
        "mlp.c_proj.weight",
        "mlp.c_proj.bias",
        "ln_2.weight",
        "ln_2.bias",
    }
    assert sd["transformer.resblocks.0.attn.in_proj_weight"].shape == (1536, 512)
    assert sd["text_projection"].shape == (512, 1024)
    assert sum(p.numel() for p in t.parameters()) == 63_690_240
    # the causal mask is a plain attribute, not a buffer
    assert "attn_mask" not in dict(t.named_buffers())
    m = CLIPTextTower(
        embed_dim=8, context_length=5, vocab_size=16, width=8, heads=2, layers=1
    ).attn_mask
    assert torch.isneginf(m).tolist() == [[j > i for j in range(5)] for i in range(5)]
    assert (m[~torch.isneginf(m)] == 0).all()


def test_tiny_configs_build_with_same_classes():
    c = get_config("audioclip-tiny")["clip"]
    v = ModifiedResNet.from_config("audioclip-tiny")
    t = CLIPTextTower.from_config("audioclip-tiny")
    assert v.attnpool.c_proj.out_features == c["embed_dim"] == t.text_projection.shape[1]
    assert v.attnpool.positional_embedding.shape == (50, 32 * c["vision_width"])


# --------------------------------------------------------------------------------------------
# visual tower: independent references


def _bn(x, sd, p):
    return F.batch_norm(
        x,
        sd[p + ".running_mean"],
        sd[p + ".running_var"],
        sd[p + ".weight"],
        sd[p + ".bias"],
        training=False,
        eps=1e-5,
    )


def _reference_trunk(sd: dict, layers, x: torch.Tensor) -> list[torch.Tensor]:
    """CLIP RN trunk written out with functional ops from the official key names."""
    for i in (1, 2, 3):
        x = F.relu(
            _bn(
                F.conv2d(x, sd[f"conv{i}.weight"], stride=2 if i == 1 else 1, padding=1),
                sd,
                f"bn{i}",
            )
        )
    x = F.avg_pool2d(x, 2)
    outs = []
    for s, depth in enumerate(layers, start=1):
        for b in range(depth):
            p = f"layer{s}.{b}"
            stride = 2 if (s > 1 and b == 0) else 1
            y = F.relu(_bn(F.conv2d(x, sd[p + ".conv1.weight"]), sd, p + ".bn1"))
            y = F.relu(_bn(F.conv2d(y, sd[p + ".conv2.weight"], padding=1), sd, p + ".bn2"))
            if stride > 1:  # anti-aliasing: avg-pool after conv2
                y = F.avg_pool2d(y, stride)
            y = _bn(F.conv2d(y, sd[p + ".conv3.weight"]), sd, p + ".bn3")
            if p + ".downsample.0.weight" in sd:
                idn = F.avg_pool2d(x, stride) if stride > 1 else x
                idn = _bn(F.conv2d(idn, sd[p + ".downsample.0.weight"]), sd, p + ".downsample.1")
            else:
                idn = x
            x = F.relu(y + idn)
        outs.append(x)
    return outs


def _tokens_seq_first(sd, x4):
    b, c, h, w = x4.shape
    t = x4.reshape(b, c, h * w).permute(2, 0, 1)  # (HW)BC
    t = torch.cat([t.mean(dim=0, keepdim=True), t], dim=0)
    return t + sd["attnpool.positional_embedding"][:, None, :]


def _reference_pool_plain(sd, heads, x4):
    """Official CLIP call, with every token kept as a query (Sam4AVS's AC-FPN backbone)."""
    t = _tokens_seq_first(sd, x4)
    out, _ = F.multi_head_attention_forward(
        query=t,
        key=t,
        value=t,
        embed_dim_to_check=t.shape[-1],
        num_heads=heads,
        q_proj_weight=sd["attnpool.q_proj.weight"],
        k_proj_weight=sd["attnpool.k_proj.weight"],
        v_proj_weight=sd["attnpool.v_proj.weight"],
        in_proj_weight=None,
        in_proj_bias=torch.cat(
            [sd["attnpool.q_proj.bias"], sd["attnpool.k_proj.bias"], sd["attnpool.v_proj.bias"]]
        ),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=sd["attnpool.c_proj.weight"],
        out_proj_bias=sd["attnpool.c_proj.bias"],
        use_separate_proj_weight=True,
        training=False,
        need_weights=False,
    )
    return out  # [50, B, D]


def _reference_pool_surgery(sd, heads, x4):
    """Sam4AVS's lazily built surgery Attention: qkv = v_proj weights x3, v-v attention, c_proj."""
    t = _tokens_seq_first(sd, x4).transpose(0, 1)  # [B, N, C]
    b, n, c = t.shape
    w = torch.cat([sd["attnpool.v_proj.weight"]] * 3, 0)
    bias = torch.cat([sd["attnpool.v_proj.bias"]] * 3)
    qkv = (t @ w.T + bias).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    v = qkv[2]
    scores = (v @ v.transpose(-2, -1)) * (c // heads) ** -0.5
    out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
    return out @ sd["attnpool.c_proj.weight"].T + sd["attnpool.c_proj.bias"]  # [B, N, D]


def test_feature_shapes_and_strides(tiny_visual, tiny_features):
    w = tiny_visual.width
    expect = {
        "x1": (2, 4 * w, 56, 56),
        "x2": (2, 8 * w, 28, 28),
        "x3": (2, 16 * w, 14, 14),
        "x4": (2, 32 * w, 7, 7),
        "global": (2, 64),
        "dense": (2, 64, 7, 7),
        "surgery_global": (2, 64),
        "surgery_dense": (2, 64, 7, 7),
    }
    assert {k: tuple(v.shape) for k, v in tiny_features.items()} == expect


def test_trunk_matches_functional_reference(tiny_visual, images, tiny_features):
    sd = tiny_visual.state_dict()
    ref = _reference_trunk(sd, get_config("audioclip-tiny")["clip"]["vision_layers"], images)
    for name, r in zip(("x1", "x2", "x3", "x4"), ref, strict=True):
        torch.testing.assert_close(tiny_features[name], r, rtol=1e-4, atol=1e-5, msg=name)


def test_attention_pool_matches_references(tiny_visual, images, tiny_features):
    sd = tiny_visual.state_dict()
    heads = tiny_visual.attnpool.num_heads
    x4 = tiny_features["x4"]
    b = x4.shape[0]
    plain = _reference_pool_plain(sd, heads, x4)  # [50, B, D]
    torch.testing.assert_close(tiny_features["global"], plain[0], rtol=1e-4, atol=1e-5)
    dense_ref = plain[1:].permute(1, 2, 0).reshape(b, -1, 7, 7)
    torch.testing.assert_close(tiny_features["dense"], dense_ref, rtol=1e-4, atol=1e-5)
    # forward() (only the mean token as query) gives the same global embedding
    with torch.no_grad():
        torch.testing.assert_close(tiny_visual(images), plain[0], rtol=1e-4, atol=1e-5)
    surgery = _reference_pool_surgery(sd, heads, x4)  # [B, 50, D]
    torch.testing.assert_close(tiny_features["surgery_global"], surgery[:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        tiny_features["surgery_dense"],
        surgery[:, 1:].transpose(1, 2).reshape(b, -1, 7, 7),
        rtol=1e-4,
        atol=1e-5,
    )


def test_full_size_attention_pool_matches_references():
    """The official pool geometry (2048 wide, 32 heads of 64, 1024 out) on a random stride-32 map."""
    from models.clip_visual import AttentionPool2d

    torch.manual_seed(6)
    ap = AttentionPool2d(7, 2048, 32, 1024).eval()
    with torch.no_grad():
        for lin in (ap.q_proj, ap.k_proj, ap.v_proj):
            lin.weight.normal_(0, 2048**-0.5)
    x4 = 2.0 * torch.relu(torch.randn(2, 2048, 7, 7, generator=torch.Generator().manual_seed(7)))
    sd = {"attnpool." + k: v for k, v in ap.state_dict().items()}
    with torch.no_grad():
        got = ap.forward_all(x4)
        plain = _reference_pool_plain(sd, 32, x4)
        surgery = _reference_pool_surgery(sd, 32, x4)
        torch.testing.assert_close(ap(x4), plain[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["global"], plain[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        got["dense"], plain[1:].permute(1, 2, 0).reshape(2, 1024, 7, 7), rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(got["surgery_global"], surgery[:, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        got["surgery_dense"],
        surgery[:, 1:].transpose(1, 2).reshape(2, 1024, 7, 7),
        rtol=1e-4,
        atol=1e-4,
    )
    assert (got["surgery_global"] - got["global"]).abs().max() > 1e-2


def test_surgery_and_dense_differ_from_plain(tiny_features):
    f = tiny_features
    scale = f["global"].abs().max()
    assert (f["surgery_global"] - f["global"]).abs().max() > 0.02 * scale
    assert (f["surgery_dense"] - f["dense"]).abs().max() > 0.02 * scale
    # dense tokens are not just the global embedding broadcast
    assert (f["dense"] - f["global"][..., None, None]).abs().max() > 0.005 * scale


def test_dense_token_order_is_row_major(tiny_visual, tiny_features):
    """With v_proj = identity and large, distinct positional rows, v-v attention is the identity,
    so surgery_dense[:, :, i, j] must be c_proj(x4[:, :, i, j] + pos[1 + 7 i + j])."""
    ap = copy.deepcopy(tiny_visual.attnpool)
    c = ap.embed_dim
    with torch.no_grad():
        ap.positional_embedding.copy_(
            10.0 * torch.randn(50, c, generator=torch.Generator().manual_seed(4))
        )
        ap.v_proj.weight.copy_(torch.eye(c))
        ap.v_proj.bias.zero_()
        x4 = tiny_features["x4"]
        got = ap.forward_all(x4)["surgery_dense"]  # [B, D, 7, 7]
        pos = ap.positional_embedding[1:].T.reshape(1, c, 7, 7)  # row-major grid of positions
        expect = F.conv2d(x4 + pos, ap.c_proj.weight[:, :, None, None], ap.c_proj.bias)
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)
    # a column-major reading would not match
    assert (got - expect.transpose(2, 3)).abs().max() > 1.0


@pytest.mark.parametrize(
    "shape", [(1, 3, 256, 256), (1, 3, 224, 256), (1, 1, 224, 224), (3, 224, 224)]
)
def test_wrong_image_size_is_refused(tiny_visual, shape):
    with pytest.raises(ValueError, match=r"\[B, 3, 224, 224\]"):
        tiny_visual(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"\[B, 3, 224, 224\]"):
        tiny_visual.forward_features(torch.zeros(shape))


def test_integer_image_is_refused(tiny_visual):
    with pytest.raises(TypeError, match="floating"):
        tiny_visual(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))


# --------------------------------------------------------------------------------------------
# ONNX export


def test_onnx_export_tiny_parity(tiny_visual, tmp_path):
    import onnxruntime as ort

    from export.audioclip_image import OUTPUT_NAMES, export_audioclip_image

    res = export_audioclip_image(tiny_visual, tmp_path / "audioclip_image.onnx", atol=1e-4)
    assert res.inputs == [{"name": "image", "dtype": "float32", "shape": ["batch", 3, 224, 224]}]
    assert [o["name"] for o in res.outputs] == list(OUTPUT_NAMES)
    assert res.outputs[1]["shape"] == ["batch", 64, 7, 7]
    assert res.parity_max_abs_err <= 1e-4
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(11)
    for b in (1, 3):
        x = torch.randn(b, 3, 224, 224, generator=g)
        with torch.no_grad():
            f = tiny_visual.forward_features(x)
        got = dict(
            zip(OUTPUT_NAMES, sess.run(list(OUTPUT_NAMES), {"image": x.numpy()}), strict=True)
        )
        for name in OUTPUT_NAMES:
            err = float(np.abs(got[name] - f[name].numpy()).max())
            assert err <= 1e-4, (b, name, err)


@pytest.mark.slow
def test_onnx_export_full_size_parity(tmp_path):
    from export.audioclip_image import export_audioclip_image

    torch.manual_seed(0)
    visual = ModifiedResNet.from_config("audioclip").eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    res = export_audioclip_image(visual, tmp_path / "audioclip_image.onnx", atol=1e-4)
    assert res.outputs[0]["shape"] == ["batch", 1024]
    assert res.outputs[2]["shape"] == ["batch", 1024, 7, 7]
    print("full-size parity", res.parity_per_output)


# --------------------------------------------------------------------------------------------
# text tower


def _reference_text(sd: dict, heads: int, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP encode_text written out with explicit matmuls from the official key names."""
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"]  # [B, L, W]
    b, n, w = x.shape
    hd = w // heads
    mask = torch.triu(torch.full((n, n), float("-inf")), 1)
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (w,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).split(
            w, dim=-1
        )
        q, k, v = (t.reshape(b, n, heads, hd).transpose(1, 2) for t in (q, k, v))
        a = ((q @ k.transpose(-2, -1)) / hd**0.5 + mask).softmax(-1)
        o = (a @ v).transpose(1, 2).reshape(b, n, w)
        x = x + o @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (w,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (w,), sd["ln_final.weight"], sd["ln_final.bias"])
    eot = tokens.argmax(-1)
    return x[torch.arange(b), eot] @ sd["text_projection"]


@pytest.fixture(scope="module")
def tiny_text():
    torch.manual_seed(3)
    t = CLIPTextTower(
        embed_dim=16, context_length=77, vocab_size=600, width=32, heads=2, layers=2
    ).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines and biases
        for name, p in t.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return t


def _text_tokens(lengths, vocab=600, sot=598, eot=599, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(len(lengths), 77, dtype=torch.long)
    for i, n in enumerate(lengths):
        out[i, 0] = sot
        out[i, 1 : n + 1] = torch.randint(1, vocab - 2, (n,), generator=g)
        out[i, n + 1] = eot
    return out


def test_text_tower_matches_reference(tiny_text):
    tokens = _text_tokens([3, 10, 75])
    with torch.no_grad():
        got = tiny_text(tokens)
        ref = _reference_text(tiny_text.state_dict(), 2, tokens)
    assert got.shape == (3, 16)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_text_tower_is_causal_and_pools_at_eot(tiny_text):
    tokens = _text_tokens([4, 4])
    changed = tokens.clone()
    changed[1, 10:20] = 7  # after EOT: invisible under the causal mask
    with torch.no_grad():
        a, b = tiny_text(tokens), tiny_text(changed)
        torch.testing.assert_close(a, b)
        changed[1, 2] = 9  # before EOT: changes the embedding
        assert (tiny_text(changed)[1] - a[1]).abs().max() > 1e-4


def test_text_tower_rejects_bad_tokens(tiny_text):
    with pytest.raises(ValueError, match=r"\[B, 77\]"):
        tiny_text(torch.zeros(2, 76, dtype=torch.long))
    with pytest.raises(TypeError, match="int64"):
        tiny_text(torch.zeros(2, 77))
    with pytest.raises(ValueError, match=r"\[0, 600\)"):
        tiny_text(torch.full((1, 77), 600, dtype=torch.long))


# --------------------------------------------------------------------------------------------
# tokenizer: a tiny merges file (always) and the official vocab (when it can be found)

TINY_MERGES = ["d o", "do g</w>", "b a", "ba r", "bar k</w>", "c a", "ca t</w>", "a b", "b c</w>"]


@pytest.fixture(scope="module")
def tiny_vocab(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("vocab") / "tiny_vocab.txt.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write("\n".join(["#version: test", *TINY_MERGES]) + "\n")
    return p


def _byte_id(ch: str, end: bool = False) -> int:
    """Id of a printable-ASCII byte symbol: such bytes come first, in order, from '!' (33)."""
    return ord(ch) - 33 + (256 if end else 0)


def _merge_id(symbol: str) -> int:
    return 512 + ["".join(m.split()) for m in TINY_MERGES].index(symbol)


def test_tiny_vocab_layout(tiny_vocab):
    tok = ClipTokenizer(tiny_vocab)
    n = len(TINY_MERGES)
    assert tok.vocab_size == 512 + n + 2
    assert (tok.sot_token, tok.eot_token) == (512 + n, 513 + n)


def test_tiny_vocab_bpe_and_cleaning(tiny_vocab):
    tok = ClipTokenizer(tiny_vocab)
    expect = [_merge_id("dog</w>"), _byte_id(",", end=True), _merge_id("bark</w>")]
    assert tok.encode("dog, bark") == expect
    # lower-casing, whitespace collapsing, html unescaping
    assert tok.encode("  DOG,\n\t BaRk ") == expect
    assert tok.encode("dog &amp;amp; cat") == [
        _merge_id("dog</w>"),
        _byte_id("&", True),
        _merge_id("cat</w>"),
    ]
    # unknown words fall back to byte symbols; digits are split one by one
    assert tok.encode("xyz") == [_byte_id("x"), _byte_id("y"), _byte_id("z", True)]
    assert tok.encode("42") == [_byte_id("4", True), _byte_id("2", True)]
    # contractions are their own pieces
    assert tok.encode("dog's") == [_merge_id("dog</w>"), _byte_id("'"), _byte_id("s", True)]
    # the lowest-rank merge wins: "a b" (rank 7) before "b c</w>" (rank 8)
    assert tok.encode("abc") == [_merge_id("ab"), _byte_id("c", True)]
    # merges apply repeatedly, lowest rank first: ba (2), bar (3), then bc</w> (8)
    assert tok.encode("barbc") == [_merge_id("bar"), _merge_id("bc</w>")]
    # special tokens written in the text map to their ids
    assert tok.encode("<|endoftext|>") == [tok.eot_token]


def test_tiny_vocab_unicode_round_trip(tiny_vocab):
    tok = ClipTokenizer(tiny_vocab)
    text = "éü żółw 東京 😀"  # no letters of the tiny merges: bytes only
    ids = tok.encode(text)
    assert all(0 <= i < 512 for i in ids)
    assert tok.decode(ids).strip() == text


def test_tokenize_padding_and_truncation(tiny_vocab):
    tok = ClipTokenizer(tiny_vocab)
    out = tok(["dog, bark", ""])
    assert out.dtype == np.int64 and out.shape == (2, 77)
    assert out[0, :5].tolist() == [tok.sot_token, *tok.encode("dog, bark"), tok.eot_token]
    assert (out[0, 5:] == 0).all()
    assert out[1, :2].tolist() == [tok.sot_token, tok.eot_token] and (out[1, 2:] == 0).all()
    long = " ".join(["dog"] * 80)
    with pytest.raises(ValueError, match="truncate=True"):
        tok([long])
    cut = tok([long], truncate=True)
    assert cut[0, 0] == tok.sot_token and cut[0, -1] == tok.eot_token
    assert (cut[0, 1:-1] == _merge_id("dog</w>")).all()
    # exactly full: 75 words + SOT + EOT fit without truncation
    assert tok([" ".join(["dog"] * 75)])[0, -1] == tok.eot_token
    assert tok(["dog"], context_length=4).tolist() == [
        [tok.sot_token, _merge_id("dog</w>"), tok.eot_token, 0]
    ]
    # the module-level helper gives the same
    np.testing.assert_array_equal(tokenize(["dog, bark", ""], vocab_path=tiny_vocab), out)
    with pytest.raises(TypeError):
        tok([1, 2])


def test_find_vocab_locations(tiny_vocab, tmp_path, monkeypatch):
    monkeypatch.delenv(VOCAB_ENV, raising=False)
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    with pytest.raises(FileNotFoundError) as e:
        find_vocab()
    assert (
        VOCAB_ENV in str(e.value) and "open_clip" in str(e.value) and str(tmp_path) in str(e.value)
    )
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_vocab(tmp_path / "nowhere.txt.gz")
    # the layout of the open_clip_torch wheel
    (tmp_path / "open_clip").mkdir()
    wheel_copy = tmp_path / "open_clip" / VOCAB_NAME
    wheel_copy.write_bytes(tiny_vocab.read_bytes())
    assert find_vocab() == wheel_copy
    # the environment variable comes first (a file or a folder holding it)
    monkeypatch.setenv(VOCAB_ENV, str(tiny_vocab))
    assert find_vocab() == tiny_vocab
    assert find_vocab(wheel_copy.parent) == wheel_copy


def _real_vocab() -> Path | None:
    for cand in (os.environ.get(VOCAB_ENV), f"/tmp/clip_vocab/{VOCAB_NAME}"):
        if cand and Path(cand).is_file():
            return Path(cand)
    try:
        return find_vocab()
    except FileNotFoundError:
        return None


@pytest.mark.skipif(
    _real_vocab() is None, reason=f"official {VOCAB_NAME} not found (set ${VOCAB_ENV})"
)
def test_real_vocab_encoding():
    path = _real_vocab()
    assert sha256_file(path) == OFFICIAL_VOCAB_SHA256
    tok = ClipTokenizer(path)
    assert tok.vocab_size == 49408 and (tok.sot_token, tok.eot_token) == (49406, 49407)
    out = tok(["dog, bark", "cat"])
    # ids produced by OpenAI CLIP's SimpleTokenizer (checked against open_clip 3.3.0's copy)
    assert out[0, :6].tolist() == [49406, 1929, 267, 16560, 49407, 0]
    assert out[1, :4].tolist() == [49406, 2368, 49407, 0]
    assert tok.decode(tok.encode("Dog, BARK!")) == "dog , bark ! "
