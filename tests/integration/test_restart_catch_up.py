"""A member restarted quickly (kill -9, then started again with its data dir at once, as a
supervisor would) while writes go on, with real member processes and anti-entropy off,
so that the streams alone must make the replicas equal again.

The restart is quicker than failure detection: the cluster never declares the member
dead and publishes no new table. Before this was handled, the member came back by its
saved table without starting its streams: the partitions it was primary of had no log
(their backups were refused, writes were not replicated) and the copies it backs up
were not followed. Now:

1. with its positions file (grid/member/replicas/positions.py) the copies it backs up are caught up
   from their primaries' logs, not sent whole: resumed_from_log > 0;
2. without the file (removed before a second restart) every copy is a snapshot:
   resumed_from_log == 0; the file is what makes the difference;
3. after each restart, once replication drained, every partition's replicas have one
   digest root and every key its last acknowledged value.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import grid
from grid.harness.cluster import LocalCluster, MemberProcess
from grid.member.replicas.positions import FILE
from tests.integration.support import (
    raw_stats,
    replicas_differ,
    timed_wait,
    wait_partitions_settled,
    wait_replicated,
    wait_until,
    wrong_values,
)

pytestmark = pytest.mark.integration

KEYS = 20_000
KEYS_ALL = [f"k{i}" for i in range(KEYS)]
WRITER_MAX_BATCHES = 50_000
WRITER_MAX_S = 90.0


class Writer:
    """Puts batches of 10 keys until stopped (bounded in count and time). It remembers
    each key's last acknowledged value; a batch that failed (during the restart) may or
    may not have been applied, so its keys are uncertain until acknowledged again."""

    def __init__(self, address: str, after: Writer | None = None) -> None:
        """`after`: a writer that ran before; this one goes on from what it acknowledged
        (and numbers its batches on from it, so a value is never written twice)."""
        self.address = address
        self.batches = after.batches if after else 0
        self.failed = after.failed if after else 0
        self.acked: dict[str, int] = after.acked if after else dict.fromkeys(KEYS_ALL, -1)
        self.uncertain: set[str] = after.uncertain if after else set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        started = time.monotonic()
        with grid.Client(self.address, timeout=5) as client:
            m = client.map("m")
            while (
                not self._stop.is_set()
                and self.batches < WRITER_MAX_BATCHES
                and time.monotonic() - started < WRITER_MAX_S
            ):
                n = self.batches
                keys = [f"k{(n * 10 + j) % KEYS}" for j in range(10)]
                try:
                    m.put_many(dict.fromkeys(keys, n))
                except grid.GridError:
                    self.failed += 1
                    self.uncertain.update(keys)
                else:
                    self.acked.update(dict.fromkeys(keys, n))
                    self.uncertain.difference_update(keys)
                self.batches += 1
                time.sleep(0.002)


def restart(
    cluster: LocalCluster, victim: MemberProcess, drop_positions: Path | None
) -> MemberProcess:
    cluster.kill(victim)  # SIGKILL
    victim.process.wait(10)
    if drop_positions is not None:
        drop_positions.unlink()
    victim = cluster.restart(victim)
    cluster.wait_ready(victim)
    return victim


def settle(members: list[MemberProcess], writer: Writer) -> None:
    """Until the replicas are identical; then every key holds its last acknowledged
    value (keys of failed batches may hold either)."""
    addresses = [m.address for m in members]
    wait_partitions_settled(addresses, timeout=30)
    wait_replicated(addresses, timeout=30)
    timed_wait(lambda: replicas_differ(members), 20.0, "replicas identical")
    assert writer.batches - writer.failed > 100, (writer.batches, writer.failed)
    want = {k: v for k, v in writer.acked.items() if k not in writer.uncertain}
    with grid.Client(addresses[0], timeout=20) as client:
        wrong, examples = wrong_values(client.map("m"), want)
    assert not wrong, f"{wrong} keys lost their last acknowledged value: {examples}"


def positions_saved(path: Path, writer: Writer) -> bool:
    return path.exists() and writer.batches > 100


def test_a_quick_restart_resumes_the_streams_from_the_log(
    no_grid_env: None, tmp_path: Path
) -> None:
    args = ["--backups", "1", "--anti-entropy-interval-s", "0"]
    (tmp_path / "logs").mkdir()
    with LocalCluster(0, member_args=args, log_dir=tmp_path / "logs") as cluster:
        for i in range(3):
            cluster.start_member(i, ["--data-dir", str(tmp_path / f"data-{i + 1}")])
        for mp in cluster.members:
            cluster.wait_ready(mp)
        wait_partitions_settled(cluster.addresses, timeout=30)
        seed = cluster.members[0]
        with grid.Client(seed.address, timeout=10) as client:
            client.map("m").put_many({f"k{i}": -1 for i in range(KEYS)})
        wait_replicated(cluster.addresses)
        victim = cluster.members[2]
        positions = tmp_path / "data-3" / FILE
        seen: dict[str, Any] = {}

        with Writer(seed.address) as writer:
            wait_until(lambda: positions_saved(positions, writer), 10, 0.1, "positions saved")
            victim = restart(cluster, victim, None)
            time.sleep(2.0)  # writes go on after the restart too
        settle(cluster.members, writer)
        s = raw_stats(victim.address).migration
        seen["with positions"] = (s.positions_loaded, s.resumed_from_log, writer.batches)
        assert s.positions_loaded > 0, s
        assert s.resumed_from_log > 0, s

        with Writer(seed.address, after=writer) as writer:
            started = writer.batches
            wait_until(lambda: writer.batches > started + 100, 10, 0.1, "writes under way")
            victim = restart(cluster, victim, positions)
            time.sleep(2.0)
        settle(cluster.members, writer)
        s = raw_stats(victim.address).migration
        seen["without"] = (s.positions_loaded, s.resumed_from_log, writer.batches)
        print(f"\n(loaded, resumed from log, writer batches): {seen}")
        assert s.positions_loaded == 0 and s.resumed_from_log == 0, s
