"""What a run shows: a live line while it runs, then the verdicts, a JSON file and a plot.

The plot (plot.png in the run's folder) has two panels over the run's time: operations
acknowledged per second, and the latency of every operation (median and maximum per
second, log scale), with each fault window shaded and labelled. It needs matplotlib (the
`chaos` extra); without it the run says so and writes everything else.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from grid.chaos.checkers import Verdict
from grid.chaos.history import OK, Op
from grid.chaos.nemesis import Window


class Progress:
    """The live line: elapsed time, operations by outcome, throughput, the fault now."""

    def __init__(
        self,
        duration: float,
        counts: Callable[[], dict[str, int]],
        fault: Callable[[], str],
    ) -> None:
        self.duration = duration
        self.counts = counts
        self.fault = fault
        self.started = time.monotonic()
        self.phase = "starting"
        self._last = (self.started, 0)
        self._rate = 0.0

    def __rich__(self) -> Text:
        now = time.monotonic()
        c = self.counts()
        total = sum(c.values())
        t0, n0 = self._last
        if now - t0 >= 1.0:
            self._rate = (total - n0) / (now - t0)
            self._last = (now, total)
        line = Text(f"{now - self.started:5.1f}s/{self.duration:.0f}s  {self.phase:<11} ")
        line.append(f"ok {c['ok']}", "green")
        line.append(f"  fail {c['fail']}", "yellow")
        line.append(f"  unknown {c['unknown']}", "red" if c["unknown"] else "")
        line.append(f"  {self._rate:6.0f} ops/s  ")
        if fault := self.fault():
            line.append(f"fault: {fault}", "bold red")
        return line


def print_summary(console: Console, result: dict[str, Any], verdicts: Sequence[Verdict]) -> None:
    table = Table(title=f"grid chaos: {result['scenario']} ({result['backend']})")
    table.add_column("checker")
    table.add_column("verdict")
    table.add_column("what was seen", overflow="fold")
    for v in verdicts:
        mark = Text("holds", "green") if v.holds else Text("FAILS", "bold red")
        table.add_row(v.name, mark, escape(v.summary))  # a summary may hold [..]
    console.print(table)
    for v in verdicts:
        if v.offending and (not v.holds or v.name == "acknowledged-writes"):
            console.print(f"[bold]{v.name}[/bold]: offending operations (first {len(v.offending)})")
            for line in v.offending:
                console.print(f"  {line}", markup=False, highlight=False)
    for w in result["faults"]:
        fo = f"failover {w['failover_s']:.1f}s" if w["failover_s"] is not None else "no failover"
        heal = f"settled {w['heal_s']:.1f}s after the heal" if w["heal_s"] is not None else ""
        console.print(
            f"fault {w['kind']} {w['target']} at {w['start']:.1f}s: {fo}, {heal}"
            + (f" ({'; '.join(w['notes'])})" if w["notes"] else ""),
            markup=False,
            highlight=False,
        )
    console.print(
        f"{result['operations']} operations ({result['outcomes']}), "
        f"{len(result['faults'])} faults, exit {result['exit_code']}; "
        f"files in {result['out']}",
        markup=False,
        highlight=False,
    )


def write_json(path: Path, result: dict[str, Any], verdicts: Sequence[Verdict]) -> None:
    data = {**result, "checkers": [asdict(v) for v in verdicts]}
    path.write_text(json.dumps(data, indent=2, default=repr) + "\n")


def per_second(ops: Sequence[Op], end: float) -> dict[str, list[float]]:
    """Per whole second of the run: acknowledged ops, and median/max latency (ms)."""
    seconds = max(1, math.ceil(end))
    done = [0.0] * seconds
    lat: dict[int, list[float]] = defaultdict(list)
    for op in ops:
        s = min(seconds - 1, max(0, int(op.complete)))
        if op.outcome == OK:
            done[s] += 1
        lat[s].append(op.latency * 1000)
    median = [sorted(lat[s])[len(lat[s]) // 2] if lat[s] else math.nan for s in range(seconds)]
    worst = [max(lat[s]) if lat[s] else math.nan for s in range(seconds)]
    return {"ok": done, "p50_ms": median, "max_ms": worst}


def plot(path: Path, ops: Sequence[Op], windows: Sequence[Window], end: float, title: str) -> str:
    """Write the PNG; returns "" or why there is none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install 'grid[chaos]')"
    series = per_second(ops, end)
    xs = [s + 0.5 for s in range(len(series["ok"]))]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    top.plot(xs, series["ok"], color="tab:blue")
    top.set_ylabel("acknowledged ops/s")
    bottom.plot(xs, series["p50_ms"], color="tab:green", label="median")
    bottom.plot(xs, series["max_ms"], color="tab:red", label="max")
    bottom.set_yscale("log")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds since the run began")
    bottom.legend(loc="upper right")
    for w in windows:
        stop = w.end if w.end is not None else end
        for ax in (top, bottom):
            ax.axvspan(w.start, stop, color="orange", alpha=0.25)
        top.annotate(
            f"{w.kind} {w.target}",
            (w.start, 1),
            xycoords=("data", "axes fraction"),
            va="top",
            fontsize=8,
        )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return ""
