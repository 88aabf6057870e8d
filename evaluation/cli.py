"""``avs eval`` (also ``python -m evaluation``): evaluate a runtime mode on AVSBench S4 / MS3.

    avs eval --bundle engines/official --data-root avsbench_data --kind s4 ms3 --mode acfpn --out results/eval_acfpn
    avs eval --bundle engines/official --data-root avsbench_data --kind s4 --mode heatmap --max-videos 20
    avs eval --server localhost:8001 --protocol grpc --concurrency 4 --data-root avsbench_data --mode point-dense

In-process with ``--bundle`` (the default ``engines/default``), or against a served pipeline with
``--server`` (``avs serve`` or a cluster; frames go as the dataset's PNG files, audio as its WAV file).
Writes into ``--out``: ``per_video_{kind}_{split}.jsonl`` (one JSON object per video: name, category,
miou, fscore, per-frame IoUs, timings), ``summary.json`` and ``summary.md``, and with ``--save-masks`` /
``--save-overlays`` the masks as PNGs and 50 % overlays. Random-weight bundles and partial runs are marked
loudly: their figures are not comparable with the paper.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from models import avsbench
from runtime.backends.options import add_execution_args, load_kwargs
from runtime.errors import AVSError, InputError
from runtime.modes.spec import parse_params

__all__ = ["main", "parse_args", "parse_kinds"]

IN_PROCESS_ONLY = ("bundle", "preset", "providers", "threads")
SERVED_ONLY = ("protocol", "concurrency", "timeout")


def parse_kinds(p: argparse.ArgumentParser, values: Sequence[str]) -> list[str]:
    """``--kind`` values (s4, ms3, both; comma-separated allowed) -> the kinds in order, once each."""
    kinds: list[str] = []
    for k in values:
        for part in k.lower().split(","):
            if part == "both":
                kinds += ["s4", "ms3"]
            elif part in avsbench.KINDS:
                kinds.append(part)
            elif part:
                p.error(f"--kind: expected s4, ms3 or both, got {part!r}")
    return list(dict.fromkeys(kinds))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="avs eval",
        description="Evaluate a runtime mode on AVSBench S4 / MS3 (mIoU, F-score), in-process "
        "(--bundle) or against a served pipeline (--server).",
    )
    p.add_argument("--bundle", default=None, help="bundle folder (default engines/default)")
    p.add_argument(
        "--server",
        default=None,
        help="host:port of a Triton server running the avs model (HTTP 8000 / gRPC 8001) "
        "instead of --bundle",
    )
    p.add_argument(
        "--data-root",
        default=os.environ.get("AVSBENCH_ROOT", "avsbench_data"),
        help="AVSBench folder holding Single-source/ and Multi-sources/ (default $AVSBENCH_ROOT or avsbench_data)",
    )
    p.add_argument(
        "--kind", nargs="+", default=["s4"], help="s4, ms3, both (or several): default s4"
    )
    p.add_argument(
        "--split", default="test", choices=avsbench.SPLITS, help="default test (the paper's)"
    )
    p.add_argument(
        "--mode",
        default=None,
        help="runtime mode (default: the bundle's / server's best; random-sam: the "
        "Random-SAM baseline), or the baseline full-mask (no bundle)",
    )
    p.add_argument("--preset", default=None, help="bundle preset (default / sam4avs)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="mode parameter, repeatable (value read as JSON; True/False/None; else a string)",
    )
    p.add_argument(
        "--max-videos",
        type=int,
        default=None,
        help="only the first N videos of each split (smoke runs)",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default results/eval/MODE, served-MODE)"
    )
    p.add_argument(
        "--save-masks",
        action="store_true",
        help="write the predicted masks as PNGs under OUT/masks/",
    )
    p.add_argument(
        "--save-overlays", action="store_true", help="write 50%% overlays under OUT/overlays/"
    )
    p.add_argument(
        "--providers", default=None, help="comma-separated execution providers, e.g. cuda,cpu"
    )
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument(
        "--protocol", default=None, choices=["http", "grpc"], help="with --server (default http)"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="with --server: requests in flight at once (default 4)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="with --server: seconds one request may take (default 600)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_execution_args(p)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of ``avs eval`` / ``python -m evaluation``; adds ``kinds`` (list) and
    ``params`` (dict, read by :func:`runtime.modes.spec.parse_params`). Exits 2 with a usage line on a
    bad option, as argparse does."""
    p = _parser()
    a = p.parse_args(argv)
    a.kinds = parse_kinds(p, a.kind)
    try:
        a.params = parse_params(a.param)
    except InputError as e:
        p.error(str(e))
    if a.max_videos is not None and a.max_videos < 1:
        p.error("--max-videos must be >= 1")
    if a.server is not None:
        given = [f"--{k}" for k in IN_PROCESS_ONLY if getattr(a, k) is not None]
        if given:
            p.error(f"{', '.join(given)}: in-process options; --server evaluates the served bundle")
        a.protocol = a.protocol or "http"
        a.concurrency = 4 if a.concurrency is None else a.concurrency
        a.timeout = 600.0 if a.timeout is None else a.timeout
        if a.concurrency < 1:
            p.error("--concurrency must be >= 1")
        if not a.timeout > 0:
            p.error("--timeout must be > 0")
    else:
        given = [f"--{k}" for k in SERVED_ONLY if getattr(a, k) is not None]
        if given:
            p.error(f"{', '.join(given)}: apply with --server only")
        a.bundle = a.bundle or "engines/default"
    return a


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; prints the Markdown summary. Returns 0, or 2 on a user error."""
    from evaluation.predictors import BASELINES
    from evaluation.run import evaluate, evaluate_served
    from evaluation.summary import RANDOM_WARNING, summary_markdown

    a = parse_args(argv)
    default = Path("results") / "eval"
    try:
        if a.server is not None:
            out = Path(a.out) if a.out else default / f"served-{a.mode or 'default-mode'}"
            summary = evaluate_served(
                a.server,
                a.data_root,
                protocol=a.protocol,
                kinds=a.kinds,
                split=a.split,
                mode=a.mode,
                params=a.params,
                out=out,
                max_videos=a.max_videos,
                save_masks=a.save_masks,
                save_overlays=a.save_overlays,
                concurrency=a.concurrency,
                timeout=a.timeout,
                progress=not a.quiet,
            )
            where = f"the server at {a.server}"
        else:
            providers = (
                [x.strip() for x in a.providers.split(",") if x.strip()] if a.providers else None
            )
            out = Path(a.out) if a.out else default / (a.mode or "default-mode")
            summary = evaluate(
                None if a.mode in BASELINES else a.bundle,
                a.data_root,
                kinds=a.kinds,
                split=a.split,
                mode=a.mode,
                preset=a.preset,
                params=a.params,
                out=out,
                max_videos=a.max_videos,
                save_masks=a.save_masks,
                save_overlays=a.save_overlays,
                providers=providers,
                threads=a.threads,
                progress=not a.quiet,
                execution=load_kwargs(a),
            )
            where = f"bundle {a.bundle}"
    except (FileNotFoundError, AVSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_markdown(summary))
    if summary["random_weights"]:
        bar = "!" * 78
        print(
            f"{bar}\n{RANDOM_WARNING}: {where} holds random weights; these figures mean nothing.\n{bar}",
            file=sys.stderr,
        )
    print(f"summary written to {out / 'summary.json'} and summary.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
