"""Which precision a graph runs in on this CPU: flag detection, the choice, and the agreement gate.

Precisions (``runtime.load(..., precision=...)``):

* ``"fp32"``: today's exact path (onnxruntime's CPU kernels, or OpenVINO with
  ``INFERENCE_PRECISION_HINT=f32``). The ``sam4avs`` preset and every parity test use it.
* ``"bf16"``: OpenVINO only (onnxruntime has no bf16 compute on x86), and only where the CPU has
  AMX (``amx_bf16``) or AVX512_BF16 (``avx512_bf16``), read from ``/proc/cpuinfo``: elsewhere an
  explicit ``"bf16"`` is refused with a :class:`~runtime.errors.ProviderError` and ``"auto"`` stays
  fp32. The audio graphs (their front end: framing, STFT/filterbank, log) always stay fp32.
* ``"int8"``: the bundle's own int8 graphs (``build_engines.py --int8``, gated at build time);
  asking for int8 of a graph that the bundle holds in fp32 is refused.
* ``"auto"`` (the default): a graph stored in int8 runs in int8 (its build gate passed); on OpenVINO
  with an AMX CPU (``amx_bf16``), every graph but the audio graphs is tried in bf16 and kept in bf16
  only where its agreement gate passes, else fp32; everything else is fp32. A CPU with AVX512_BF16
  but no AMX stays fp32 under ``auto``: there OpenVINO's bf16 was measured slower than its fp32 (SAM
  vit_b encoder, quiet 2-core Xeon: 7.5-8.3 s vs 6.5-7.2 s per frame), so ``"bf16"`` must be asked
  for. With the ``sam4avs`` preset ``auto`` means fp32.

The gate (:func:`measure_agreement`, :class:`Gate`): the graph runs in fp32 and in the reduced
precision on calibration inputs (the shared real photos by default, see
:mod:`runtime.backends.calibration`); the minimum cosine of every float output (flattened per sample) and,
for SAM mask logits, the minimum IoU of the masks (logits > 0) must reach the gate's limits. The
verdict (:class:`Verdict`) is measured on first use of a graph on a machine and cached under the
key (graph sha256, precision, backend, CPU flags) in memory and, when the user names a folder, as
JSON there; it is reported in ``SegmentResult.agreement``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import InputError, ProviderError

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
BACKENDS = ("auto", "onnxruntime", "openvino")
# The flags a benchmark report records (and the ones the choice below reads).
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# The flags on which ``precision="auto"`` tries bf16: AMX only (module docstring).
AUTO_BF16_FLAGS = ("amx_bf16",)
# Graphs that never run below fp32: the audio front ends (framing, window, filterbank, log) are
# inside these graphs, and their float64/float32 arithmetic is the documented contract.
FP32_ONLY = frozenset({"audioclip_audio", "audioclip_audio_1s", "clap_audio", "acfpn_audio"})
# Outputs compared as masks (logits > 0) by the gate, besides their cosine.
MASK_OUTPUTS = frozenset({"low_res_masks", "logits"})


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as ``/proc/cpuinfo`` describes it: ``model`` (name string) and ``flags`` (lower case)."""

    model: str
    flags: frozenset[str]

    @property
    def bf16(self) -> bool:
        """True when the CPU has bf16 compute (AMX or AVX512_BF16)."""
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def auto_bf16(self) -> bool:
        """True when ``precision="auto"`` tries bf16 on this CPU (AMX: ``amx_bf16``)."""
        return any(f in self.flags for f in AUTO_BF16_FLAGS)

    @property
    def key(self) -> str:
        """Short id of the CPU's relevant flags (part of a gate verdict's cache key)."""
        return "+".join(f for f in REPORTED_FLAGS if f in self.flags) or "generic"

    def report(self) -> dict[str, Any]:
        """JSON-safe ``{"model", "flags": {flag: bool for REPORTED_FLAGS}}`` for benchmark reports."""
        return {"model": self.model, "flags": {f: f in self.flags for f in REPORTED_FLAGS}}


def parse_cpuinfo(text: str) -> CpuInfo:
    """A :class:`CpuInfo` from the text of a ``/proc/cpuinfo``-format file (first processor's entry).

    Missing fields give model ``"unknown"`` and no flags (a CPU that shows nothing gets the
    generic fp32 path).
    """
    if not isinstance(text, str):
        raise InputError(f"cpuinfo text must be a str, got {type(text).__name__}")
    model, flags = "unknown", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model == "unknown":
            model = value.strip() or "unknown"
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.lower().split())
    return CpuInfo(model, flags)


_cpu_lock = threading.Lock()
_cpu: CpuInfo | None = None


