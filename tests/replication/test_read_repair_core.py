"""The read repair core (replication/read_repair.py): what is queued, and what each side
sends for a probe, with no store, network or clock."""

from __future__ import annotations

import random

from replication.read_repair import MAX_QUEUED, Checker, Probe

PUT = 1


def rec(key: bytes, ts: int, member: int = 1) -> tuple:
    return (PUT, "m", key, b"v", ts, member, 0, 0)


def test_reads_are_sampled_bounded_and_deduplicated() -> None:
    never = Checker("b", 0.0, lambda p, m, k: None)
    assert not never.served(1, "m", b"k") and never.served_count == 1
    always = Checker("b", 1.0, lambda p, m, k: None)
    assert always.served(1, "m", b"k")
    assert not always.served(1, "m", b"k")  # already queued
    for i in range(MAX_QUEUED + 10):
        always.served(2, "m", str(i).encode())
    assert always.queued == MAX_QUEUED
    assert sum(len(v) for v in always.take().values()) == MAX_QUEUED and not always.queue
    half = Checker("b", 0.5, lambda p, m, k: None, random.Random(3))
    share = sum(half.served(3, "m", str(i).encode()) for i in range(2000)) / 2000
    assert 0.4 < share < 0.6


def test_the_primary_sends_what_is_newer_and_settled_and_asks_for_what_it_lacks() -> None:
    mine = {b"newer": rec(b"newer", 50), b"young": rec(b"young", 500), b"older": rec(b"older", 5)}
    primary = Checker("p", 1.0, lambda p, m, k: mine.get(k))
    probes = [
        Probe("m", b"newer", 10, 1),  # the primary's is newer: sent
        Probe("m", b"young", 10, 1),  # newer but past the cut: the stream brings it
        Probe("m", b"older", 10, 1),  # the backup's is newer: asked for
        Probe("m", b"absent", 10, 1),  # the primary has nothing: asked for
        Probe("m", b"equal", 0, 0),  # neither has anything: nothing to do
    ]
    answer = primary.on_probes(7, probes, cut=100)
    assert answer.newer == [mine[b"newer"]]
    assert [w.key for w in answer.wanted] == [b"older", b"absent"]


def test_the_backup_keeps_only_maps_it_holds_and_answers_what_was_asked() -> None:
    copy = {b"a": rec(b"a", 9)}
    merged: list = []
    backup = Checker("b", 1.0, lambda p, m, k: copy.get(k))
    theirs = [rec(b"x", 20), (PUT, "other", b"y", b"v", 21, 1, 0, 0)]
    won, mine = backup.on_answer(
        4, theirs, [Probe("m", b"a", 0, 0), Probe("m", b"gone", 0, 0)],
        holds=lambda name: name == "m",
        merge=lambda p, records: merged.extend(records) or len(records),
    )  # fmt: skip
    assert merged == [rec(b"x", 20)] and won == 1
    assert mine == [copy[b"a"]]
