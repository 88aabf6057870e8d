"""``avs segment`` and ``avs demo``: segment a video (or frames + WAV) and write outputs people can use.

Hooked into ``avs.cli`` by :func:`add_parsers` and :data:`COMMANDS`. Uses the torch-free runtime only.
Errors the user can fix (bad input, bad bundle, unwritable output) surface as ``AVSError`` and are
printed by ``avs.cli.main`` as one ``error: ...`` line with exit code 2; they are all checked before
any inference starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from runtime.backends.options import add_execution_args, load_kwargs

# The demo's mode: "heatmap" (zero-shot, AudioCLIP only). On random weights it still marks a visible,
# smooth region: the heatmap is min-max normalised per frame, so "> 0.5" always selects the part of the
# frame most similar to the sound under the current weights. The SAM modes on random weights return a
# fine texture over the whole frame (the random decoder), which shows nothing; they are also ~10x slower
# on a CPU (SAM vit_b encoder ~7 s per frame).
DEMO_MODE = "heatmap"
DEMO_SECONDS = 6
DEMO_FPS = 4  # frames segmented per second of the demo video (sampling "fps")


def add_parsers(sub) -> None:
    """Add the ``demo`` and ``segment`` subcommands to an argparse subparsers object."""
    d = sub.add_parser(
        "demo", help="segment a generated video with sound; writes an overlay MP4 and a figure"
    )
    d.add_argument("--bundle", default="engines/default")
    d.add_argument("--mode", default=DEMO_MODE, help=f"segmentation mode (default {DEMO_MODE})")
    d.add_argument("--preset", default=None)
    d.add_argument(
        "--out", default="results/demo", help="folder for the generated video and the outputs"
    )
    d.add_argument(
        "--seconds",
        type=int,
        default=DEMO_SECONDS,
        help="length of the generated video (one frame segmented per second)",
    )
    d.add_argument("--no-progress", action="store_true")
    add_execution_args(d)
    s = sub.add_parser(
        "segment",
        help="segment a video file (or frame images with a WAV file)",
        description="Segment the sounding object in a video: avs segment --video in.mp4 --out out/",
    )
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--video", help="video file with an audio track (MP4, MKV, WebM, ... anything PyAV reads)"
    )
    src.add_argument("--frames", nargs="+", help="frame image files, in order (with --audio)")
    s.add_argument(
        "--audio",
        default=None,
        help="WAV file: second k goes with frame k (with --frames); "
        "with --video it is used instead of the file's audio track (required when the file has none)",
    )
    s.add_argument("--bundle", default="engines/default")
    s.add_argument(
        "--mode", default=None, help="segmentation mode (default: the best the bundle supports)"
    )
    s.add_argument(
        "--preset", default=None, help="preset: default, or sam4avs (the reference's quirks)"
    )
    s.add_argument(
        "--param",
        action="append",
        metavar="K=V",
        help="mode parameter, repeatable (value read as JSON; True/False/None; else a string)",
    )
    s.add_argument("--out", default=None, help="output folder (required with --video)")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="reuse a non-empty --out, replacing an earlier run's outputs",
    )
    s.add_argument(
        "--sampling",
        choices=("avsbench", "fps"),
        default="avsbench",
        help="avsbench: one frame per second as AVSBench (default); fps: every frame or --fps per second",
    )
    s.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frames per second to segment with --sampling fps (default: all)",
    )
    s.add_argument("--start", type=float, default=0.0, help="start time in seconds")
    s.add_argument(
        "--duration", type=float, default=None, help="seconds to segment (default: to the end)"
    )
    s.add_argument(
        "--window-seconds",
        type=float,
        default=4.0,
        help="seconds of video decoded and segmented at a time",
    )
    s.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    s.add_argument("--no-masks", action="store_true", help="do not write masks/*.png")
    s.add_argument("--no-jsonl", action="store_true", help="do not write segments.jsonl")
    s.add_argument("--no-figure", action="store_true", help="do not write figure.png")
    s.add_argument(
        "--json", action="store_true", help="print a JSON summary on stdout instead of text"
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_execution_args(s)


class _Bar:
    """A tqdm progress bar (frames done / total, ETA) on stderr, fed by the library's callback."""

    def __init__(self, enabled: bool, desc: str):
        self.enabled, self.desc, self.bar, self.done = enabled, desc, None, 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm comes with the video extra; without it, no bar
                self.enabled = False
                return
            self.bar = tqdm(
                total=total, desc=self.desc, unit="frame", file=sys.stderr, dynamic_ncols=True
            )
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _wrap_os_errors(fn, *a, **kw):
    from runtime.errors import AVSError
    from runtime.media.outputs import OutputError

    try:
        return fn(*a, **kw)
    except AVSError:
        raise
    except OSError as e:
        raise OutputError(f"cannot write outputs: {e}") from e


