"""``avs bench`` / ``python -m benchmarks.run``: every mode at full size in one sitting, reference vs runtime.

    python -m benchmarks.run --bundle engines/default --out results/bench --quick
    python -m benchmarks.run --bundle B --int8-bundle B8 --out results/bench        # 3 repeats, No-Prompt on 5 frames
    python -m benchmarks.run --bundle B --only point-global,no-prompt --plan         # print the plan and stop

One clip: five real photos of ``../shared/data/audioclip-demo`` squashed to 224 x 224 (AVSBench's
size) and a real WAV of it. Cases, in this order: ``audioclip`` (the two AudioCLIP graphs on the
clip's preprocessed inputs, batch 5), ``acfpn``, ``point-global``, ``point-local``, ``point-dense``,
``heatmap-box``, ``no-prompt`` (SAM's AMG defaults) and ``no-prompt-audio`` (No-Prompt with
``grid="audio"``, run only when the runtime's ``no-prompt`` mode declares a ``grid`` parameter; its
speed-up is against the full-grid reference, its agreement against both full-grid runs). Sides:
``reference`` (the PyTorch pipelines of ``reference/``, the original control flow), ``fp32`` (the
runtime on ``--bundle``) and ``int8`` (the runtime on ``--int8-bundle``), same weights and inputs.

Each (mode, side) runs in a fresh process (``benchmarks.run_case``), so its peak RSS is that
process's own (VmHWM at its end: models, sessions and runs included), recorded beside its times;
``os.wait4``'s ``ru_maxrss`` is kept too, though on Linux it also counts this parent's RSS at exec.
Outputs travel through npz files in a temporary folder (no pickle). The runtime's embedding cache
is off (``cache_mb=0``) so that every repeat does the whole work, as the reference does. Written under ``--out``: ``bench.json`` (everything: a ``benchmarks.report.Report`` plus plan, cases,
command), ``bench.md`` (tables ready for the README) and ``bench.png`` (latency per mode, split by
stage). Modes whose graphs a bundle lacks are skipped with a note. Box-Prompt needs tokenizer files
and stays in ``python -m benchmarks.bench_box``.

``--quick`` (1 run per case, no warm-up, No-Prompt on one frame) is sized to finish within 15 minutes
on the project's 2-core machine at vit_b; the plan printed first gives the estimate per case.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.sides import SIDE_EXECUTION, SIDE_LABEL, SIDES

REPO = Path(__file__).resolve().parents[1]
DEMO = Path(os.environ.get("AVS_SHARED_DATA", REPO.parent / "shared" / "data")) / "audioclip-demo"
PHOTOS = ("cat_1.jpg", "cars_2.jpg", "clock_1.jpg", "coughing_1.jpg", "lightning_1.jpg")
WAV = "cat_3-95694-A-5.wav"

MODES = (
    "audioclip",
    "acfpn",
    "point-global",
    "point-local",
    "point-dense",
    "heatmap-box",
    "no-prompt",
    "no-prompt-audio",
)
ALIASES = {"zero-shot": MODES[2:], "points": MODES[2:6], "encoders": ("audioclip",)}
SIDE_SCALE = {
    "reference-bf16": 0.5,
    "openvino-fp32": 0.9,
    "openvino-bf16": 0.6,
    "openvino-best": 0.6,
}  # guesses
GROUPS = {
    "audioclip": "AudioCLIP graphs (batch 5)",
    "acfpn": "AC-FPN (5 frames)",
    "point-global": "Zero-shot prompt modes (5 frames)",
    "point-local": "Zero-shot prompt modes (5 frames)",
    "point-dense": "Zero-shot prompt modes (5 frames)",
    "heatmap-box": "Zero-shot prompt modes (5 frames)",
    "no-prompt": "No-Prompt",
    "no-prompt-audio": "No-Prompt",
}
BASE = {
    "no-prompt-audio": "no-prompt"
}  # the mode whose reference (and fp32) a case is compared with

# Seconds per timed run on the project's 2-core machine (issue 9 and README measurements): per clip
# for audioclip / acfpn, per frame for the SAM modes; "load": process start + models / sessions.
COSTS = {
    "full": {
        "load": {"reference": 10.0, "runtime": 3.0},
        "audioclip": {"reference": 8.5, "runtime": 1.7},
        "acfpn": {"reference": 2.8, "runtime": 1.4},
        "point": {"reference": 12.0, "runtime": 7.5},
        "no-prompt": {"reference": 180.0, "runtime": 60.0},
        "no-prompt-audio": {"runtime": 15.0},
    },
    "tiny": {
        "load": {"reference": 5.0, "runtime": 1.0},
        "audioclip": {"reference": 2.0, "runtime": 0.6},
        "acfpn": {"reference": 4.0, "runtime": 0.7},
        "point": {"reference": 1.0, "runtime": 0.25},
        "no-prompt": {"reference": 20.0, "runtime": 8.0},
        "no-prompt-audio": {"runtime": 2.0},
    },
}
SAM_SCALE = {"vit_b": 1.0, "vit_l": 2.6, "vit_h": 5.1}  # encoder cost relative to vit_b
INT8_SCALE = 0.6  # a guess until measured
# --quick with a time budget drops these cases first, in this order, while the plan's estimate exceeds it
OVERHEAD_S = 30.0  # matmul peak, FLOP counts, inputs: outside the cases
TRIM_ORDER = (
    *(f"{m}/{side}" for side in ("reference-bf16", "openvino-fp32") for m in MODES[3:6]),
    "acfpn/reference-bf16",
    "heatmap-box/int8",
    "point-local/int8",
    "point-dense/int8",
    "no-prompt-audio/int8",
)


@dataclass
class Case:
    """One (mode, side) of the plan."""

    mode: str
    side: str
    bundle: str
    frames: int
    repeats: int
    warmup: int
    preset: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    est_s: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.side}"


@dataclass
class Plan:
    cases: list[Case]
    notes: list[str]

    @property
    def total_s(self) -> float:
        return sum(c.est_s for c in self.cases)


def parse_only(text: str) -> list[str]:
    """Mode names from a comma-separated list (aliases expanded, order of :data:`MODES`); ValueError otherwise."""
    want: set[str] = set()
    for w in (s.strip() for s in text.split(",")):
        if not w:
            continue
        if w in ALIASES:
            want.update(ALIASES[w])
        elif w in MODES:
            want.add(w)
        else:
            raise ValueError(
                f"unknown mode {w!r} in --only; choose from {list(MODES)} or {sorted(ALIASES)}"
            )
    if not want:
        raise ValueError("--only names no mode")
    return [m for m in MODES if m in want]


def _needs(mode: str) -> tuple[str, ...]:
    from runtime.modes import MODES as TABLE

    if mode == "audioclip":
        return ("audioclip_audio", "audioclip_image")
    return TABLE[BASE.get(mode, mode)].graphs


def grid_param() -> bool:
    """Whether the runtime's no-prompt mode takes ``grid="audio"`` (read from its mode table)."""
    from runtime.modes import MODES as TABLE

    p = {q.name: q for q in TABLE["no-prompt"].params}.get("grid")
    return p is not None and (not p.choices or "audio" in p.choices)


