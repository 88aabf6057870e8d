"""One implementation of each thing (issue 16 item 5): the shared resamplers, audio round trip,
sha256 helper, preset table and model registries, each checked against an independent reference
(torch, laion-clap's formula, hashlib, the manifest contract)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from runtime.preprocess.resize import linear_taps, nearest_exact, nearest_indices  # noqa: E402
from runtime.sam.predictor import postprocess_masks  # noqa: E402

# size pairs: up, down, odd ratios, 1 px, and 7 -> 3 / 3 -> 7 (scale products near integers)
SIZES = [(7, 3), (3, 7), (1, 5), (5, 1), (224, 720), (720, 224), (224, 1080), (256, 1500), (17, 17)]


def _torch_nearest_exact(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(a.astype(np.float32))[None, None]
    return F.interpolate(t, size=hw, mode="nearest-exact")[0, 0].numpy()


@pytest.mark.parametrize(("h", "oh"), SIZES)
def test_nearest_exact_matches_torch_on_every_pixel(h, oh):
    rng = np.random.default_rng(h * 1000 + oh)
    w, ow = (oh, h) if h != oh else (h, oh)  # the other axis resampled the other way
    a = rng.random((h, w)).astype(np.float32)
    got = nearest_exact(a, (oh, ow))
    assert got.dtype == np.float32 and got.shape == (oh, ow)
    np.testing.assert_array_equal(got, _torch_nearest_exact(a, (oh, ow)))
    mask = a > 0.5
    out = nearest_exact(mask, (oh, ow))
    assert out.dtype == bool
    np.testing.assert_array_equal(out, _torch_nearest_exact(mask, (oh, ow)) > 0.5)


def test_nearest_indices_differ_from_a_float64_computation_where_torch_does():
    """The float32 product is what torch uses; a float64 one picks another pixel for some sizes."""
    found = []
    for h in range(1, 200):
        for oh in (224, 240, 360, 480, 720, 1080):
            ref = _torch_nearest_exact(np.arange(h, dtype=np.float32)[:, None], (oh, 1))[:, 0]
            np.testing.assert_array_equal(nearest_indices(h, oh), ref.astype(np.int64))
            f64 = np.minimum(((np.arange(oh) + 0.5) * h / oh).astype(np.int64), h - 1)
            if not np.array_equal(f64, ref):
                found.append((h, oh))
    # plain IEEE arithmetic (no CPU-dependent kernel): 112 -> 1080 is one size where they part
    assert (112, 1080) in found, found


def test_nearest_exact_keeps_leading_axes_and_refuses_bad_input():
    a = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5).astype(np.uint8)
    out = nearest_exact(a, (8, 10))
    assert out.shape == (2, 3, 8, 10) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1, 2], nearest_exact(a[1, 2], (8, 10)))
    assert nearest_exact(a, (4, 5)) is a
    with pytest.raises(ValueError, match=r"\[\.\.\., h, w\]"):
        nearest_exact(np.zeros(3), (2, 2))
    with pytest.raises(ValueError, match=">= 1"):
        nearest_exact(np.zeros((3, 3)), (0, 2))


@pytest.mark.parametrize(
    ("n", "m"), [(256, 1024), (1024, 720), (180, 1080), (64, 2250), (5, 5), (1, 4)]
)
def test_linear_taps_match_torch_bilinear(n, m):
    """The taps as a matrix (one-hot inputs through torch) equal torch's weights to float32 rounding."""
    i0, i1, lam0, lam1 = linear_taps(n, m)
    assert i0.dtype == np.int64 and lam0.dtype == np.float64
    assert (0 <= i0).all() and (i0 <= i1).all() and (i1 <= n - 1).all()
    ours = np.zeros((m, n))
    np.add.at(ours, (np.arange(m), i0), lam0)
    np.add.at(ours, (np.arange(m), i1), lam1)
    eye = torch.eye(n, dtype=torch.float32)[:, None, :, None]  # n one-hot columns [n, 1, n, 1]
    ref = F.interpolate(eye, size=(m, 1), mode="bilinear", align_corners=False)[:, 0, :, 0].T
    np.testing.assert_allclose(ours, ref.numpy(), rtol=0, atol=1e-7)


