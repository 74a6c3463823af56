"""The results table (rich) and the optional JSON file.

One row per workload, grid and reference side by side, then the ratio and
the target, so a reader sees at a glance which targets are met. A second,
smaller table says where the CPU went (client process vs server process):
that is the first thing to look at when a ratio is missed.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from grid.bench.stats import SideResult
from grid.bench.workloads import BATCH, BULK, VALUE_BYTES, Spec


@dataclass
class Row:
    spec: Spec
    grid: SideResult
    ref: SideResult | None

    @property
    def ratio(self) -> float | None:
        if self.ref is None or not self.ref.ops_per_s:
            return None
        return self.grid.ops_per_s / self.ref.ops_per_s

    @property
    def p50_ratio(self) -> float | None:
        if self.ref is None:
            return None
        ref = self.ref.percentile_us(50)
        return None if not ref or math.isnan(ref) else self.grid.percentile_us(50) / ref

    @property
    def met(self) -> bool | None:
        verdicts = []
        if self.spec.target is not None and self.ratio is not None:
            verdicts.append(self.ratio >= self.spec.target)
        if self.spec.p50_max is not None and self.p50_ratio is not None:
            verdicts.append(self.p50_ratio <= self.spec.p50_max)
        return all(verdicts) if verdicts else None


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _ops(x: float) -> str:
    return f"{x:,.0f}"


def _us(x: float) -> str:
    """Microseconds with three significant digits (no unit: the header has it)."""
    if math.isnan(x):
        return "-"
    if x < 10:
        return f"{x:.2f}"
    if x < 100:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def _cpu(x: float | None) -> str:
    return "-" if x is None else _us(x)


def results_table(rows: list[Row], title: str) -> Table:
    t = Table(title=title, title_justify="left", caption_justify="left")
    for name, justify in (
        ("workload", "left"),
        ("grid ops/s", "right"),
        ("p50 µs", "right"),
        ("p99 µs", "right"),
        ("reference", "left"),
        ("ref ops/s", "right"),
        ("p50 µs", "right"),
        ("p99 µs", "right"),
        ("grid/ref", "right"),
        ("target", "right"),
        ("met?", "center"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        g, r, spec = row.grid, row.ref, row.spec
        title = spec.title + (" *" if spec.per_batch else "")
        ref_cells = (
            [_ops(r.ops_per_s), _us(r.percentile_us(50)), _us(r.percentile_us(99))]
            if r
            else ["skipped", "-", "-"]
        )
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        if spec.p50_max is not None:
            p50 = "-" if row.p50_ratio is None else f"{row.p50_ratio:.2f}x"
            target = f"p50 {p50} <= {spec.p50_max:.1f}x"
        else:
            target = "report" if spec.target is None else f">= {spec.target:.1f}x"
        met = {None: "-", True: "[green]met[/green]", False: "[red]missed[/red]"}[row.met]
        t.add_row(
            title,
            _ops(g.ops_per_s),
            _us(g.percentile_us(50)),
            _us(g.percentile_us(99)),
            spec.reference,
            *ref_cells,
            ratio,
            target,
            met,
        )
    t.caption = (
        f"{VALUE_BYTES}-byte values, msgpack on both sides; ops/s counts keys.\n"
        f"* latency per batch ({BATCH} keys; {BULK} for the bulk load). embedded: 1 block "
        "in 8 timed op by op (latencies include ~0.05 µs of clock reads)."
    )
    return t


def cpu_table(rows: list[Row]) -> Table:
    t = Table(title="CPU µs per key: where the time goes", title_justify="left")
    for name in ("workload", "grid client", "grid member", "ref client", "ref server"):
        t.add_column(name, justify="left" if name == "workload" else "right")
    for row in rows:
        g, r = row.grid, row.ref
        t.add_row(
            row.spec.title,
            _cpu(g.client_cpu_us_per_op),
            _cpu(g.server_cpu_us_per_op),
            _cpu(r.client_cpu_us_per_op) if r else "-",
            _cpu(r.server_cpu_us_per_op) if r else "-",
        )
    t.caption = (
        "client: this process, all threads (time.process_time); server: the member or "
        "redis-server process (/proc). The embedded row has no server process."
    )
    return t


def print_report(console: Console, rows: list[Row], title: str, notes: list[str]) -> None:
    console.print()
    console.print(results_table(rows, title))
    console.print()
    console.print(cpu_table(rows))
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def write_json(path: str, rows: list[Row], meta: dict[str, Any]) -> None:
    data = {
        **meta,
        "machine": machine(),
        "workloads": [
            {
                "name": row.spec.name,
                "title": row.spec.title,
                "reference": row.spec.reference,
                "per_batch": row.spec.per_batch,
                "target": row.spec.target,
                "p50_max": row.spec.p50_max,
                "p50_ratio": None if row.p50_ratio is None else round(row.p50_ratio, 4),
                "ratio": None if row.ratio is None else round(row.ratio, 4),
                "met": row.met,
                "grid": row.grid.to_dict(),
                "ref": row.ref.to_dict() if row.ref else None,
            }
            for row in rows
        ],
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
