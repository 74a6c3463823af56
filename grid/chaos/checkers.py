"""Verdicts over a run's history, its audits and the cluster's final state.

- acknowledged-writes: every put acknowledged must be readable with its value, at the
  end and at every audit after a failover (a write lost at the failover and brought
  back later from the restarted member's disk was still lost for the clients between).
  A put of unknown fate may be there or not, but not with another value. Under
  sync_backups >= 1 with one fault at a time the figure must be 0; under async backups it
  is reported and does not fail the run (a primary's last changes die with it).
- convergence: after the heal, with the load stopped, every partition's replicas have
  one digest root within the time allowed; the figure is how long that took.
- counters: each shared counter ends between the increments acknowledged and those plus
  the ones of unknown fate (none counted twice, none acknowledged and lost). Below that
  is reported, not failed, under async backups and after a split that let both sides
  write (no majority min_cluster_size): last writer wins keeps one side's counter.
- own-reads: a get invoked outside every fault window finds a key whose put had been
  acknowledged before the get began (each key is written once, so the value is exact).
- no-crash: every member process that exited was made to by the nemesis (kill -9, or a
  SIGTERM it answered with exit 0).
- workload: the history is whole (no workload thread died) and has acknowledged
  operations of every kind: a run that did nothing proves nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grid.chaos.backends import Exit
from grid.chaos.history import OK, UNKNOWN, Op
from grid.chaos.nemesis import Window

SHOWN = 10  # offending operations listed per checker


@dataclass
class Verdict:
    name: str
    holds: bool
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)
    offending: list[str] = field(default_factory=list)


@dataclass
class Audit:
    """Reads of every write acknowledged before `before`, made at `at` (run seconds)."""

    label: str
    before: float
    at: float
    checked: int
    missing: list[str]  # keys that did not read back their acknowledged value
    error: str = ""


def acknowledged_writes(
    ops: Sequence[Op], final: dict[str, Any], audits: Sequence[Audit], sync_backups: int
) -> Verdict:
    acked = {op.key: op for op in ops if op.kind == "put" and op.outcome == OK}
    unknown = {op.key: op for op in ops if op.kind == "put" and op.outcome == UNKNOWN}
    lost = [k for k, op in acked.items() if final.get(k) != op.value]
    wrong = [k for k, op in unknown.items() if k in final and final[k] != op.value]
    at_failover = sorted({k for a in audits for k in a.missing})
    unknown_present = sum(1 for k in unknown if k in final)
    figures = {
        "acknowledged": len(acked),
        "unknown": len(unknown),
        "unknown_present_at_end": unknown_present,
        "lost_at_end": len(lost),
        "lost_at_failover": len(at_failover),
        "wrong_value": len(wrong),
        "audits": [(a.label, a.checked, len(a.missing)) for a in audits],
        "sync_backups": sync_backups,
    }
    offending = [f"{k}: acknowledged {acked[k].value!r}, read {final.get(k)!r}" for k in lost]
    offending += [f"{k}: missing after a failover (acknowledged)" for k in at_failover]
    offending += [f"{k}: unknown put of {unknown[k].value!r}, read {final[k]!r}" for k in wrong]
    errors = [f"audit '{a.label}': {a.error}" for a in audits if a.error]
    bad = len(lost) + len(at_failover)
    summary = (
        f"{len(acked)} acknowledged puts: {len(lost)} lost at the end, {len(at_failover)} "
        f"missing at a failover audit; {len(unknown)} of unknown fate ({unknown_present} "
        f"present)"
    )
    if sync_backups < 1:
        summary += "; async backups: losses are reported, not failed"
        holds = not wrong and not errors
    else:
        holds = bad == 0 and not wrong and not errors
    return Verdict("acknowledged-writes", holds, summary, figures, errors + offending[:SHOWN])


def convergence(converged_s: float | None, why: str, timeout: float) -> Verdict:
    if converged_s is None:
        return Verdict(
            "convergence",
            False,
            f"replicas not equal {timeout:.0f}s after the heal: {why}",
            {"converge_s": None},
            [why],
        )
    return Verdict(
        "convergence",
        True,
        f"every partition's replicas equal {converged_s:.1f}s after the heal",
        {"converge_s": round(converged_s, 2)},
    )


def counters(
    ops: Sequence[Op], final: dict[str, Any], sync_backups: int = 1, lww_split: bool = False
) -> Verdict:
    """Under async backups an acknowledged increment may die with its primary, and after
    a split in which both sides took writes (no majority min_cluster_size) the heal keeps
    one side's counter by last writer wins (docs/replication.md): a counter below its
    acknowledged count is then reported, not failed (one above still fails)."""
    acked: dict[str, int] = defaultdict(int)
    unknown: dict[str, int] = defaultdict(int)
    for op in ops:
        if op.kind == "incr":
            if op.outcome == OK:
                acked[op.key] += op.value
            elif op.outcome == UNKNOWN:
                unknown[op.key] += op.value
    offending = []
    figures = {}
    below = 0
    for key in sorted(set(acked) | set(unknown)):
        value = final.get(key) or 0
        figures[key] = {"acknowledged": acked[key], "unknown": unknown[key], "final": value}
        if value < acked[key] and (sync_backups < 1 or lww_split):
            below += 1
            figures[key]["lost_reported"] = acked[key] - value
        elif not acked[key] <= value <= acked[key] + unknown[key]:
            offending.append(
                f"{key}: final {value}, acknowledged {acked[key]}, unknown {unknown[key]}"
            )
    n = len(figures)
    summary = (
        f"{n} counters within [acknowledged, acknowledged + unknown]"
        if not offending
        else f"{len(offending)} of {n} counters outside [acknowledged, acknowledged + unknown]"
    )
    if below:
        why = "a split healed by last writer wins" if lww_split else "async backups"
        summary += f"; {below} below it after {why} (reported, not failed)"
    return Verdict("counters", not offending, summary, figures, offending[:SHOWN])


def own_reads(ops: Sequence[Op], windows: Sequence[Window]) -> Verdict:
    acked_at = {op.key: op for op in ops if op.kind == "put" and op.outcome == OK}
    spans = [(w.start, w.end if w.end is not None else float("inf")) for w in windows]
    judged = excused = 0
    offending = []
    for op in ops:
        if op.kind != "get" or op.outcome != OK:
            continue
        put = acked_at.get(op.key)
        if put is None or put.complete > op.invoke:
            continue  # not acknowledged before the read began: either answer is right
        if any(s <= op.invoke <= e or s <= op.complete <= e for s, e in spans):
            excused += 1
            continue
        judged += 1
        if op.value != put.value:
            offending.append(
                f"get {op.key} at {op.invoke:.2f}s read {op.value!r}; put {put.value!r} "
                f"acknowledged at {put.complete:.2f}s"
            )
    summary = (
        f"{judged} reads outside fault windows judged, {len(offending)} missed an "
        f"acknowledged write ({excused} inside windows excused)"
    )
    return Verdict(
        "own-reads",
        not offending,
        summary,
        {"judged": judged, "excused": excused, "stale": len(offending)},
        offending[:SHOWN],
    )


def no_crash(exits: Sequence[Exit]) -> Verdict:
    crashed = [e for e in exits if not e.caused_by]
    caused = len(exits) - len(crashed)
    offending = [
        f"{e.name} (pid {e.pid}) exited with code {e.code}:\n{e.log_tail}" for e in crashed
    ]
    summary = f"{caused} exits caused by the nemesis, {len(crashed)} by nothing we did"
    return Verdict(
        "no-crash", not crashed, summary, {"caused": caused, "crashed": len(crashed)}, offending
    )


def workload(ops: Sequence[Op], errors: Sequence[str]) -> Verdict:
    kinds = {op.kind for op in ops if op.outcome == OK}
    missing = {"put", "get", "incr"} - kinds
    offending = list(errors)
    if missing:
        offending.append(f"no acknowledged {', '.join(sorted(missing))}")
    return Verdict(
        "workload",
        not offending,
        f"{len(ops)} operations recorded"
        + (f"; {len(errors)} workload threads died" if errors else ""),
        {"operations": len(ops)},
        offending,
    )
