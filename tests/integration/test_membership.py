"""Membership with real member processes on loopback (issue 3).

Five `grid node` processes started by grid.harness.cluster.LocalCluster (the harness
`grid cluster up` uses), all with one cluster secret and default membership
settings, member-1 the only seed.  The tests run in file order on that one
cluster: convergence, kill -9 and restart, SIGTERM, then intruders (wrong
secret, another cluster name or partition count) and a fuzzer aimed at a
member's UDP port.  A separate small cluster checks encryption with a
two-key keyring.  Every wait is a bounded poll; the fixtures stop every
process, also when a test fails.  Measured times are printed (pytest -s).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid.harness.cluster import LocalCluster, MemberProcess
from grid.member.gossip.security import Sealer
from grid.members_view import counters_from_metadata
from proto import grid_pb2 as pb
from tests.integration.support import (
    assert_member_healthy,
    raw_channel,
    wait_partitions_settled,
    wait_until,
)

SECRET = "test-cluster-secret"
MEMBERS = "/grid.v1.Grid/Members"
K1 = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="  # base64 of 32 bytes
K2 = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI="
READY_AT: dict[str, float] = {}
"""When each member of the five answered its health check (SERVING)."""
K3 = "MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM="


class Views:
    """Members RPC to every member, over channels kept open (polling is cheap)."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.Channel] = {}

    def _call(self, address: str) -> tuple[pb.MembersReply, dict[str, int]]:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = raw_channel(address)
        data, call = ch.unary_unary(MEMBERS).with_call(
            pb.MembersRequest().SerializeToString(), timeout=2
        )
        return pb.MembersReply.FromString(data), counters_from_metadata(call.trailing_metadata())

    def of(self, member: MemberProcess) -> dict[str, pb.MemberInfo]:
        return {m.name: m for m in self._call(member.address)[0].members}

    def counters(self, member: MemberProcess) -> dict[str, int]:
        return self._call(member.address)[1]

    def states(self, observers: list[MemberProcess], subject: str) -> list[str]:
        return [self.of(o)[subject].state if subject in self.of(o) else "" for o in observers]

    def converged(self, members: list[MemberProcess]) -> bool:
        names = {m.name for m in members}
        for m in members:
            alive = {n for n, info in self.of(m).items() if info.state == "alive"}
            if alive != names:
                return False
        return True

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()


@pytest.fixture(scope="module")
def views() -> Iterator[Views]:
    v = Views()
    try:
        yield v
    finally:
        v.close()


@pytest.fixture(scope="module")
def five(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(5, member_args=["--secret", SECRET], log_dir=tmp_path_factory.mktemp("five"))
    READY_AT.clear()
    READY_AT["spawned"] = time.monotonic()  # start() spawns all five at once, then waits
    try:
        c.start(on_ready=lambda m: READY_AT.__setitem__(m.name, time.monotonic()))
        yield c
    finally:
        for m in c.members:
            if m.alive():
                c.kill(m, signal.SIGCONT)
        c.stop(grace=5)


@pytest.fixture
def intruders(five: LocalCluster, tmp_path: Path) -> Iterator[LocalCluster]:
    """Extra single members pointed at member-1 with flags of the test's choosing."""
    c = LocalCluster(0, log_dir=tmp_path, join=False)
    try:
        yield c
    finally:
        c.stop(grace=5)


def log_events(member: MemberProcess) -> list[dict]:
    events = []
    for line in member.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def running(c: LocalCluster) -> list[MemberProcess]:
    return [m for m in c.members if m.alive()]


# ---- the five-member cluster ---------------------------------------------------------------------
def test_five_members_from_one_seed_converge_within_3s(five: LocalCluster, views: Views) -> None:
    last_ready = max(t for k, t in READY_AT.items() if k != "spawned")
    wait_until(lambda: views.converged(five.members), timeout=10, what="5 members to converge")
    took = time.monotonic() - last_ready
    print(
        f"\n5 members converged {took:.2f}s after the last one was ready "
        f"({time.monotonic() - READY_AT['spawned']:.2f}s after the processes were spawned)"
    )
    assert took < 3.0
    for m in five.members:
        assert all(info.incarnation == 0 for info in views.of(m).values())


def test_kill_9_is_dead_everywhere_within_6s_then_restart_rejoins(
    five: LocalCluster, views: Views
) -> None:
    wait_until(lambda: views.converged(five.members), timeout=10, what="convergence")
    victim = five.members[2]
    others = [m for m in five.members if m is not victim]
    before = views.of(others[0])[victim.name].incarnation
    five.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    wait_until(
        lambda: views.states(others, victim.name) == ["dead"] * 4,
        timeout=10,
        interval=0.05,
        what=f"{victim.name} dead everywhere",
    )
    took = time.monotonic() - t0
    print(f"\nkill -9: every other member marked it dead after {took:.2f}s")
    assert took < 6.0
    victim.process.wait(5)

    fresh = five.restart(victim)
    five.wait_ready(fresh)
    t1 = time.monotonic()
    wait_until(lambda: views.converged(five.members), timeout=10, what="rejoin")
    print(f"restart: everyone lists it alive {time.monotonic() - t1:.2f}s after it was ready")
    for o in five.members:
        assert views.of(o)[victim.name].incarnation > before


def test_sigterm_is_seen_as_left_not_dead_within_1s(five: LocalCluster, views: Views) -> None:
    wait_until(lambda: views.converged(five.members), timeout=10, what="convergence")
    # A graceful stop hands the member's partitions off before it leaves the gossip, and
    # the coordinator takes a leave between two waves of a rebalance. The previous test's
    # restart starts one (partitions move back to the restarted member): measured from a
    # settled cluster, the interval is the leave itself, not the tail of that rebalance.
    t_settle = time.monotonic()
    wait_partitions_settled(five.addresses, timeout=60)
    print(f"\npartitions settled {time.monotonic() - t_settle:.2f}s after the views converged")
    leaver = five.members[4]
    others = [m for m in five.members if m is not leaver]
    five.kill(leaver, signal.SIGTERM)
    t0 = time.monotonic()
    wait_until(
        lambda: views.states(others, leaver.name) == ["left"] * 4,
        timeout=5,
        interval=0.01,
        what=f"{leaver.name} left everywhere",
    )
    took = time.monotonic() - t0
    print(f"\nSIGTERM: every other member saw it leave after {took:.3f}s")
    assert took < 1.0
    assert leaver.process.wait(10) == 0
    # it stays "left" (not "dead") once it is gone
    assert views.states(others, leaver.name) == ["left"] * 4


def test_wrong_secret_is_never_admitted_and_its_packets_are_counted(
    five: LocalCluster, intruders: LocalCluster, views: Views
) -> None:
    seed = five.members[0]
    live = running(five)
    before = views.counters(seed).get("rejected_bad_mac", 0)
    intruder = intruders.start_member(
        0, ["--name", "intruder", "--secret", "wrong", "--seeds", seed.gossip_address]
    )
    intruders.wait_ready(intruder)
    wait_until(
        lambda: views.counters(seed).get("rejected_bad_mac", 0) >= before + 3,
        timeout=10,
        what="the seed to reject the intruder's join attempts",
    )
    counters = views.counters(seed)
    print(f"\nseed counters with an intruder: {counters}")
    assert counters["rejected"] >= counters["rejected_bad_mac"]
    for m in live:
        assert "intruder" not in views.of(m)
    assert set(views.of(intruder)) == {"intruder"}


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--cluster-name", "other"], "cluster name"),
        (["--partitions", "64"], "partition count"),
    ],
)
def test_incompatible_member_is_refused_with_a_logged_reason(
    five: LocalCluster, intruders: LocalCluster, views: Views, flags: list[str], reason: str
) -> None:
    seed = five.members[0]
    stranger = intruders.start_member(
        0, ["--name", "stranger", "--secret", SECRET, "--seeds", seed.gossip_address, *flags]
    )
    code = stranger.process.wait(20)
    assert code == 2, stranger.log_tail()
    assert reason in stranger.log_tail(), stranger.log_tail()
    refusals = [
        e
        for e in log_events(seed)
        if e.get("event") == "refused a member" and e.get("peer") == "stranger"
    ]
    assert refusals and reason in refusals[-1]["reason"]
    for m in running(five):
        assert "stranger" not in views.of(m)


