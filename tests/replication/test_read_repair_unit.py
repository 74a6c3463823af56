"""The primary's end of read repair on one member, without a network: which records it
answers, which it asks for, what it refuses and what it takes."""

from __future__ import annotations

from random import Random
from types import SimpleNamespace

import msgpack
import pytest

from grid.config import Config
from grid.member.peers import Peers
from grid.member.placement.routing import Routing
from grid.member.replicas.antientropy import AntiEntropy
from grid.member.replicas.read_repair import ReadRepair
from grid.store import Store
from grid.store.store import CLEAR, DELETE, PUT
from proto import grid_pb2 as pb
from replication.hlc import LOGICAL_BITS
from tests.store.helpers import Clock

P = 3  # the partition this member is primary of


def primary() -> tuple[ReadRepair, Store, Clock]:
    clock = Clock()
    config = Config(partitions=7)
    store = Store(config, member_id=1, clock=clock, rng=Random(1))
    routing = Routing("m1", "", store, "")  # serves nothing until told
    assert store.owned is not None
    store.owned[P] = 1
    ae = AntiEntropy("m1", config, store, routing, Peers(1 << 20), int, lambda p: True)
    # the primary's end never consults the followers (the backup's end does)
    backup_end = SimpleNamespace(readable=None)
    rr = ReadRepair("m1", config, store, routing, backup_end, Peers(1 << 20), ae)  # type: ignore[arg-type]
    return rr, store, clock


def ask(rr: ReadRepair, partition: int, probes: list, records: list | None = None):  # type: ignore[no-untyped-def]
    part = pb.ReadRepairPartition(
        partition=partition, probes=msgpack.packb(probes), probe_count=len(probes)
    )
    if records:
        part.records, part.count = msgpack.packb(records), len(records)
    return rr.on_read_repair(pb.ReadRepairRequest(backup="m2", partitions=[part]))


def ts_at(ms: int) -> int:
    return ms << LOGICAL_BITS


def test_answers_newer_records_and_asks_for_older_ones() -> None:
    rr, store, clock = primary()
    old = ts_at(clock() - 10_000)
    with store.lock:
        for name, key, op, value in (
            ("m", b"newer-here", PUT, b"primary"),
            ("m", b"same", PUT, b"same"),
            ("m", b"deleted-here", DELETE, None),
            ("m", b"older-here", PUT, b"stale"),
        ):
            store.apply(P, op, name, key, value, old + 10, 1, 0, 0, clock())
    clock.advance(5_000)  # everything above is settled
    reply = ask(
        rr,
        P,
        [
            ("m", b"newer-here", old, 2),  # the backup's is older: answered
            ("m", b"same", old + 10, 1),  # equal: nothing
            ("m", b"deleted-here", 0, 0),  # the backup has nothing: the tombstone
            ("m", b"older-here", old + 20, 2),  # the backup's is newer: asked for
            ("m", b"absent-both", 0, 0),  # nobody knows it: nothing
            ("other", b"x", old, 2),  # a map the primary never had: asked for
        ],
    )
    assert not reply.refused
    (part,) = reply.partitions
    records = msgpack.unpackb(part.records, use_list=False)
    assert {(r[0], r[2], r[3]) for r in records} == {
        (PUT, b"newer-here", b"primary"),
        (DELETE, b"deleted-here", None),
    }
    wanted = msgpack.unpackb(part.probes, use_list=False)
    assert {(w[0], w[1]) for w in wanted} == {("m", b"older-here"), ("other", b"x")}


def test_takes_the_records_it_asked_for() -> None:
    rr, store, clock = primary()
    ts = ts_at(clock() - 10_000)
    reply = ask(rr, P, [], records=[(PUT, "m", b"k", b"from-backup", ts, 2, 0, 0)])
    assert reply.applied == 1
    assert store.map("m").parts[P][b"k"].value == b"from-backup"
    # a stale record does not win
    reply = ask(rr, P, [], records=[(PUT, "m", b"k", b"older", ts - 5, 2, 0, 0)])
    assert reply.applied == 0


def test_versions_still_in_flight_are_left_to_the_stream() -> None:
    rr, store, clock = primary()
    with store.lock:
        store.apply(P, PUT, "m", b"young", b"v", ts_at(clock() - 100), 1, 0, 0, clock())
    reply = ask(rr, P, [("m", b"young", 0, 0)])
    assert not reply.partitions  # younger than anti_entropy_settle_s: the stream brings it


def test_a_clear_marker_answers_for_keys_it_removed() -> None:
    rr, store, clock = primary()
    ts = ts_at(clock() - 10_000)
    with store.lock:
        store.apply(P, CLEAR, "m", b"", None, ts, 1, 0, 0, clock())
    reply = ask(rr, P, [("m", b"gone", ts - 100, 2)])
    (part,) = reply.partitions
    (record,) = msgpack.unpackb(part.records, use_list=False)
    assert record[0] == CLEAR and record[4] == ts


def test_partitions_it_is_not_primary_of_are_refused() -> None:
    rr, _, _ = primary()
    reply = ask(rr, P + 1, [("m", b"k", 0, 0)])
    assert list(reply.refused) == [P + 1] and not reply.partitions


@pytest.mark.parametrize(
    "probes",
    [
        msgpack.packb([("m", b"k", 1)]),  # three fields
        msgpack.packb([(1, b"k", 1, 1)]),  # map is not a string
        msgpack.packb({"m": 1}),  # not an array
        b"\xc1",  # not msgpack
        msgpack.packb([("m", b"k" * 100_000, 0, 0)]),  # key over max_key_bytes
    ],
)
def test_malformed_probes_are_refused_with_a_reason(probes: bytes) -> None:
    rr, _, _ = primary()
    part = pb.ReadRepairPartition(partition=P, probes=probes, probe_count=1)
    with pytest.raises((ValueError, msgpack.UnpackException)):
        rr.on_read_repair(pb.ReadRepairRequest(backup="m2", partitions=[part]))
