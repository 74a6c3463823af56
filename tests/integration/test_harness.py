"""The test harness itself: what it promises the other tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from grid.harness import cluster as harness
from grid.harness.cluster import LocalCluster
from tests.integration.support import wait_until

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


def test_members_stop_when_the_harness_dies_without_stopping_them(
    no_grid_env: None, tmp_path: Path
) -> None:
    """A script that started members and was killed (kill -9 of a test run, a CI job
    cancelled) must not leave them running: each gets the harness's pid as parent_pid,
    notices it is orphaned, and stops gracefully."""
    script = (
        "import sys\n"
        "from grid.harness.cluster import LocalCluster\n"
        "c = LocalCluster(1, log_dir=sys.argv[1]).start()\n"
        "print(c.members[0].pid, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    harness_proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    member_pid = 0
    try:
        assert harness_proc.stdout is not None
        member_pid = int(harness_proc.stdout.readline())
        assert _running(member_pid)
        harness_proc.kill()
        harness_proc.wait(10)
        wait_until(lambda: not _running(member_pid), 30, 0.1, "the orphaned member to stop")
        log = (tmp_path / "member-1.log").read_text()
        assert "parent process gone; stopping" in log
        assert "member stopped" in log  # a graceful stop, not a crash
    finally:
        harness_proc.kill()
        if member_pid and _running(member_pid):
            os.kill(member_pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (an exited one reparented to init is reaped by it;
    a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
