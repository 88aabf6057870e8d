"""Helpers of the server tests that also run inside .venv-triton (numpy<2, no pytest).

``python tests/helpers/serve.py BUNDLE OUT MODES_JSON`` runs the in-process runtime on :func:`clip` for
each ``{"mode": ..., "params": {...}}`` in MODES_JSON and writes ``OUT/<mode>.npz`` (``masks`` bool
[N, H, W]) and ``OUT/<mode>.json`` (``SegmentResult.info()``): the reference the served model is compared
with in the environment it runs in.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def clip(
    num_frames: int = 2, hw: tuple[int, int] = (48, 64), seconds: float | None = None, seed: int = 0
):
    """uint8 frames [N, H, W, 3] (random) and float32 16 kHz audio (a tone, ``seconds`` long, default N s)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (num_frames, *hw, 3), dtype=np.uint8)
    n = int(16000 * (num_frames if seconds is None else seconds))
    audio = (
        0.3 * np.sin(np.arange(n) * 2 * np.pi * 440 / 16000) + 0.01 * rng.normal(size=n)
    ).astype(np.float32)
    return frames, audio, 16000


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import runtime

    bundle, out, spec = Path(argv[0]), Path(argv[1]), json.loads(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    pipe = runtime.load(bundle, threads=1)
    frames, audio, rate = clip()
    for item in spec:
        res = pipe.segment(list(frames), audio, rate, mode=item["mode"], **item.get("params", {}))
        np.savez(out / f"{item['mode']}.npz", masks=np.stack(res.masks))
        (out / f"{item['mode']}.json").write_text(json.dumps(res.info()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
