"""`python -m grid.bench.failover_vs_redis`: failover time, grid and Redis Cluster side by side.

Why: the replication issue asks for "kill -9 of a primary until writes to its partitions
succeed again" (target <= 6 s at default settings) and quotes Redis Cluster, with its
defaults, at about 19 s. The project compares against a reference started on loopback in
the same run, because these machines are noisy; this bench is that reference.

How: trials alternate between the two systems (ABBA: grid first in even trials, Redis first
in odd ones), so a slow stretch of the machine falls on both. Each trial starts a fresh
cluster, writes for 2 s, kills one primary with SIGKILL and measures from the kill.

- grid: `grid.bench.replication.failover_trial`, called as is: 3 member processes
  (default backups=1), 50 sample keys each in its own partition of the victim, 10 control
  keys on the others, one writer task per key (put, pause 20 ms, put again, 5 s put
  timeout), the victim never the coordinator.
- Redis Cluster: redis-server (7.0 on Debian) with its defaults (`cluster-node-timeout`
  15000, read back with CONFIG GET), persistence off, bound to 127.0.0.1: 3 masters and 3
  replicas made with `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`,
  used once every node says `cluster_state:ok` and every replica's link is up. The same
  writers (replication.IntervalWriters) drive a small slot-routing client of this module:
  SET to the node the slot map names, MOVED followed within the call (what a cluster client
  does), and after a connection error or CLUSTERDOWN the slot map is read again from a live
  node (CLUSTER SLOTS, at most every 100 ms). 50 sample keys in distinct slots of the
  victim master (slots by redis-py's CRC16, as CLUSTER KEYSLOT), 10 control keys on the
  other masters. The victim rotates over the masters. Polled every 100 ms from the
  victim's replica (CLUSTER NODES): when it flags the victim `fail` and when it calls
  itself master.

Both sides: "first write ok" is the end of the first successful write to a sample key
issued after the kill, "all keys ok" the time by which every sample key has had one
(bounded: --failover-timeout, 60 s). Every process started is killed and the temp dir
removed however the run ends (kept after an error, or with --keep-logs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, MovedError, TryAgainError
from rich.console import Console
from rich.table import Table

from grid.bench.main import run_guarded
from grid.bench.redis_side import RedisServer, find_redis_server
from grid.bench.replication import (
    FAILOVER_TARGET_S,
    Clusters,
    IntervalWriters,
    Settings,
    failover_trial,
    fmt_s,
)
from grid.cli.status import wide_console
from grid.client.aio import AsyncMap
from grid.config import Config
from grid.harness.cluster import free_port

REDIS_CLI = "/usr/bin/redis-cli"
REDIS_MASTERS = 3
CONTROL_KEYS = 10
WARMUP_S = 2.0  # writes flowing before the kill, as in failover_trial
POLL_S = 0.1
REFRESH_EVERY_S = 0.1
UNREACHABLE_HOLD_S = 0.1


def find_redis_cli() -> str | None:
    if Path(REDIS_CLI).exists():
        return REDIS_CLI
    return shutil.which("redis-cli")


# ---- a Redis Cluster on loopback --------------------------------------------------------------
class NodeInfo:
    """One line of CLUSTER NODES."""

    def __init__(self, line: str) -> None:
        fields = line.split()
        self.id = fields[0]
        self.address = fields[1].split("@")[0]
        self.flags = set(fields[2].split(","))
        self.master_id = fields[3] if fields[3] != "-" else None
        self.slots = fields[8:]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags


def raw(response: Any, **options: Any) -> Any:
    """A response callback that keeps the reply as Redis sent it."""
    return response


def cluster_nodes(text: str) -> list[NodeInfo]:
    return [NodeInfo(line) for line in text.splitlines() if line.strip()]


class RedisClusterProcs:
    """`size` redis-server processes in cluster mode, made one cluster by redis-cli.

    Each node is a grid.bench.redis_side.RedisServer (its own session, persistence off,
    bound to 127.0.0.1) in its own directory under `root`, on a free port with a free
    cluster bus port (`cluster-port`, Redis 7). Nothing else of redis.conf is set, so the
    cluster timings are Redis's defaults. `stop` kills every process whatever state the
    cluster is in; use it in a `finally` (or `with`)."""

    def __init__(self, server: str, cli: str, root: Path, masters: int = REDIS_MASTERS) -> None:
        self.server_binary, self.cli = server, cli
        self.root = root
        self.masters = masters
        self.servers: list[RedisServer] = []

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.servers]

    def start(self, timeout: float = 60.0) -> RedisClusterProcs:
        deadline = time.monotonic() + timeout
        for i in range(self.masters * 2):
            d = self.root / f"node-{i + 1}"
            d.mkdir(parents=True, exist_ok=True)
            extra = ["--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                     "--cluster-config-file", "nodes.conf", "--protected-mode", "no",
                     "--loglevel", "notice"]  # fmt: skip
            server = RedisServer(self.server_binary, extra, directory=str(d))
            self.servers.append(server)  # before start: stop() must see it
            server.start()
        cmd = [self.cli, "--cluster", "create", *self.addresses, "--cluster-replicas", "1",
               "--cluster-yes"]  # fmt: skip
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
            stdin=subprocess.DEVNULL,
        )
        (self.root / "cluster-create.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        self.wait_ok(deadline)
        return self

    def client(self, address: str) -> redis.Redis:
        host, port = address.rsplit(":", 1)
        c = redis.Redis(host=host, port=int(port), socket_timeout=2, decode_responses=True)
        for command in ("CLUSTER INFO", "CLUSTER NODES"):  # the text, not redis-py's dict
            c.set_response_callback(command, raw)
        return c

    def wait_ok(self, deadline: float) -> None:
        """Until every node says cluster_state:ok, knows all nodes and sees the final
        roles (`self.masters` masters: right after `--cluster create` a node may still
        list a replica as a master until gossip reaches it), and every replica's link to
        its master is up."""
        last = ""
        while True:
            ready = 0
            for address in self.addresses:
                c = self.client(address)
                try:
                    info = c.execute_command("CLUSTER INFO")
                    nodes = cluster_nodes(c.execute_command("CLUSTER NODES"))
                    me = next(n for n in nodes if "myself" in n.flags)
                    link = "up" if me.is_master else c.info("replication")["master_link_status"]
                    last = f"{address}: {info.splitlines()[0]}, {len(nodes)} nodes, link {link}"
                    known = len(nodes) == len(self.servers)
                    roles = sum(n.is_master for n in nodes) == self.masters
                    if "cluster_state:ok" in info and known and roles and link == "up":
                        ready += 1
                except (redis.RedisError, StopIteration, KeyError) as e:
                    last = f"{address}: {type(e).__name__}: {e}"
                finally:
                    c.close()
            if ready == len(self.servers):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis cluster not ok in time; last: {last}")
            time.sleep(0.1)

    def nodes(self) -> list[NodeInfo]:
        """CLUSTER NODES from the first node that answers."""
        for address in self.addresses:
            c = self.client(address)
            try:
                return cluster_nodes(c.execute_command("CLUSTER NODES"))
            except redis.RedisError:
                continue
            finally:
                c.close()
        raise RuntimeError("no redis node answers")

    def server_at(self, address: str) -> RedisServer:
        return next(s for s in self.servers if f"127.0.0.1:{s.port}" == address)

    def kill(self, address: str) -> None:
        proc = self.server_at(address).process
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)

    def node_timeout_ms(self) -> int:
        c = self.client(self.addresses[0])
        try:
            return int(c.config_get("cluster-node-timeout")["cluster-node-timeout"])
        finally:
            c.close()

    def stop(self) -> None:
        for s in self.servers:
            with contextlib.suppress(Exception):
                s.stop(remove_dir=False)

    def __enter__(self) -> RedisClusterProcs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- a slot-routing writer --------------------------------------------------------------------
class SlotRouter:
    """`put(key, value, timeout)` against a Redis Cluster: SET sent to the node the slot map
    names, MOVED followed within the call; after a connection error, a timeout, CLUSTERDOWN
    or TRYAGAIN the call fails (the writer retries after its pause) and the slot map is read
    again from a node that answers. One attempt per call: no retries inside redis-py.

    A node that refused a connection is not dialled again for UNREACHABLE_HOLD_S (calls
    routed to it fail at once): 50 writers each reconnecting every 20 ms kept this process's
    event loop up to 0.7 s behind on a loaded 2-CPU machine, which the measure would count."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.addresses = list(addresses)
        self.owner: dict[int, str] = {}
        self._clients: dict[str, redis.asyncio.Redis] = {}
        self._refreshed_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self._unreachable: dict[str, float] = {}  # address -> when it last failed to answer
        self.refreshes = 0

    def _client(self, address: str) -> redis.asyncio.Redis:
        c = self._clients.get(address)
        if c is None:
            host, port = address.rsplit(":", 1)
            c = redis.asyncio.Redis(
                host=host,
                port=int(port),
                socket_timeout=5,
                socket_connect_timeout=1,
                retry=Retry(NoBackoff(), 0),
            )
            c.set_response_callback("CLUSTER SLOTS", raw)
            self._clients[address] = c
        return c

    async def refresh(self) -> None:
        for address in self.addresses:
            try:
                slots = await asyncio.wait_for(
                    self._client(address).execute_command("CLUSTER SLOTS"), 1.0
                )
            except (redis.RedisError, OSError, TimeoutError):
                continue
            owner: dict[int, str] = {}
            for start, end, master, *_ in slots:
                host = master[0].decode() if isinstance(master[0], bytes) else master[0]
                for slot in range(int(start), int(end) + 1):
                    owner[slot] = f"{host}:{int(master[1])}"
            self.owner = owner
            self.refreshes += 1
            return

    def _refresh_soon(self) -> None:
        now = time.perf_counter()
        busy = self._refreshing is not None and not self._refreshing.done()
        if busy or now - self._refreshed_at < REFRESH_EVERY_S:
            return
        self._refreshed_at = now
        self._refreshing = asyncio.create_task(self.refresh())

    async def put(self, key: str, value: bytes, timeout: float) -> None:
        slot = key_slot(key.encode())
        for _ in range(5):
            address = self.owner[slot]
            if time.perf_counter() - self._unreachable.get(address, -1e9) < UNREACHABLE_HOLD_S:
                self._refresh_soon()
                raise redis.ConnectionError(f"{address} did not answer just now")
            try:
                await asyncio.wait_for(self._client(address).set(key, value), timeout)
                return
            except MovedError as e:
                self.owner[e.slot_id] = f"{e.host}:{e.port}"
            except (redis.ConnectionError, redis.TimeoutError, TimeoutError, OSError):
                self._unreachable[address] = time.perf_counter()
                self._refresh_soon()
                raise
            except (ClusterDownError, TryAgainError):
                self._refresh_soon()
                raise
        raise redis.RedisError(f"too many redirects for slot {slot}")

    async def close(self) -> None:
        if self._refreshing is not None:
            with contextlib.suppress(Exception):
                await self._refreshing
        for c in self._clients.values():
            with contextlib.suppress(Exception):
                await c.aclose()