def test_fuzzed_datagrams_are_rejected_and_the_member_stays_healthy(
    five: LocalCluster, views: Views
) -> None:
    target = five.members[1]
    host, port = target.gossip_address.rsplit(":", 1)
    before = views.counters(target).get("rejected", 0)
    wrong = Sealer("not-the-secret")
    sent = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    frames = st.one_of(
        st.binary(max_size=1600),
        st.binary(max_size=200).map(lambda b: bytes([1, 1]) + b),  # plain + "mac" flag
        st.binary(max_size=1400).map(wrong.seal),  # well formed, wrong secret
        st.binary(min_size=1500, max_size=9000),  # oversized
    )

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(frames)
    def blast(frame: bytes) -> None:
        sock.sendto(frame, (host, int(port)))
        sent.append(frame)

    try:
        blast()
    finally:
        sock.close()
    wait_until(
        lambda: views.counters(target).get("rejected", 0) >= before + len(sent) * 0.9,
        timeout=10,
        what="the fuzzed datagrams to be counted as rejected",
    )
    counters = views.counters(target)
    print(f"\n{len(sent)} fuzzed datagrams; member counters: {counters}")
    assert counters.get("internal_errors", 0) == 0
    assert_member_healthy(target.address)
    wait_until(lambda: views.converged(running(five)), timeout=10, what="cluster still converged")
    assert "Traceback" not in target.log_path.read_text(errors="replace")


# ---- encryption ----------------------------------------------------------------------------------
def test_encryption_with_a_two_key_keyring(no_grid_env: None, tmp_path: Path) -> None:
    """Mid-rotation: member-1 still encrypts with K1, the others already with K2; all hold
    both, so all talk.  A member with only K3 is never admitted (unknown_key)."""
    c = LocalCluster(0, member_args=["--secret", SECRET], log_dir=tmp_path)
    views = Views()
    try:
        for i, keys in enumerate([f"{K1},{K2}", f"{K2},{K1}", f"{K2},{K1}"]):
            c.start_member(i, ["--encryption-keys", keys])
        for m in c.members:
            c.wait_ready(m)
        wait_until(lambda: views.converged(c.members), timeout=10, what="encrypted convergence")
        outsider = c.start_member(3, ["--name", "outsider", "--encryption-keys", K3])
        c.wait_ready(outsider)
        seed = c.members[0]
        wait_until(
            lambda: views.counters(seed).get("rejected_unknown_key", 0) >= 2,
            timeout=10,
            what="the outsider's packets to be rejected",
        )
        for m in c.members[:3]:
            assert "outsider" not in views.of(m)
            assert views.counters(m).get("rejected_bad_mac", 0) == 0
        assert views.converged(c.members[:3])
    finally:
        views.close()
        c.stop(grace=5)


def test_member_logs_are_clean(five: LocalCluster) -> None:
    """No member of the main cluster logged an exception during the whole module."""
    for m in five.members:
        text = m.log_path.read_text(errors="replace")
        assert "Traceback" not in text, m.log_tail(40)
        assert os.path.getsize(m.log_path) > 0
