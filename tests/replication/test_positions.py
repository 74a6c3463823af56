"""The follow-positions file (grid/member/replicas/positions.py) on a real data dir: it never
claims a copy that is being dropped, mid-snapshot, or that recovery found damaged; a damaged file is
ignored (every copy is then a snapshot: slower, never wrong)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from random import Random

import msgpack

from grid.config import Config
from grid.member.replicas.positions import FILE, FollowPositions
from grid.store import Store
from grid.store.durability import Durability
from replication.stream import FollowerLog, Phase
from tests.store.helpers import Clock


def make(tmp_path: Path) -> tuple[FollowPositions, dict[int, FollowerLog], Durability]:
    config = Config(partitions=16, data_dir=str(tmp_path), fsync="never")
    store = Store(config, member_id=1, clock=Clock(), rng=Random(1))
    durability = Durability(config, store, store.clock)
    durability.recover()
    state: dict[int, FollowerLog] = {}
    return FollowPositions(str(tmp_path), store, durability, state, enabled=True), state, durability


def test_saves_live_copies_only_and_loads_them_back(tmp_path: Path) -> None:
    fp, state, durability = make(tmp_path)
    state[1] = FollowerLog(term=7, seq=40, phase=Phase.LIVE)
    state[2] = FollowerLog(term=7, seq=9, phase=Phase.SNAPSHOT)  # mid-snapshot: not claimed
    state[3] = FollowerLog(term=8, seq=3, phase=Phase.LIVE)
    asyncio.run(fp.save())
    durability.log.close()
    again, state2, _ = make(tmp_path)
    loaded = again.load(damaged=[3])  # recovery found partition 3 damaged
    assert loaded == {1: (7, 40)}
    assert state2[1].term == 7 and state2[1].seq == 40 and state2[1].phase is Phase.IDLE
    assert 3 not in state2


def test_a_copy_being_dropped_leaves_the_file_first_and_is_not_saved_back(tmp_path: Path) -> None:
    fp, state, _ = make(tmp_path)
    state[1] = FollowerLog(term=7, seq=40, phase=Phase.LIVE)
    state[2] = FollowerLog(term=7, seq=41, phase=Phase.LIVE)

    async def scenario() -> None:
        await fp.save()
        await fp.forget(2)  # about to be dropped
        assert _on_disk(tmp_path) == {1: (7, 40)}
        state[1].seq = 50
        await fp.save()  # state 2 is still there until the drop: must not come back
        assert _on_disk(tmp_path) == {1: (7, 50)}
        del state[2]
        fp.done(2)

    asyncio.run(scenario())


def test_a_damaged_file_is_ignored(tmp_path: Path) -> None:
    for data in (b"\xc1garbage", msgpack.packb([(1, -5, 3)]), msgpack.packb([(1, 2)])):
        (tmp_path / FILE).write_bytes(data)
        fp, state, durability = make(tmp_path)
        assert fp.load(damaged=[]) == {} and state == {}
        durability.log.close()


def test_per_map_backups_keep_no_positions(tmp_path: Path) -> None:
    fp, state, durability = make(tmp_path)
    state[1] = FollowerLog(term=7, seq=40, phase=Phase.LIVE)
    asyncio.run(fp.save())
    durability.log.close()
    again, state2, _ = make(tmp_path)
    again.enabled = False
    assert again.load(damaged=[]) == {} and state2 == {}


def _on_disk(tmp_path: Path) -> dict[int, tuple[int, int]]:
    return {p: (t, s) for p, t, s in msgpack.unpackb((tmp_path / FILE).read_bytes())}


def test_disk_trouble_freezes_what_the_file_claims(tmp_path: Path) -> None:
    """While the disk is full nothing is saved; a partition that had trouble keeps the
    position it had before (changes applied while it was re-persisted may be missing on
    disk), while the others move on."""
    fp, state, durability = make(tmp_path)
    state[1] = FollowerLog(term=7, seq=40, phase=Phase.LIVE)
    state[2] = FollowerLog(term=7, seq=10, phase=Phase.LIVE)

    async def scenario() -> None:
        await fp.save()
        state[1].seq, state[2].seq = 50, 20
        durability.disk_full = True
        await fp.save()
        assert _on_disk(tmp_path) == {1: (7, 40), 2: (7, 10)}
        durability.disk_full = False
        durability.troubled.add(1)
        await fp.save()
        assert _on_disk(tmp_path) == {1: (7, 40), 2: (7, 20)}

    asyncio.run(scenario())
