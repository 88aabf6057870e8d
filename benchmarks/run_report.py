"""The outputs of ``benchmarks.run``: ``bench.json``, ``bench.md`` (README-ready tables) and ``bench.png``.

``write_outputs(result, out)`` takes the result dict of :func:`benchmarks.run.assemble` (a
``benchmarks.report.Report`` dict plus ``command``, ``plan``, ``cases``, ``loadavg_start`` / ``_end``): every
entry's ``extra`` holds ``peak_rss_mb``, ``stages_ms`` (median ms per stage), ``agreement`` and
``encoders``; ``ratios`` carry ``mode``, ``side`` and ``rss_ratio``. The chart is drawn with Pillow:
one panel per mode group (own time axis), one horizontal bar per (mode, side), stacked by stage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from benchmarks.sides import SIDE_LABEL
from benchmarks.targets import markdown as targets_markdown

STAGE_ORDER = (
    "load_frames",
    "audio",
    "image",
    "heatmap",
    "prompts",
    "sam_encoder",
    "sam_decoder",
    "amg",
    "crop_scoring",
    "acfpn",
    "postprocess",
    "other",
)
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
)
SIDE_ORDER = ("reference (torch)", "runtime fp32", "runtime int8")


def write_outputs(result: dict[str, Any], out: Path) -> tuple[Path, Path, Path]:
    """Write ``out/bench.json``, ``out/bench.md`` and ``out/bench.png``; returns the three paths."""
    out.mkdir(parents=True, exist_ok=True)
    j, md, png = out / "bench.json", out / "bench.md", out / "bench.png"
    j.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    md.write_text(markdown(result))
    draw_chart(result, png)
    return j, md, png


# --- markdown -------------------------------------------------------------------------------------


def fmt_time(ms: float | None) -> str:
    """A latency in the unit that reads best: '412 ms', '3.27 s', '58.1 s'."""
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.2g} ms"
    return f"{ms / 1e3:.2f} s" if ms < 10_000 else f"{ms / 1e3:.1f} s"


def _num(x: float | None, nd: int = 2, suffix: str = "") -> str:
    return (
        "–"
        if x is None or (isinstance(x, float) and not math.isfinite(x))
        else f"{x:.{nd}f}{suffix}"
    )


def _time_cell(m: dict) -> str:
    s = fmt_time(m["median_ms"])
    if m.get("repeats", 1) > 1:
        s += f" ({fmt_time(m['p25_ms'])}–{fmt_time(m['p75_ms'])})"
    return s


def _agree(x: float | None, metric: str) -> str:
    if x is None:
        return "–"
    return f"cos {x:.6f}" if metric == "min cosine" else f"{x:.4f}"


def _header(r: dict[str, Any]) -> list[str]:
    m = r.get("machine") or {}
    vers = ", ".join(f"{k} {m[k]}" for k in ("python", "numpy", "onnxruntime", "torch") if m.get(k))
    bits = [
        str(m.get("cpu_model", "?")),
        f"{m.get('affinity_cpus', '?')} CPUs usable",
        f"{m.get('mem_total_gb', '?')} GB RAM",
    ]
    lines = [
        f"# {r['title']}",
        "",
        f"- Command: `{r.get('command', '?')}` ({r.get('created', '')})",
        f"- Machine: {', '.join(bits)}; {vers}; {r.get('threads', '?')} threads for torch and onnxruntime",
    ]
    peak = (r.get("peak") or {}).get("gflops_median")
    lines.append(
        f"- Load average (1 min): {r.get('loadavg_start', '?')} at the start, {r.get('loadavg_end', '?')} at "
        f"the end; per row below: the load before its runs and the cores busy on the whole machine"
    )
    if peak:
        lines.append(f"- fp32 matmul peak (numpy, measured in this run): {peak:.1f} GFLOP/s")
    flags = m.get("cpu_flags")
    if flags is not None:
        want = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
        lines.append(
            "- CPU flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in want)
        )
    pk = m.get("precision_peaks") or {}
    cells = [
        f"{k} {pk[k]['gops_median']:.0f}"
        for k in ("fp32", "bf16", "int8")
        if isinstance(pk.get(k), dict) and "gops_median" in pk[k]
    ]
    if cells:
        lines.append(
            f"- Matmul peaks (torch, n={pk.get('fp32', {}).get('n', '?')}, {pk.get('threads', '?')} threads, "
            "measured in this run, median G(FL)OP/s): " + ", ".join(cells)
        )
    plan = r.get("plan") or []
    bundles = sorted({(c["side"] == "int8", c["bundle"]) for c in plan})
    if bundles:
        lines.append(
            "- Bundles: " + "; ".join(f"{'int8' if i8 else 'fp32'} `{b}`" for i8, b in bundles)
        )
    runs = sorted(
        {(c["warmup"], c["repeats"], c["frames"], c["mode"].startswith("no-prompt")) for c in plan}
    )
    if runs:
        lines.append(
            "- Runs per case (warm-up + timed; frames): "
            + "; ".join(
                f"{'No-Prompt' if np_ else 'others'} {w}+{n} on {f} frame{'s' if f > 1 else ''}"
                for w, n, f, np_ in runs
            )
        )
    lines.append(
        "- Each (mode, side) in a fresh process; peak RSS = that process's own high-water mark (VmHWM: "
        "models, sessions and runs); runtime embedding cache off (cache_mb=0); same weights and inputs on every side; 5 real "
        "photos at 224x224 + a real WAV of ../shared/data/audioclip-demo"
    )
    for n in r.get("notes") or []:
        lines.append(f"- {n}")
    return lines


def _every_side(entries: list[dict], ratios: dict) -> list[str]:
    """One row per (mode, side): time, speed-up vs the reference, peak RSS, what ran (backend /
    precision per graph), agreement beside the time (vs the reference and vs runtime fp32)."""
    if not entries:
        return []
    label_side = {v: k for k, v in SIDE_LABEL.items()}
    head = ["mode", "side", "time", "vs reference", "peak RSS MB", "ran", "agreement"]
    out = ["", "## Every side", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        x = e.get("extra", {})
        side = label_side.get(e["backend"], e["backend"])
        info = x.get("info") or {}
        be = info.get("backends") or {}
        ran = ", ".join(
            f"{g} {v.get('backend', '?')}/{v.get('precision', '?')}" for g, v in be.items()
        ) or (
            "torch bf16 autocast"
            if side == "reference-bf16"
            else "torch fp32"
            if side == "reference"
            else "–"
        )
        gates = info.get("agreement") or {}
        failed = [g for g, a in gates.items() if str(a.get("gate", "")).startswith("failed")]
        if failed:
            ran += f" (gate failed, fp32 kept: {', '.join(failed)})"
        a = x.get("agreement") or {}
        metric = a.get("metric", "")
        agree = "; ".join(
            f"{k.removeprefix('vs_').replace('_', ' ')} {_agree(a[k], metric)}"
            for k in ("vs_reference", "vs_fp32", "vs_full_grid_fp32")
            if a.get(k) is not None
        )
        ratio = (ratios.get((e["case"], side)) or {}).get("ratio")
        out.append(
            f"| {e['case']} | {e['backend']} | {_time_cell(e['measurement'])} | {_num(ratio, 2, 'x')} | "
            f"{_num(x.get('peak_rss_mb'), 0)} | {ran} | {agree or '–'} |"
        )
    return out


def markdown(r: dict[str, Any]) -> str:
    """The report as markdown: header (command, machine, load, peak), one table per mode group,
    encoder throughput, stage split."""
    entries = r.get("entries") or []
    ratios = {(x.get("mode"), x.get("side")): x for x in r.get("ratios") or []}
    by: dict[tuple[str, str], dict] = {(e["case"], e["backend"]): e for e in entries}
    has8 = any(e["backend"] == SIDE_ORDER[2] for e in entries)
    out = _header(r)
    groups: list[str] = []
    for e in entries:
        if e["group"] not in groups:
            groups.append(e["group"])
    for g in groups:
        modes = list(dict.fromkeys(e["case"] for e in entries if e["group"] == g))
        head = ["mode", "reference", "runtime fp32", "speed-up"]
        if has8:
            head += ["runtime int8", "speed-up"]
        head += [
            "peak RSS MB (ref / fp32" + (" / int8)" if has8 else ")"),
            "RSS fp32 / ref",
            "agreement fp32 vs ref",
        ]
        if has8:
            head += ["int8 vs fp32"]
        head += ["load (cores busy)"]
        out += ["", f"## {g}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for mode in modes:
            base = "no-prompt" if mode == "no-prompt-audio" else mode
            ref, f32, i8 = (
                by.get((mode, s)) or (by.get((base, s)) if s == SIDE_ORDER[0] else None)
                for s in SIDE_ORDER
            )
            label = mode + (" (grid='audio'; vs the full-grid reference)" if mode != base else "")
            row = [
                label,
                _time_cell(ref["measurement"]) if ref else "–",
                _time_cell(f32["measurement"]) if f32 else "–",
                _num((ratios.get((mode, "fp32")) or {}).get("ratio"), 2, "x"),
            ]
            if has8:
                row += [
                    _time_cell(i8["measurement"]) if i8 else "–",
                    _num((ratios.get((mode, "int8")) or {}).get("ratio"), 2, "x"),
                ]
            rss = [
                _num((x or {}).get("extra", {}).get("peak_rss_mb"), 0)
                for x in ((ref, f32, i8) if has8 else (ref, f32))
            ]
            row += [" / ".join(rss), _num((ratios.get((mode, "fp32")) or {}).get("rss_ratio"), 2)]
            a32 = (f32 or {}).get("extra", {}).get("agreement", {})
            metric = a32.get("metric", "min mask IoU")
            cell = _agree(a32.get("vs_reference"), metric)
            if a32.get("vs_full_grid_fp32") is not None:
                cell += f"; vs full-grid fp32 {_agree(a32['vs_full_grid_fp32'], metric)}"
            row.append(cell)
            if has8:
                a8 = (i8 or {}).get("extra", {}).get("agreement", {})
                row.append(_agree(a8.get("vs_fp32"), a8.get("metric", metric)))
            loads = [x["measurement"] for x in (ref, f32, i8) if x]
            lb = [m["loadavg_before"][0] for m in loads if m.get("loadavg_before")]
            busy = [
                m["machine_busy_cores"] for m in loads if m.get("machine_busy_cores") is not None
            ]
            row.append(
                (f"{min(lb):.2f}–{max(lb):.2f}" if lb else "–")
                + (f" ({max(busy):.1f})" if busy else "")
            )
            out.append("| " + " | ".join(row) + " |")
    out += _every_side(entries, ratios)
    if r.get("ratios"):
        out += targets_markdown(r)
    enc: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for e in entries:
        for g, v in (e.get("extra", {}).get("encoders") or {}).items():
            enc.setdefault((g, e["backend"]), []).append((e["case"], v))
    if enc:
        peak = (r.get("peak") or {}).get("gflops_median")
        out += [
            "",
            "## Encoders: share of the fp32 matmul peak"
            + (f" ({peak:.0f} GFLOP/s)" if peak else ""),
            "",
            "Time per item from the stage timings of the modes listed (median over them; best in brackets).",
            "",
            "| encoder | side | measured in | time per item | GFLOP/s | % of peak |",
            "|---|---|---|---|---|---|",
        ]
        for (g, side), vals in enc.items():
            per = sorted(v["ms"] / v["items"] for _, v in vals)
            gf = sorted(v["gflops"] for _, v in vals)
            med_gf = (
                gf[len(gf) // 2] if len(gf) % 2 else (gf[len(gf) // 2 - 1] + gf[len(gf) // 2]) / 2
            )
            med_t = (
                per[len(per) // 2]
                if len(per) % 2
                else (per[len(per) // 2 - 1] + per[len(per) // 2]) / 2
            )
            pct = f"{100 * med_gf / peak:.0f} % ({100 * gf[-1] / peak:.0f} %)" if peak else "–"
            cases = ", ".join(c for c, _ in vals)
            out.append(
                f"| {g} | {side} | {cases} | {fmt_time(med_t)} ({fmt_time(per[0])}) "
                f"| {med_gf:.1f} ({gf[-1]:.1f}) | {pct} |"
            )
    out += [
        "",
        "## Stages (median per run)",
        "",
        "| mode | side | stages | load + process start |",
        "|---|---|---|---|",
    ]
    for e in entries:
        st = e.get("extra", {}).get("stages_ms") or {}
        parts = ", ".join(f"{k} {fmt_time(v)}" for k, v in _ordered(st))
        out.append(
            f"| {e['case']} | {e['backend']} | {parts or '–'} | {fmt_time(1e3 * e['extra'].get('load_s', 0))} |"
        )
    return "\n".join(out) + "\n"


def _ordered(stages: dict[str, float]) -> list[tuple[str, float]]:
    rank = {k: i for i, k in enumerate(STAGE_ORDER)}
    return sorted(
        stages.items(),
        key=lambda kv: (
            (rank.get(kv[0], len(rank) - 1), kv[0]) if kv[0] != "other" else (len(rank) + 1, "")
        ),
    )


# --- chart ----------------------------------------------------------------------------------------


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _nice_step(vmax: float, ticks: int = 6) -> float:
    raw = max(vmax, 1e-9) / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def draw_chart(r: dict[str, Any], path: Path, *, width: int = 1200) -> Path:
    """Horizontal stacked bars of latency (s) per mode and side, split by stage, one panel per group."""
    entries = r.get("entries") or []
    groups: list[str] = list(dict.fromkeys(e["group"] for e in entries))
    stages = list(
        dict.fromkeys(
            k for e in entries for k, _ in _ordered(e.get("extra", {}).get("stages_ms") or {})
        )
    )
    stages = [s for s in STAGE_ORDER if s in stages] + [s for s in stages if s not in STAGE_ORDER]
    color = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(stages)}
    f, fb, fs = _font(13), _font(16), _font(11)
    left, right, bar_h, gap, top = 300, 90, 18, 6, 50
    panel_rows = {g: [e for e in entries if e["group"] == g] for g in groups}
    legend_h = 26 * math.ceil(max(1, len(stages)) / 6) + 10
    height = (
        top
        + sum(34 + len(rows) * (bar_h + gap) + 34 for rows in panel_rows.values())
        + legend_h
        + 10
    )
    img = Image.new("RGB", (width, max(height, 160)), "white")
    d = ImageDraw.Draw(img)
    d.text(
        (10, 10),
        r.get("title", "benchmark") + " - latency per run, split by stage",
        fill="black",
        font=fb,
    )
    sub = (
        f"load avg {r.get('loadavg_start', '?')} -> {r.get('loadavg_end', '?')}; "
        + str(r.get("command", ""))[:130]
    )
    d.text((10, 30), sub, fill=(90, 90, 90), font=fs)
    y = top
    plot_w = width - left - right
    for g in groups:
        rows = panel_rows[g]
        d.text((10, y + 8), g, fill="black", font=fb)
        y += 34
        vmax = max(e["measurement"]["median_ms"] for e in rows) / 1e3
        step = _nice_step(vmax)
        xmax = step * math.ceil(vmax / step) if vmax > 0 else 1.0
        y0 = y
        for e in rows:
            label = f"{e['case']} | {e['backend']}"
            d.text((10, y + 2), label[:44], fill="black", font=f)
            x = left
            total = e["measurement"]["median_ms"] / 1e3
            st = dict(_ordered(e.get("extra", {}).get("stages_ms") or {}))
            scale = total / (sum(st.values()) / 1e3) if st and sum(st.values()) > 0 else 1.0
            for s in stages:
                if s not in st:
                    continue
                w = st[s] / 1e3 * scale / xmax * plot_w
                if w > 0:
                    d.rectangle([x, y, x + w, y + bar_h], fill=color[s])
                x += w
            if not st:
                d.rectangle(
                    [left, y, left + total / xmax * plot_w, y + bar_h], fill=(200, 200, 200)
                )
                x = left + total / xmax * plot_w
            d.text((x + 5, y + 2), f"{total:.3g} s", fill="black", font=f)
            y += bar_h + gap
        d.line([left, y0 - 3, left, y], fill="black")
        d.line([left, y, left + plot_w, y], fill="black")
        t = 0.0
        while t <= xmax + 1e-9:
            xx = left + t / xmax * plot_w
            d.line([xx, y, xx, y + 4], fill="black")
            d.text((xx - 8, y + 6), f"{t:g}", fill="black", font=fs)
            t += step
        d.text((left + plot_w / 2 - 60, y + 18), "latency per run (s)", fill="black", font=fs)
        y += 34
    x, y = 10, y + 4
    d.text((x, y), "stages:", fill="black", font=f)
    x += 60
    for s in stages:
        if x > width - 180:
            x, y = 70, y + 26
        d.rectangle([x, y + 2, x + 14, y + 14], fill=color[s])
        d.text((x + 18, y), s, fill="black", font=f)
        x += 30 + int(d.textlength(s, font=f))
    img.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.run_report DIR``: write ``DIR/bench.md`` and draw ``DIR/bench.png`` again
    from ``DIR/bench.json`` (``--chart-only``: the chart alone).

    The chart is generated output and is not kept in git; the JSON (every figure) and the markdown are.
    """
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run_report", description=main.__doc__.split("\n\n")[0]
    )
    p.add_argument("folder", type=Path, help="a benchmarks.run output folder holding bench.json")
    p.add_argument("--chart-only", action="store_true", help="leave bench.md as it is")
    args = p.parse_args(argv)
    src = args.folder / "bench.json"
    if not src.is_file():
        print(f"error: {src} not found", flush=True)
        return 2
    result = json.loads(src.read_text())
    if not args.chart_only:
        (args.folder / "bench.md").write_text(markdown(result))
        print(args.folder / "bench.md")
    print(draw_chart(result, args.folder / "bench.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
