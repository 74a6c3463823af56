"""Suspicion timer, awareness, broadcast queue and config rules."""

from __future__ import annotations

import dataclasses
import math

import pytest

from membership.awareness import Awareness
from membership.broadcast import BroadcastQueue
from membership.config import Config
from membership.suspicion import Suspicion, remaining_time


@pytest.mark.parametrize(
    ("n", "k", "elapsed", "expected"),
    # memberlist suspicion_test.go, min 2 s, max 30 s
    [
        (0, 3, 0, 30.0),
        (1, 3, 2, 14.0),
        (2, 3, 3, 4.81),
        (3, 3, 4, -2.0),
        (4, 3, 5, -3.0),
        (5, 3, 10, -8.0),
    ],
)
def test_remaining_time_matches_memberlist(n, k, elapsed, expected):
    assert remaining_time(n, k, elapsed, 2.0, 30.0) == pytest.approx(expected, abs=1e-9)


def test_remaining_time_without_expected_confirmations_is_the_minimum():
    assert remaining_time(0, 0, 1.0, 2.0, 30.0) == 1.0


def test_suspicion_counts_each_independent_confirmation_once():
    s = Suspicion("a", 0, k=3, min_timeout=2.0, max_timeout=30.0, now=100.0)
    assert s.deadline == 130.0
    assert not s.confirm("a", 101.0), "the originator is not a confirmation"
    assert s.confirm("b", 102.0)
    assert s.deadline == pytest.approx(116.0)
    assert not s.confirm("b", 102.5)
    assert s.confirm("c", 103.0) and s.confirm("d", 104.0)
    assert s.deadline == pytest.approx(102.0)  # min reached: fire now
    assert not s.confirm("e", 105.0), "no more than k confirmations"


def test_suspicion_with_k0_uses_the_minimum():
    s = Suspicion("a", 0, k=0, min_timeout=2.0, max_timeout=30.0, now=0.0)
    assert s.deadline == 2.0
    assert not s.confirm("b", 1.0)


def test_awareness_clamps_and_scales():
    a = Awareness(8)
    a.apply_delta(-3)
    assert a.score == 0 and a.scale(0.5) == 0.5
    a.apply_delta(3)
    assert a.scale(0.5) == 2.0
    a.apply_delta(100)
    assert a.score == 7
    off = Awareness(8, enabled=False)
    off.apply_delta(5)
    assert off.score == 0


def test_broadcast_queue_replaces_and_limits_retransmits():
    q = BroadcastQueue(lambda n: 3)
    q.queue("x", b"old-x---")
    q.queue("x", b"new-x---")
    q.queue("y", b"y-------")
    assert len(q) == 2
    first = q.take(100, 10)
    assert sorted(first) == [b"new-x---", b"y-------"]
    q.queue("z", b"z-------")
    assert q.take(8, 10) == [b"z-------"], "fewest transmits first"
    sent = first + [b for _ in range(5) for b in q.take(100, 10)]
    assert sent.count(b"new-x---") == 3 and sent.count(b"z-------") == 2
    assert len(q) == 0 and q.take(100, 10) == []


def test_broadcast_queue_respects_room():
    q = BroadcastQueue(lambda n: 10)
    for i in range(50):
        q.queue(f"k{i}", bytes(20))
    got = q.take(105, 50)
    assert len(got) == 5 and sum(map(len, got)) <= 105
    assert q.pending("k49") and len(q) == 50


def test_config_defaults_meet_the_product_goal_on_paper():
    c = Config()
    # kill -9 at N=5: ~2 periods to suspect + minimum suspicion timeout < 6 s
    assert 2 * c.probe_interval + c.suspicion_timeout(5) < 6.0
    assert c.suspicion_timeout(1000) == pytest.approx(3 * c.suspicion_timeout(10))
    assert c.retransmit_limit(1000) == c.retransmit_mult * math.ceil(math.log10(1001))
    assert c.push_pull_scaled(10) == c.push_pull_interval
    assert c.push_pull_scaled(1000) == 6 * c.push_pull_interval


def test_without_lifeguard_switches_all_three_parts_off():
    c = Config().without_lifeguard()
    assert not (c.lifeguard_awareness or c.lifeguard_buddy or c.lifeguard_dynamic_suspicion)


@pytest.mark.parametrize(
    "change",
    [
        {"probe_timeout": 0.6},
        {"probe_interval": 0},
        {"max_datagram_size": 100},
        {"gossip_nodes": -1},
    ],
)
def test_config_rejects_nonsense(change):
    with pytest.raises(ValueError):
        dataclasses.replace(Config(), **change)