class LoopLag:
    """How late this event loop wakes a 10 ms sleep: the writers' client must keep up, or
    "writes ok again" would include time the client spent behind rather than Redis."""

    def __init__(self) -> None:
        self.max_ms = 0.0
        self._stop = False
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            self.max_ms = max(self.max_ms, (time.perf_counter() - t - 0.01) * 1e3)

    async def stop(self) -> float:
        self._stop = True
        await asyncio.wait_for(self._task, 5)
        return self.max_ms


def redis_keys(owner: dict[int, str], owners: set[str], count: int, prefix: str) -> list[str]:
    """`count` keys in distinct slots whose master is in `owners`."""
    out: list[str] = []
    used: set[int] = set()
    i = 0
    while len(out) < count and i < 1_000_000:
        key = f"{prefix}{i}"
        i += 1
        slot = key_slot(key.encode())
        if owner.get(slot) in owners and slot not in used:
            used.add(slot)
            out.append(key)
    return out


async def redis_trial(
    server: str, cli: str, root: Path, trial: int, s: Settings, live: list[RedisClusterProcs]
) -> dict[str, Any]:
    procs = RedisClusterProcs(server, cli, root / f"redis-{trial + 1}")
    live.append(procs)
    router: SlotRouter | None = None
    try:
        await asyncio.to_thread(procs.start)
        node_timeout = await asyncio.to_thread(procs.node_timeout_ms)
        nodes = await asyncio.to_thread(procs.nodes)
        masters = sorted((n for n in nodes if n.is_master), key=lambda n: n.address)
        victim = masters[trial % len(masters)]
        replica = next(n for n in nodes if n.master_id == victim.id)
        router = SlotRouter(procs.addresses)
        await router.refresh()
        others = {m.address for m in masters if m is not victim}
        victim_keys = redis_keys(router.owner, {victim.address}, s.sample_keys, "fo")
        control_keys = redis_keys(router.owner, others, CONTROL_KEYS, "ctl")
        writers = IntervalWriters(
            cast(AsyncMap, router),  # duck-typed: IntervalWriters only calls put(k, v, timeout)
            victim_keys + control_keys,
            s.interval,
            s.put_timeout,
        )
        watch = procs.client(replica.address)
        marks: dict[str, float] = {}
        stop_polling = False

        def poll_replica(t_kill: float) -> None:
            """From the victim's replica: when it flags the victim FAIL, when it is master."""
            while not stop_polling and len(marks) < 2:
                t = time.perf_counter()
                with contextlib.suppress(redis.RedisError):
                    for n in cluster_nodes(watch.execute_command("CLUSTER NODES")):
                        if n.id == victim.id and "fail" in n.flags:
                            marks.setdefault("fail_s", t - t_kill)
                        if n.id == replica.id and n.is_master:
                            marks.setdefault("replica_master_s", t - t_kill)
                time.sleep(max(0.0, POLL_S - (time.perf_counter() - t)))

        try:
            await asyncio.sleep(WARMUP_S)
            t_kill = time.perf_counter()
            procs.kill(victim.address)
            lag = LoopLag()
            poller = asyncio.create_task(asyncio.to_thread(poll_replica, t_kill))
            deadline = t_kill + s.failover_timeout
            want = set(victim_keys)
            done: set[str] = set()
            seen = 0  # attempts already looked at: failed tries pile up by the ten thousand
            while time.perf_counter() < deadline:
                new, seen = writers.attempts[seen:], len(writers.attempts)
                done.update(a.key for a in new if a.ok and a.t0 >= t_kill)
                if want <= done:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # a little after, as failover_trial does
        finally:
            await writers.stop()
            stop_polling = True
        loop_lag_ms = await lag.stop()
        t_all_done = time.perf_counter()
        await asyncio.wait_for(poller, 5)
        watch.close()

        after = [a for a in writers.attempts if a.key in want and a.t0 >= t_kill and a.ok]
        first_ok = min((a.t1 - t_kill for a in after), default=None)
        per_key: dict[str, float] = {}
        for a in after:
            per_key[a.key] = min(per_key.get(a.key, 1e9), a.t1 - t_kill)
        all_ok = max(per_key.values()) if len(per_key) == len(want) else None
        window = [a for a in writers.attempts if t_kill <= a.t1 <= t_kill + (all_ok or 0) + 1]
        failed = Counter(a.error for a in window if not a.ok and a.key in want)
        ctl = [a for a in writers.attempts if a.key not in want and t_kill <= a.t1 <= t_all_done]
        ctl_failed = [a for a in ctl if not a.ok]  # CLUSTERDOWN while a slot has no master
        pre = [a for a in writers.attempts if a.ok and a.t1 < t_kill]
        return {
            "trial": trial + 1,
            "victim": victim.address,
            "replica": replica.address,
            "cluster_node_timeout_ms": node_timeout,
            "sample_keys": len(victim_keys),
            "writes_before_kill_per_s": len(pre) / WARMUP_S,
            "fail_flagged_s": marks.get("fail_s"),
            "replica_master_s": marks.get("replica_master_s"),
            "first_write_ok_s": first_ok,
            "all_keys_ok_s": all_ok,
            "failed_writes": dict(failed),
            "control_writes": len(ctl),
            "control_failed": len(ctl_failed),
            "control_errors": dict(Counter(a.error for a in ctl_failed)),
            "control_failed_from_s": min((a.t1 - t_kill for a in ctl_failed), default=None),
            "control_failed_until_s": max((a.t1 - t_kill for a in ctl_failed), default=None),
            "control_max_ms": max(((a.t1 - a.t0) * 1e3 for a in ctl), default=0.0),
            "slot_map_reads": router.refreshes,
            "client_loop_lag_max_ms": loop_lag_ms,
        }
    finally:
        if router is not None:
            await router.close()
        procs.stop()
        live.remove(procs)