def cost_profile(manifest: dict) -> tuple[str, float]:
    """("full" | "tiny", SAM cost factor) of a bundle manifest, for the estimates."""
    w = manifest.get("weights", {})
    sam = (w.get("sam") or {}).get("config", "vit_b")
    if sam == "micro" or (w.get("audioclip") or {}).get("config", "").endswith("tiny"):
        return "tiny", 1.0
    return "full", SAM_SCALE.get(sam, 1.0)


def estimate(
    mode: str, side: str, frames: int, repeats: int, warmup: int, profile: str, sam_factor: float
) -> float:
    """Estimated wall seconds of one case: load + (warm-up + repeats) runs."""
    c = COSTS[profile]
    kind = "reference" if side.startswith("reference") else "runtime"
    if mode in ("audioclip", "acfpn"):
        per, factor = c[mode][kind], 1.0
    else:
        per = c["point" if mode.startswith(("point", "heatmap")) else mode][kind] * frames
        factor = sam_factor
    if side == "int8":
        per *= INT8_SCALE
    per *= SIDE_SCALE.get(side, 1.0)
    load = c["load"][kind] * (
        3.0 if side in ("openvino-best", "openvino-bf16") else 1.0
    )  # + the gates on first use
    return load + (repeats + warmup) * per * factor