def test_sam_postprocess_uses_the_shared_taps():
    """SAM's mask upscaling (built on linear_taps) still equals Sam.postprocess_masks' torch ops."""
    rng = np.random.default_rng(0)
    low = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    s, input_hw, orig_hw = 256, (144, 256), (270, 480)
    t = F.interpolate(torch.from_numpy(low), (s, s), mode="bilinear", align_corners=False)
    t = t[..., : input_hw[0], : input_hw[1]]
    t = F.interpolate(t, orig_hw, mode="bilinear", align_corners=False)
    got = postprocess_masks(low, input_hw, orig_hw, s)
    np.testing.assert_allclose(got, t.numpy(), rtol=0, atol=2e-5)


# --- the int16 audio round trip -------------------------------------------------------------------


def _laion_clap_round_trip():
    """laion-clap's own ``float32_to_int16`` / ``int16_to_float32`` (training/data.py), taken from
    its source without importing the package (its __init__ needs the hub and training code)."""
    import ast
    import importlib.metadata
    from pathlib import Path

    try:  # by its distribution: models.clap may have put a stub of the package in sys.modules
        root = Path(str(importlib.metadata.distribution("laion-clap").locate_file("laion_clap")))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("laion-clap is not installed (pip install --no-deps laion-clap)")
    src = root / "training" / "data.py"
    if not src.is_file():
        pytest.skip(f"laion-clap's {src} is missing")
    tree = ast.parse(src.read_text())
    keep = [
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and n.name in ("float32_to_int16", "int16_to_float32")
    ]
    assert len(keep) == 2, f"{src} no longer defines float32_to_int16 / int16_to_float32"
    ns = {"np": np}
    exec(compile(ast.Module(keep, []), str(src), "exec"), ns)
    return lambda x: ns["int16_to_float32"](ns["float32_to_int16"](x))


def test_int16_round_trip_is_laion_claps():
    from runtime.preprocess.audio import int16_round_trip

    ref = _laion_clap_round_trip()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(200_000) * 0.4).astype(np.float32)  # some beyond [-1, 1]
    # samples right at the float32 rounding edge of x 32767: k / 32767 and its neighbours
    k = np.arange(-32767, 32768, 97, dtype=np.float64)
    edge = np.concatenate([k / 32767, np.nextafter(k / 32767, 2), np.nextafter(k / 32767, -2)])
    for a in (x, x.reshape(4, -1), edge.astype(np.float32), edge, x.astype(np.float64)):
        got = int16_round_trip(a)
        assert got.dtype == np.float32 and got.shape == a.shape
        np.testing.assert_array_equal(got, ref(a))
    assert int16_round_trip(np.array([2.0, -3.0, 0.0], np.float32)).tolist() == [1.0, -1.0, 0.0]


def test_int16_round_trip_refuses_ints():
    from runtime.errors import InputError
    from runtime.preprocess.audio import int16_round_trip

    with pytest.raises(InputError, match="float32/float64"):
        int16_round_trip(np.zeros(4, np.int16))


# --- sha256: one helper per layer -------------------------------------------------------------------


def test_one_file_sha256_per_layer(tmp_path):
    """runtime.bundle.sha256_file (runtime) and models.checkpoints.sha256_file (models, export) are
    the only file hashers; both equal hashlib's digest of the whole file across chunk borders."""
    import hashlib
    import re
    from pathlib import Path

    from models.checkpoints import sha256_file as models_sha
    from runtime.bundle import sha256_file as runtime_sha

    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert runtime_sha(p) == want and models_sha(p) == want
    assert runtime_sha(p, chunk=1000) == want
    repo = Path(__file__).resolve().parents[2]
    file_hashers = {}
    for layer in ("runtime", "models", "export"):
        for f in sorted((repo / layer).rglob("*.py")):
            text = f.read_text()
            # a file hasher: a sha256 object updated block by block
            if re.search(r"hashlib\.sha256\(\)", text) and ".update(" in text:
                file_hashers.setdefault(layer, []).append(str(f.relative_to(repo)))
    assert file_hashers == {
        # the file hasher, and the two readers that hash the very bytes they return as they read
        # them (no second read between check and use): bundle/verified.py, safefiles.py
        "runtime": [
            "runtime/bundle/__init__.py",
            "runtime/bundle/verified.py",
            "runtime/safefiles.py",
        ],
        "models": ["models/checkpoints.py"],
    }, file_hashers


