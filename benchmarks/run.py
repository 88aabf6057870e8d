"""``avs bench`` / ``python -m benchmarks.run``: the benchmarks of a bundle in one sitting.

Runs, on one bundle and in this order, the AudioCLIP graph benchmark (``bench_audioclip``), AC-FPN
(``bench_acfpn``) and the zero-shot SAM modes (``bench_zero_shot``), each reference vs runtime in the
same run, and writes their JSON + markdown reports under ``--out`` plus ``summary.md`` linking them.
Suites whose graphs the bundle lacks are skipped with a note. ``--quick`` uses fewer repeats and runs
No-Prompt on one frame. Box-Prompt needs tokenizer files: run ``python -m benchmarks.bench_box``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

SUITES = ("audioclip", "acfpn", "zero-shot")
_NEEDS = {
    "audioclip": ("audioclip_audio", "audioclip_image"),
    "acfpn": ("audioclip_audio", "acfpn"),
    "zero-shot": ("audioclip_audio", "audioclip_image", "sam_image_encoder", "sam_prompt_decoder"),
}


def _suite(name: str, bundle: Path, out: Path, threads: int, quick: bool) -> Callable[[], object]:
    if name == "audioclip":
        from benchmarks.bench_audioclip import run
        return lambda: run(bundle, out, threads=threads, repeats=2 if quick else 7, batches=(1,) if quick else (1, 5))
    if name == "acfpn":
        from benchmarks.bench_acfpn import run
        return lambda: run(bundle, out, threads=threads, repeats=2 if quick else 5, warmup=1)
    from benchmarks.bench_zero_shot import run
    return lambda: run(bundle, out, threads=threads, repeats=1 if quick else 3,
                       np_frames=1 if quick else 5, sam_batch=1)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry; returns the exit code (2 for a bad bundle or option)."""
    p = argparse.ArgumentParser(prog="avs bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path("engines/default"), help="bundle folder (default engines/default)")
    p.add_argument("--out", type=Path, default=Path("results"), help="folder for the reports (default results/)")
    p.add_argument("--only", default=",".join(SUITES), help=f"comma-separated suites of {SUITES}")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--quick", action="store_true", help="fewer repeats, No-Prompt on one frame")
    args = p.parse_args(argv)
    from runtime.bundle import Bundle
    from runtime.errors import AVSError

    suites = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in suites if s not in SUITES]
    if bad:
        print(f"error: unknown suites {bad}; choose from {list(SUITES)}", file=sys.stderr)
        return 2
    try:
        bundle = Bundle.open(args.bundle)
    except AVSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Benchmarks of {args.bundle}", ""]
    for name in suites:
        missing = [g for g in _NEEDS[name] if not bundle.has(g)]
        if missing:
            print(f"[{name}] skipped: the bundle lacks {missing}")
            lines.append(f"- {name}: skipped (bundle lacks {missing})")
            continue
        print(f"[{name}] running ...", flush=True)
        t0 = time.perf_counter()
        _suite(name, args.bundle, args.out, args.threads, args.quick)()
        lines.append(f"- {name}: done in {time.perf_counter() - t0:.0f} s (reports in {args.out})")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
