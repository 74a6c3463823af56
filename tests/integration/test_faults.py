"""Faults no test covered before (issue 11), with real member processes on loopback.

1. kill -9 of the coordinator under writes with sync_backups=1: nothing acknowledged is
   lost, the next name coordinates, and a member that joins afterwards gets partitions.
2. kill -9 in the middle of a migration (the joiner, or the coordinator while it is a
   fill's source): the cluster settles, nothing acknowledged is lost, replicas converge.
3. SIGSTOP of a primary for longer than failure detection, then SIGCONT: it must not
   serve its old copy as the latest, and nothing acknowledged meanwhile is lost.
4. A rolling restart of every member in turn under load, with data dirs: nothing
   acknowledged is lost.

Writers (tests/integration/support.py BackgroundWrites) keep each key's last acknowledged
value; the checks read every such key back and compare digests of every partition's
replicas. Every wait is a bounded poll; every member is stopped in a `finally`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import grid
from grid.harness.cluster import LocalCluster, MemberProcess
from partitioning import PartitionTable, partition_of
from tests.integration.support import (
    BackgroundWrites,
    live,
    partitions_settled,
    raw_stats,
    replicas_differ,
    table_of,
    timed_wait,
    wait_partitions_settled,
    wait_paused,
)

pytestmark = pytest.mark.integration

MAP = "faults"
SYNC = ("--sync-backups", "1")
SETTLE_S = 60.0  # partitions settled after a start, a join or a failover (2 loaded cores)
FAILOVER_S = 30.0  # failure detection (2-6 s) plus the coordinator's round, with margin
CONVERGE_S = 60.0  # replicas equal once the writes stopped


@pytest.fixture
def timings() -> Iterator[dict[str, float]]:
    """Named durations, printed at the end whether the test passed or not (pytest -s)."""
    found: dict[str, float] = {}
    try:
        yield found
    finally:
        print("\n" + ", ".join(f"{k} {v:.2f}s" for k, v in found.items()))


def cluster_of(tmp_path: Path, size: int, args: tuple[str, ...] = SYNC) -> LocalCluster:
    """A cluster of `size` members started, settled, its logs under tmp_path/logs."""
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    cluster = LocalCluster(size, member_args=args, log_dir=logs)
    try:
        cluster.start()
        wait_partitions_settled(cluster.addresses, timeout=SETTLE_S)
    except BaseException:
        cluster.stop(grace=5)
        raise
    return cluster


def owner(table: PartitionTable, key: str) -> str:
    return table.owner(partition_of(key.encode(), table.partition_count))


def coordinator_of(members: list[MemberProcess]) -> MemberProcess:
    acting = [m for m in members if raw_stats(m.address).migration.coordinator]
    assert len(acting) == 1, f"{len(acting)} members coordinate: {[m.name for m in acting]}"
    return acting[0]


def failed_over(survivors: list[MemberProcess], dead: str) -> str:
    """Empty when one survivor coordinates and every survivor's table leaves `dead` out."""
    for m in survivors:
        table = table_of(m.address)
        if table is None or dead in table.members:
            return f"{m.name}'s table (v{table.version if table else 0}) still names {dead}"
    acting = [m.name for m in survivors if raw_stats(m.address).migration.coordinator]
    if len(acting) != 1:
        return f"coordinating: {acting}"
    return ""


def converged(members: list[MemberProcess]) -> str:
    """Empty when the members share one table naming them all, nothing moves, no backup
    lags and every partition's replicas have one digest root."""
    lagging = {
        m.name: n for m in members if (n := raw_stats(m.address).migration.lag_changes_total)
    }
    if lagging:
        return f"backups behind: {lagging}"
    return replicas_differ(members)


def assert_nothing_lost(load: BackgroundWrites, seeds: list[str]) -> None:
    history = load.history
    with grid.Client(seeds, timeout=20) as client:
        lost, examples = history.lost(client.map(MAP))
    print(f"\n{history.acks} writes acknowledged, {history.errors} failed, {lost} lost")
    assert not lost, (
        f"{lost} of {len(history.acked)} keys lost their last acknowledged write: {examples}"
    )