# --- presets: one table (the bundle contract) ---------------------------------------------------------


def test_presets_come_from_the_contract_table():
    """export writes BUILTIN_PRESETS as they are, and the contract reads each back unchanged."""
    from export.graph_builders import BuildContext
    from runtime.bundle.contract import BUILTIN_PRESETS, PRESET_CONSTANTS, PRESET_NAMES, _preset
    from runtime.preprocess.audio import INT16_SCALE

    assert PRESET_NAMES == ("default", "sam4avs")
    written = BuildContext.presets(None)  # uses nothing of the build context
    assert set(written) == set(PRESET_NAMES)
    for name, p in BUILTIN_PRESETS.items():
        assert set(written[name]) == set(PRESET_CONSTANTS)
        assert _preset("test", name, written[name]) == p
    assert BUILTIN_PRESETS["default"].audio_input_scale == INT16_SCALE == 32768.0
    # a bundle written before zero_shot_quirks/short_clip existed gets the table's values
    old = {
        k: written["sam4avs"][k]
        for k in ("audio_input_scale", "heatmap_reverse", "image_antialias")
    }
    assert _preset("test", "sam4avs", old) == BUILTIN_PRESETS["sam4avs"]


def test_no_other_file_spells_the_preset_constants():
    """Outside the contract (and the independent reference/), no module of models/ or export/
    writes a preset's constants: they read runtime.bundle.contract.BUILTIN_PRESETS."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    offenders = []
    for layer in ("models", "export"):
        for f in sorted((repo / layer).rglob("*.py")):
            text = f.read_text()
            if '"heatmap_reverse":' in text or "reverse_heatmap" in text or "AUDIO_PRESETS" in text:
                offenders.append(str(f.relative_to(repo)))
    assert offenders == [], offenders


# --- model registries: one style --------------------------------------------------------------------


def test_every_model_family_has_the_same_registry():
    """AudioCLIP, SAM, CLAP and GroundingDINO: a dict of named configs + get_config/list_configs,
    copies handed out, unknown names refused with the known ones listed."""
    import models.clap as clap
    import models.grounding_dino as gdino
    import models.registry as audioclip
    import models.sam as sam
    from models.registry import ConfigRegistry, UnknownConfigError

    families = {
        audioclip: (audioclip.AUDIOCLIP, audioclip.AUDIOCLIP_CONFIGS, "audioclip-tiny"),
        sam: (sam.SAM, sam.SAM_CONFIGS, "micro"),
        clap: (clap.CLAP, clap.CLAP_CONFIGS, "HTSAT-tiny"),
        gdino: (gdino.GROUNDING_DINO, gdino.GDINO_CONFIGS, "test-tiny"),
    }
    for mod, (reg, table, small) in families.items():
        assert isinstance(reg, ConfigRegistry) and reg.configs is table
        assert mod.list_configs() == sorted(table)
        cfg = mod.get_config(small)
        for k, v in table[small].items():
            assert cfg[k] == v
        cfg["mutated"] = True
        assert "mutated" not in mod.get_config(small)
        for err in (KeyError, ValueError):
            with pytest.raises(err, match=small):  # the message lists the known names
                mod.get_config("no-such-config")
    # SAM keeps its alias and derived fields, and the name the tests use
    assert sam.get_config("default")["name"] == "vit_h"
    assert sam.get_sam_config("micro")["embedding_size"] == 256 // 16
    with pytest.raises(UnknownConfigError, match="default"):
        sam.get_config("vit_x")
    with pytest.raises(ValueError, match="names no configuration"):
        ConfigRegistry("X", {"a": {}}, {"b": "c"})
