"""`python -m grid.bench.antientropy`: time for anti-entropy to repair divergent keys (issue 6).

Real member processes on loopback (grid.harness.cluster.LocalCluster), each with its own data dir,
backups=1. Replicas are made to diverge without network namespaces or test hooks: two
histories that later join.

1. member-1 and member-2 start as two separate clusters (`join=False`: no `--seeds`).
   member-1 takes the background (--background keys, default 100,000) and the old
   version of --conflicts keys; then member-2 takes --keys keys only it has (default
   10,000) and the new version of the conflicting keys (written later: the last writer).
2. member-2 is stopped (SIGTERM) and started again with its data dir and `--seeds`
   member-1's gossip address. It recovers its keys from disk and joins member-1's
   cluster; member-1 (the smaller name) is the coordinator and keeps its table, so
   partitions move to member-2 and anti-entropy has to merge the two histories. With two
   members and backups=1 every partition is on both.
3. Measured from the restart: member-2 serving (health check), the table naming both
   members, the partitions settled (one table everywhere, nothing pending or moving),
   every partition's two replicas with one digest root (Digests RPC), and every divergent
   key readable with its winning value through member-1 (a smart client). Also the first
   and last "anti-entropy repaired replicas" log events, the members' AntiEntropyStats
   and their CPU seconds from the restart to convergence.

The stages are polled every --poll seconds (digests and reads cost the members CPU on a
small machine: each Digests call hashes every item a member holds, so it is polled half
as often). Every wait has a timeout; every member process is stopped however the run
ends (normal exit, error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

import grid
from grid.bench.main import run_guarded
from grid.bench.migration import write_json
from grid.bench.stats import process_cpu_s
from grid.cli.status import wide_console
from grid.harness.cluster import LocalCluster, MemberProcess, migration_state
from grid.member.placement.routing import table_from_proto
from partitioning import PartitionTable
from proto import grid_pb2 as pb

MAP = "ae"
TABLE = "/grid.v1.Grid/Table"
DIGESTS = "/grid.v1.Grid/Digests"
STATS = "/grid.v1.Grid/Stats"
REPAIRED_EVENT = "anti-entropy repaired replicas"
BATCH = 1000


@dataclass
class Settings:
    keys: int = 10_000
    conflicts: int = 10_000
    background: int = 100_000
    value_bytes: int = 100
    trials: int = 3
    interval: float | None = None  # None: the member default (10 s)
    poll: float = 0.25
    timeout: float = 120.0


# ---- admin RPCs ----------------------------------------------------------------------------------
class Admin:
    def __init__(self) -> None:
        self._channels: dict[str, grpc.Channel] = {}

    def _call(self, address: str, method: str, request: bytes, timeout: float) -> bytes:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = grpc.insecure_channel(
                address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            )
        return ch.unary_unary(method)(request, timeout=timeout)

    def table(self, address: str) -> PartitionTable | None:
        msg = pb.PartitionTable.FromString(
            self._call(address, TABLE, pb.TableRequest().SerializeToString(), 5.0)
        )
        return table_from_proto(msg)[0] if msg.version else None

    def roots(self, address: str) -> dict[int, int]:
        reply = pb.DigestsReply.FromString(
            self._call(address, DIGESTS, pb.DigestsRequest().SerializeToString(), 20.0)
        )
        return {d.partition: d.root for d in reply.digests}

    def stats(self, address: str) -> pb.StatsReply:
        return pb.StatsReply.FromString(
            self._call(address, STATS, pb.StatsRequest().SerializeToString(), 5.0)
        )

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()


def differing_partitions(admin: Admin, members: Sequence[MemberProcess]) -> int | None:
    """Partitions whose replicas (as member-1's table names them) have different roots;
    None while the members' tables disagree or do not name every member."""
    tables = [admin.table(m.address) for m in members]
    if any(t is None for t in tables) or len({t.version for t in tables if t}) != 1:
        return None
    table = tables[0]
    assert table is not None
    if set(table.members) != {m.name for m in members}:
        return None
    roots = {m.name: admin.roots(m.address) for m in members}
    n = 0
    for p, replicas in enumerate(table.replica_lists):
        seen = [roots[r].get(p) for r in replicas]
        if None in seen or len(set(seen)) != 1:
            n += 1
    return n


# ---- data ----------------------------------------------------------------------------------------
def value(tag: bytes, size: int) -> bytes:
    return (tag * (size // len(tag) + 1))[:size]


def put_all(m: Any, keys: Sequence[str], v: bytes) -> None:
    for i in range(0, len(keys), BATCH):
        m.put_many({k: v for k in keys[i : i + BATCH]}, timeout=60)


def count_wrong(m: Any, want: dict[str, bytes]) -> int:
    keys = list(want)
    wrong = 0
    for i in range(0, len(keys), BATCH):
        part = keys[i : i + BATCH]
        got = m.get_many(part, timeout=30)
        wrong += sum(1 for k in part if got.get(k) != want[k])
    return wrong


# ---- logs ----------------------------------------------------------------------------------------
def events_after(path: Path, since: float, event: str) -> list[tuple[float, dict[str, Any]]]:
    """(seconds after wall time `since`, the event) of a member's JSON log lines."""
    out = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            e = json.loads(line)
            if isinstance(e, dict) and e.get("event") == event:
                at = datetime.fromisoformat(e["timestamp"]).timestamp() - since
                if at >= -0.5:
                    out.append((at, e))
    return sorted(out, key=lambda x: x[0])


# ---- one trial -----------------------------------------------------------------------------------
def trial(console: Console, s: Settings, n: int, root: Path) -> dict[str, Any]:
    work = root / f"trial-{n}"
    logs = work / "logs"
    logs.mkdir(parents=True)
    member_args = ["--backups", "1", "--log-level", "info"]
    if s.interval is not None:
        member_args += ["--anti-entropy-interval-s", str(s.interval)]
    admin = Admin()
    cluster = LocalCluster(0, join=False, member_args=member_args, log_dir=logs)
    try:
        m1 = cluster.start_member(0, ["--data-dir", str(work / "data-1")])
        m2 = cluster.start_member(1, ["--data-dir", str(work / "data-2")])
        cluster.wait_ready(m1, 60)
        cluster.wait_ready(m2, 60)

        only = [f"only2-{i}" for i in range(s.keys)]
        conflicts = [f"both-{i}" for i in range(s.conflicts)]
        background = [f"bg-{i}" for i in range(s.background)]
        v_bg, v_old, v_new = (value(t, s.value_bytes) for t in (b"bg", b"old1", b"new2"))
        t_load = time.monotonic()
        with grid.Client(m1.address, timeout=60, codec="raw") as c1:
            a = c1.map(MAP, codec="raw")
            put_all(a, background, v_bg)
            put_all(a, conflicts, v_old)
        time.sleep(0.05)  # member-2's writes below are the later ones
        with grid.Client(m2.address, timeout=60, codec="raw") as c2:
            b = c2.map(MAP, codec="raw")
            put_all(b, only, v_new)
            put_all(b, conflicts, v_new)
        load_s = time.monotonic() - t_load
        want = dict.fromkeys(only + conflicts, v_new)

        cluster.kill(m2, signal.SIGTERM)
        m2.process.wait(60)
        m2.cmd = (*m2.cmd, "--seeds", m1.gossip_address)
        wall0 = time.time()
        t0 = time.monotonic()
        cpu0 = {m1.name: process_cpu_s(m1.pid)}
        m2 = cluster.restart(m2)
        cluster.wait_ready(m2, 60)
        marks: dict[str, float | None] = {"serving": time.monotonic() - t0}
        members = [m1, m2]
        deadline = t0 + s.timeout
        polls = 0
        last = ""
        client = grid.Client(m1.address, timeout=30, codec="raw")
        try:
            m = client.map(MAP, codec="raw")
            while time.monotonic() < deadline:
                polls += 1
                now = time.monotonic() - t0
                with contextlib.suppress(grpc.RpcError, grid.GridError):
                    if "joined" not in marks:
                        t = admin.table(m1.address)
                        if t is not None and m2.name in t.members:
                            marks["joined"] = now
                    if "settled" not in marks and migration_state(
                        [m1.address, m2.address], 5.0
                    ) == (0, 0):
                        t = admin.table(m1.address)
                        if t is not None and m2.name in t.members:
                            marks["settled"] = now
                    if polls % 2 == 0 and "joined" in marks:
                        if "identical" not in marks:
                            d = differing_partitions(admin, members)
                            last = f"{d} partitions differ" if d is not None else "tables differ"
                            if d == 0:
                                marks["identical"] = now
                        if "readable" not in marks:
                            wrong = count_wrong(m, want)
                            last += f", {wrong} keys not readable with their winner"
                            if wrong == 0:
                                marks["readable"] = now
                if {"settled", "identical", "readable"} <= marks.keys():
                    break
                if not m1.alive() or not m2.alive():
                    raise RuntimeError(f"a member exited:\n{m1.log_tail()}\n{m2.log_tail()}")
                time.sleep(s.poll)
            else:
                raise TimeoutError(f"not converged after {s.timeout:.0f} s (last: {last})")
            converged = time.monotonic() - t0
            cpu = {
                m1.name: _delta(process_cpu_s(m1.pid), cpu0[m1.name]),
                m2.name: process_cpu_s(m2.pid),  # a new process: all of it since the restart
            }
            # a check that goes past the polls: every key of the background too
            bg_wrong = count_wrong(m, dict.fromkeys(background, v_bg))
        finally:
            client.close()
        stats = {mp.name: admin.stats(mp.address) for mp in members}
        repairs = [
            (at, mp.name, int(e.get("records", 0)))
            for mp in members
            for at, e in events_after(mp.log_path, wall0, REPAIRED_EVENT)
        ]
        repairs.sort()
        result = {
            "trial": n,
            "load_s": load_s,
            "serving_s": marks.get("serving"),
            "joined_s": marks.get("joined"),
            "settled_s": marks.get("settled"),
            "identical_s": marks.get("identical"),
            "readable_s": marks.get("readable"),
            "converged_s": converged,
            "first_repair_logged_s": repairs[0][0] if repairs else None,
            "last_repair_logged_s": repairs[-1][0] if repairs else None,
            "repair_log": [
                {"at_s": round(at, 2), "member": name, "records": r} for at, name, r in repairs
            ],
            "background_wrong": bg_wrong,
            "recovered_by_member_2": stats[m2.name].persistence.entries_recovered,
            "entries": {name: st.total.entries for name, st in stats.items()},
            "anti_entropy": {
                name: {
                    "rounds": st.anti_entropy.rounds,
                    "partitions_compared": st.anti_entropy.partitions_compared,
                    "partitions_differing": st.anti_entropy.partitions_differing,
                    "keys_repaired": st.anti_entropy.keys_repaired,
                    "keys_sent": st.anti_entropy.keys_sent,
                    "last_round_s": round(st.anti_entropy.last_round_s, 4),
                    "tombstones": st.anti_entropy.tombstones,
                }
                for name, st in stats.items()
            },
            "cpu_s_to_converged": cpu,
        }
        console.print(
            f"trial {n}: serving {fmt(result['serving_s'])} s, joined {fmt(result['joined_s'])} s,"
            f" settled {fmt(result['settled_s'])} s, identical {fmt(result['identical_s'])} s,"
            f" readable {fmt(result['readable_s'])} s, first repair logged"
            f" {fmt(result['first_repair_logged_s'])} s"
        )
        return result
    finally:
        admin.close()
        cluster.stop()


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


# ---- report --------------------------------------------------------------------------------------
def report(console: Console, results: list[dict[str, Any]], s: Settings) -> None:
    t = Table(
        title=(
            f"anti-entropy: {s.keys:,} keys only on member-2, {s.conflicts:,} conflicting "
            f"(member-2 later), {s.background:,} background keys on member-1\nseconds from "
            "member-2's restart; m1/m2: member-1/member-2 (repaired: applied there; round s: "
            "the last round; CPU: member-1 from the restart, member-2 since it started)"
        ),
        title_justify="left",
    )

    def per_member(r: dict[str, Any], f: Callable[[dict[str, Any]], str]) -> str:
        return "/".join(f(a) for a in r["anti_entropy"].values())

    cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("trial", lambda r: str(r["trial"])),
        ("serving", lambda r: fmt(r["serving_s"])),
        ("joined", lambda r: fmt(r["joined_s"])),
        ("settled", lambda r: fmt(r["settled_s"])),
        ("1st repair", lambda r: fmt(r["first_repair_logged_s"])),
        ("identical", lambda r: fmt(r["identical_s"])),
        ("readable", lambda r: fmt(r["readable_s"])),
        ("repaired m1/m2", lambda r: per_member(r, lambda a: f"{a['keys_repaired']:,}")),
        ("rounds", lambda r: per_member(r, lambda a: str(a["rounds"]))),
        ("differing", lambda r: per_member(r, lambda a: str(a["partitions_differing"]))),
        ("round s", lambda r: per_member(r, lambda a: f"{a['last_round_s']:.2f}")),
        ("CPU s", lambda r: "/".join(fmt(v, 1) for v in r["cpu_s_to_converged"].values())),
    ]
    for name, _ in cols:
        t.add_column(name, justify="right")
    for r in results:
        t.add_row(*(f(r) for _, f in cols))
    console.print(t)
    for r in results:
        log = ", ".join(f"{e['at_s']}s {e['member']} {e['records']:,}" for e in r["repair_log"])
        console.print(f"trial {r['trial']} repairs logged: {log or 'none'}")
        entries = set(r["entries"].values())
        expected = s.keys + s.conflicts + s.background
        if entries != {expected} or r["background_wrong"]:
            console.print(
                f"[red]trial {r['trial']}: entries {r['entries']} (expected {expected:,} each), "
                f"background keys wrong {r['background_wrong']}[/red]"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m grid.bench.antientropy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--keys", type=int, default=10_000, help="keys only member-2 has [10000]")
    p.add_argument(
        "--conflicts", type=int, default=10_000,
        help="keys both have, member-2's version later (0: none) [10000]",
    )  # fmt: skip
    p.add_argument(
        "--background", type=int, default=100_000,
        help="keys only member-1 has before the join (the partition moves copy them) [100000]",
    )  # fmt: skip
    p.add_argument("--value-bytes", type=int, default=100, help="value size [100]")
    p.add_argument("--trials", type=int, default=3, help="fresh clusters, one after another [3]")
    p.add_argument(
        "--interval", type=float, default=None,
        help="--anti-entropy-interval-s for the members (default: theirs, 10 s)",
    )  # fmt: skip
    p.add_argument("--poll", type=float, default=0.25, help="seconds between polls [0.25]")
    p.add_argument("--timeout", type=float, default=120.0, help="per trial, from the restart")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--keep-logs", action="store_true", help="keep the member logs and data")
    args = p.parse_args(argv)
    s = Settings(
        keys=args.keys,
        conflicts=args.conflicts,
        background=args.background,
        value_bytes=args.value_bytes,
        trials=args.trials,
        interval=args.interval,
        poll=args.poll,
        timeout=args.timeout,
    )
    from grid import logs

    logs.configure("warning")
    console = wide_console()
    root = Path(tempfile.mkdtemp(prefix="grid-bench-ae-"))
    load_before = os.getloadavg()
    results, code = run_guarded(
        console,
        "anti-entropy bench",
        lambda: [trial(console, s, n, root) for n in range(1, s.trials + 1)],
        root,
        bool(args.keep_logs),
    )
    if code is not None:
        return code
    assert results is not None
    report(console, results, s)
    load_after = os.getloadavg()
    console.print(
        f"load average (1, 5, 15 min) at the start {', '.join(f'{x:.2f}' for x in load_before)},"
        f" at the end {', '.join(f'{x:.2f}' for x in load_after)}"
    )
    if args.json:
        write_json(
            console,
            args.json,
            {"trials": results},
            settings=asdict(s),
            load_average_before=load_before,
            load_average_after=load_after,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