# ---- 1. the coordinator killed -------------------------------------------------------------------
def test_coordinator_killed_under_sync_writes_loses_nothing_and_a_joiner_gets_partitions(
    no_grid_env: None, tmp_path: Path, timings: dict[str, float]
) -> None:
    """Three members, sync_backups=1, writers going; kill -9 of the coordinator (member-1).
    Must hold: member-2 coordinates and fails over, writes are acknowledged again; a fourth
    member that joins then is given primaries and backups (at least half its share in the
    final table); the replicas converge; every key (the dead coordinator's too) holds its
    last acknowledged value."""
    cluster = cluster_of(tmp_path, 3)
    try:
        victim = coordinator_of(cluster.members)
        assert victim.name == "member-1", (
            "the coordinator is the live member with the smallest name"
        )
        before = table_of(victim.address)
        assert before is not None
        with BackgroundWrites(cluster.addresses, MAP) as load:
            load.wait_acks(500, what="writes before the kill")
            t0 = time.monotonic()
            cluster.kill(victim)
            victim.process.wait(10)
            cluster.members.remove(victim)  # the joiner's seed is then member-2
            survivors = live(cluster)
            timings["failover"] = timed_wait(
                lambda: failed_over(survivors, victim.name), FAILOVER_S, "failover"
            )
            assert coordinator_of(survivors).name == "member-2", "the next name coordinates"
            load.wait_acks(500, what="writes after the failover")
            timings["kill to writes again"] = time.monotonic() - t0

            joiner = cluster.start_member(3)
            cluster.wait_ready(joiner)
            t0 = time.monotonic()

            def joiner_holds_partitions() -> str:
                s = raw_stats(joiner.address).migration
                if s.primaries == 0 or s.backups == 0:
                    return f"{joiner.name} holds {s.primaries} primaries, {s.backups} backups"
                return ""

            timings["join to partitions"] = timed_wait(
                joiner_holds_partitions, SETTLE_S, f"{joiner.name} given partitions"
            )
            load.wait_acks(500, what="writes after the join")
        members = live(cluster)
        timings["converged"] = timed_wait(lambda: converged(members), CONVERGE_S, "converged")
        table = table_of(joiner.address)
        assert table is not None
        held = table.partitions_of(joiner.name)
        share = table.partition_count // len(members)
        assert len(held.primary) >= share // 2, f"{joiner.name} primary of {len(held.primary)}"
        # the check covers the dead coordinator's partitions: keys it was primary of
        theirs = [k for k in load.history.acked if owner(before, k) == victim.name]
        assert len(theirs) >= 20, f"only {len(theirs)} written keys were {victim.name}'s"
        assert_nothing_lost(load, cluster.addresses)
    finally:
        cluster.stop(grace=5)


# ---- 2. kill -9 in the middle of a migration -----------------------------------------------------
PRELOAD = 20_000  # keys of about 200 bytes: about 4 MB to spread over the members
SLOW_MOVES = (*SYNC, "--migration-max-bytes-per-s", "400000")  # a join takes seconds


def kill_mid_move(
    cluster: LocalCluster, coordinator: MemberProcess, joiner: MemberProcess, victim: MemberProcess
) -> str:
    """kill -9 `victim` in the middle of the migration: the joiner is primary of partitions
    it was given and is filling more (seen by the stats read just before the kill), and
    the coordinator still has moves to make. Empty once killed; else what is not so yet."""
    pending = raw_stats(coordinator.address).migration.pending
    s = raw_stats(joiner.address).migration
    if s.primaries < 2 or s.in_flight == 0 or pending == 0:
        return f"joiner primary of {s.primaries}, {s.in_flight} fills in flight, {pending} pending"
    held = raw_stats(victim.address).migration
    cluster.kill(victim)
    print(
        f"\nkill -9 {victim.name} (primary of {held.primaries}, backup of {held.backups}) "
        f"with {s.in_flight} fills in flight to {joiner.name}, {s.fills_done} done, "
        f"{pending} moves pending"
    )
    return ""


