"""``avs eval --server URL [--concurrency N]``: AVSBench evaluation against a served pipeline.

The clips of a split go to a Triton server running the ``avs`` model (``avs serve`` or a cluster) from
``--concurrency`` client threads; the masks come back and are scored here with the same metrics, the same
summary and the same table as the in-process evaluation (``benchmarks.evaluate``). Frames are sent as the
dataset's PNG files (``frames_encoded``) and audio as its WAV file (``audio_encoded``), so the server sees
exactly the bytes an in-process run reads.

``acfpn`` is scored on its logits in-process; the wire contract carries masks only, so it is refused
here (evaluate it with ``avs eval --bundle``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import evaluate as ev
from models import avsbench
from runtime.errors import AVSError, InputError
from runtime.metrics import MetricAccumulator, frame_miou, miou_terms


def wants_server(argv: Sequence[str] | None) -> bool:
    """True when the ``avs eval`` arguments ask for a server (``--server``)."""
    args = sys.argv[1:] if argv is None else argv
    return any(a == "--server" or a.startswith("--server=") for a in args)


def _param_names(mode: str) -> set[str]:
    from runtime.modes import MODES

    if mode not in MODES:
        return set()
    return set(MODES[mode].defaults)


class _Clients:
    """One TritonClient per worker thread."""

    def __init__(self, url: str, protocol: str, timeout: float):
        self.url, self.protocol, self.timeout = url, protocol, timeout
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()

    def get(self):
        c = getattr(self._local, "client", None)
        if c is None:
            from runtime.serving.client import TritonClient

            c = self._local.client = TritonClient(self.url, self.protocol, timeout=self.timeout)
            with self._lock:
                self._all.append(c)
        return c

    def close(self) -> None:
        for c in self._all:
            c.close()


def evaluate_served(
    url: str,
    data_root: str | Path,
    *,
    protocol: str = "http",
    kinds: Sequence[str] = ("s4",),
    split: str = "test",
    mode: str | None = None,
    params: dict[str, Any] | None = None,
    out: str | Path | None = None,
    max_videos: int | None = None,
    concurrency: int = 4,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Evaluate the served pipeline at ``url`` on AVSBench; returns the summary (as ``ev.evaluate``).

    ``concurrency``: requests in flight at once (one client thread each). ``mode``: default = the
    server's default mode (asked with the first clip). Other arguments as :func:`benchmarks.evaluate.evaluate`.
    """
    kinds = ev.check_kinds_split(kinds, split)
    if not isinstance(concurrency, int) or concurrency < 1:
        raise InputError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if mode in ev.BASELINES:
        raise InputError(f"baseline {mode!r} needs no server; run it without --server")
    if mode in ev.LOGIT_MODES:
        raise InputError(
            f"mode {mode!r} is scored on its logits, which the served model does not return "
            "(its wire contract carries masks); evaluate it in-process with --bundle"
        )
    params = dict(params or {})
    clients = _Clients(url, protocol, timeout)
    served: dict[str, Any] = {"random_weights": None, "preset": None, "mode": mode}
    lock = threading.Lock()

    def predict(rec, kind_params):
        t0 = time.perf_counter()
        res = clients.get().segment(
            [str(p) for p in rec.frames], str(rec.wav), mode=served["mode"], **kind_params
        )
        wall = (time.perf_counter() - t0) * 1000.0
        with lock:
            served["random_weights"] = bool(served["random_weights"]) or res.random_weights
            served["preset"] = res.preset
        return res, wall

    out_dir = Path(out) if out is not None else None
    results: dict[str, Any] = {}
    try:
        if (
            served["mode"] is None
        ):  # the server's default: ask with the first clip of the first kind
            rec = avsbench.index_split(data_root, kinds[0], split, check_files=True)[0]
            served["mode"] = predict(rec, params)[0].mode
            if served["mode"] in ev.LOGIT_MODES:
                raise InputError(
                    f"the server's default mode is {served['mode']!r}, scored on logits that it does "
                    "not return; pass --mode, or evaluate it in-process with --bundle"
                )
        mode = served["mode"]
        per_kind = "dataset" in _param_names(mode) and "dataset" not in params
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for kind in kinds:
                kind_params = {**params, "dataset": kind} if per_kind else params
                results[kind] = _split(
                    pool, predict, data_root, kind, split, kind_params, out_dir, max_videos
                )
    finally:
        clients.close()

    return ev.finish_summary(
        bundle=f"served at {protocol}://{url}",
        out_dir=out_dir,
        results=results,
        split=split,
        mode=mode,
        preset=served["preset"],
        params=params,
        per_kind=per_kind,
        random_weights=bool(served["random_weights"]),
        random_detail="the served bundle was built from random weights",
        scored_on="binary {0,1} masks",
        method=ev.paper_method(mode, None),
        data_root=data_root,
        extra={
            "server": {"url": url, "protocol": protocol, "concurrency": concurrency},
            "bundle_profile": None,
            "weights": None,
        },
    )