def build_plan(
    bundle,
    int8_bundle,
    modes: list[str],
    *,
    quick: bool,
    repeats: int | None = None,
    warmup: int | None = None,
    np_frames: int | None = None,
    sides=SIDES,
    have_reference: bool = True,
) -> Plan:
    """The cases to run (skipped ones as notes). ``bundle`` / ``int8_bundle``: runtime.bundle.Bundle or None."""
    notes: list[str] = []
    cases: list[Case] = []
    profile, factor = cost_profile(bundle.manifest)
    reps = repeats if repeats is not None else (1 if quick else 3)
    warm = warmup if warmup is not None else (0 if quick else 1)
    npf = np_frames if np_frames is not None else (1 if quick else 5)
    np_preset = "sam4avs" if bundle.has("audioclip_audio_1s") else "default"
    if "reference" in sides and not have_reference:
        notes.append(
            "reference side skipped: torch / segment_anything / librosa not importable here"
        )
    from runtime.backends import _openvino as openvino_backend
    from runtime.backends.precision import cpu_info

    if not openvino_backend.available():
        dropped = [s for s in sides if s.startswith("openvino")]
        if dropped:
            notes.append(f"sides {dropped} skipped: openvino is not installed")
        sides = [s for s in sides if not s.startswith("openvino")]
    else:
        cpu = cpu_info()
        if "openvino-bf16" in sides and not cpu.bf16:
            notes.append("openvino-bf16 not run: the CPU has no AMX/AVX512_BF16")
            sides = [s for s in sides if s != "openvino-bf16"]
        if "openvino-best" in sides and not cpu.auto_bf16:
            notes.append(
                "openvino-best (precision='auto') equals openvino-fp32 here: auto tries bf16 on AMX "
                "CPUs only, and this one has no amx_bf16 (not run)"
            )
            sides = [s for s in sides if s != "openvino-best"]
    for mode in modes:
        if mode == "no-prompt-audio" and not grid_param():
            notes.append(
                "no-prompt-audio skipped: the runtime's no-prompt mode has no grid='audio' parameter"
            )
            continue
        missing = [g for g in _needs(mode) if not bundle.has(g)]
        if missing:
            notes.append(f"{mode} skipped: bundle {bundle.root} lacks {missing}")
            continue
        base = BASE.get(mode, mode)
        frames = npf if base == "no-prompt" else 5
        preset = {"acfpn": None, "audioclip": None, "no-prompt": np_preset}.get(base, "sam4avs")
        params = {"grid": "audio"} if mode == "no-prompt-audio" else {}
        r, w = (1, 0) if base == "no-prompt" and repeats is None else (reps, warm)
        for side in sides:
            if side.startswith("reference") and (not have_reference or mode != base):
                continue
            b = bundle
            if side == "int8":
                if int8_bundle is None:
                    continue
                b = int8_bundle
                lack = [g for g in _needs(mode) if not b.has(g)]
                if preset == "sam4avs" and base == "no-prompt" and not b.has("audioclip_audio_1s"):
                    lack.append("audioclip_audio_1s")
                if lack:
                    notes.append(f"{mode} int8 skipped: bundle {b.root} lacks {lack}")
                    continue
            cases.append(
                Case(
                    mode,
                    side,
                    str(b.root),
                    frames,
                    r,
                    w,
                    preset,
                    params,
                    estimate(mode, side, frames, r, w, profile, factor),
                )
            )
    return Plan(cases, notes)