@pytest.mark.parametrize("victim_is", ["joiner", "coordinator"])
def test_kill_9_in_the_middle_of_a_join_loses_nothing_and_replicas_converge(
    no_grid_env: None, tmp_path: Path, timings: dict[str, float], victim_is: str
) -> None:
    """A fourth member joins a cluster holding 20,000 keys while writes go on
    (sync_backups=1, moves throttled so the join takes seconds); once it is primary of a
    few partitions and is filling more, kill -9 the joiner (its fills, and the primaries it
    took, die with it) or the coordinator (it drives the waves and is the source of a third
    of the fills). Must hold: the survivors fail over and settle (after the coordinator's
    death the join goes on under the next one); the replicas converge; every preloaded key
    and every key's last acknowledged write is there."""
    cluster = cluster_of(tmp_path, 3, SLOW_MOVES)
    try:
        coordinator = coordinator_of(cluster.members)
        with grid.Client(cluster.addresses, timeout=30) as client:
            m = client.map("preload")
            for i in range(0, PRELOAD, 2000):
                m.put_many({f"p{j}": "x" * 200 for j in range(i, i + 2000)})
        with BackgroundWrites(cluster.addresses, MAP) as load:
            load.wait_acks(300, what="writes before the join")
            joiner = cluster.start_member(3)
            cluster.wait_ready(joiner)
            t0 = time.monotonic()
            victim = joiner if victim_is == "joiner" else coordinator
            timings["join to kill"] = timed_wait(
                lambda: kill_mid_move(cluster, coordinator, joiner, victim),
                SETTLE_S,
                "a join half done",
                interval=0.01,
            )
            t0 = time.monotonic()
            victim.process.wait(10)
            cluster.members.remove(victim)
            survivors = live(cluster)
            timings["failover"] = timed_wait(
                lambda: failed_over(survivors, victim.name), FAILOVER_S, "failover"
            )
            load.wait_acks(500, what="writes after the kill")
            addresses = [m.address for m in survivors]
            timed_wait(
                lambda: "" if partitions_settled(addresses) else "moving", SETTLE_S, "settled"
            )
            timings["kill to settled"] = time.monotonic() - t0
        timings["converged"] = timed_wait(lambda: converged(survivors), CONVERGE_S, "converged")
        if victim_is == "coordinator":  # the join went on under the next coordinator
            table = table_of(joiner.address)
            assert table is not None
            held = table.partitions_of(joiner.name)
            share = table.partition_count // len(survivors)
            assert len(held.primary) >= share // 2, f"{joiner.name} primary of {len(held.primary)}"
        with grid.Client(cluster.addresses, timeout=30) as client:
            got = client.map("preload").get_many([f"p{j}" for j in range(PRELOAD)], timeout=30)
        wrong = [f"p{j}" for j in range(PRELOAD) if got.get(f"p{j}") != "x" * 200]
        assert not wrong, f"{len(wrong)} preloaded keys lost or changed, e.g. {wrong[:5]}"
        assert_nothing_lost(load, cluster.addresses)
    finally:
        cluster.stop(grace=5)


# ---- 3. a primary paused past failure detection --------------------------------------------------
class ServedStale(AssertionError):
    """A member resumed after a pause served its old copy as the latest."""


STALE_WINDOW_S = 10.0  # how long the resumed member's reads are watched for old values


