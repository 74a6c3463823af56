"""The anti-entropy endpoint on one member, without a network: a repair of a copy the
member holds no role for keeps nothing (it would otherwise bring back a copy the
member just dropped, with nothing left to drop it again)."""

from __future__ import annotations

from random import Random

import msgpack

from grid.config import Config
from grid.member.peers import Peers
from grid.member.placement.routing import Routing
from grid.member.replicas.antientropy import AntiEntropy
from grid.store import Store
from grid.store.store import PUT
from proto import grid_pb2 as pb
from replication.digest import BUCKETS
from tests.store.helpers import Clock


def endpoint(has_role: bool) -> tuple[AntiEntropy, Store]:
    clock = Clock()
    config = Config(partitions=7)
    store = Store(config, member_id=1, clock=clock, rng=Random(1))
    routing = Routing("m1", "", store, "")
    ae = AntiEntropy("m1", config, store, routing, Peers(1 << 20), int, lambda p: has_role)
    return ae, store


def repair(ae: AntiEntropy, store: Store) -> pb.RepairReply:
    ts = store.clock() << 16
    records = [(PUT, "m", f"k{i}".encode(), b"v", ts + i, 2, 0, 0) for i in range(20)]
    return ae.on_repair(
        pb.RepairRequest(
            primary="m2",
            cut=ts + 100,
            partition=3,
            buckets=list(range(BUCKETS)),
            records=msgpack.packb(records),
            count=len(records),
        )
    )


def test_a_repair_of_a_copy_without_a_role_keeps_nothing() -> None:
    ae, store = endpoint(has_role=False)
    reply = repair(ae, store)
    assert reply.applied == 0 and reply.count == 0
    assert not store.holds_copy(3)


def test_a_repair_of_a_held_copy_merges_the_records() -> None:
    ae, store = endpoint(has_role=True)
    reply = repair(ae, store)
    assert reply.applied == 20
    assert store.partition_count(3) == 20
