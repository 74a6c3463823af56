"""A member with a data_dir keeps its data through crashes, restarts, full disks and backups.

Real member processes, real files, kill -9. Writers keep a history of every
acknowledged write; after each crash the restarted member must hold all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import grid
from grid.harness.cluster import LocalCluster, MemberProcess
from proto import grid_pb2 as pb
from tests import needs
from tests.integration.support import wait_partitions_settled

pytestmark = pytest.mark.integration


def start(cluster: LocalCluster, index: int = 0, args: tuple[str, ...] = ()) -> MemberProcess:
    member = cluster.start_member(index, list(args))
    cluster.wait_ready(member)
    return member


def grid_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the `grid` command line as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "grid", *args], capture_output=True, text=True, timeout=60
    )


def persistence_stats(address: str) -> dict:
    with grid.Client(address) as client:
        return client.stats()["persistence"]


async def write_until_killed(
    address: str, prefix: str, acked: dict[str, int], seconds: float, writers: int = 64
) -> None:
    """64 concurrent writers; every put the member acknowledged goes into `acked`."""
    stop_at = time.monotonic() + seconds
    # A short deadline: once the member is killed, writers give up quickly (and what they
    # could not get acknowledged is simply not in the history).
    async with grid.AsyncClient(address, timeout=0.5) as client:
        m = client.map("history")

        async def writer(w: int) -> None:
            i = 0
            while time.monotonic() < stop_at and i < 100_000:
                key = f"{prefix}:{w}:{i}"
                try:
                    await m.put(key, i)
                except grid.GridError:
                    return  # the member is gone: what was acknowledged is in `acked`
                acked[key] = i
                i += 1

        await asyncio.gather(*(writer(w) for w in range(writers)))


def missing(address: str, acked: dict[str, int]) -> list[str]:
    with grid.Client(address, timeout=10) as client:
        m = client.map("history")
        keys = list(acked)
        found: dict = {}
        for i in range(0, len(keys), 2000):
            found.update(m.get_many(keys[i : i + 2000]))
    return [k for k in keys if found.get(k) != acked[k]]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_restart_recovers_every_kind_of_change(data_dir: Path) -> None:
    """Puts, TTLs, deletes, counters, clears survive a graceful restart; stats say so."""
    args = ("--data-dir", str(data_dir))
    with LocalCluster(0) as cluster:
        member = start(cluster, 0, args)
        with grid.Client(member.address) as c:
            m, gone, ctr = c.map("m"), c.map("cleared"), c.map("counters")
            m.put_many({f"k{i}": {"i": i} for i in range(2000)})
            m.put("ttl", "x", ttl=3600)
            m.put("short", "x", ttl=0.2)
            m.delete("k7")
            m.expire("k8", 3600)
            ctr.incr("hits", 41, ttl=3600)
            ctr.incr("hits")
            gone.put_many({f"g{i}": i for i in range(100)})
            gone.clear()
        cluster.kill(member, signal.SIGTERM)
        assert member.process.wait(10) == 0
        time.sleep(0.3)  # let "short" expire while the member is down
        member = start(cluster, 0, args)
        with grid.Client(member.address) as c:
            m, gone, ctr = c.map("m"), c.map("cleared"), c.map("counters")
            assert m.size() == 2000 - 1 + 1  # k7 deleted, "ttl" added, "short" expired
            assert m.get("k1999") == {"i": 1999} and m.get("k7") is None
            assert 3500 < m.ttl("k8") <= 3600 and 3500 < m.ttl("ttl") <= 3600
            assert m.get("short") is None
            assert ctr.get("hits") == 42 and 3500 < ctr.ttl("hits") <= 3600
            assert gone.size() == 0
            stats = c.stats()["persistence"]
        assert stats["enabled"] and stats["fsync"] == "interval"
        assert stats["entries_recovered"] == 2000 + 1  # map m, and the counter
        assert stats["records_loaded"] >= 2000 + 100


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_kill_9_during_heavy_writes_loses_no_acknowledged_write(data_dir: Path, fsync: str) -> None:
    """20 rounds: 64 writers, kill -9 at a random moment, restart, check the history.

    always: an acknowledgement means fsynced. interval: kill -9 (unlike a power cut)
    loses nothing either, because every write is in the kernel before it is
    acknowledged; only the last interval is exposed to a power cut.
    """
    rng = random.Random(20261127)
    acked: dict[str, int] = {}
    last_round: dict[str, int] = {}
    args = ("--data-dir", str(data_dir), "--fsync", fsync)
    with LocalCluster(0) as cluster:
        for round_no in range(20):
            member = start(cluster, 0, args)
            if round_no:
                # every write of the round just crashed, and a sample of all before it
                # (the whole history is checked once more at the end)
                older = rng.sample(sorted(acked), min(2000, len(acked)))
                check = {**{k: acked[k] for k in older}, **last_round}
                lost = missing(member.address, check)
                assert not lost, f"round {round_no}: {len(lost)} acknowledged writes lost"
            delay = rng.uniform(0.05, 0.5)
            last_round = {}

            async def load_and_kill(
                m: MemberProcess = member,
                r: int = round_no,
                after: float = delay,
                history: dict[str, int] = last_round,
            ) -> None:
                loop = asyncio.get_running_loop()
                loop.call_later(after, cluster.kill, m, signal.SIGKILL)
                await write_until_killed(m.address, f"r{r}", history, seconds=after + 2)

            asyncio.run(load_and_kill())
            acked.update(last_round)
            member.process.wait(10)
            cluster.members.remove(member)
        member = start(cluster, 0, args)
        assert not missing(member.address, acked)
        stats = persistence_stats(member.address)
    assert len(acked) > 2000, "the load should have acknowledged a lot of writes"
    assert stats["entries_recovered"] >= len(acked)


def snapshot_rpc(address: str, outcome: dict[str, object]) -> None:
    """The operator's `grid snapshot` (every partition); what happened goes in `outcome`."""
    with grpc.insecure_channel(address) as ch:
        try:
            reply = pb.SnapshotReply.FromString(
                ch.unary_unary("/grid.v1.Grid/Snapshot")(
                    pb.SnapshotRequest().SerializeToString(), timeout=60
                )
            )
            outcome["records"] = reply.records
        except grpc.RpcError as e:
            outcome["error"] = e.code().name


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_kill_9_during_a_snapshot_loses_no_acknowledged_write(data_dir: Path, fsync: str) -> None:
    """Snapshots are written a slice at a time while writes go on (grid/store/
    disk_snapshot.py). 5 rounds: 40 MB on the member, 16 writers, a snapshot of every
    partition, kill -9 in the middle of it, restart: every acknowledged write and every
    preloaded key is there, from whichever mix of old snapshots, new ones and logs.
    16 partitions of 2.5 MB, so a kill lands inside one partition's file, not between."""
    rng = random.Random(20261207)
    args = ("--data-dir", str(data_dir), "--fsync", fsync, "--partitions", "16")
    pad = "x" * 1000
    acked = {f"pre:{i}": f"{pad}{i}" for i in range(40_000)}
    killed_mid_snapshot = 0
    history: dict[str, int] = {}
    with LocalCluster(0) as cluster:
        member = start(cluster, 0, args)
        with grid.Client(member.address, timeout=30) as c:
            keys = list(acked)
            for i in range(0, len(keys), 2000):
                c.map("history").put_many({k: acked[k] for k in keys[i : i + 2000]})
        for round_no in range(5):
            if round_no:
                member = start(cluster, 0, args)
                older = rng.sample(sorted(acked), 3000)
                lost = missing(member.address, {**{k: acked[k] for k in older}, **history})
                assert not lost, f"round {round_no}: {len(lost)} acknowledged writes lost"
            history = {}
            outcome: dict[str, object] = {}
            after = rng.uniform(0.02, 0.15)  # the snapshot takes about 0.4 s

            async def snapshot_and_kill(
                m: MemberProcess = member,
                r: int = round_no,
                after: float = after,
                history: dict[str, int] = history,
                outcome: dict[str, object] = outcome,
            ) -> bool:
                writers = asyncio.create_task(
                    write_until_killed(m.address, f"r{r}", history, after + 3, writers=16)
                )
                await asyncio.sleep(0.1)
                rpc = asyncio.create_task(asyncio.to_thread(snapshot_rpc, m.address, outcome))
                await asyncio.sleep(after)
                mid = False  # kill while a partition's snapshot file is being written
                while not rpc.done() and not (mid := any(data_dir.rglob("*.snap.tmp"))):
                    await asyncio.sleep(0.002)
                cluster.kill(m, signal.SIGKILL)
                await asyncio.gather(writers, rpc)
                return mid

            if asyncio.run(snapshot_and_kill()) and "error" in outcome:
                killed_mid_snapshot += 1
            acked.update(history)
            member.process.wait(10)
            cluster.members.remove(member)
            assert history, "the writers were acknowledged while the snapshot ran"
        member = start(cluster, 0, args)
        assert not missing(member.address, acked)
    assert killed_mid_snapshot >= 3, "the kill should land in the middle of the snapshots"