@pytest.mark.parametrize("victim_is", ["primary", "coordinator"])
def test_a_primary_paused_past_failure_detection_does_not_serve_its_old_copy(
    no_grid_env: None, tmp_path: Path, timings: dict[str, float], victim_is: str
) -> None:
    """sync_backups=1. Keys the victim is primary of are written "old"; the victim is
    SIGSTOPped until the others fail over without it; the same keys are then written "new"
    (acknowledged by the promoted primaries) while writers go on; a client connected to the
    victim alone (no smart routing) sends a read during the pause; SIGCONT.

    Must hold: the read sent during the pause and every read at the victim after SIGCONT
    return "new" (ServedStale otherwise); every "new" and every write acknowledged by the
    writers is still there after the victim is back and the replicas are equal (its stale
    copy overwrote nothing)."""
    cluster = cluster_of(tmp_path, 3)
    direct: grid.Client | None = None
    pool = ThreadPoolExecutor(1)
    try:
        victim = cluster.members[0] if victim_is == "coordinator" else cluster.members[2]
        assert (victim is coordinator_of(cluster.members)) == (victim_is == "coordinator")
        others = [m for m in cluster.members if m is not victim]
        before = table_of(victim.address)
        assert before is not None
        theirs = [k for k in (f"s{i}" for i in range(3000)) if owner(before, k) == victim.name]
        assert len(theirs) > 300, f"{victim.name} is primary of only {len(theirs)} keys"
        with grid.Client(cluster.addresses, timeout=20) as client:
            client.map("s").put_many(dict.fromkeys(theirs, "old"))
        # connected before the pause, so its requests wait in the victim's socket
        direct = grid.Client(victim.address, timeout=30, smart_routing=False)
        assert set(direct.map("s").get_many(theirs).values()) == {"old"}
        stale = Stale(direct.map("s"), theirs)
        with BackgroundWrites(cluster.addresses, MAP) as load:
            load.wait_acks(300, what="writes before the pause")
            victim.process.send_signal(signal.SIGSTOP)
            try:
                wait_paused(victim.pid)
                t0 = time.monotonic()
                timings["paused to failed over"] = timed_wait(
                    lambda: failed_over(others, victim.name), FAILOVER_S, "failover"
                )
                with grid.Client([m.address for m in others], timeout=20) as client:
                    client.map("s").put_many(dict.fromkeys(theirs, "new"))
                load.wait_acks(300, what="writes during the pause")
                in_pause = pool.submit(stale.get)
                # time for the request to reach the victim's socket (nothing to poll: a
                # stopped process shows nothing); it must not be answered meanwhile
                time.sleep(0.2)
                assert not in_pause.done(), "a stopped member answered"
                timings["paused"] = time.monotonic() - t0
            finally:
                victim.process.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            stale.note("the read sent during the pause", in_pause.result(40))
            # reads at the victim until it routes by the cluster's table and answers "new"
            newest = max(t.version for t in (table_of(m.address) for m in others) if t)
            for _ in range(int(STALE_WINDOW_S / 0.05)):
                got = stale.get()
                stale.note(f"{time.monotonic() - resumed:.2f}s after SIGCONT", got)
                mine = table_of(victim.address)
                if mine is not None and mine.version >= newest and stale.clean(got):
                    break
                if time.monotonic() - resumed > STALE_WINDOW_S:
                    break
                time.sleep(0.05)
            timings["resumed to serving new values"] = time.monotonic() - resumed
            load.wait_acks(300, what="writes after SIGCONT")
        print(f"\n{victim.name} after SIGCONT: {stale.summary()}")
        # nothing acknowledged meanwhile was lost or overwritten, wherever the reads go
        with grid.Client([m.address for m in others], timeout=20) as client:
            got = client.map("s").get_many(theirs)
        wrong = [k for k in theirs if got.get(k) != "new"]
        assert not wrong, f"{len(wrong)} keys lost their acknowledged 'new': {wrong[:5]}"
        assert_nothing_lost(load, [m.address for m in others])
        mine = table_of(victim.address)
        if mine is None or mine.version < newest:
            raise ServedStale(
                f"{victim.name} still routes by its old table {STALE_WINDOW_S:.0f}s after "
                f"SIGCONT (v{mine.version if mine else 0}, the others' v{newest}); "
                + stale.summary()
            )
        members = live(cluster)
        timings["converged"] = timed_wait(lambda: converged(members), CONVERGE_S, "converged")
        assert stale.clean(stale.get()), "the victim's old copy came back after convergence"
        assert_nothing_lost(load, cluster.addresses)
        if stale.reads:
            raise ServedStale(f"{victim.name} served its old copy after SIGCONT: {stale.summary()}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if direct is not None:
            direct.close()
        for m in live(cluster):
            cluster.kill(m, signal.SIGCONT)
        cluster.stop(grace=5)


class Stale:
    """Reads of the paused victim's keys at the victim alone, and those that returned a
    value from before the pause. A read it refuses (a grid error) is no stale read."""

    def __init__(self, m: grid.Map, keys: list[str]) -> None:
        self.m = m
        self.keys = keys
        self.reads: list[str] = []  # "when: n of m keys not 'new'"
        self.refused = 0

    def get(self) -> dict[str, object] | None:
        try:
            return self.m.get_many(self.keys)
        except grid.GridError:
            self.refused += 1
            return None

    def clean(self, got: dict[str, object] | None) -> bool:
        return got is not None and all(got.get(k) == "new" for k in self.keys)

    def note(self, when: str, got: dict[str, object] | None) -> None:
        old = sum(1 for k in self.keys if got.get(k) != "new") if got is not None else 0
        if old:
            self.reads.append(f"{when}: {old} of {len(self.keys)} keys not 'new'")

    def summary(self) -> str:
        reads = f"{len(self.reads)} stale reads" if self.reads else "no stale read"
        if self.reads:
            reads += f", first {self.reads[0]}, last {self.reads[-1]}"
        return f"{reads}; {self.refused} refused"


# ---- 4. a rolling restart ------------------------------------------------------------------------
class NotReadmitted(AssertionError):
    """A member restarted after a graceful leave was not given partitions again."""


READMIT_S = 30.0  # a restarted member holds primaries again (3.7-7.3 s measured, loaded)


@pytest.mark.timeout(300)
def test_rolling_restart_under_load_with_data_dirs_loses_nothing(
    no_grid_env: None, tmp_path: Path, timings: dict[str, float]
) -> None:
    """Three members with data dirs (backups=1, asynchronous: the default) under writes;
    each in turn, the coordinator last, is stopped with SIGTERM (a graceful leave hands
    its partitions off), started again on its data dir (recovering its log), and must hold
    primaries again before the next one goes. Writes are acknowledged all along; at the end
    every key holds its last acknowledged value and every partition's replicas are equal."""
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = LocalCluster(0, log_dir=logs)
    try:
        for i in range(3):
            cluster.start_member(i, ["--data-dir", str(tmp_path / f"data-{i + 1}")])
        for m in cluster.members:
            cluster.wait_ready(m)
        wait_partitions_settled(cluster.addresses, timeout=SETTLE_S)
        assert coordinator_of(cluster.members).name == "member-1"
        with BackgroundWrites(cluster.addresses, MAP) as load:
            load.wait_acks(300, what="writes before the restarts")
            for i in (2, 1, 0):
                member = cluster.members[i]
                t0 = time.monotonic()
                cluster.kill(member, signal.SIGTERM)
                code = member.process.wait(60)
                assert code == 0, f"{member.name} exited with {code}:\n{member.log_tail()}"
                timings[f"{member.name} left"] = time.monotonic() - t0
                load.wait_acks(200, what=f"writes while {member.name} is down")
                if "--seeds" not in member.cmd:  # member-1 started the cluster alone
                    # it left: the others never reach out to it, it must come to them
                    others = [m.gossip_address for m in cluster.members if m is not member]
                    member.cmd = (*member.cmd, "--seeds", ",".join(others))
                member = cluster.restart(member)
                cluster.wait_ready(member)
                timings[f"{member.name} back"] = readmitted(cluster, member)
                s = raw_stats(member.address)
                assert s.persistence.records_loaded > 0, f"{member.name} loaded nothing from disk"
                load.wait_acks(200, what=f"writes after {member.name} came back")
        members = cluster.members
        timings["converged"] = timed_wait(lambda: converged(members), CONVERGE_S, "converged")
        assert coordinator_of(members).name == "member-1"
        assert_nothing_lost(load, cluster.addresses)
    finally:
        cluster.stop(grace=5)


def readmitted(cluster: LocalCluster, member: MemberProcess) -> float:
    """Seconds until the partitions settled with `member` holding primaries again;
    NotReadmitted if it holds none after READMIT_S."""

    def check() -> str:
        if raw_stats(member.address).migration.primaries == 0:
            return f"{member.name} holds no primaries"
        return "" if partitions_settled(cluster.addresses) else "partitions moving"

    try:
        return timed_wait(check, READMIT_S, f"{member.name} given partitions again")
    except AssertionError as e:
        if raw_stats(member.address).migration.primaries:
            raise
        views = {
            m.name: (s.coordinator, s.primaries, s.table_version >> 32)
            for m in cluster.members
            for s in [raw_stats(m.address).migration]
        }
        raise NotReadmitted(f"{e}; (coordinates, primaries, epoch) per member: {views}") from None