def _run_video(pipe, args, params: dict[str, Any], *, progress: bool) -> dict[str, Any]:
    from runtime.media.outputs import segment_video_to_folder

    bar = _Bar(progress, "segmenting")
    try:
        return _wrap_os_errors(
            segment_video_to_folder,
            pipe,
            args.video,
            args.out,
            mode=args.mode,
            sampling=args.sampling,
            fps=args.fps,
            start=args.start,
            duration=args.duration,
            audio=args.audio,
            overwrite=args.overwrite,
            overlay=not args.no_overlay,
            masks=not args.no_masks,
            jsonl=not args.no_jsonl,
            figure_png=not args.no_figure,
            window_seconds=args.window_seconds,
            progress=bar,
            **params,
        )
    finally:
        bar.close()


def _describe(summary: dict[str, Any]) -> str:
    lines = [
        f"segmented {summary['samples']} frames of {summary['video']}",
        f"  mode {summary['mode']}, sampling {summary['sampling']}, {summary['seconds']:.1f} s"
        + ("  [RANDOM WEIGHTS: masks are meaningless]" if summary.get("random_weights") else ""),
    ]
    for key, what in (
        ("overlay", "overlay video (mask tinted, prompts drawn, original audio)"),
        ("figure", "figure of one frame (prompts, heatmap, mask)"),
        ("masks", "mask PNGs (255 = sounding object)"),
        ("jsonl", "JSON lines (COCO RLE masks, scores, prompts, timings)"),
    ):
        if key in summary["files"]:
            lines.append(f"  {summary['files'][key]}: {what}")
    return "\n".join(lines)


def cmd_segment(args: argparse.Namespace) -> int:
    import runtime
    from runtime.errors import InputError
    from runtime.modes.spec import parse_params

    params = parse_params(args.param)
    if args.video:
        if not args.out:
            raise InputError(
                "--out is required with --video (a folder for the overlay, masks and JSON lines)"
            )
        if args.sampling != "fps" and args.fps is not None:
            raise InputError("--fps applies to --sampling fps")
        pipe = runtime.load(args.bundle, preset=args.preset, **load_kwargs(args))
        summary = _run_video(pipe, args, params, progress=not (args.no_progress or args.json))
        print(json.dumps(summary, indent=2) if args.json else _describe(summary))
        return 0
    if not args.audio:
        raise InputError("--frames needs --audio (a WAV file; second k goes with frame k)")
    pipe = runtime.load(args.bundle, preset=args.preset, **load_kwargs(args))
    if args.out:
        from runtime.media.outputs import prepare_output_dir

        prepare_output_dir(args.out, overwrite=args.overwrite)  # checked before inference
    res = pipe.segment(args.frames, args.audio, mode=args.mode, **params)
    print(json.dumps(res.info()) if args.json else res.summary())
    if args.out:
        import numpy as np

        from runtime.media.outputs import save_png_atomic

        out = Path(args.out)
        for i, m in enumerate(res.masks):
            _wrap_os_errors(save_png_atomic, out / f"mask_{i + 1}.png", m.astype(np.uint8) * 255)
        if not args.json:
            print(f"masks written to {out}/")
    return 0


# --- demo ----------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    import runtime
    from runtime.errors import InputError
    from runtime.media.demo import demo_video

    if args.seconds < 1 or args.seconds > 60:
        raise InputError(f"--seconds must be in [1, 60], got {args.seconds}")
    out = Path(args.out)
    t0 = time.perf_counter()
    pipe = runtime.load(args.bundle, preset=args.preset, **load_kwargs(args))
    out.mkdir(parents=True, exist_ok=True)
    src = _wrap_os_errors(demo_video, out / "demo_input.mp4", seconds=args.seconds)
    print(
        f"demo: wrote a generated {args.seconds}-s video with sound (moving disc and square, pulsing "
        f"440 Hz tone): {src}"
    )
    ns = argparse.Namespace(
        video=str(src),
        out=str(out / "result"),
        mode=args.mode,
        sampling="fps",
        fps=DEMO_FPS,
        start=0.0,
        duration=None,
        audio=None,
        overwrite=True,
        no_overlay=False,
        no_masks=False,
        no_jsonl=False,
        no_figure=False,
        window_seconds=4.0,
    )
    summary = _run_video(pipe, ns, {}, progress=not args.no_progress)
    print(_describe(summary))
    rnd = summary.get("random_weights")
    print(f"""
What you see (mode {summary["mode"]}, {DEMO_FPS} frames segmented per second, overlay at {DEMO_FPS} fps):
  * overlay.mp4: each segmented frame with its mask tinted magenta and outlined; where the mode
    prompts SAM, its prompts are drawn (yellow box; green/red dots = foreground/background points);
    where it scores with a map (heatmap mode), the map is the inset at the top right (blue = low,
    red = high); the generated tone is muxed back as the audio track.
  * figure.png: one frame in panels: the frame (with prompts, if any), AudioCLIP's audio-image
    heatmap (how similar each region of the frame is to the sound), and the mask.""")
    if rnd:
        print("""  * This bundle was built with RANDOM WEIGHTS (no checkpoint files were given to the build): the
    heatmap, the box and the mask show the machinery working, not a meaningful segmentation. Build with
    --checkpoints DIR holding the official weight files for real results (README).""")
    print(f"demo took {time.perf_counter() - t0:.1f} s")
    return 0


COMMANDS = {"demo": cmd_demo, "segment": cmd_segment}