def fit_budget(plan: Plan, budget_s: float) -> Plan:
    """Drop the cases of :data:`TRIM_ORDER` (in order) while the estimate (+ :data:`OVERHEAD_S`) exceeds
    ``budget_s``; notes say which."""
    cases = list(plan.cases)
    dropped = []
    for name in TRIM_ORDER:
        if sum(c.est_s for c in cases) + OVERHEAD_S <= budget_s:
            break
        if any(c.name == name for c in cases):
            cases = [c for c in cases if c.name != name]
            dropped.append(name)
    notes = list(plan.notes)
    if dropped:
        notes.append(f"dropped to fit the {budget_s / 60:.0f}-min budget: {', '.join(dropped)}")
    if sum(c.est_s for c in cases) + OVERHEAD_S > budget_s:
        notes.append(f"the estimate still exceeds the {budget_s / 60:.0f}-min budget")
    return Plan(cases, notes)


def format_plan(plan: Plan) -> str:
    lines = [f"{'#':>3} {'case':<28} {'frames':>6} {'runs':>9} {'est. s':>8}"]
    for i, c in enumerate(plan.cases, 1):
        lines.append(
            f"{i:>3} {c.name:<28} {c.frames:>6} {f'{c.warmup}+{c.repeats}':>9} {c.est_s:>8.0f}"
        )
    t = plan.total_s + OVERHEAD_S
    lines.append(
        f"estimated total: {t:.0f} s ({t / 60:.1f} min), {OVERHEAD_S:.0f} s of it for the matmul peak, "
        "FLOP counts and inputs"
    )
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)


# --- inputs and child processes -------------------------------------------------------------------


def write_inputs(tmp: Path, bundle_dir: str, demo: Path = DEMO) -> dict[str, str]:
    """frames.npz (uint8 [5, 224, 224, 3]), the WAV path, audioclip_inputs.npz (the graphs' inputs)."""
    from PIL import Image

    import runtime

    frames = np.stack(
        [
            np.asarray(
                Image.open(demo / n).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
            )
            for n in PHOTOS
        ]
    )
    np.savez(tmp / "frames.npz", frames=frames)
    wav = demo / WAV
    pipe = runtime.load(bundle_dir, providers=["cpu"])
    np.savez(
        tmp / "audioclip_inputs.npz",
        image=pipe.clip_images(list(frames)),
        waveform=pipe.audioclip_audio_input(wav, None, len(frames)),
    )
    return {
        "frames": str(tmp / "frames.npz"),
        "wav": str(wav),
        "audioclip_inputs": str(tmp / "audioclip_inputs.npz"),
    }


def acfpn_settings(bundle_dir: str) -> dict[str, Any]:
    """The reference AC-FPN's input scale and antialias, as the runtime's default preset runs it."""
    import runtime

    pipe = runtime.load(bundle_dir, providers=["cpu"])
    if not pipe.bundle.has("acfpn"):
        return {}
    entry = pipe.bundle.graphs["acfpn"]
    return {
        "scale": float(entry.get("audio_input_scale", pipe.preset_value("audio_input_scale"))),
        "antialias": bool(pipe.preset_value("image_antialias")),
    }


@dataclass
class ChildResult:
    rc: int
    ru_maxrss_mb: float | None
    wall_s: float
    timed_out: bool = False