# ---- the run ----------------------------------------------------------------------------------
def failover_settings(trials: int, sample_keys: int, interval: float, timeout: float) -> Settings:
    """replication.Settings for its failover part only (the other fields are its defaults,
    unused here)."""
    return Settings(
        only=["failover"], trials=trials, sample_keys=sample_keys, interval=interval,
        put_timeout=5.0, failover_timeout=timeout, loads=["single"], callers=64,
        keyspace=100_000, value_size=100, slice_s=5.0, rounds=4, lag_rate=10_000,
        lag_batch=10, lag_s=20.0, fill_keys=1_000_000, fill_members=2, settle_timeout=600.0,
    )  # fmt: skip


async def run_trials(
    console: Console, root: Path, server: str, cli: str, s: Settings, live: list[RedisClusterProcs]
) -> list[dict[str, Any]]:
    clusters = Clusters(root / "grid")
    virtual_nodes = Config().virtual_nodes
    out: list[dict[str, Any]] = []
    try:
        for trial in range(s.trials):
            order = ("grid", "redis") if trial % 2 == 0 else ("redis", "grid")
            for system in order:
                with console.status(f"trial {trial + 1} of {s.trials}: {system}"):
                    if system == "grid":
                        r = await failover_trial(console, clusters, trial, s, virtual_nodes)
                    else:
                        r = await redis_trial(server, cli, root, trial, s, live)
                r["system"] = system
                out.append(r)
                console.print(
                    f"{system} trial {trial + 1}: killed {r['victim']}; first write ok after "
                    f"{fmt_s(r['first_write_ok_s'])} s, all {r['sample_keys']} keys after "
                    f"{fmt_s(r['all_keys_ok_s'])} s"
                )
    finally:
        clusters.stop_all()
    return out


