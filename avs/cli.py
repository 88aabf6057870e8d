"""``avs``: build bundles, run the demo, segment a clip, train, evaluate, benchmark.

Subcommands that need torch (build, train) import it only when they run; ``demo`` and ``segment``
use the torch-free runtime alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def demo_inputs(num_frames: int = 5, size: tuple[int, int] = (224, 224), seed: int = 0):
    """A generated clip: ``num_frames`` uint8 RGB frames [H, W, 3] with a moving disc, and 16 kHz audio.

    The audio is ``num_frames`` seconds of a 440 Hz tone with harmonics plus a little noise, float32
    in [-1, 1].
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for k in range(num_frames):
        img = np.zeros((h, w, 3), np.float32)
        img[..., 0] = 40 + 60 * xx / w
        img[..., 1] = 80 + 40 * yy / h
        img[..., 2] = 120
        cy, cx, r = h * 0.5, w * (0.3 + 0.1 * k), min(h, w) * 0.18
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[disc] = (230, 200, 40)
        img += rng.normal(0, 4, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    rate = 16000
    t = np.arange(num_frames * rate) / rate
    audio = sum(0.3 / n * np.sin(2 * np.pi * 440 * n * t) for n in (1, 2, 3)) + 0.01 * rng.normal(size=t.size)
    return frames, audio.astype(np.float32), rate


def cmd_demo(args: argparse.Namespace) -> int:
    import runtime

    frames, audio, rate = demo_inputs()
    pipe = runtime.load(args.bundle, preset=args.preset)
    res = pipe.segment(frames, audio, rate, mode=args.mode)
    print(f"demo: 5 generated 224x224 frames + 5 s of generated 16 kHz audio, bundle {args.bundle}")
    print(res.summary())
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    import runtime

    pipe = runtime.load(args.bundle, preset=args.preset)
    res = pipe.segment(args.frames, args.audio, mode=args.mode)
    print(res.summary())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(res.masks):
            Image.fromarray((m * 255).astype(np.uint8)).save(out / f"mask_{i + 1}.png")
        print(f"masks written to {out}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="avs", description="audio-visual segmentation: export, serve, evaluate")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build a bundle (same flags as python export/build_engines.py)", add_help=False)
    d = sub.add_parser("demo", help="segment a generated clip with a bundle and print a summary")
    d.add_argument("--bundle", default="engines/default")
    d.add_argument("--mode", default=None)
    d.add_argument("--preset", default=None)
    s = sub.add_parser("segment", help="segment frames (image files) with a WAV file")
    s.add_argument("--bundle", default="engines/default")
    s.add_argument("--frames", nargs="+", required=True, help="frame image files, in order")
    s.add_argument("--audio", required=True, help="WAV file; second k goes with frame k")
    s.add_argument("--mode", default=None)
    s.add_argument("--preset", default=None)
    s.add_argument("--out", default=None, help="folder for mask PNGs")
    for name, helptext in (("train", "train AC-FPN (python -m models.train_acfpn)"),
                           ("eval", "evaluate a mode on AVSBench (python -m benchmarks.evaluate)"),
                           ("bench", "run benchmarks (python -m benchmarks.run)")):
        sub.add_parser(name, help=helptext, add_help=False)
    from avs import serve_cli  # serve, triton-repo

    serve_cli.add_parsers(sub)
    if argv and argv[0] in ("build", "train", "eval", "bench"):
        rest = argv[1:]
        if argv[0] == "build":
            from export.build_engines import main as build_main

            return build_main(rest)
        if argv[0] == "train":
            from models.train_acfpn import main as train_main

            return train_main(rest) or 0
        if argv[0] == "eval":
            from benchmarks.evaluate import main as eval_main

            return eval_main(rest) or 0
        from benchmarks.run import main as bench_main

        return bench_main(rest) or 0
    args = p.parse_args(argv)
    try:
        return {"demo": cmd_demo, "segment": cmd_segment, **serve_cli.COMMANDS}[args.cmd](args)
    except Exception as e:  # an AVSError carries a message meant for the user
        from runtime.errors import AVSError

        if isinstance(e, AVSError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
