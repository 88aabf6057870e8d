"""int8 graphs for a built bundle (onnxruntime.quantization), each gated by its agreement with fp32.

    python export/build_engines.py --int8 [--calib-frames DIR|FILES] [--calib-audio WAVS]
    python -m export.quantize BUNDLE [--calib-frames ...] [--calib-audio ...]   # an fp32 bundle, in place

Per graph (:data:`METHODS`): ``dynamic`` quantises the weights of MatMul nodes to int8 and their
activations at run time (DynamicQuantizeMatMul; the ViT of the SAM encoder is MatMul-bound);
``static`` writes QDQ nodes around Conv/MatMul/Gemm with activation ranges calibrated (MinMax) on the
calibration inputs (the AudioCLIP towers are convolution-bound, and onnxruntime's dynamic ConvInteger
is slower than fp32). Weights are int8 per output channel, activations uint8. The nodes in front of
a graph's first convolution (the audio front end: framing, window, filterbank, power, log) are
excluded and stay fp32/fp64.

Every quantised graph is then run beside its fp32 graph on the calibration inputs; the cosine of
each output (flattened per sample) and the max abs difference are recorded in the manifest as
``agreement``, and a graph whose minimum cosine is below ``min_cosine`` fails the build
(:class:`QuantizationError`). Nothing is swapped into the bundle unless every graph passes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from runtime.bundle import Bundle, file_entry, write_manifest  # noqa: E402
from runtime.bundle.contract import GRAPHS  # noqa: E402
from runtime.preprocess.audio import read_wav  # noqa: E402

log = logging.getLogger(__name__)

INT8_GRAPHS = ("sam_image_encoder", "audioclip_audio", "audioclip_image")
METHODS = {"sam_image_encoder": "dynamic", "audioclip_audio": "static", "audioclip_image": "static"}
DEFAULT_MIN_COSINE = 0.99
DEFAULT_CALIB_LIMIT = 8
DEFAULT_CALIB_DIR = Path("../shared/data/audioclip-demo")  # relative to the repository
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
QUANT_OPS = (
    "DynamicQuantizeLinear",
    "QuantizeLinear",
    "DequantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
    "QLinearMatMul",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
)


class QuantizationError(RuntimeError):
    """A graph could not be quantised, or its int8 form disagrees with fp32 beyond the gate."""


# --- calibration data -------------------------------------------------------------------------------


def _files(items: Sequence[str | Path] | None, suffixes: tuple[str, ...], what: str) -> list[Path]:
    out: list[Path] = []
    for item in items or ():
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in suffixes))
        elif p.is_file():
            out.append(p)
        else:
            raise QuantizationError(f"calibration {what} {p} is neither a file nor a folder")
    return out


def calibration_files(
    frames: Sequence[str | Path] | None = None,
    audio: Sequence[str | Path] | None = None,
    repo: str | Path | None = None,
) -> tuple[list[Path], list[Path]]:
    """Image files and WAV files to calibrate on: those given (files or folders), else the photos and WAVs
    of ``../shared/data/audioclip-demo`` beside the repository. QuantizationError if none are found."""
    default = (Path(repo) if repo else Path(__file__).resolve().parents[1]) / DEFAULT_CALIB_DIR
    if not frames:
        frames = [default.resolve()] if default.is_dir() else []
    if not audio:
        audio = [default.resolve()] if default.is_dir() else []
    imgs, wavs = _files(frames, IMAGE_SUFFIXES, "frames"), _files(audio, (".wav",), "audio")
    if not imgs or not wavs:
        raise QuantizationError(
            f"no calibration {'frames' if not imgs else 'audio'} found: give --calib-frames (images or a folder) "
            f"and --calib-audio (WAV files or a folder); the default {default.resolve()} is absent or empty"
        )
    return imgs, wavs


def _spread(items: list, limit: int) -> list:
    if len(items) <= limit:
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]


def calibration_feeds(
    bundle: Bundle,
    graph: str,
    frames: list[Path],
    wavs: list[Path],
    limit: int = DEFAULT_CALIB_LIMIT,
) -> tuple[list[dict[str, np.ndarray]], str]:
    """Up to ``limit`` single-sample input feeds of ``graph`` made with the runtime's own preprocessing
    (the bundle's constants, default preset), and a sentence saying what they are."""
    from runtime.pipeline import Pipeline

    pipe = Pipeline(bundle)
    (name,) = GRAPHS[graph].input_names
    if graph == "audioclip_image":
        from runtime.preprocess.image import load_frames

        fs = _spread(frames, limit)
        x = pipe.clip_images(load_frames(fs))
        what = f"{len(fs)} frames"
    elif graph in ("audioclip_audio", "audioclip_audio_1s"):
        rows = []
        for w in wavs:  # every 1-s chunk of every clip, AudioCLIP's tiling
            sig, sr = read_wav(w)
            n = max(1, int(sig.shape[0] // sr))
            rows.extend(pipe.audioclip_audio_input(w, None, n, graph=graph))
        rows = _spread(rows, limit)
        x = np.stack(rows)
        what = f"{len(rows)} 1-s chunks of {len(wavs)} WAVs"
    elif graph == "sam_image_encoder":
        from runtime.preprocess.image import load_frame
        from runtime.sam.predictor import preprocess

        s = bundle.section("sam")
        fs = _spread(frames, limit)
        x = np.concatenate(
            [
                preprocess(
                    load_frame(f),
                    s.image_size,
                    np.asarray(s.pixel_mean, np.float32),
                    np.asarray(s.pixel_std, np.float32),
                    patch_size=s.patch_size,
                )[0]
                for f in fs
            ]
        )
        what = f"{len(fs)} frames"
    else:
        raise QuantizationError(
            f"no calibration inputs for graph {graph!r}; int8 graphs: {list(INT8_GRAPHS)}"
        )
    src = sorted({str(p.parent) for p in (wavs if "audio" in graph else frames)})
    return [{name: x[i : i + 1]} for i in range(len(x))], f"{what} of {', '.join(src)}"


class _Reader:
    """onnxruntime CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


# --- quantisation ------------------------------------------------------------------------------------


def frontend_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that compute the input of the graph's first Conv (its in-graph preprocessing,
    e.g. the audio tower's framing, filterbank, power and log); empty when the first Conv reads a graph
    input. These nodes are excluded from quantisation."""
    producer = {o: n for n in model.graph.node for o in n.output}
    first = next((n for n in model.graph.node if n.op_type == "Conv"), None)
    if first is None:
        return []
    seen: dict[str, onnx.NodeProto] = {}
    todo = [first.input[0]]
    while todo:
        n = producer.get(todo.pop())
        if n is not None and n.name not in seen:
            seen[n.name] = n
            todo.extend(i for i in n.input if i)
    return [n.name for n in model.graph.node if n.name in seen]


def quantize_graph(
    src: Path, dst: Path, method: str, feeds: list[dict[str, np.ndarray]]
) -> dict[str, Any]:
    """Write the int8 form of ``src`` to ``dst`` (``method`` "dynamic" or "static"); returns what was done
    (for the manifest's ``quantization`` field)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    model = onnx.load(str(src), load_external_data=False)
    for n in model.graph.node:  # the quantiser skips nodes by name: every node needs one
        if not n.name:
            raise QuantizationError(
                f"{src.name}: a {n.op_type} node has no name; cannot exclude nodes by name"
            )
    keep = frontend_nodes(model)
    del model
    if method == "dynamic":
        ops = ["MatMul"]
        quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=ops,
            nodes_to_exclude=keep,
        )
    elif method == "static":
        ops = ["Conv", "MatMul", "Gemm"]
        quantize_static(
            src,
            dst,
            _Reader(feeds),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=ops,
            nodes_to_exclude=keep,
        )
    else:
        raise QuantizationError(
            f"unknown quantisation method {method!r}; use 'dynamic' or 'static'"
        )
    return {
        "method": method,
        "op_types": ops,
        "weights": "int8 per channel",
        "activations": "uint8",
        "calibration": "minmax" if method == "static" else "per call",
        "fp32_nodes": len(keep),
    }


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def agreement(fp32: Path, int8: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """How closely ``int8`` follows ``fp32`` on ``feeds``: ``cosine_min`` over samples and outputs (each output
    flattened per sample, float64), ``max_abs`` the largest absolute difference, ``per_output`` cosine minima."""
    a_s, b_s = _session(fp32), _session(int8)
    names = [o.name for o in a_s.get_outputs()]
    cos = {n: 1.0 for n in names}
    max_abs = 0.0
    for f in feeds:
        for n, a, b in zip(names, a_s.run(names, f), b_s.run(names, f), strict=True):
            a = a.reshape(a.shape[0], -1).astype(np.float64)
            b = b.reshape(b.shape[0], -1).astype(np.float64)
            if not np.all(np.isfinite(b)):
                cos[n] = -1.0
                max_abs = float("inf")
                continue
            den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            c = np.where(
                den > 0,
                (a * b).sum(1) / np.maximum(den, 1e-300),
                np.where(np.abs(a - b).max(1) == 0, 1, 0),
            )
            cos[n] = min(cos[n], float(c.min()))
            max_abs = max(max_abs, float(np.abs(a - b).max()))
    return {"cosine_min": min(cos.values()), "max_abs": max_abs, "per_output": cos}


def check_agreement(graph: str, agr: dict[str, Any], min_cosine: float) -> None:
    """Raise QuantizationError when ``agr["cosine_min"]`` is below ``min_cosine`` (or not finite)."""
    c = agr["cosine_min"]
    if not (np.isfinite(c) and np.isfinite(agr["max_abs"]) and c >= min_cosine):
        raise QuantizationError(
            f"{graph}: the int8 graph agrees with fp32 only to cosine {c:.5f} (gate {min_cosine}) on "
            f"{agr.get('inputs', 'the calibration inputs')} (per output {agr.get('per_output')}, max abs "
            f"{agr['max_abs']:.4g}); refused. Leave the graph in fp32 (--int8-graphs), calibrate on inputs like "
            "yours, or lower --int8-min-cosine knowingly"
        )


def quantize_bundle(
    root: str | Path,
    *,
    graphs: Sequence[str] | None = None,
    frames: Sequence[str | Path] | None = None,
    audio: Sequence[str | Path] | None = None,
    min_cosine: float = DEFAULT_MIN_COSINE,
    limit: int = DEFAULT_CALIB_LIMIT,
    methods: dict[str, str] | None = None,
) -> dict[str, dict]:
    """Quantise ``graphs`` (default: those of :data:`INT8_GRAPHS` the bundle holds) of the fp32 bundle at
    ``root`` in place: each is calibrated and gated, and only when all pass are the int8 files swapped
    in (fp32 files removed) and the manifest rewritten (``precision: "int8"``, ``agreement``,
    ``quantization``, ``fp32_sha256``). Returns graph -> agreement. QuantizationError on any failure,
    leaving the fp32 bundle as it was."""
    root = Path(root)
    bundle = Bundle.open(root)
    graphs = list(graphs) if graphs else [g for g in INT8_GRAPHS if bundle.has(g)]
    methods = {**METHODS, **(methods or {})}
    for g in graphs:
        if g not in METHODS:
            raise QuantizationError(
                f"graph {g!r} has no int8 path; int8 graphs: {list(INT8_GRAPHS)}"
            )
        if not bundle.has(g):
            raise QuantizationError(
                f"bundle {root} has no graph {g!r} to quantise (it has {sorted(bundle.graphs)})"
            )
        if bundle.graphs[g]["precision"] != "fp32":
            raise QuantizationError(
                f"graph {g!r} of {root} is {bundle.graphs[g]['precision']}, not fp32"
            )
    if not 0.0 < min_cosine <= 1.0:
        raise QuantizationError(f"min_cosine must be in (0, 1], got {min_cosine}")
    imgs, wavs = calibration_files(frames, audio)
    done: dict[str, tuple[Path, dict, dict]] = {}
    with tempfile.TemporaryDirectory(dir=root, prefix=".int8-") as tmp:
        for g in graphs:
            src = bundle.graph_path(g)
            feeds, what = calibration_feeds(bundle, g, imgs, wavs, limit)
            dst = Path(tmp) / f"{src.stem}.int8.onnx"
            log.info("int8 %s: %s quantisation on %s", g, methods[g], what)
            try:
                how = quantize_graph(src, dst, methods[g], feeds)
            except QuantizationError:
                raise
            except Exception as e:  # onnxruntime.quantization raises plain exceptions
                raise QuantizationError(f"{g}: {methods[g]} quantisation failed: {e}") from e
            agr = {**agreement(src, dst, feeds), "inputs": what}
            check_agreement(g, agr, min_cosine)
            log.info(
                "int8 %s: cosine >= %.5f, max abs %.4g vs fp32",
                g,
                agr["cosine_min"],
                agr["max_abs"],
            )
            done[g] = (dst, agr, {**how, "min_cosine": min_cosine})
        manifest = dict(bundle.manifest)
        manifest["graphs"] = {k: dict(v) for k, v in manifest["graphs"].items()}
        for g, (tmp_file, agr, how) in done.items():
            entry = manifest["graphs"][g]
            old = root / entry["file"]
            final = old.with_name(tmp_file.name)
            tmp_file.replace(final)
            entry.update(
                file_entry(root, final),
                precision="int8",
                agreement=agr,
                quantization=how,
                fp32_sha256=entry["sha256"],
            )
            for extra in entry.pop("extra_files", []):  # external weights of the fp32 graph
                (root / extra["file"]).unlink(missing_ok=True)
            if old != final:
                old.unlink()
    for k in ("schema", "schema_version"):
        manifest.pop(k, None)
    write_manifest(root, manifest)
    return {g: a for g, (_, a, _) in done.items()}


def add_cli_options(p: argparse.ArgumentParser) -> None:
    """The calibration and gate options (shared by build_engines.py --int8 and this module's CLI)."""
    p.add_argument(
        "--calib-frames",
        nargs="+",
        default=None,
        metavar="IMG|DIR",
        help="calibration images or folders (default: ../shared/data/audioclip-demo)",
    )
    p.add_argument(
        "--calib-audio",
        nargs="+",
        default=None,
        metavar="WAV|DIR",
        help="calibration WAV files or folders (default: ../shared/data/audioclip-demo)",
    )
    p.add_argument(
        "--calib-limit",
        type=int,
        default=DEFAULT_CALIB_LIMIT,
        help=f"at most this many calibration inputs per graph (default {DEFAULT_CALIB_LIMIT})",
    )
    p.add_argument(
        "--int8-graphs",
        default=None,
        help=f"comma-separated graphs to quantise (default: those of {','.join(INT8_GRAPHS)} the bundle holds)",
    )
    p.add_argument(
        "--int8-min-cosine",
        type=float,
        default=DEFAULT_MIN_COSINE,
        help=f"refuse an int8 graph whose output cosine vs fp32 falls below this (default {DEFAULT_MIN_COSINE})",
    )


def run_from_args(root: Path, args: argparse.Namespace) -> dict[str, dict]:
    """quantize_bundle with the options of :func:`add_cli_options`."""
    graphs = [g.strip() for g in (args.int8_graphs or "").split(",") if g.strip()] or None
    return quantize_bundle(
        root,
        graphs=graphs,
        frames=args.calib_frames,
        audio=args.calib_audio,
        min_cosine=args.int8_min_cosine,
        limit=args.calib_limit,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Quantise the graphs of an fp32 bundle to int8, in place."
    )
    p.add_argument("bundle", type=Path)
    add_cli_options(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        agr = run_from_args(args.bundle, args)
    except QuantizationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for g, a in agr.items():
        print(
            f"{g:<20} int8  cosine_min {a['cosine_min']:.5f}  max_abs {a['max_abs']:.4g}  ({a['inputs']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