def test_whole_cluster_killed_and_restarted_keeps_every_acknowledged_write(
    tmp_path: Path,
) -> None:
    """3 members (fsync=always), all kill -9 at once under load, all restarted."""
    histories: list[dict[str, int]] = [{}, {}, {}]
    with LocalCluster(0) as cluster:
        members = [
            start(cluster, i, ("--data-dir", str(tmp_path / f"m{i}"), "--fsync", "always"))
            for i in range(3)
        ]
        # the load's short deadlines are for the kill, not for partitions still moving
        wait_partitions_settled([m.address for m in members])

        async def load() -> None:
            await asyncio.gather(
                *(
                    write_until_killed(m.address, f"m{i}", histories[i], 3.0, writers=16)
                    for i, m in enumerate(members)
                )
            )

        killer = asyncio.new_event_loop()
        killer.call_later(0.7, lambda: [cluster.kill(m) for m in members])
        killer.run_until_complete(load())
        killer.close()
        for m in members:
            m.process.wait(10)
        cluster.members.clear()
        restarted = [
            start(cluster, i, ("--data-dir", str(tmp_path / f"m{i}"), "--fsync", "always"))
            for i in range(3)
        ]
        for m, history in zip(restarted, histories, strict=True):
            assert history, "each member acknowledged writes before the crash"
            assert not missing(m.address, history)


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of our own (root only); always unmounted, also when the test fails."""
    needs.root("mounting a small filesystem")
    needs.command("mount")
    path.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_refuses_writes_keeps_reads_and_recovers(tmp_path: Path) -> None:
    """ENOSPC: writes get a clear UNAVAILABLE, reads go on, the member stays up; once
    space returns writes resume; after a restart every acknowledged write is there."""
    with small_filesystem(tmp_path / "small", "4m") as fs, LocalCluster(0) as cluster:
        data = fs / "data"
        filler = fs / "filler"
        filler.write_bytes(b"\0" * (2 * 1024 * 1024))
        args = ("--data-dir", str(data), "--fsync", "always")
        member = start(cluster, 0, args)
        acked: dict[str, int] = {}
        errors: list[str] = []
        with grid.Client(member.address, timeout=5) as c:
            m = c.map("history")
            m.put("canary", 1)
            acked["canary"] = 1
            value = "v" * 2000
            for i in range(5000):  # bounded: 10 MB of writes into < 2 MB of space
                try:
                    m.put(f"k{i}", value)
                    acked[f"k{i}"] = value
                except grid.Unavailable as e:
                    errors.append(e.message)
                    if len(errors) >= 5:
                        break
            assert errors, "the disk never filled"
            assert all("disk full" in e for e in errors), errors
            assert m.get("canary") == 1  # reads go on
            assert c.stats()["persistence"]["disk_full"]
            with pytest.raises(grid.Unavailable, match="disk full"):
                m.put("refused", 1)
            filler.unlink()  # space returns
            deadline = time.monotonic() + 15
            while True:
                try:
                    m.put("after", 1)
                    acked["after"] = 1
                    break
                except grid.Unavailable:
                    assert time.monotonic() < deadline, "writes did not resume"
                    time.sleep(0.2)
            assert not c.stats()["persistence"]["disk_full"]
        assert member.alive()
        cluster.kill(member, signal.SIGTERM)
        member.process.wait(10)
        cluster.members.clear()
        member = start(cluster, 0, args)
        acked_values = {k: v for k, v in acked.items()}
        with grid.Client(member.address) as c:
            m = c.map("history")
            for k, v in acked_values.items():
                assert m.get(k) == v, k


def test_backup_and_restore_through_the_cli(tmp_path: Path) -> None:
    """grid backup of a running member under writes, grid restore, a member on it.

    The restored member starts a cluster of its own: a member that joins a running
    cluster takes its partitions from that cluster (docs/operations.md)."""
    with LocalCluster(0, join=False) as cluster:
        member = start(cluster, 0, ("--data-dir", str(tmp_path / "data")))
        with grid.Client(member.address) as c:
            m = c.map("m")
            m.put_many({f"k{i}": i for i in range(3000)})
            backup = grid_cli("backup", str(tmp_path / "bk"), "-a", member.address)
            assert backup.returncode == 0, backup.stderr
            m.put("after-backup", 1)  # not in the backup
        folders = list((tmp_path / "bk").iterdir())
        assert len(folders) == 1 and (folders[0] / "manifest.json").exists()
        manifest = json.loads((folders[0] / "manifest.json").read_text())
        assert manifest["files"] and all("sha256" in f for f in manifest["files"])
        restore = grid_cli("restore", str(folders[0]), "--data-dir", str(tmp_path / "restored"))
        assert restore.returncode == 0, restore.stderr
        copy = start(cluster, 1, ("--data-dir", str(tmp_path / "restored")))
        with grid.Client(copy.address) as c:
            m = c.map("m")
            assert m.size() == 3000
            assert m.get_many([f"k{i}" for i in range(3000)]) == {f"k{i}": i for i in range(3000)}
            assert m.get("after-backup") is None
        # a tampered backup is refused
        victim = folders[0] / manifest["files"][0]["path"]
        victim.write_bytes(victim.read_bytes()[:-1] + b"X")
        bad = grid_cli("restore", str(folders[0]), "--data-dir", str(tmp_path / "again"))
        assert bad.returncode == 1 and "does not verify" in bad.stderr


def test_two_members_never_share_a_data_dir(data_dir: Path) -> None:
    with LocalCluster(0) as cluster:
        start(cluster, 0, ("--data-dir", str(data_dir)))
        second = cluster.start_member(1, ["--data-dir", str(data_dir)])
        assert second.process.wait(20) == 1
        assert "lock" in second.log_tail().lower()
        cluster.members.remove(second)


def test_log_is_snapshotted_when_it_outgrows_the_data(data_dir: Path) -> None:
    """Overwriting 50 keys of one partition many times: snapshots keep the log bounded."""
    with LocalCluster(0) as cluster:
        member = start(cluster, 0, ("--data-dir", str(data_dir)))
        value = "x" * 4000
        with grid.Client(member.address) as c:
            m = c.map("m")
            for round_no in range(40):  # 40 x 50 x 4 KB = 8 MB of log for 200 KB of data
                m.put_many({f"{{hot}}k{i}": f"{round_no}{value}" for i in range(50)})
            deadline = time.monotonic() + 15
            while c.stats()["persistence"]["snapshots"] == 0:
                assert time.monotonic() < deadline, "no snapshot was taken"
                time.sleep(0.2)
            assert c.stats()["persistence"]["log_bytes"] < 4 * 1024 * 1024
        cluster.kill(member, signal.SIGKILL)
        member.process.wait(10)
        cluster.members.clear()
        member = start(cluster, 0, ("--data-dir", str(data_dir)))
        with grid.Client(member.address) as c:
            assert c.map("m").get("{hot}k49") == f"39{value}"
            # recovery started from the snapshot: without it, it would replay all 2,000 puts
            assert persistence_stats(member.address)["records_loaded"] < 2000


def test_deletes_are_remembered_across_a_snapshot_and_a_restart(data_dir: Path) -> None:
    """Tombstones (docs/replication.md) are written into partition snapshots, so a member
    restarted after its log was compacted still remembers its deletes; so are the clear
    markers of a CLEAR, from the snapshot and from the log alike: every partition's digest
    (entries, tombstones and markers) is the same after the restart as before."""
    from tests.integration.support import raw_stats, roots_of, wait_until

    with LocalCluster(0) as cluster:
        member = start(cluster, 0, ("--data-dir", str(data_dir)))
        value = "x" * 4000
        with grid.Client(member.address) as c:
            m = c.map("m")
            m.put_many({f"{{hot}}gone{i}": 1 for i in range(30)})
            m.delete_many([f"{{hot}}gone{i}" for i in range(30)])
            m.delete("{hot}never-there")  # a delete of an absent key is remembered too
            c.map("wiped").put_many({f"w{i}": i for i in range(200)})
            c.map("wiped").clear()  # a marker in every partition
            for round_no in range(40):  # outgrow the data: the partition is snapshotted
                m.put_many({f"{{hot}}k{i}": f"{round_no}{value}" for i in range(50)})
            wait_until(lambda: c.stats()["persistence"]["snapshots"] > 0, 15, 0.2, "a snapshot")
        assert raw_stats(member.address).anti_entropy.tombstones == 31
        roots = roots_of(member.address)
        cluster.kill(member, signal.SIGKILL)
        member.process.wait(10)
        cluster.members.clear()
        member = start(cluster, 0, ("--data-dir", str(data_dir)))
        assert persistence_stats(member.address)["records_loaded"] < 2000  # from the snapshot
        assert raw_stats(member.address).anti_entropy.tombstones == 31
        after = roots_of(member.address)
        assert after == roots, [p for p in roots if after.get(p) != roots[p]][:10]


def test_embedded_node_with_data_dir(data_dir: Path) -> None:
    with grid.Node(port=0, data_dir=str(data_dir), fsync="always") as node:
        m = node.map("m")
        m.put_many({f"k{i}": i for i in range(500)})
        m.incr("ctr", 3)
        m.delete("k1")
    with grid.Node(port=0, data_dir=str(data_dir)) as node:
        m = node.map("m")
        assert m.size() == 500 and m.get("k1") is None and m.get("ctr") == 3
        assert node.stats()["persistence"]["entries_recovered"] == 500


def test_embedded_threads_write_durably_under_always(data_dir: Path) -> None:
    """Four threads writing through an embedded node (fsync=always) while a remote client
    writes too: every write is back after a restart."""
    import threading

    with grid.Node(port=0, data_dir=str(data_dir), fsync="always") as node:
        m = node.map("m")

        def work(t: int) -> None:
            for i in range(300):
                m.put(f"t{t}:{i}", i)
                m.incr(f"ctr{t}")

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        with grid.Client(node.address) as client:
            client.map("m").put_many({f"remote{i}": i for i in range(300)})
        for th in threads:
            th.join(60)
        assert not any(th.is_alive() for th in threads)
    with grid.Node(port=0, data_dir=str(data_dir)) as node:
        m = node.map("m")
        assert m.size() == 4 * 300 + 4 + 300
        assert all(m.get(f"ctr{t}") == 300 for t in range(4))
        assert m.get("t3:299") == 299 and m.get("remote299") == 299


def test_stream_half_closed_after_writes_still_gets_every_reply(data_dir: Path) -> None:
    """Under fsync=always replies wait for the fsync; a client that stops sending right
    after its writes (half-close) must still receive all of them."""
    import grpc

    from proto import grid_pb2 as pb

    with LocalCluster(0) as cluster:
        member = start(cluster, 0, ("--data-dir", str(data_dir), "--fsync", "always"))
        requests = [
            pb.BatchRequest(
                id=i, ops=[pb.Op(code=pb.PUT, map="m", key=b"k%d" % i, value=b"\x01")]
            ).SerializeToString()
            for i in range(1, 6)
        ]
        with grpc.insecure_channel(member.address) as ch:
            call = ch.stream_stream("/grid.v1.Grid/Stream")
            replies = [pb.BatchReply.FromString(r) for r in call(iter(requests), timeout=10)]
        assert sorted(r.id for r in replies) == [1, 2, 3, 4, 5]
        assert all(r.results[0].status == pb.OK for r in replies)