def cpu_info(cpuinfo_text: str | None = None) -> CpuInfo:
    """This machine's :class:`CpuInfo` (read once from ``/proc/cpuinfo``), or the one ``cpuinfo_text``
    describes (tests pass a fake CPU this way, never by changing the machine)."""
    global _cpu
    if cpuinfo_text is not None:
        return parse_cpuinfo(cpuinfo_text)
    with _cpu_lock:
        if _cpu is None:
            try:
                _cpu = parse_cpuinfo(CPUINFO.read_text())
            except OSError:
                _cpu = CpuInfo("unknown", frozenset())
        return _cpu


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` lower-cased if it is one of ``allowed``; else an InputError saying what is allowed."""
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        raise InputError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value.strip().lower()


@dataclass(frozen=True)
class Choice:
    """What a graph will run in: ``precision`` to try, and whether it must pass the gate first
    (``gated``: a reduced precision not measured at build time); ``reason`` says why."""

    precision: str
    gated: bool
    reason: str


def choose_precision(
    requested: str,
    *,
    graph: str,
    backend: str,
    stored: str = "fp32",
    cpu: CpuInfo | None = None,
    preset: str | None = None,
) -> Choice:
    """The precision ``graph`` gets (see the module docstring for the rules).

    requested: one of :data:`PRECISIONS`; backend: the backend that will run it ("onnxruntime" or
    "openvino"); stored: the precision the bundle holds the graph in ("fp32" or "int8");
    cpu: the CPU (default: this machine's, :func:`cpu_info`); preset: the active preset's name.
    A request that cannot be honoured raises :class:`~runtime.errors.ProviderError` with the reason.
    """
    requested = check_choice("precision", requested, PRECISIONS)
    cpu = cpu_info() if cpu is None else cpu
    if stored == "int8":
        if requested in ("auto", "int8"):
            return Choice(
                "int8", False, "the bundle holds this graph in int8 (gated at build time)"
            )
        raise ProviderError(
            f"graph {graph!r} is stored in int8 in this bundle; precision={requested!r} needs an "
            "fp32 bundle (build one without --int8)"
        )
    if stored != "fp32":
        raise ProviderError(
            f"graph {graph!r} is stored in {stored!r}; the runtime runs fp32 or int8"
        )
    if requested == "fp32":
        return Choice("fp32", False, "asked for")
    if requested == "int8":
        raise ProviderError(
            f"precision='int8' for graph {graph!r}: this bundle holds it in fp32; build the int8 "
            "graphs with `python export/build_engines.py --int8` (or `python -m export.quantize BUNDLE`)"
        )
    if requested == "bf16":
        if not cpu.bf16:
            raise ProviderError(
                f"precision='bf16' needs a CPU with AMX or AVX512_BF16 ({' or '.join(BF16_FLAGS)} in "
                f"/proc/cpuinfo); this CPU ({cpu.model}) has neither: use precision='auto' or 'fp32'"
            )
        if backend != "openvino":
            raise ProviderError(
                "precision='bf16' runs on the OpenVINO backend only (onnxruntime has no bf16 compute "
                "on x86 CPUs): use backend='openvino' or 'auto' with openvino installed"
            )
        if graph in FP32_ONLY:
            return Choice("fp32", False, "audio front end: always fp32")
        return Choice("bf16", True, "asked for, behind the agreement gate")
    # auto
    if preset == "sam4avs":
        return Choice("fp32", False, "the sam4avs preset runs fp32")
    if graph in FP32_ONLY:
        return Choice("fp32", False, "audio front end: always fp32")
    if backend != "openvino":
        return Choice("fp32", False, "onnxruntime: fp32 (no bf16 compute on x86)")
    if cpu.auto_bf16:
        return Choice("bf16", True, "CPU has AMX (amx_bf16)")
    if cpu.bf16:
        return Choice(
            "fp32",
            False,
            "CPU has AVX512_BF16 but no AMX: bf16 is slower than fp32 there (precision='bf16' tries it)",
        )
    return Choice("fp32", False, "CPU has no AMX/AVX512_BF16")


# --- the gate ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """Agreement a reduced precision must reach against fp32: ``min_cosine`` for every float output
    (flattened per sample), ``min_mask_iou`` for mask logits (``logits > 0`` IoU, per mask)."""

    min_cosine: float = 0.999
    min_mask_iou: float = 0.95

    def __post_init__(self) -> None:
        for name in ("min_cosine", "min_mask_iou"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not -1.0 <= v <= 1.0:
                raise InputError(f"gate {name} must be a number in [-1, 1], got {v!r}")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(a.shape[0] if a.ndim else 1, -1)
    b = np.asarray(b, np.float64).reshape(a.shape)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.einsum("ij,ij->i", a, b) / np.maximum(na * nb, 1e-300)
    both_zero = (na == 0) & (nb == 0)
    return np.where(both_zero, 1.0, cos)


def _mask_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = (np.asarray(a) > 0).reshape(-1, a.shape[-2] * a.shape[-1])
    b = (np.asarray(b) > 0).reshape(a.shape)
    inter = np.logical_and(a, b).sum(1)
    union = np.logical_or(a, b).sum(1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def agreement(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Agreement of ``candidate`` outputs with ``reference`` (fp32) outputs, name -> array each.

    Returns ``cosine_min`` (over float outputs and samples), ``max_abs`` and ``mask_iou_min``
    (over the :data:`MASK_OUTPUTS` present; 1.0 when none). Arrays must have equal shapes.
    """
    cos, mabs, ious = [], 0.0, []
    for name, ref in reference.items():
        if name not in candidate:
            raise InputError(f"candidate outputs lack {name!r}")
        ref, got = np.asarray(ref), np.asarray(candidate[name])
        if ref.shape != got.shape:
            raise InputError(f"output {name!r}: shapes differ, {ref.shape} vs {got.shape}")
        if ref.dtype.kind != "f" or ref.size == 0:
            continue
        cos.append(float(_cosines(ref, got).min()))
        mabs = max(mabs, float(np.max(np.abs(ref.astype(np.float64) - got))))
        if name in MASK_OUTPUTS and ref.ndim >= 3:
            ious.append(float(_mask_ious(ref, got).min()))
    return {
        "cosine_min": min(cos) if cos else 1.0,
        "max_abs": mabs,
        "mask_iou_min": min(ious) if ious else 1.0,
    }


@dataclass
class Verdict:
    """A gate's result for one graph in one reduced precision on one machine.

    ``passed``: the precision may be used; ``cosine_min``, ``max_abs``, ``mask_iou_min``: the
    measured agreement with fp32; ``inputs``: what it was measured on; ``cpu``: the CPU flag key;
    ``reason``: a sentence (why it failed, or the limits it met).
    """

    graph: str
    sha256: str
    precision: str
    backend: str
    cpu: str
    passed: bool
    cosine_min: float
    max_abs: float
    mask_iou_min: float
    inputs: str
    reason: str
    gate: dict[str, float] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """The fields SegmentResult.agreement carries (JSON-safe)."""
        return asdict(self)


def judge(agr: Mapping[str, float], gate: Gate) -> tuple[bool, str]:
    """Whether measured agreement ``agr`` (from :func:`agreement`) passes ``gate``, and why."""
    if not agr["cosine_min"] >= gate.min_cosine:
        return False, f"cosine {agr['cosine_min']:.6f} < {gate.min_cosine} vs fp32"
    if not agr["mask_iou_min"] >= gate.min_mask_iou:
        return False, f"mask IoU {agr['mask_iou_min']:.4f} < {gate.min_mask_iou} vs fp32"
    return (
        True,
        f"cosine {agr['cosine_min']:.6f} >= {gate.min_cosine}, mask IoU "
        f"{agr['mask_iou_min']:.4f} >= {gate.min_mask_iou}",
    )


def verdict_key(sha256: str, precision: str, backend: str, cpu: CpuInfo, gate: Gate) -> str:
    """Cache key of a verdict: graph sha256 + precision + backend + CPU flags + gate limits."""
    text = f"{sha256}|{precision}|{backend}|{cpu.key}|{gate.min_cosine}|{gate.min_mask_iou}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class VerdictCache:
    """Gate verdicts in memory, and as ``<folder>/gate-<key>.json`` when a folder is named."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._mem: dict[str, Verdict] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Verdict | None:
        """The verdict stored under ``key``, or None (a damaged file counts as none)."""
        with self._lock:
            if key in self._mem:
                return self._mem[key]
        if self.folder is None:
            return None
        path = self.folder / f"gate-{key}.json"
        try:
            v = Verdict(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        with self._lock:
            self._mem[key] = v
        return v

    def put(self, key: str, verdict: Verdict) -> None:
        """Store ``verdict`` (and write it to the folder, if any; a write failure is only logged)."""
        with self._lock:
            self._mem[key] = verdict
        if self.folder is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".gate-{key}.json.tmp"
            tmp.write_text(json.dumps(verdict.report(), indent=1))
            tmp.replace(self.folder / f"gate-{key}.json")
        except OSError as e:
            log.warning("could not write the gate verdict to %s: %s", self.folder, e)


_process_cache = VerdictCache()


def process_verdicts() -> VerdictCache:
    """The process-wide in-memory verdict cache (used when no folder is named)."""
    return _process_cache


def measure_agreement(
    run_fp32,
    run_reduced,
    feeds: Iterable[Mapping[str, np.ndarray]],
    output_names: Sequence[str],
) -> dict[str, float]:
    """Run both sessions (``run_x(output_names, feeds) -> list of arrays``) on every feed dict and
    return the worst :func:`agreement` over them."""
    worst = {"cosine_min": 1.0, "max_abs": 0.0, "mask_iou_min": 1.0}
    n = 0
    for f in feeds:
        ref = dict(zip(output_names, run_fp32(list(output_names), f), strict=True))
        got = dict(zip(output_names, run_reduced(list(output_names), f), strict=True))
        a = agreement(ref, got)
        worst = {
            "cosine_min": min(worst["cosine_min"], a["cosine_min"]),
            "max_abs": max(worst["max_abs"], a["max_abs"]),
            "mask_iou_min": min(worst["mask_iou_min"], a["mask_iou_min"]),
        }
        n += 1
    if n == 0:
        raise InputError("the gate needs at least one calibration input")
    return worst