def run_child(
    spec_path: Path, log_path: Path, timeout_s: float, argv: list[str] | None = None
) -> ChildResult:
    """``python -m benchmarks.run_case SPEC`` (or ``argv``) in a fresh process, killed after ``timeout_s``.

    Returns its exit code, wall time and ``ru_maxrss`` from ``os.wait4`` (this child's, not the max
    over all children as RUSAGE_CHILDREN; on Linux it includes this process's RSS at exec time,
    so the child's own peak is the VmHWM it reports, ``run_case.peak_rss_mb``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        p = subprocess.Popen(
            argv or [sys.executable, "-m", "benchmarks.run_case", str(spec_path)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        timed_out = False
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout_s and not timed_out:
                timed_out = True
                os.kill(p.pid, signal.SIGKILL)
            time.sleep(0.1)
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
    return ChildResult(p.returncode, ru.ru_maxrss / 1024.0, time.perf_counter() - t0, timed_out)


def _iou_min(a: dict, b: dict) -> float | None:
    keys = sorted(k for k in a if k.startswith("mask_"))
    if not keys or keys != sorted(k for k in b if k.startswith("mask_")):
        return None
    vals = []
    for k in keys:
        x, y = a[k], b[k]
        if x.shape != y.shape:
            return None
        u = np.count_nonzero(x | y)
        vals.append(1.0 if u == 0 else np.count_nonzero(x & y) / u)
    return float(min(vals))


def _cos_min(a: dict, b: dict) -> float | None:
    vals = []
    for k in ("audio_embedding", "image_global"):
        if k not in a or k not in b or a[k].shape != b[k].shape:
            return None
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        vals.append(
            float(
                np.min(
                    np.sum(x * y, -1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1))
                )
            )
        )
    return min(vals)


def agreement(a_npz: Path, b_npz: Path) -> tuple[str, float | None]:
    """(metric, value): min mask IoU over frames, or min cosine of the AudioCLIP outputs."""
    with np.load(a_npz, allow_pickle=False) as za, np.load(b_npz, allow_pickle=False) as zb:
        a, b = dict(za), dict(zb)
    if "audio_embedding" in a:
        return "min cosine", _cos_min(a, b)
    return "min mask IoU", _iou_min(a, b)


# --- the run --------------------------------------------------------------------------------------


def _fmt_s(s: float) -> str:
    return f"{int(s // 60)}:{int(s % 60):02d}"


def run_plan(
    plan: Plan,
    out: Path,
    *,
    threads: int,
    command: str,
    sam_batch: int | None = None,
    demo: Path = DEMO,
    keep_tmp: bool = False,
    timeout_factor: float = 1.0,
) -> dict[str, Any]:
    """Run every case of ``plan``; write bench.json / bench.md / bench.png under ``out``; returns the result dict.

    timeout_factor: multiplies each case's time limit (4 x its estimate + 2 min, at least 5 min),
    for a machine loaded by others."""
    from benchmarks.machine import machine_info, matmul_peak
    from benchmarks.report import Report
    from benchmarks.run_report import write_outputs
    from benchmarks.timing import Measurement

    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    tmpdir = tempfile.TemporaryDirectory(prefix="avs_bench_")
    tmp = Path(tmpdir.name)
    fp32 = next(
        (c.bundle for c in plan.cases if c.side != "int8"),
        plan.cases[0].bundle if plan.cases else None,
    )
    rep = Report("Full-size benchmark: reference vs runtime", machine=machine_info())
    load0 = os.getloadavg()[0]
    rep.set_peak(matmul_peak(threads=threads))
    from benchmarks.peaks import measure_in_child

    rep.machine["precision_peaks"] = measure_in_child(threads)
    records: list[dict[str, Any]] = []
    flops: dict[str, float] = {}
    if plan.cases:
        inputs = write_inputs(tmp, fp32, demo)
        ac = acfpn_settings(fp32)
        if any(c.side == "reference" for c in plan.cases):
            spec = {
                "mode": "flops",
                "side": "reference",
                "bundle": fp32,
                "out_json": str(tmp / "flops.json"),
            }
            (tmp / "flops.spec.json").write_text(json.dumps(spec))
            r = run_child(tmp / "flops.spec.json", logs / "flops.log", 600)
            if r.rc == 0:
                flops = json.loads((tmp / "flops.json").read_text())["flops"]
            else:
                rep.notes.append(f"encoder FLOPs not counted (see {logs / 'flops.log'})")
    t_start = time.perf_counter()
    est_total = plan.total_s
    for i, c in enumerate(plan.cases, 1):
        stem = c.name.replace("/", "__")
        spec = {
            "mode": BASE.get(c.mode, c.mode),
            "side": "reference" if c.side.startswith("reference") else "runtime",
            "autocast_bf16": c.side == "reference-bf16",
            "execution": SIDE_EXECUTION.get(c.side, {}),
            "bundle": c.bundle,
            "threads": threads,
            "repeats": c.repeats,
            "warmup": c.warmup,
            "num_frames": c.frames,
            "preset": c.preset,
            "params": c.params,
            "sam_batch": sam_batch,
            "acfpn": ac,
            **inputs,
            "out_json": str(tmp / f"{stem}.json"),
            "out_npz": str(tmp / f"{stem}.npz"),
        }
        (tmp / f"{stem}.spec.json").write_text(json.dumps(spec))
        print(f"[{i}/{len(plan.cases)}] {c.name}: running (est. {c.est_s:.0f} s) ...", flush=True)
        r = run_child(
            tmp / f"{stem}.spec.json",
            logs / f"{stem}.log",
            timeout_s=timeout_factor * max(300.0, 4 * c.est_s + 120),
        )
        rec: dict[str, Any] = {
            "case": asdict(c),
            "rc": r.rc,
            "ru_maxrss_mb": r.ru_maxrss_mb,
            "process_wall_s": r.wall_s,
            "npz": spec["out_npz"],
        }
        if r.rc != 0 or not Path(spec["out_json"]).is_file():
            why = "timed out" if r.timed_out else f"exit code {r.rc}"
            tail = (logs / f"{stem}.log").read_text().strip().splitlines()[-3:]
            rec["status"], rec["note"] = (
                "failed",
                f"{why}, log {logs / f'{stem}.log'}: {' | '.join(tail)}",
            )
            print(
                f"[{i}/{len(plan.cases)}] {c.name}: FAILED ({why}); log {logs / f'{stem}.log'}",
                flush=True,
            )
            records.append(rec)
            continue
        got = json.loads(Path(spec["out_json"]).read_text())
        m = Measurement.from_dict(got["measurement"])
        rec.update(
            status="ok",
            stages_ms={k: float(np.median(v)) for k, v in got["stages"].items()},
            stage_samples_ms=got["stages"],
            load_s=got["load_s"],
            peak_rss_mb=got["peak_rss_mb"],
            info=got["info"],
        )
        rec["measurement"] = m
        records.append(rec)
        el = time.perf_counter() - t_start
        print(
            f"[{i}/{len(plan.cases)}] {c.name}: median {m.median_ms / 1e3:.2f} s (est. {c.est_s:.0f} s for the "
            f"process, took {r.wall_s:.0f} s), peak RSS {rec['peak_rss_mb']:.0f} MB, load {os.getloadavg()[0]:.2f}; "
            f"elapsed {_fmt_s(el)} of est. {_fmt_s(est_total)}",
            flush=True,
        )
    result = assemble(rep, records, flops, plan, command=command, load_start=load0, threads=threads)
    write_outputs(result, out)
    if keep_tmp:
        print(f"kept the temporary folder {tmp}")
    else:
        tmpdir.cleanup()
    return result


def assemble(
    rep,
    records: list[dict[str, Any]],
    flops: dict[str, float],
    plan: Plan,
    *,
    command: str,
    load_start: float,
    threads: int,
) -> dict[str, Any]:
    """Agreement, ratios and encoder throughput from the child records; the JSON-ready result dict.

    Every ok record gets a Report entry (group = mode group, case = mode, backend = side label,
    batch = frames) whose ``extra`` holds peak RSS, stage medians and agreement.
    """
    ok = {(r["case"]["mode"], r["case"]["side"]): r for r in records if r.get("status") == "ok"}
    rep.notes += list(plan.notes)
    for r in records:
        if r.get("status") != "ok":
            rep.notes.append(f"{r['case']['mode']}/{r['case']['side']} failed: {r.get('note', '')}")
    for (mode, side), r in ok.items():
        base = BASE.get(mode, mode)
        agree: dict[str, Any] = {}
        if side != "reference":
            others = {
                "vs_reference": ok.get((base, "reference")),
                "vs_fp32": ok.get((mode, "fp32"))
                if side not in ("fp32", "reference-bf16")
                else None,
                "vs_full_grid_fp32": ok.get((base, "fp32")) if mode != base else None,
            }
            for key, other in others.items():
                if other is not None:
                    agree["metric"], agree[key] = agreement(other["npz"], r["npz"])
        r["agreement"] = agree
        prec = (r.get("info") or {}).get("precision") or {}
        if side == "int8" and prec and "int8" not in prec.values():
            rep.notes.append(
                f"{mode}/int8: the int8 bundle's graphs report precision {sorted(set(prec.values()))}"
            )
        enc = _encoder_rates(mode, r, flops, rep.peak_gflops)
        r["encoders"] = enc
        m = r["measurement"]
        if mode == "audioclip" and "audioclip_audio" in flops and "audioclip_image" in flops:
            m.flops = 5 * (flops["audioclip_audio"] + flops["audioclip_image"])
        rep.add(
            m,
            case=mode,
            backend=SIDE_LABEL[side],
            group=GROUPS[mode],
            batch=r["case"]["frames"],
            peak_rss_mb=r["peak_rss_mb"],
            stages_ms=r["stages_ms"],
            agreement=agree,
            encoders=enc,
            load_s=r["load_s"],
            info=r["info"],
            preset=r["case"]["preset"],
            params=r["case"]["params"],
        )
    for (mode, side), r in ok.items():
        ref = ok.get((BASE.get(mode, mode), "reference"))
        if side != "reference" and ref is not None:
            rec = rep.add_ratio(
                f"{mode}: {SIDE_LABEL[side]} vs reference",
                ref["measurement"],
                r["measurement"],
                note=f"peak RSS {r['peak_rss_mb']:.0f} vs {ref['peak_rss_mb']:.0f} MB",
            )
            rec.update(mode=mode, side=side, rss_ratio=r["peak_rss_mb"] / ref["peak_rss_mb"])
    d = rep.to_dict()
    d.update(
        command=command,
        threads=threads,
        flops_per_item=flops,
        loadavg_start=round(load_start, 2),
        loadavg_end=round(os.getloadavg()[0], 2),
        plan=[{**asdict(c), "name": c.name} for c in plan.cases],
        plan_notes=list(plan.notes),
        cases=[
            {k: v for k, v in r.items() if k not in ("measurement", "npz")}
            | ({"measurement": r["measurement"].to_dict()} if "measurement" in r else {})
            for r in records
        ],
    )
    return d


def _encoder_rates(
    mode: str, r: dict, flops: dict[str, float], peak: float | None
) -> dict[str, Any]:
    """GFLOP/s and % of the matmul peak of the encoder stages of one case."""
    n = r["case"]["frames"]
    st = r["stages_ms"]
    pairs = []
    if mode == "audioclip":
        pairs = [("audioclip_audio", "audio", 5), ("audioclip_image", "image", 5)]
    elif "sam_encoder" in st and mode in (
        "point-global",
        "point-local",
        "point-dense",
        "heatmap-box",
        "no-prompt",
    ):
        pairs = [("sam_image_encoder", "sam_encoder", n)]
    out = {}
    for graph, stage, items in pairs:
        if graph in flops and st.get(stage):
            g = flops[graph] * items / (st[stage] * 1e-3) / 1e9
            out[graph] = {
                "ms": st[stage],
                "items": items,
                "gflops": g,
                "pct_peak": 100 * g / peak if peak else None,
            }
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry; returns the exit code (2 for a bad bundle or option)."""
    p = argparse.ArgumentParser(prog="avs bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--bundle",
        type=Path,
        default=Path("engines/default"),
        help="fp32 bundle (default engines/default)",
    )
    p.add_argument(
        "--int8-bundle",
        type=Path,
        default=None,
        help="int8 bundle (build_engines.py --int8) for the int8 side",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/bench"),
        help="folder for bench.json/.md/.png and logs/",
    )
    p.add_argument(
        "--only",
        default=",".join(MODES),
        help=f"comma-separated modes of {list(MODES)}, or {sorted(ALIASES)}",
    )
    p.add_argument(
        "--sides", default=",".join(SIDES), help=f"comma-separated sides of {list(SIDES)}"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 run per case, no warm-up, No-Prompt on one frame (~15 min at vit_b)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per case (default 3; --quick 1; No-Prompt 1)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed runs first (default 1; --quick 0; No-Prompt 0)",
    )
    p.add_argument(
        "--no-prompt-frames",
        type=int,
        default=None,
        choices=range(1, 6),
        metavar="1..5",
        help="frames for No-Prompt (default 5; --quick 1)",
    )
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument(
        "--sam-batch",
        type=int,
        default=None,
        help="runtime SAM encoder batch (default: the runtime's)",
    )
    p.add_argument(
        "--budget-min",
        type=float,
        default=None,
        help="drop int8 point/box cases while the estimate exceeds this (default 15 with --quick)",
    )
    p.add_argument("--plan", action="store_true", help="print the plan with its estimates and stop")
    p.add_argument(
        "--keep-tmp", action="store_true", help="keep the temporary folder of inputs and outputs"
    )
    p.add_argument(
        "--timeout-factor",
        type=float,
        default=1.0,
        help="multiply each case's time limit (a machine loaded by others; default 1)",
    )
    args = p.parse_args(argv)
    from runtime.bundle import Bundle
    from runtime.errors import AVSError

    try:
        modes = parse_only(args.only)
        sides = [s.strip() for s in args.sides.split(",") if s.strip()]
        bad = [s for s in sides if s not in SIDES]
        if bad or not sides:
            raise ValueError(f"unknown sides {bad} in --sides; choose from {list(SIDES)}")
        for k in ("repeats", "threads"):
            if getattr(args, k) is not None and getattr(args, k) < 1:
                raise ValueError(f"--{k} must be >= 1")
        if args.warmup is not None and args.warmup < 0:
            raise ValueError("--warmup must be >= 0")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        bundle = Bundle.open(args.bundle)
        int8 = Bundle.open(args.int8_bundle) if args.int8_bundle else None
    except AVSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not DEMO.is_dir():
        print(f"error: demo media not found at {DEMO} (set AVS_SHARED_DATA)", file=sys.stderr)
        return 2
    plan = build_plan(
        bundle,
        int8,
        modes,
        quick=args.quick,
        repeats=args.repeats,
        warmup=args.warmup,
        np_frames=args.no_prompt_frames,
        sides=sides,
        have_reference=reference_available(),
    )
    budget = args.budget_min if args.budget_min is not None else (15.0 if args.quick else None)
    if budget is not None:
        plan = fit_budget(plan, budget * 60)
    plan.notes.append(
        "Box-Prompt is not run here (it needs tokenizer files): python -m benchmarks.bench_box"
    )
    print(format_plan(plan), flush=True)
    if args.plan:
        return 0
    command = "python -m benchmarks.run " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    result = run_plan(
        plan,
        args.out,
        threads=args.threads,
        command=command,
        sam_batch=args.sam_batch,
        keep_tmp=args.keep_tmp,
        timeout_factor=args.timeout_factor,
    )
    failed = [
        c["case"]["mode"] + "/" + c["case"]["side"] for c in result["cases"] if c["status"] != "ok"
    ]
    print((args.out / "bench.md").read_text())
    print(f"wrote {args.out / 'bench.json'}, {args.out / 'bench.md'}, {args.out / 'bench.png'}")
    if failed:
        print(f"failed cases: {failed}", file=sys.stderr)
    return 1 if failed else 0


def reference_available() -> bool:
    """torch, segment_anything and librosa importable (the reference pipelines' dependencies)."""
    import importlib.util

    return all(
        importlib.util.find_spec(m) is not None for m in ("torch", "segment_anything", "librosa")
    )


if __name__ == "__main__":
    raise SystemExit(main())
