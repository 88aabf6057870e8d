"""Issue 17's speed and memory targets, checked against one ``benchmarks.run`` result.

:func:`target_rows` reads the result dict of :func:`benchmarks.run.assemble` (entries, ratios, the
machine's CPU flags) and returns one :class:`TargetRow` per target: what was measured, on which side,
the target of this CPU's column and whether it was met, or by how much it was missed.
:func:`markdown` renders them as the "Targets" table of ``bench.md``.

The issue gives two columns: an AVX-512 + AMX CPU, and an AVX2-only CPU. A CPU with ``amx_bf16`` gets
the AMX column; any other (AVX2 alone, or AVX-512 with AVX512_BF16 but no AMX, where bf16 has no fast
path: ``runtime.backends.precision``) gets the AVX2 column, and the table shows the other beside it.
"Best gated precision" is the fastest runtime side of the case: every runtime side runs only what
its gates allow (a bf16 gate that fails keeps fp32; the int8 bundle's graphs passed their build gate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.sides import SIDE_LABEL

RUNTIME_SIDES = ("fp32", "openvino-fp32", "openvino-bf16", "openvino-best", "int8")
FP32_SIDES = ("fp32", "openvino-fp32")  # the exact paths (masks must equal the reference's)
POINT_MODES = ("point-global", "point-local", "point-dense", "heatmap-box")
RSS_LIMIT = 0.60


@dataclass(frozen=True)
class TargetRow:
    """One target: ``case`` (what it measures), ``measured`` (text), ``side`` (the side it was read
    from), ``target`` (this CPU's column), ``other`` (the other column), ``met`` (None: not measured
    in this run), ``gap`` (how far from the target, text)."""

    case: str
    measured: str
    side: str
    target: str
    other: str
    met: bool | None
    gap: str


def _ratio_gap(ratio: float, want: float) -> tuple[bool, str]:
    if ratio >= want:
        return True, f"met ({ratio:.2f}x >= {want:g}x)"
    return (
        False,
        f"missed by {want / ratio:.2f}x ({ratio:.2f}x of {want:g}x, {100 * ratio / want:.0f} %)",
    )


def target_rows(result: dict[str, Any]) -> list[TargetRow]:
    """The targets checked against ``result`` (module docstring); rows whose cases did not run say so."""
    flags = (result.get("machine") or {}).get("cpu_flags") or []
    amx = "amx_bf16" in flags
    col = 0 if amx else 1
    to_side = {v: k for k, v in SIDE_LABEL.items()}
    entries = {
        (e["case"], to_side.get(e["backend"], e["backend"])): e for e in result.get("entries") or []
    }
    ratios = {(r.get("mode"), r.get("side")): r for r in result.get("ratios") or []}
    rows: list[TargetRow] = []

    def best(mode: str, sides=RUNTIME_SIDES, need_exact: bool = False) -> tuple[str, dict] | None:
        got = []
        for s in sides:
            r = ratios.get((mode, s))
            if r is None or r.get("ratio") is None:
                continue
            if need_exact:
                a = ((entries.get((mode, s)) or {}).get("extra") or {}).get("agreement") or {}
                if a.get("vs_reference") != 1.0:
                    continue
            got.append((r["ratio"], s, r))
        if not got:
            return None
        _, s, r = max(got, key=lambda t: t[0])
        return s, r

    def ratio_row(case: str, mode: str, want: tuple[float, float], **kw) -> None:
        b = best(mode, **kw)
        tgt = [f">= {w:g}x" for w in want]
        if b is None:
            rows.append(
                TargetRow(case, "not run", "–", tgt[col], tgt[1 - col], None, "not measured")
            )
            return
        side, r = b
        met, gap = _ratio_gap(r["ratio"], want[col])
        t = r["b_median_ms"] / 1e3
        rows.append(
            TargetRow(
                case, f"{r['ratio']:.2f}x ({t:.1f} s)", side, tgt[col], tgt[1 - col], met, gap
            )
        )

    # the SAM encoder per frame, from the stage split of the SAM modes
    enc: dict[str, list[float]] = {}
    for (mode, side), e in entries.items():
        ms = ((e.get("extra") or {}).get("stages_ms") or {}).get("sam_encoder")
        if ms and mode in (*POINT_MODES, "no-prompt") and e.get("batch"):
            enc.setdefault(side, []).append(ms / 1e3 / e["batch"])
    med = {s: sorted(v)[len(v) // 2] for s, v in enc.items()}
    run_enc = {s: v for s, v in med.items() if s in RUNTIME_SIDES}
    case = "SAM vit_b encoder, best gated precision, s / frame"
    if "reference" in med and run_enc:
        side = min(run_enc, key=run_enc.get)
        sec, x = run_enc[side], med["reference"] / run_enc[side]
        if amx:
            met = sec <= 1.2 and x >= 9
            gap = "met" if met else f"{sec:.2f} s (target 1.2 s), {x:.2f}x (target 9x)"
        else:
            met, gap = _ratio_gap(x, 2.5)
        rows.append(
            TargetRow(
                case,
                f"{sec:.2f} s ({x:.2f}x torch fp32's {med['reference']:.2f} s)",
                side,
                "<= 1.2 s, >= 9x" if amx else ">= 2.5x",
                ">= 2.5x" if amx else "<= 1.2 s, >= 9x",
                met,
                gap,
            )
        )
    else:
        rows.append(TargetRow(case, "not run", "–", "", "", None, "not measured"))
    for mode in POINT_MODES:
        ratio_row(f"{mode}, 5-frame clip, best gated precision", mode, (6, 2.5))
    ratio_row("No-Prompt, 1 frame, SAM's AMG defaults, best gated precision", "no-prompt", (10, 4))
    ratio_row(
        "No-Prompt fp32, masks identical to the reference",
        "no-prompt",
        (5, 3),
        sides=FP32_SIDES,
        need_exact=True,
    )
    ratio_row(
        "audio-guided No-Prompt (grid='audio'), vs the full-grid reference",
        "no-prompt-audio",
        (40, 15),
    )
    # memory: every mode, each runtime side
    modes = list(dict.fromkeys(m for m, _ in ratios))
    for mode in modes:
        rs = {
            s: r["rss_ratio"]
            for (m, s), r in ratios.items()
            if m == mode and s in RUNTIME_SIDES and r.get("rss_ratio") is not None
        }
        if not rs:
            continue
        low = min(rs, key=rs.get)
        high = max(rs, key=rs.get)
        over = [s for s, v in rs.items() if v > RSS_LIMIT]
        text = ", ".join(f"{s} {v:.2f}" for s, v in rs.items())
        gap = (
            f"met on every side (worst {high} {rs[high]:.2f})"
            if not over
            else f"over on {', '.join(over)} (worst {high} {rs[high]:.2f}; best {low} {rs[low]:.2f})"
        )
        rows.append(
            TargetRow(
                f"peak RSS vs the reference, {mode}",
                text,
                "every runtime side",
                f"<= {RSS_LIMIT:.0%}",
                f"<= {RSS_LIMIT:.0%}",
                not over,
                gap,
            )
        )
    return rows


def markdown(result: dict[str, Any]) -> list[str]:
    """The "Targets" section of ``bench.md`` (lines)."""
    rows = target_rows(result)
    flags = (result.get("machine") or {}).get("cpu_flags") or []
    col = "AMX column" if "amx_bf16" in flags else "AVX2-only column (this CPU has no AMX)"
    out = [
        "",
        "## Targets (issue 17)",
        "",
        f"Targets of this CPU's {col}; the other column beside it. Ratios against the reference "
        'measured in this run; "best gated precision" is the fastest runtime side of the case.',
        "",
        "| target | measured | side | target here | other column | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = r.gap if r.met is not None else "not measured in this run"
        out.append(f"| {r.case} | {r.measured} | {r.side} | {r.target} | {r.other} | {verdict} |")
    return out