def detection(r: dict[str, Any]) -> str:
    key = "dead_on_coordinator_s" if r["system"] == "grid" else "fail_flagged_s"
    return fmt_s(r.get(key))


def promotion(r: dict[str, Any]) -> str:
    key = "failover_table_logged_s" if r["system"] == "grid" else "replica_master_s"
    return fmt_s(r.get(key))


def report(console: Console, results: list[dict[str, Any]], s: Settings) -> None:
    t = Table(
        title=f"failover: kill -9 of a primary; {s.sample_keys} sample keys + 10 control keys, "
        f"each written every {s.interval * 1e3:g} ms; seconds after the kill",
        title_justify="left",
    )
    cols = ("system", "trial", "victim", "declared dead", "new primary", "first write ok",
            "all keys ok", "failed tries", "control failed", "control max ms")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="left" if col in ("system", "victim") else "right")
    for r in results:
        t.add_row(
            r["system"],
            str(r["trial"]),
            r["victim"].replace("127.0.0.1", ""),
            detection(r),
            promotion(r),
            fmt_s(r["first_write_ok_s"]),
            fmt_s(r["all_keys_ok_s"]),
            str(sum(r["failed_writes"].values())),
            str(r["control_failed"]),
            f"{r['control_max_ms']:.0f}",
        )
    t.caption = (
        "declared dead: grid, the coordinator logs the victim dead; Redis, its replica flags "
        "it fail (100 ms poll).\nnew primary: grid, the failover table logged; Redis, the "
        "replica says it is master (100 ms poll).\nfailed tries: a grid put retries within "
        "its 5 s timeout; a Redis SET to the dead node fails at once (connection refused) and "
        "is tried again 20 ms later."
    )
    console.print(t)
    summary = Table(title="summary (seconds after the kill)", title_justify="left")
    for col in ("system", "trials", "first write ok median", "worst", "all keys ok median",
                "worst", "timed out"):  # fmt: skip
        summary.add_column(col, justify="left" if col == "system" else "right")
    medians: dict[str, float] = {}
    for system in ("grid", "redis"):
        rs = [r for r in results if r["system"] == system]
        first = [r["first_write_ok_s"] for r in rs if r["first_write_ok_s"] is not None]
        alls = [r["all_keys_ok_s"] for r in rs if r["all_keys_ok_s"] is not None]
        if alls:
            medians[system] = statistics.median(alls)
        summary.add_row(
            system,
            str(len(rs)),
            fmt_s(statistics.median(first) if first else None),
            fmt_s(max(first) if first else None),
            fmt_s(statistics.median(alls) if alls else None),
            fmt_s(max(alls) if alls else None),
            str(len(rs) - len(alls)),
        )
    console.print(summary)
    grid_all = [r["all_keys_ok_s"] for r in results if r["system"] == "grid"]
    if grid_all:
        good = all(x is not None and x <= FAILOVER_TARGET_S for x in grid_all)
        met = "[green]met[/green]" if good else "[red]missed[/red]"
        console.print(f"grid, all keys ok <= {FAILOVER_TARGET_S:g} s in every trial: {met}")
    if "grid" in medians and "redis" in medians and medians["grid"] > 0:
        console.print(
            f"median all keys ok, Redis Cluster / grid: {medians['redis'] / medians['grid']:.1f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grid.bench.failover_vs_redis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--trials", type=int, default=3, help="trials per system [3]")
    parser.add_argument("--sample-keys", type=int, default=50, help="sample keys [50]")
    parser.add_argument(
        "--interval", type=float, default=0.02, help="pause between writes of a key, s [0.02]"
    )
    parser.add_argument(
        "--failover-timeout", type=float, default=60.0, help="give a trial up after, s [60]"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--keep-logs",
        nargs="?",
        const="",
        metavar="DIR",
        help="keep the members' and redis-servers' logs (in DIR, or in the temp dir)",
    )
    args = parser.parse_args(argv)
    if min(args.trials, args.sample_keys) < 1 or args.interval < 0:
        parser.error("--trials and --sample-keys must be >= 1, --interval >= 0")
    console = wide_console()
    server, cli = find_redis_server(), find_redis_cli()
    if server is None or cli is None:
        console.print("[red]redis-server and redis-cli are needed (/usr/bin or $PATH)[/red]")
        return 2
    s = failover_settings(args.trials, args.sample_keys, args.interval, args.failover_timeout)
    from grid import logs

    logs.configure("warning")
    version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
    load_before = os.getloadavg()
    console.print(
        f"failover, grid vs Redis Cluster: {s.trials} trial(s) each, alternating; "
        f"{version.split()[2] if version else 'redis-server'}; {os.cpu_count()} CPUs, "
        f"load average {load_before[0]:.2f}"
    )
    keep = args.keep_logs is not None
    root = Path(args.keep_logs or tempfile.mkdtemp(prefix="grid-bench-failover-redis-"))
    root.mkdir(parents=True, exist_ok=True)
    live: list[RedisClusterProcs] = []
    started = time.monotonic()

    def work() -> list[dict[str, Any]]:
        try:
            return asyncio.run(run_trials(console, root, server, cli, s, live))
        finally:
            for procs in live:
                procs.stop()

    result: list[dict[str, Any]] | None = None
    code: int | None = None
    try:  # the files are decided here alone (run_guarded is told to keep them)
        result, code = run_guarded(console, "failover vs redis", work, root, keep=True)
    finally:
        # after an error run_guarded said they are kept; after Ctrl-C or SIGTERM they go
        if keep:
            console.print(f"logs kept in {root}")
        elif code != 1:
            shutil.rmtree(root, ignore_errors=True)
    if code is not None:
        return code
    assert result is not None
    console.print()
    report(console, result, s)
    load_after = os.getloadavg()
    console.print(
        f"total run time {time.monotonic() - started:.0f} s; load average (1, 5, 15 min) at the "
        f"start {', '.join(f'{x:.2f}' for x in load_before)}, at the end "
        f"{', '.join(f'{x:.2f}' for x in load_after)}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"trials": result}, indent=2) + "\n")
        console.print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
