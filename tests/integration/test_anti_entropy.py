"""Anti-entropy on real replicas that diverged (issue 6), on loopback, without namespaces.

Two ways to make replicas differ with nothing but member processes and their data dirs:

1. Two histories that later join. member-1 and member-2 start as two separate clusters
   (LocalCluster(join=False)), each with its own data dir, and both take writes: keys only
   one of them has, keys both wrote (the later writer must win), deletes of keys the
   other side holds (the tombstone is newer, so the key must be gone), a put after the
   other side's delete (the put wins). member-2 is then stopped and started again with
   `--seeds` pointing at member-1: it recovers its keys from disk and joins member-1's
   cluster, whose coordinator (member-1, the smaller name) keeps its table; partitions
   move and anti-entropy merges both histories. With backups=1 and two members every
   partition is on both, so afterwards both must hold exactly the same data.
2. A dead member returns with a stale copy: 3 members with data dirs, one (never the
   coordinator) is killed with -9, keys are updated and deleted while it is away, and it
   is started again with its old copy. While it rejoins a smart client keeps reading the
   changed keys: no read may return an old value or a deleted key.

Convergence is checked through the admin RPCs (Table, Digests: every partition's replicas
have one root) and through reads. Every wait and loop is bounded in time and count; the
LocalCluster context manager stops every member however the test ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import grid
from grid.harness.cluster import LocalCluster
from tests.integration.support import (
    partitions_settled,
    raw_stats,
    replicas_differ,
    table_of,
    timed_wait,
    wait_partitions_settled,
    wait_replicated,
    wait_until,
    wrong_values,
)

pytestmark = pytest.mark.integration

MAP = "ae"
CONVERGE_S = 30.0


@pytest.fixture
def timings() -> Iterator[dict[str, Any]]:
    """Named durations, printed at the end whether the test passed or not (pytest -s)."""
    found: dict[str, Any] = {}
    try:
        yield found
    finally:
        print(
            "\n"
            + ", ".join(
                f"{k} {v:.2f}s" if isinstance(v, float) else f"{k} {v}" for k, v in found.items()
            )
        )


# ---- 1. two histories that later join ------------------------------------------------------------
ONLY = 2000  # keys only one side wrote (each side)
BOTH = 500  # keys both wrote; member-1 later for "z", member-2 later for "w"
DELETED = 300  # member-2 put them; member-1 deleted them later (never having had them)
REVIVED = 300  # member-2 put and deleted them; member-1 put them later


def test_two_histories_join_and_merge_by_lww(
    no_grid_env: None, tmp_path: Path, timings: dict[str, Any]
) -> None:
    d1, d2 = tmp_path / "data-1", tmp_path / "data-2"
    (tmp_path / "logs").mkdir()
    with LocalCluster(
        0, join=False, member_args=["--backups", "1"], log_dir=tmp_path / "logs"
    ) as cluster:
        m2 = cluster.start_member(1, ["--data-dir", str(d2)])  # member-2, alone
        m1 = cluster.start_member(0, ["--data-dir", str(d1)])  # member-1, alone
        cluster.wait_ready(m2)
        cluster.wait_ready(m1)
        with grid.Client(m2.address, timeout=10) as c2, grid.Client(m1.address, timeout=10) as c1:
            a, b = c1.map(MAP), c2.map(MAP)
            b.put_many({f"x{i}": {"side": 2, "i": i} for i in range(ONLY)})
            b.put_many({f"z{i}": "old" for i in range(BOTH)})
            b.put_many({f"d{i}": "doomed" for i in range(DELETED)})
            b.put_many({f"r{i}": "before" for i in range(REVIVED)})
            b.delete_many([f"r{i}" for i in range(REVIVED)])
            time.sleep(0.05)  # the clocks move on: member-1's writes below are later
            a.put_many({f"y{i}": {"side": 1, "i": i} for i in range(ONLY)})
            a.put_many({f"z{i}": "new" for i in range(BOTH)})
            a.delete_many([f"d{i}" for i in range(DELETED)])
            a.put_many({f"r{i}": "after" for i in range(REVIVED)})
            a.put_many({f"w{i}": "old" for i in range(BOTH)})
            time.sleep(0.05)
            b.put_many({f"w{i}": "new" for i in range(BOTH)})
            assert b.size() == ONLY + 2 * BOTH + DELETED
            assert a.size() == ONLY + 2 * BOTH + REVIVED

        want: dict[str, Any] = {f"x{i}": {"side": 2, "i": i} for i in range(ONLY)}
        want.update({f"y{i}": {"side": 1, "i": i} for i in range(ONLY)})
        want.update({f"z{i}": "new" for i in range(BOTH)})
        want.update({f"w{i}": "new" for i in range(BOTH)})
        want.update({f"r{i}": "after" for i in range(REVIVED)})
        absent = [f"d{i}" for i in range(DELETED)]

        # member-2 comes back with its data dir, now seeded with member-1's gossip address
        cluster.kill(m2, 15)
        m2.process.wait(20)
        m2.cmd = (*m2.cmd, "--seeds", m1.gossip_address)
        t0 = time.monotonic()
        m2 = cluster.restart(m2)
        cluster.wait_ready(m2)
        timings["restart -> serving"] = time.monotonic() - t0
        recovered = raw_stats(m2.address).persistence.entries_recovered
        assert recovered >= ONLY + 2 * BOTH + DELETED, recovered
        members = [m1, m2]
        timings["join -> replicas identical"] = (
            timed_wait(
                lambda: replicas_differ(members), CONVERGE_S, "digests identical after the join"
            )
            + timings["restart -> serving"]
        )

        with grid.Client(m1.address, timeout=20) as client:
            m = client.map(MAP)
            wrong, examples = wrong_values(m, want, absent)
            assert wrong == 0, f"{wrong} keys do not hold their last writer's value: {examples}"
            assert m.size() == len(want)
        stats = {mp.name: raw_stats(mp.address) for mp in members}
        entries = {name: s.total.entries for name, s in stats.items()}
        assert set(entries.values()) == {len(want)}, entries
        ae = {name: s.anti_entropy for name, s in stats.items()}
        timings["keys repaired"] = {n: s.keys_repaired for n, s in ae.items()}
        timings["partitions differing"] = {n: s.partitions_differing for n, s in ae.items()}
        assert sum(s.keys_repaired for s in ae.values()) > 0, ae


# ---- 2. a dead member returns with a stale copy --------------------------------------------------
BASE = 3000
UPDATED = 600  # base keys given a new value while the member is away
REMOVED = 400  # base keys deleted while it is away
READ_LOOP_S = 20.0
READ_LOOP_MAX = 2000


def test_dead_member_returns_with_stale_copy_never_served(
    no_grid_env: None, tmp_path: Path, timings: dict[str, Any]
) -> None:
    (tmp_path / "logs").mkdir()
    with LocalCluster(0, member_args=["--backups", "1"], log_dir=tmp_path / "logs") as cluster:
        for i in range(3):
            cluster.start_member(i, ["--data-dir", str(tmp_path / f"data-{i + 1}")])
        for mp in cluster.members:
            cluster.wait_ready(mp)
        addresses = cluster.addresses
        wait_partitions_settled(addresses, timeout=30)
        seed = cluster.members[0]

        with grid.Client(seed.address, timeout=10) as client:
            m = client.map(MAP)
            for j in range(0, BASE, 1000):
                m.put_many({f"k{i}": {"v": "base", "i": i} for i in range(j, j + 1000)})
            wait_replicated(addresses)

            coordinator = next(
                mp for mp in cluster.members if raw_stats(mp.address).migration.coordinator
            )
            victim = next(mp for mp in cluster.members if mp is not coordinator and mp is not seed)
            survivors = [mp for mp in cluster.members if mp is not victim]
            cluster.kill(victim)  # SIGKILL
            victim.process.wait(10)
            t0 = time.monotonic()
            wait_until(
                lambda: all(
                    (t := table_of(s.address)) is not None and victim.name not in t.members
                    for s in survivors
                ),
                timeout=20,
                interval=0.1,
                what=f"the table to drop {victim.name}",
            )
            timings["kill -> table without it"] = time.monotonic() - t0

            updated = [f"k{i}" for i in range(UPDATED)]
            removed = [f"k{i}" for i in range(UPDATED, UPDATED + REMOVED)]
            m.put_many({k: {"v": "new", "k": k} for k in updated})
            m.delete_many(removed)
            wait_replicated([s.address for s in survivors])

            want: dict[str, Any] = {f"k{i}": {"v": "base", "i": i} for i in range(BASE)}
            want.update({k: {"v": "new", "k": k} for k in updated})
            for k in removed:
                del want[k]

            # the victim comes back with its stale copy; read the changed keys meanwhile
            t0 = time.monotonic()
            victim = cluster.restart(victim)
            stale: list[str] = []
            reads = errors = loops = 0
            identical_at: float | None = None
            watched = updated + removed
            while loops < READ_LOOP_MAX and time.monotonic() - t0 < READ_LOOP_S:
                loops += 1
                try:
                    got = m.get_many(watched, timeout=5)
                except grid.GridError:
                    errors += 1
                    time.sleep(0.05)
                    continue
                reads += len(watched)
                # an updated key read old or missing, a removed key read at all: stale
                stale += [k for k in updated if got.get(k) != want[k]]
                stale += [k for k in removed if k in got]
                if identical_at is None and loops % 10 == 0 and victim.alive():
                    # identical replicas on a settled table: the rejoin is over
                    with contextlib.suppress(grpc.RpcError):
                        if not replicas_differ(cluster.members) and partitions_settled(
                            cluster.addresses
                        ):
                            identical_at = time.monotonic() - t0
                if identical_at is not None and time.monotonic() - t0 > identical_at + 2.0:
                    break
            timings["reads during rejoin"] = reads
            timings["read loops"] = loops
            timings["read errors"] = errors
            assert victim.alive(), victim.log_tail()
            recovered = raw_stats(victim.address).persistence.entries_recovered
            timings["entries the victim recovered"] = recovered
            assert recovered > 0, "the victim did not come back with its old copy"
            assert not stale, f"{len(stale)} stale reads while {victim.name} rejoined: {stale[:5]}"
            assert reads > 0 and errors < loops // 2, "too few reads succeeded to judge"

            if identical_at is None:  # within CONVERGE_S of the restart, or timed_wait fails
                timed_wait(
                    lambda: replicas_differ(cluster.members),
                    CONVERGE_S - (time.monotonic() - t0),
                    "digests identical after the return",
                )
                identical_at = time.monotonic() - t0
            timings["restart -> replicas identical"] = identical_at
            wait_partitions_settled(cluster.addresses, timeout=30)
            wrong, examples = wrong_values(m, want, removed)
            assert wrong == 0, f"{wrong} keys wrong after {victim.name} returned: {examples}"
            assert m.size() == len(want)
