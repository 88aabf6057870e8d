"""Report writing: ``Report`` collects measurements in named groups and cases, computes speed-up ratios
measured in the same run, and writes JSON (schema ``avs-bench-report/1``) and a Markdown table."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.timing import Measurement, json_clean, measure, rounded

__all__ = ["Report"]


@dataclass
class _Entry:
    group: str
    case: str
    backend: str
    batch: int | None
    measurement: Measurement
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_clean({
            "group": self.group, "case": self.case, "backend": self.backend,
            "batch": self.batch, "extra": self.extra, "measurement": self.measurement.to_dict(),
        })  # fmt: skip


def _fmt(x: float | None, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}"


def _fmt_ms(x: float) -> str:
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"


class Report:
    """Measurements under named groups and cases, speed-up ratios, JSON and Markdown output.

    ``add(m, case=..., backend=..., group=..., batch=...)`` stores a ``Measurement``;
    ``ratio(a, b)`` is median(a) / median(b): how many times faster b is than a (pass the
    reference as ``a`` and the runtime as ``b``, both measured in the same run);
    ``add_ratio(name, a, b)`` also records it with its IQR range. ``set_peak`` takes the
    ``matmul_peak()`` dict; "% of peak" uses its median GFLOP/s.
    """

    SCHEMA = "avs-bench-report/1"

    def __init__(
        self,
        title: str = "benchmark",
        *,
        machine: dict[str, Any] | None = None,
        peak: dict[str, Any] | None = None,
        notes: list[str] | None = None,
    ):
        self.title = title
        self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.machine = machine
        self.peak = peak
        self.notes: list[str] = list(notes or [])
        self.entries: list[_Entry] = []
        self.ratios: list[dict[str, Any]] = []

    # collecting ----------------------------------------------------------------------------
    def add(
        self,
        measurement: Measurement,
        *,
        case: str,
        backend: str = "",
        group: str = "default",
        batch: int | None = None,
        **extra: Any,
    ) -> Measurement:
        """Store ``measurement`` as (group, case, backend, batch); extra keys are kept."""
        if not isinstance(measurement, Measurement):
            raise TypeError(f"Report.add: expected a Measurement, got {type(measurement).__name__}")
        if any((e.group, e.case, e.backend, e.batch) == (group, case, backend, batch)
               for e in self.entries):  # fmt: skip
            raise ValueError(
                f"Report.add: duplicate entry group={group!r} case={case!r} "
                f"backend={backend!r} batch={batch!r}"
            )
        self.entries.append(_Entry(group, case, backend, batch, measurement, dict(extra)))
        return measurement

    def run(
        self,
        fn: Callable[[], Any],
        *,
        case: str,
        backend: str = "",
        group: str = "default",
        batch: int | None = None,
        extra: dict[str, Any] | None = None,
        **measure_kwargs: Any,
    ) -> Measurement:
        """``measure(fn, **measure_kwargs)`` and ``add`` the result; returns the Measurement."""
        measure_kwargs.setdefault("label", f"{case}/{backend}" if backend else case)
        m = measure(fn, **measure_kwargs)
        return self.add(m, case=case, backend=backend, group=group, batch=batch, **(extra or {}))

    def set_peak(self, peak: dict[str, Any] | float) -> None:
        """Set the matmul peak: a ``matmul_peak()`` dict or a GFLOP/s number."""
        if isinstance(peak, int | float):
            peak = {"gflops_median": float(peak), "gflops_best": None}
        if not isinstance(peak, dict) or "gflops_median" not in peak:
            raise ValueError("Report.set_peak: expected a matmul_peak() dict or a GFLOP/s number")
        self.peak = peak

    @property
    def peak_gflops(self) -> float | None:
        return None if not self.peak else self.peak.get("gflops_median")

    def find(
        self,
        case: str,
        backend: str | None = None,
        group: str | None = None,
        batch: int | None = None,
    ) -> Measurement:
        """The one stored measurement matching the given keys (None = any); KeyError otherwise."""
        hits = [
            e for e in self.entries
            if e.case == case and (backend is None or e.backend == backend)
            and (group is None or e.group == group) and (batch is None or e.batch == batch)
        ]  # fmt: skip
        if len(hits) != 1:
            raise KeyError(
                f"Report.find: {len(hits)} entries match case={case!r} backend={backend!r} "
                f"group={group!r} batch={batch!r}; expected exactly one"
            )
        return hits[0].measurement

    def _resolve(self, x) -> Measurement:
        if isinstance(x, Measurement):
            return x
        if isinstance(x, str):
            return self.find(x)
        if isinstance(x, tuple):
            return self.find(*x)
        if isinstance(x, dict):
            return self.find(**x)
        raise TypeError(
            "Report: expected a Measurement, a case name, a (case, backend[, group, batch]) "
            f"tuple or a dict of those keys, got {type(x).__name__}"
        )

    # ratios --------------------------------------------------------------------------------
    def ratio(self, a, b) -> float:
        """median(a) / median(b): the speed-up of b over a (> 1 when b is faster).

        ``a``, ``b``: Measurements, or keys of stored ones (case name, (case, backend, ...)
        tuple or dict for ``find``).
        """
        ma, mb = self._resolve(a), self._resolve(b)
        return ma.median_ms / mb.median_ms

    def add_ratio(self, name: str, a, b, note: str = "") -> dict[str, Any]:
        """Compute and record the speed-up of b over a; returns the recorded dict with
        ratio (medians), ratio_low/high (a p25 / b p75 and a p75 / b p25) and ratio_best (mins).
        """
        ma, mb = self._resolve(a), self._resolve(b)
        rec = json_clean({
            "name": name,
            "a": ma.label, "b": mb.label,
            "a_median_ms": rounded(ma.median_ms, 6), "b_median_ms": rounded(mb.median_ms, 6),
            "ratio": ma.median_ms / mb.median_ms,
            "ratio_low": ma.p25_ms / mb.p75_ms,
            "ratio_high": ma.p75_ms / mb.p25_ms,
            "ratio_best": ma.min_ms / mb.min_ms,
            "note": note,
        })  # fmt: skip
        self.ratios.append(rec)
        return rec

    # output --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json_clean({
            "schema": self.SCHEMA, "title": self.title, "created": self.created,
            "machine": self.machine, "peak": self.peak, "notes": self.notes,
            "entries": [e.to_dict() for e in self.entries], "ratios": self.ratios,
        })  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        if d.get("schema") != cls.SCHEMA:
            raise ValueError(f"Report: unknown schema {d.get('schema')!r}, expected {cls.SCHEMA}")
        r = cls(d.get("title", ""), machine=d.get("machine"), peak=d.get("peak"),
                notes=d.get("notes"))  # fmt: skip
        r.created = d.get("created", r.created)
        for e in d.get("entries", []):
            r.entries.append(_Entry(e["group"], e["case"], e["backend"], e.get("batch"),
                                    Measurement.from_dict(e["measurement"]),
                                    dict(e.get("extra") or {})))  # fmt: skip
        r.ratios = list(d.get("ratios", []))
        return r

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (strict: no NaN); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return p

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Report:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_markdown(self) -> str:
        """Markdown: header (machine, peak), one table per group, then the ratios."""
        out = [f"# {self.title}", "", f"- Created {self.created}."]
        m = self.machine
        if m:
            bits = [str(m.get("cpu_model", "?"))]
            if m.get("affinity_cpus") is not None:
                bits.append(f"{m['affinity_cpus']} CPUs usable")
            if m.get("mem_total_gb") is not None:
                bits.append(f"{m['mem_total_gb']} GB RAM")
            vers = [f"{k} {m[k]}" for k in ("python", "numpy", "onnxruntime", "torch") if m.get(k)]
            out.append("- Machine: " + ", ".join(bits) + ("; " + ", ".join(vers) if vers else ""))
            if m.get("gpus"):
                out.append("- GPUs: " + "; ".join(m["gpus"]))
        if self.peak:
            p = self.peak
            line = f"- fp32 matmul peak (numpy): {_fmt(p.get('gflops_median'), 1)} GFLOP/s median"
            if p.get("gflops_best") is not None:
                line += f", best {_fmt(p.get('gflops_best'), 1)}"
            if p.get("n"):
                line += f"; n={p['n']}, {p.get('threads', '?')} threads"
            out.append(line + ". % of peak uses the median.")
        for n in self.notes:
            out.append(f"- {n}")
        header = (
            "| case | backend | batch | median ms | p25–p75 ms | min ms | GFLOP/s | % of peak "
            "| peak RSS MB (+Δ) | CPU cores (self/all) | load avg (1 min, before→after) |"
        )
        sep = "|" + "---|" * 11
        peak = self.peak_gflops
        groups: list[str] = []
        for e in self.entries:
            if e.group not in groups:
                groups.append(e.group)
        for g in groups:
            out += ["", f"## {g}", "", header, sep]
            for e in self.entries:
                if e.group != g:
                    continue
                x = e.measurement
                gf = x.gflops
                pct = gf / peak * 100 if gf is not None and peak else None
                rss = "–"
                if x.rss_peak_mb is not None:
                    rss = f"{x.rss_peak_mb:.0f}"
                    if x.rss_delta_mb is not None:
                        rss += f" (+{x.rss_delta_mb:.0f})"
                cores = f"{_fmt(x.cores_used)} / {_fmt(x.machine_busy_cores)}"
                lb = x.loadavg_before[0] if x.loadavg_before else None
                la = x.loadavg_after[0] if x.loadavg_after else None
                out.append(
                    f"| {e.case} | {e.backend or '–'} | {e.batch if e.batch is not None else '–'} "
                    f"| {_fmt_ms(x.median_ms)} | {_fmt_ms(x.p25_ms)}–{_fmt_ms(x.p75_ms)} "
                    f"| {_fmt_ms(x.min_ms)} | {_fmt(gf, 1)} | {_fmt(pct, 0)} | {rss} | {cores} "
                    f"| {_fmt(lb)}→{_fmt(la)} |"
                )
        if self.ratios:
            out += ["", "## Speed-ups (median a / median b, measured in the same run)", "",
                    "| name | a | b | speed-up | range (IQR) | best/best | note |",
                    "|---|---|---|---|---|---|---|"]  # fmt: skip
            for r in self.ratios:
                out.append(
                    f"| {r['name']} | {r['a']} | {r['b']} | {_fmt(r['ratio'])}× "
                    f"| {_fmt(r['ratio_low'])}–{_fmt(r['ratio_high'])} "
                    f"| {_fmt(r['ratio_best'])} | {r.get('note', '')} |"
                )
        return "\n".join(out) + "\n"

    def save(self, out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
        """Write ``out_dir/name.json`` and ``out_dir/name.md``; returns both paths."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"Report.save: name must be a plain file stem, got {name!r}")
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        j = self.to_json(d / f"{name}.json")
        md = d / f"{name}.md"
        md.write_text(self.to_markdown())
        return j, md
