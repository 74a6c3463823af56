"""A member restarted WITHOUT its data (kill -9, data dir wiped, started again at once)
quicker than failure detection, with real member processes.

Nobody noticed it was gone, so the table still names it for copies it no longer holds.
Before this was handled it served its primaries empty (reads answered "no such key",
counters restarted from zero) and the coordinator counted its empty copies as backups.
Now (partitioning/ownership.py, `lacking`) it serves none of those places, says so when
it answers a publish, and the coordinator fails them over as if the member were gone,
then fills it again:

1. while the cluster settles, a read gets its key's value or an error, never a miss;
2. the restarted member logged that it lacks copies, and the coordinator that it
   removed them (so the test ran the quick path, not a failure detection);
3. once settled, every key written before the restart reads its value, and the
   replicas are identical.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

import grid
from grid.harness.cluster import LocalCluster
from tests.integration.support import (
    partitions_settled,
    replicas_differ,
    table_of,
    timed_wait,
    wait_partitions_settled,
    wait_replicated,
    wrong_values,
)

pytestmark = pytest.mark.integration

KEYS = 3_000
BATCH = 500
SETTLE_S = 60.0
LACKING = "restarted without data: the table names this member for copies it lacks"
FAILED_OVER = "members lack their copies (restarted without data): replicas removed"


def read_all(m: Any, want: dict[str, int]) -> tuple[int, list[str]]:
    """(batches that failed, keys read as missing or wrong) over every key."""
    errors = 0
    bad: list[str] = []
    keys = list(want)
    for i in range(0, len(keys), BATCH):
        part = keys[i : i + BATCH]
        try:
            got = m.get_many(part, timeout=5)
        except grid.GridError:
            errors += 1  # not settled yet: an error is allowed, a miss is not
            continue
        bad += [f"{k}={got.get(k)!r} want {want[k]}" for k in part if got.get(k) != want[k]]
    return errors, bad


def written_then_killed(cluster: LocalCluster) -> tuple[Any, Any, dict[str, int]]:
    """KEYS keys written through member-1 and on their backups, then member-3 killed
    (SIGKILL): (member-1, member-3, what was written)."""
    seed = cluster.members[0]
    want = {f"k{i}": i for i in range(KEYS)}
    with grid.Client(seed.address, timeout=10) as client:
        client.map("m").put_many(want)
    wait_replicated(cluster.addresses)
    victim = cluster.members[2]
    cluster.kill(victim)  # SIGKILL
    victim.process.wait(10)
    return seed, victim, want


def read_while_settling(
    cluster: LocalCluster, address: str, victim: Any, want: dict[str, int]
) -> tuple[int, int]:
    """Read every key over and over (bounded by SETTLE_S) until a round reads all of
    them, the victim said it lacks copies and the partitions settled; a read that misses
    fails the test. (rounds, failed batches)."""
    rounds = errors = 0
    with grid.Client(address, timeout=10) as client:
        m = client.map("m")
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:  # bounded: reads while it settles
            failed, bad = read_all(m, want)
            rounds += 1
            errors += failed
            assert not bad, f"read {len(bad)} keys missing or wrong: {bad[:5]}"
            seen = LACKING in victim.log_tail(10_000)
            if failed == 0 and seen and partitions_settled(cluster.addresses):
                break
    return rounds, errors


def test_a_quick_restart_without_data_serves_no_empty_copy(
    no_grid_env: None, tmp_path: Path
) -> None:
    (tmp_path / "logs").mkdir()
    with LocalCluster(0, member_args=["--backups", "1"], log_dir=tmp_path / "logs") as cluster:
        for i in range(3):
            cluster.start_member(i, ["--data-dir", str(tmp_path / f"data-{i + 1}")])
        for mp in cluster.members:
            cluster.wait_ready(mp)
        wait_partitions_settled(cluster.addresses, timeout=30)
        seed, victim, want = written_then_killed(cluster)
        shutil.rmtree(tmp_path / "data-3")
        victim = cluster.restart(victim)
        cluster.wait_ready(victim)

        rounds, errors = read_while_settling(cluster, seed.address, victim, want)
        logs = "".join(mp.log_tail(10_000) for mp in cluster.members)
        assert LACKING in victim.log_tail(10_000), "the restart was not quicker than detection"
        assert FAILED_OVER in logs

        addresses = cluster.addresses
        wait_partitions_settled(addresses, timeout=SETTLE_S)
        wait_replicated(addresses, timeout=30)
        timed_wait(lambda: replicas_differ(cluster.members), 30.0, "replicas identical")
        with grid.Client(seed.address, timeout=20) as client:
            wrong, examples = wrong_values(client.map("m"), want)
        print(f"\nread rounds while settling: {rounds}, failed batches: {errors}")
        assert not wrong, f"{wrong} keys lost their value: {examples}"


def test_a_quick_restart_without_data_in_a_cluster_unchanged_since_its_birth(
    no_grid_env: None, tmp_path: Path
) -> None:
    """The same restart in a cluster whose table never changed since its first one: the
    members born together (min_cluster_size 3: the first table waits for all three),
    no data dirs. Epoch 1 tells a member with no data that no copy exists anywhere yet,
    but only a member born with the table may take it so (`Ownership.born`: asked by
    the coordinator before it made the table); the restarted member was not, and lacks
    its places. Before that it installed the birth table and served its primaries from
    its empty store (the simulator, 3 members without data dirs, seed 39)."""
    (tmp_path / "logs").mkdir()
    args = ["--backups", "1", "--min-cluster-size", "3"]
    with LocalCluster(3, member_args=args, log_dir=tmp_path / "logs") as cluster:
        wait_partitions_settled(cluster.addresses, timeout=30)
        table = table_of(cluster.members[0].address)
        assert table is not None and len(table.members) == 3 and table.epoch == 1
        seed, victim, want = written_then_killed(cluster)  # and back at once, empty
        victim = cluster.restart(victim)
        cluster.wait_ready(victim)
        read_while_settling(cluster, seed.address, victim, want)
        assert LACKING in victim.log_tail(10_000), "the restart was not quicker than detection"
