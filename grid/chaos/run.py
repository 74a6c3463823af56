"""One chaos run, from its options to an exit code.

1. Start the members (the backend), wait until the partitions settle.
2. Start the workload; run the scenario's faults until the duration is over (the
   nemesis audits after each failover); let the load run to the end of the duration.
3. Stop the load; wait until every partition's replicas are equal (convergence).
4. Read back every key written and every counter; note every member exit.
5. Stop the members (also on failure or Ctrl-C); check; report.

Exit codes: 0 every checker holds, 1 one fails (or the run could not finish), 2 bad
arguments or a backend or scenario that cannot run here.
"""

from __future__ import annotations

import random
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live

import grid
from grid.chaos import checkers, probe, report
from grid.chaos.backends import ProcessBackend, Unavailable, make_backend
from grid.chaos.checkers import Audit, Verdict
from grid.chaos.history import OK, UNKNOWN, History
from grid.chaos.nemesis import SETTLE_S, Nemesis, Window, poll
from grid.chaos.scenarios import SCENARIOS, Context
from grid.chaos.workload import COUNTERS, MAP, Workload, counter_key
from partitioning import partition_of

if TYPE_CHECKING:
    from grid.chaos.compose import ComposeRun, Prepared

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass
class Options:
    scenario: str
    backend: str = "process"
    duration: float = 20.0
    seed: int = 1
    members: int = 3
    out: str = ""
    plant: str = ""
    sync_backups: int = 1
    min_cluster_size: int = 0  # grid's default: every side of a split takes writes (AP)
    threads: int = 4
    max_ops: int = 5000  # per workload thread
    converge_timeout: float = 60.0


def usage_error(opts: Options) -> str:
    """Why these options cannot run (exit 2), or ""."""
    scenario = SCENARIOS.get(opts.scenario)
    if scenario is None:
        return f"no scenario {opts.scenario!r} (grid chaos list)"
    if opts.backend not in scenario.backends:
        return (
            f"scenario {opts.scenario} is not on the {opts.backend} backend "
            f"(it runs on: {', '.join(scenario.backends)})"
        )
    if not scenario.min_members <= opts.members <= 9:
        return f"--members must be between {scenario.min_members} and 9"
    if not 1 <= opts.duration <= 3600:
        return "--duration must be between 1 and 3600 seconds"
    if not 0 <= opts.sync_backups <= 1:
        return "--sync-backups must be 0 or 1 (one backup per partition)"
    if not 0 <= opts.min_cluster_size <= opts.members:
        return "--min-cluster-size must be between 0 and --members"
    if opts.plant and opts.backend == "netns":
        return "--plant runs on the process and compose backends only"
    if opts.plant:
        from simulation.plants import PLANTS

        if opts.plant not in PLANTS:
            return f"no plant {opts.plant!r} (python -m simulation.run --plant list)"
    if opts.out and Path(opts.out, "history.jsonl").exists():
        return f"{opts.out} holds a previous run: give an empty or new folder"
    return ""


