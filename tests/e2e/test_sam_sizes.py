"""SAM vit_l and vit_h end to end (slow: full-size builds, random weights; ``-m slow``).

Each builds the SAM graphs at that size with ``export/build_engines.py`` (parity against
segment-anything's own ImageEncoderViT / MaskDecoder recorded in the manifest; vit_h's encoder is over
the protobuf limit, so it is written with ONNX external data and loaded from checked bytes), then
segments one frame in point-dense and No-Prompt. Peak RSS and times are printed (the benchmark
``benchmarks/bench_sam_sizes.py`` records them). ``AVS_SAM_SIZES_DIR``: reuse bundles built there
(the benchmark's ``--work``), else they are built in a temporary folder (vit_h: ~2.6 GB, ~12 GB RAM).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.bench_sam_sizes import one_size


@pytest.mark.slow
@pytest.mark.parametrize("size", ["vit_l", "vit_h"])
def test_full_size_sam_builds_and_segments_one_frame(size, tmp_path):
    env = os.environ.get("AVS_SAM_SIZES_DIR")
    work = Path(env) if env else tmp_path
    row = one_size(size, work, reuse=bool(env), threads=0)
    print(json.dumps(row, indent=1))
    assert row["build"]["rc"] == 0, row.get("error")
    manifest = json.loads((work / size / "manifest.json").read_text())
    assert manifest["weights"]["sam"]["source"] == "random-init"
    assert manifest["preprocessing"]["sam"]["config"].endswith(size.split("_")[1])
    for g, err in row["parity_max_abs_err"].items():  # checked against segment-anything at build
        assert 0 <= err <= 1e-3, (g, err)
    if size == "vit_h":  # over 1.5 GB: external data, listed with its checksum
        assert row["external_data"]["sam_image_encoder"] == ["sam_image_encoder.onnx.data"]
    run = row["run"]
    assert run["rc"] == 0, run.get("error")
    for mode in ("point-dense", "no-prompt"):
        m = run["modes"][mode]
        assert m["mask_shape"] == [480, 640] and m["mask_dtype"] == "bool", mode
        assert m["random_weights"] is True
    assert run["peak_rss_mb"] > 0 and row["build"]["peak_rss_mb"] > 0