def _split(pool, predict, data_root, kind, split, params, out_dir, max_videos) -> dict[str, Any]:
    """One split: requests from ``pool`` (in flight together), metrics in the split's order."""
    records = avsbench.index_split(data_root, kind, split, check_files=True)
    if not records:
        raise InputError(
            f"AVSBench {kind.upper()} split {split!r} under {data_root} holds no videos"
        )
    total = len(records)
    records = records[:max_videos] if max_videos else records
    acc = MetricAccumulator()
    timing_sums: dict[str, float] = {}
    providers: dict[str, str] = {}
    fh = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        fh = open(out_dir / f"per_video_{kind}_{split}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
    try:
        for rec, (res, wall) in zip(
            records, pool.map(lambda r: predict(r, params), records), strict=True
        ):
            gts = np.stack([avsbench.load_mask(p, kind) for p in rec.masks])
            picked = [res.masks[k - 1].astype(np.float32) for k in rec.mask_frames]
            pred = np.stack([ev._to_shape(m, tuple(gts.shape[1:]), True) for m in picked]).astype(
                np.float32
            )
            r = acc.update(pred, gts, rec.name)
            timings = {**res.timings, "wall": wall}
            for k, v in timings.items():
                timing_sums[k] = timing_sums.get(k, 0.0) + float(v)
            providers.update(res.providers)
            if fh is not None:
                fh.write(
                    json.dumps(
                        {
                            "kind": kind,
                            "split": split,
                            "name": rec.name,
                            "category": rec.category,
                            "miou": r.miou,
                            "fscore": r.fscore,
                            "frames": r.frames,
                            "empty_gt_frames": r.empty_gt_frames,
                            "mask_frames": list(rec.mask_frames),
                            "frame_miou": [float(x) for x in frame_miou(pred, gts)],
                            "frame_iou_avsbench": [float(x) for x in miou_terms(pred, gts)],
                            "mask_coverage": [float(m.mean()) for m in res.masks],
                            "timings_ms": {k: round(float(v), 3) for k, v in timings.items()},
                        }
                    )
                    + "\n"
                )
    finally:
        if fh is not None:
            fh.close()
    s = acc.summary()
    n = max(acc.count, 1)
    return {
        "kind": kind,
        "split": split,
        "params": dict(params),
        "videos": acc.count,
        "videos_in_split": total,
        "complete": acc.count == total,
        "frames": s["frames"],
        "empty_gt_frames": s["empty_gt_frames"],
        "miou": s["miou"],
        "fscore": s["fscore"],
        "timings_ms": {k: v / n for k, v in timing_sums.items()},
        "providers": providers,
        "resized_to_gt": False,
        "per_video_file": None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``avs eval --server URL ...``; prints the Markdown summary. Returns 0, or 2 on a user error."""
    p = argparse.ArgumentParser(prog="avs eval --server", description=__doc__.split("\n")[0])
    p.add_argument(
        "--server", required=True, help="host:port of the Triton server (HTTP 8000 / gRPC 8001)"
    )
    p.add_argument("--protocol", default="http", choices=["http", "grpc"])
    p.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight at once (default 4)"
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take")
    p.add_argument("--data-root", default=os.environ.get("AVSBENCH_ROOT", "avsbench_data"))
    p.add_argument("--kind", nargs="+", default=["s4"])
    p.add_argument("--split", default="test", choices=avsbench.SPLITS)
    p.add_argument("--mode", default=None)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--max-videos", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    kinds = ev.parse_kinds(p, a.kind)
    if a.max_videos is not None and a.max_videos < 1:
        p.error("--max-videos must be >= 1")
    params = ev.parse_params(p, a.param)
    out = Path(a.out) if a.out else Path("results") / "eval" / f"served-{a.mode or 'default-mode'}"
    try:
        summary = evaluate_served(
            a.server,
            a.data_root,
            protocol=a.protocol,
            kinds=kinds,
            split=a.split,
            mode=a.mode,
            params=params,
            out=out,
            max_videos=a.max_videos,
            concurrency=a.concurrency,
            timeout=a.timeout,
        )
    except (FileNotFoundError, AVSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(ev.summary_markdown(summary))
    print(f"summary written to {out / 'summary.json'} and summary.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
