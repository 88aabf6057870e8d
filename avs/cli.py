"""``avs``: build bundles, run the demo, segment a clip, train, evaluate, benchmark.

Subcommands that need torch (build, train) import it only when they run; ``demo`` and ``segment``
use the torch-free runtime alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from avs.segment_cli import COMMANDS as SEGMENT_COMMANDS
from avs.segment_cli import add_parsers as add_segment_parsers


def modes_table(
    bundle_dir: str | Path,
    *,
    preset: str | None = None,
    providers: list[str] | None = None,
    check: bool = False,
) -> str:
    """The capability table of a bundle: every mode, its graphs (present or missing), its parameters with
    defaults and allowed values, the preset constants it honours, and each graph's execution provider
    (``check``: the provider a created session really got; else the first one it would be offered)."""
    import runtime
    from runtime.backends._onnxruntime import resolve_providers
    from runtime.modes import MODES

    pipe = runtime.load(bundle_dir, preset=preset, providers=providers)
    bundle = pipe.bundle
    offered = resolve_providers(providers)[0][0]
    rows = []
    for name, spec in MODES.items():
        ok = all(bundle.has(g) for g in spec.graphs)
        graphs = []
        for g in (*spec.graphs, *(g for g in spec.optional_graphs if bundle.has(g))):
            if not bundle.has(g):
                graphs.append(f"{g} (missing)")
                continue
            prov = offered
            if check and ok:
                pipe.session(g)
                prov = pipe.session_info[g].provider
            graphs.append(f"{g} [{prov.removesuffix('ExecutionProvider')}]")
        params = ", ".join(f"{p.name}={p.default!r} ({p.describe()})" for p in spec.params) or "-"
        rows.append(
            (
                name,
                "yes" if ok else "no",
                "; ".join(graphs),
                params,
                ", ".join(spec.presets) or "-",
                spec.doc,
            )
        )
    head = (
        "mode",
        "ready",
        "graphs [provider]",
        "parameters=default (allowed)",
        "presets honoured",
        "what it does",
    )
    widths = [max(len(r[i]) for r in (*rows, head)) for i in range(3)]
    lines = [
        f"bundle {bundle.root}: preset {pipe.preset.name} (presets: {', '.join(bundle.contract.presets)})"
        + ("  [RANDOM WEIGHTS]" if bundle.random_weights else ""),
        "  ".join(h.ljust(w) for h, w in zip(head[:3], widths, strict=True)).rstrip(),
    ]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)).rstrip())
        lines.append(f"    params: {r[3]}")
        lines.append(f"    presets: {r[4]}; {r[5]}")
    return "\n".join(lines)


def cmd_modes(args: argparse.Namespace) -> int:
    providers = [s for s in args.providers.split(",") if s] if args.providers else None
    print(modes_table(args.bundle, preset=args.preset, providers=providers, check=args.check))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        prog="avs",
        description="audio-visual segmentation: build bundles, segment, evaluate, benchmark",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser(
        "build",
        help="build a bundle (same flags as python export/build_engines.py)",
        add_help=False,
    )
    add_segment_parsers(sub)  # demo, segment (avs/segment_cli.py)
    mo = sub.add_parser(
        "modes",
        help="print the capability table of a bundle (modes, graphs, parameters, providers)",
    )
    mo.add_argument("--bundle", default="engines/default")
    mo.add_argument("--preset", default=None)
    mo.add_argument(
        "--providers", default=None, help="comma-separated, e.g. cuda,cpu (default: best available)"
    )
    mo.add_argument(
        "--check",
        action="store_true",
        help="create the sessions and report the provider each really got",
    )
    for name, helptext in (
        ("train", "train AC-FPN (python -m models.train_acfpn)"),
        ("eval", "evaluate a mode on AVSBench (python -m evaluation)"),
        ("bench", "run benchmarks (python -m benchmarks.run)"),
    ):
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

            train_main(rest)  # returns the run's summary (also written to --out), not an exit code
            return 0
        if argv[0] == "eval":
            from evaluation.cli import main as eval_main

            return eval_main(rest) or 0
        from benchmarks.run import main as bench_main

        return bench_main(rest) or 0
    args = p.parse_args(argv)
    try:
        return {**SEGMENT_COMMANDS, "modes": cmd_modes, **serve_cli.COMMANDS}[args.cmd](args)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # an AVSError carries a message meant for the user
        from runtime.errors import AVSError

        if isinstance(e, AVSError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
