"""Reads from backup copies and read repair (issue 6), with real member processes.

1. A client made with read_from_backup=True spreads reads over each partition's
   replicas; members answer them from their backup copies (Stats counts them), and
   every answer is the value written once replication has drained. A map with 0
   backups (map_backups) is held by no backup: its reads go to the primary and still
   find every key. A plain client's reads are never answered from a copy.
2. An embedded node with read_from_backup reads its own backup copies, no hop.
3. Read repair, with anti-entropy off so that it is the only repair: two members that
   took writes apart join (as in test_anti_entropy.py), which leaves each primary
   without some of the other side's keys (checked first, so the test can fail). Reads
   from backups with read_repair_chance=1 make the primaries take them: afterwards a
   plain client reads every key's last writer's value from the primaries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import grid
from grid.harness.cluster import LocalCluster
from tests.integration.support import (
    raw_stats,
    run_grid,
    timed_wait,
    wait_partitions_settled,
    wait_replicated,
    wrong_values,
)

pytestmark = pytest.mark.integration

KEYS = 3000


def backup_reads(addresses: Sequence[str]) -> int:
    return sum(raw_stats(a).anti_entropy.backup_reads for a in addresses)


def test_reads_from_backups_are_spread_and_answered_from_copies(no_grid_env: None) -> None:
    args = ["--backups", "1", "--map-backups", "solo=0"]
    with LocalCluster(3, member_args=args) as cluster:
        for mp in cluster.members:
            cluster.wait_ready(mp)
        addresses = cluster.addresses
        wait_partitions_settled(addresses, timeout=30)
        want = {f"k{i}": i for i in range(KEYS)}
        with (
            grid.Client(addresses[0], timeout=10) as plain,
            grid.Client(addresses[0], timeout=10, read_from_backup=True) as spread,
        ):
            plain.map("m").put_many(want)
            plain.map("solo").put_many(want)
            wait_replicated(addresses)

            assert plain.map("m").get_many(list(want)) == want
            assert backup_reads(addresses) == 0, "a plain client's reads reached a copy"

            m = spread.map("m")
            assert m.get_many(list(want)) == want
            for i in range(0, 300):
                assert m.get(f"k{i}") == i
                assert m.contains(f"k{i}")
                assert m.ttl(f"k{i}") == float("inf")
            assert m.get("absent") is None and not m.contains("absent")
            per_member = [raw_stats(a).anti_entropy.backup_reads for a in addresses]
            total = sum(per_member)
            # about half of 3,900 reads (two replicas per partition, turns alternate)
            assert total > 1000, per_member
            assert all(n > 0 for n in per_member), per_member

            # no backup holds "solo": its reads are answered by the primaries, complete
            assert spread.map("solo").get_many(list(want)) == want
            assert backup_reads(addresses) == total, "a copy answered for a map it lacks"

        status = run_grid("status", "-a", addresses[0]).stdout
        assert "reads from backups" in status
        table = status.split("reads from backups")[1]
        row = next(line for line in table.splitlines() if "member-1" in line)
        assert f"{per_member[0]:,}" in row, row


def test_embedded_node_reads_its_own_backup_copies(no_grid_env: None) -> None:
    with LocalCluster(1) as cluster:
        other = cluster.members[0]
        options: dict[str, Any] = {
            "port": 0,
            "seeds": other.gossip_address,
            "backups": 1,
            "read_from_backup": True,
            "read_repair_chance": 0.0,
        }
        with grid.Node(**options) as node:
            addresses = [node.address, other.address]
            wait_partitions_settled(addresses, timeout=30)
            with grid.Client(other.address, timeout=10) as client:
                want = {f"e{i}": i for i in range(1000)}
                client.map("m").put_many(want)
            wait_replicated(addresses)
            m = node.map("m")
            assert m.get_many(list(want)) == want
            assert all(m.get(k) == v for k, v in list(want.items())[:200])
            # two members, backups=1: every partition is here, half of them as a backup;
            # those reads are the node's own copy, so the other member answers none
            mine = raw_stats(node.address).anti_entropy.backup_reads
            assert 300 < mine < 1000, mine
            assert raw_stats(other.address).anti_entropy.backup_reads == 0
            assert int(node.stats()["anti_entropy"].get("read_repair_checked", 0)) == 0  # chance 0


ONLY = 1500  # keys only one side wrote (each side)
BOTH = 500  # keys both wrote; member-1 wrote them later
SETTLE_S = 0.5  # anti_entropy_settle_s: read repair leaves younger versions to the stream


def test_read_repair_merges_copies_anti_entropy_has_not_compared(
    no_grid_env: None, tmp_path: Path
) -> None:
    args = [
        "--backups", "1", "--anti-entropy-interval-s", "0", "--read-repair-chance", "1",
        "--anti-entropy-settle-s", str(SETTLE_S),
    ]  # fmt: skip
    (tmp_path / "logs").mkdir()
    with LocalCluster(0, join=False, member_args=args, log_dir=tmp_path / "logs") as cluster:
        m2 = cluster.start_member(1, ["--data-dir", str(tmp_path / "data-2")])
        m1 = cluster.start_member(0, ["--data-dir", str(tmp_path / "data-1")])
        cluster.wait_ready(m2)
        cluster.wait_ready(m1)
        with grid.Client(m2.address, timeout=10) as c2, grid.Client(m1.address, timeout=10) as c1:
            c2.map("m").put_many({f"x{i}": i for i in range(ONLY)})
            c2.map("m").put_many({f"z{i}": "old" for i in range(BOTH)})
            time.sleep(0.05)  # member-1's writes below are later
            c1.map("m").put_many({f"y{i}": i for i in range(ONLY)})
            c1.map("m").put_many({f"z{i}": "new" for i in range(BOTH)})
        want: dict[str, Any] = {f"x{i}": i for i in range(ONLY)}
        want.update({f"y{i}": i for i in range(ONLY)})
        want.update({f"z{i}": "new" for i in range(BOTH)})

        # member-2 joins member-1's cluster with its history (recovered from disk)
        cluster.kill(m2, 15)
        m2.process.wait(20)
        m2.cmd = (*m2.cmd, "--seeds", m1.gossip_address)
        m2 = cluster.restart(m2)
        cluster.wait_ready(m2)
        addresses = [m1.address, m2.address]
        wait_partitions_settled(addresses, timeout=30)
        wait_replicated(addresses)
        # read repair, as anti-entropy, sends only versions older than the settle time
        time.sleep(SETTLE_S + 0.5)

        with (
            grid.Client(m1.address, timeout=20) as plain,
            grid.Client(m1.address, timeout=20, read_from_backup=True) as spread,
        ):
            before, _ = wrong_values(plain.map("m"), want)
            assert before, "the primaries already agree: nothing left for read repair"
            keys = list(want)
            for i in range(0, len(keys), 500):  # each chunk twice: each replica once
                for _ in range(2):
                    spread.map("m").get_many(keys[i : i + 500], timeout=20)

            def wrong() -> str:
                n, examples = wrong_values(plain.map("m"), want)
                return f"{n} keys wrong, e.g. {examples}" if n else ""

            waited = timed_wait(wrong, 20.0, "read repair to merge")
        stats = [raw_stats(a).anti_entropy for a in addresses]
        fixed = [s.read_repair_fixed for s in stats]
        print(f"\n{before} keys wrong at the primaries; repaired in {waited:.2f}s: {fixed}")
        assert all(s.rounds == 0 for s in stats), "anti-entropy ran: it was to be off"
        # each key the primaries lacked was pushed to them by a backup's read repair
        assert sum(fixed) >= before, fixed
        assert sum(s.read_repair_checked for s in stats) > 0