class Run:
    """The state of one run, shared by its steps."""

    def __init__(self, opts: Options, console: Console) -> None:
        self.opts = opts
        self.console = console
        self.out = Path(opts.out) if opts.out else Path(tempfile.mkdtemp(prefix="grid-chaos-"))
        self.out.mkdir(parents=True, exist_ok=True)
        self.zero = time.monotonic()
        self.history = History(self.out / "history.jsonl")
        self.events: list[tuple[float, str]] = []
        self.audits: list[Audit] = []
        self.backend: ProcessBackend | None = None
        self.nemesis: Nemesis | None = None
        self.progress: report.Progress | None = None

    def now(self) -> float:
        return time.monotonic() - self.zero

    def log(self, message: str) -> None:
        self.events.append((round(self.now(), 3), message))
        self.console.print(f"[{self.now():6.1f}s] {message}", markup=False, highlight=False)

    def phase(self, name: str) -> None:
        if self.progress is not None:
            self.progress.phase = name

    # ---- steps ------------------------------------------------------------------------------
    def audit(self, label: str, before: float) -> None:
        """Read back every put acknowledged before `before` from the members still up."""
        assert self.backend is not None and self.nemesis is not None
        current = self.nemesis.current
        running = self.backend.running()
        if current and current.audit_from:  # a split: one side, the partitions it had
            seeds = [running[n] for n in current.audit_from if n in running]
            skip = set(current.audit_skip)
            count = current.partition_count
        else:
            down = current.target if current else ""
            seeds = [a for n, a in running.items() if n != down]
            skip, count = set(), 1
        want = {
            op.key: op.value
            for op in self.history.snapshot()
            if op.kind == "put"
            and op.outcome == OK
            and op.complete < before
            and not (skip and partition_of(op.key.encode(), count) in skip)
        }
        got, error = read_all(seeds, list(want), smart=self.backend.smart_routing)
        missing = [k for k, v in want.items() if got.get(k) != v] if not error else []
        self.audits.append(Audit(label, before, self.now(), len(want), missing, error))
        self.log(f"audit {label}: {len(want)} acknowledged puts, {len(missing)} missing {error}")

    def final_state(self) -> tuple[dict[str, Any], str]:
        assert self.backend is not None
        keys = {op.key for op in self.history.snapshot() if op.outcome in (OK, UNKNOWN)}
        keys |= {counter_key(i) for i in range(COUNTERS)}
        return read_all(
            list(self.backend.running().values()), sorted(keys), smart=self.backend.smart_routing
        )


def read_all(
    seeds: list[str], keys: list[str], tries: int = 3, smart: bool = True
) -> tuple[dict[str, Any], str]:
    """key -> value of every key present; with the error if every try failed."""
    error = ""
    for _ in range(tries):
        try:
            got: dict[str, Any] = {}
            with grid.Client(seeds, timeout=20, smart_routing=smart) as client:
                m = client.map(MAP)
                for i in range(0, len(keys), 1000):
                    got.update(m.get_many(keys[i : i + 1000], timeout=20))
            return got, ""
        except grid.GridError as e:
            error = f"{type(e).__name__}: {str(e)[:200]}"
            time.sleep(1)
    return {}, error


def lww_split(opts: Options, windows: list[Window]) -> bool:
    """Whether a split let two sides write with no majority rule: then, as documented
    (docs/replication.md, split brain), the heal keeps one side's value of a key written
    on both, and a counter loses the other side's increments. A one-way cut is a split
    for the member that hears nobody: it sees itself alone and, with no majority rule,
    takes every partition's writes."""
    majority = opts.members // 2 + 1
    splits = {"split", "one-way"}
    return opts.min_cluster_size < majority and any(w.kind in splits for w in windows)


def member_flags(opts: Options) -> tuple[str, ...]:
    """The flags every member of the run is started with."""
    flags: tuple[str, ...] = ("--sync-backups", str(opts.sync_backups))
    if opts.min_cluster_size:
        flags += ("--min-cluster-size", str(opts.min_cluster_size))
    return flags


