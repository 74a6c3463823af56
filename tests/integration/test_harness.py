"""The test harness itself: what it promises the other tests."""

from __future__ import annotations

import socket

import pytest

from grid.harness import cluster as harness
from grid.harness.cluster import LocalCluster

pytestmark = pytest.mark.integration


def test_start_tries_again_when_a_picked_port_is_taken(
    no_grid_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A port found free is only a promise until the member binds it. Here another socket
    takes member-2's gossip port in between, as a stray process could: the member exits
    saying so, and `start` begins again on fresh ports instead of failing the test."""
    pick = harness.free_gossip_port
    picked: list[int] = []
    thieves: list[socket.socket] = []

    def pick_then_steal_the_second(host: str = "127.0.0.1") -> int:
        port = pick(host)
        picked.append(port)
        if len(picked) == 2:
            thief = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            thief.bind((host, port))
            thieves.append(thief)
        return port

    monkeypatch.setattr(harness, "free_gossip_port", pick_then_steal_the_second)
    c = LocalCluster(2)
    try:
        c.start()
        assert all(m.alive() for m in c.members)
        assert len(picked) == 4, "one start over, on fresh ports"
        log = (c.log_dir / "member-2.log").read_text()
        assert f"cannot bind the gossip UDP port 127.0.0.1:{picked[1]}" in log
    finally:
        c.stop()
        for s in thieves:
            s.close()