def run(
    opts: Options,
    console: Console | None = None,
    *,
    project: ComposeRun | None = None,
    prepared: Prepared | None = None,
) -> int:
    """One run. On the compose backend this is called twice: on the host (no `project`:
    it builds the project and runs the rest in its network, grid/chaos/compose.py), then
    inside the project's network with the `project` it made. `prepared`: an engine and
    image to use instead of starting and building them (the tests share them)."""
    console = console or Console(stderr=True)
    if why := usage_error(opts):
        console.print(f"grid chaos: {why}", markup=False, highlight=False)
        return EXIT_USAGE
    if opts.backend == "compose" and project is None:
        from grid.chaos.compose import run_from_host

        return run_from_host(opts, console, prepared)
    r = Run(opts, console)
    try:
        disk_mb = SCENARIOS[opts.scenario].disk_mb
        r.backend = make_backend(
            opts.backend, r.out, member_flags(opts), opts.plant, disk_mb, project
        )
    except Unavailable as e:
        console.print(f"grid chaos: {e}", markup=False, highlight=False)
        return EXIT_USAGE
    failure = ""
    verdicts: list[Verdict] = []
    converged_s: float | None = None
    converge_why = ""
    final: dict[str, Any] = {}
    workload: Workload | None = None
    r.log(
        f"{opts.scenario} on {opts.backend}: {opts.members} members, {opts.duration:.0f}s, "
        f"seed {opts.seed}, sync_backups {opts.sync_backups}"
        + (f", min_cluster_size {opts.min_cluster_size}" if opts.min_cluster_size else "")
        + (f", planted bug {opts.plant}" if opts.plant else "")
        + f"; files in {r.out}"
    )
    try:
        backend = r.backend
        backend.start(opts.members)
        if why := poll(lambda: probe.settled(list(backend.running().values())), SETTLE_S):
            raise RuntimeError(f"the cluster did not settle after its start: {why}")
        r.log(f"{opts.members} members serving, partitions settled")
        r.nemesis = nemesis = Nemesis(backend, r.now, r.audit, r.log, opts.min_cluster_size)
        workload = Workload(
            list(backend.members().values()),
            r.history,
            threads=opts.threads,
            max_ops=opts.max_ops,
            max_seconds=opts.duration + 5,
            seed=opts.seed,
            clock_zero=r.zero,
            smart_routing=backend.smart_routing,
        )
        r.progress = report.Progress(
            opts.duration,
            r.history.counts,
            lambda: f"{w.kind} {w.target}" if (w := nemesis.current) else "",
        )
        with Live(r.progress, console=console, refresh_per_second=4, transient=True):
            load_start = time.monotonic()
            workload.start()
            r.phase("faults")
            deadline = load_start + opts.duration
            scenario = SCENARIOS[opts.scenario]
            scenario.run(Context(backend, nemesis, random.Random(opts.seed), deadline, r.log))
            r.phase("load")
            time.sleep(max(0.0, deadline - time.monotonic()))
            r.phase("stopping")
            workload.stop()
            r.log(f"load stopped: {r.history.counts()}")
            r.phase("converging")
            t0 = time.monotonic()
            converge_why = poll(
                lambda: probe.replicas_differ(backend.running()), opts.converge_timeout, 0.25
            )
            if not converge_why:
                converged_s = time.monotonic() - t0
                r.log(f"replicas equal {converged_s:.1f}s after the load stopped")
        final, error = r.final_state()
        if error:
            failure = f"the final reads failed: {error}"
        exits = backend.exits()
    except KeyboardInterrupt:
        console.print("grid chaos: interrupted; stopping the members")
        raise
    except Exception as e:
        failure = f"the run did not finish: {e!r}"
        (r.out / "error.txt").write_text(traceback.format_exc())
        exits = r.backend.exits()
    finally:
        if workload is not None:
            workload.stop()
        r.backend.stop()
        r.history.close()
    ops = r.history.snapshot()
    windows = r.nemesis.windows if r.nemesis else []
    verdicts = [
        checkers.workload(ops, workload.errors if workload else []),
        checkers.acknowledged_writes(ops, final, r.audits, opts.sync_backups),
        checkers.counters(ops, final, opts.sync_backups, lww_split(opts, windows)),
        checkers.own_reads(ops, windows),
        checkers.convergence(converged_s, converge_why, opts.converge_timeout),
        checkers.no_crash(exits),
    ]
    if failure:
        verdicts.insert(0, Verdict("run", False, failure, {}, [failure]))
    code = EXIT_OK if all(v.holds for v in verdicts) else EXIT_FAILED
    end = max((op.complete for op in ops), default=r.now())
    result = {
        "scenario": opts.scenario,
        "backend": opts.backend,
        "options": asdict(opts),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "operations": len(ops),
        "outcomes": {k: sum(1 for op in ops if op.outcome == k) for k in ("ok", "fail", "unknown")},
        "faults": [asdict(w) for w in windows],
        "audits": [asdict(a) for a in r.audits],
        "events": r.events,
        "exits": [asdict(e) for e in exits],
        "exit_code": code,
        "out": str(r.out),
    }
    title = f"{opts.scenario} ({opts.backend}, seed {opts.seed}" + (
        f", plant {opts.plant})" if opts.plant else ")"
    )
    if why := report.plot(r.out / "plot.png", ops, windows, end, title):
        r.log(why)
    report.write_json(r.out / "result.json", result, verdicts)
    report.print_summary(console, result, verdicts)
    return code
