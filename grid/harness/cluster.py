"""A local cluster of real member processes on loopback.

Used by `grid cluster up`, `grid demo`, the benchmarks and the integration
tests: the same harness everywhere, so what the tests exercise is what a user
starts. Each member is `python -m grid node` with its own port, gossip port and
log file; readiness is the member's standard gRPC health check answering
SERVING. Members after the first join through member-1's gossip address
(`--seeds`), so they form one cluster.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto import grid_pb2 as pb

PORT_FLOOR = 10000
"""Lowest port the harness hands out (below it are well-known and registered services)."""

_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _pick(host: str, kinds: Sequence[int]) -> int:
    """A port free for every socket kind in `kinds`, from below the ephemeral range.

    Why below it: a port found free and then released is only a promise until the member
    binds it, and the kernel hands ports from the ephemeral range to every outgoing
    connection in the meantime (the test's own gRPC channels among them); a test once
    failed that way, a member exiting with "address already in use". Ports under the
    range are never given out implicitly, so only another explicit bind can take one (the
    port a member derives from it, + DERIVED_SPAN, included: a test once saw a derived
    data port in the range taken by a client's connection).
    Each port is handed out once per process, so two members never get the same one.
    """
    low, _ = _ephemeral_range()
    top = low - 1 - DERIVED_SPAN if low - 1 - DERIVED_SPAN > PORT_FLOOR + 1000 else 65535
    for _ in range(200):
        port = random.randint(PORT_FLOOR, top)
        if port in _handed_out:
            continue
        try:
            for kind in kinds:
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((host, port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free port found on {host} between {PORT_FLOOR} and {top}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free now, from below the ephemeral range (see `_pick`)."""
    return _pick(host, (socket.SOCK_STREAM,))


def free_gossip_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP (the membership transport binds both)."""
    return _pick(host, (socket.SOCK_DGRAM, socket.SOCK_STREAM))


START_ATTEMPTS = 3
"""How often `LocalCluster.start` starts over, on fresh ports, when a member could not
bind one of the ports picked for it (another process took it in between)."""

BIND_FAILED = re.compile(r"cannot (bind|listen on) ")
"""What a member says when one of its ports is taken (member.py, gossip/transport.py)."""


READY_SERVICE = ""
"""The health service a start waits for: the member says "" SERVING once every port it
serves is bound (member.py), so a member whose memcached port turned out taken never
looks up. (grid.v1.Grid waits for the rest of the start, which a member short of
min_cluster_size never finishes; probes of readiness for data ask that one.)"""

DERIVED_SPAN = 2000
"""A member derives its data port as its gRPC port + 2000 when not told one: ports are
handed out that far below the ephemeral range, so the derived one is below it too."""


def is_serving(address: str, timeout: float = 0.5, credentials: Any = None) -> bool:
    """The member's health check answers SERVING (over TLS with `credentials`,
    grpc.ssl_channel_credentials, for a member that serves TLS)."""
    try:
        channel = (
            grpc.secure_channel(address, credentials)
            if credentials is not None
            else grpc.insecure_channel(address)
        )
        with channel as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=READY_SERVICE), timeout=timeout
            )
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def migration_state(addresses: Sequence[str], timeout: float = 2.0) -> tuple[int, int] | None:
    """(partitions still to move, partitions being filled) over these members, or None
    when one does not answer. (0, 0) means settled: one table version everywhere, nothing
    moving, and every member named holds primaries.

    The last condition matters right after start: a member that has joined the gossip
    but not yet been given partitions reports the same table as everyone else and
    nothing pending, because the coordinator has not planned its moves yet. Before the
    first table every member reports version 0, no primaries and nothing moving, which
    is not settled either (a test once wrote to a cluster caught in that moment).
    """
    pending = filling = 0
    versions = set()
    primaries = []
    for address in addresses:
        try:
            with grpc.insecure_channel(address) as ch:
                data = ch.unary_unary("/grid.v1.Grid/Stats")(
                    pb.StatsRequest().SerializeToString(), timeout=timeout
                )
        except grpc.RpcError:
            return None
        m = pb.StatsReply.FromString(data).migration
        pending += m.pending
        filling += m.in_flight
        versions.add(m.table_version)
        primaries.append(m.primaries)
    empty = sum(1 for n in primaries if n == 0)
    # (fewer partitions than members leaves some members empty for good)
    if len(versions) > 1 or 0 in versions or (empty and sum(primaries) >= len(addresses)):
        pending = max(pending, 1)
    return pending, filling


def wait_settled(addresses: Sequence[str], timeout: float = 60.0) -> None:
    """Until `migration_state` says settled: partitions placed on every member, nothing
    moving (benchmarks start measuring only then); TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while migration_state(addresses) != (0, 0):
        if time.monotonic() > deadline:
            raise TimeoutError(f"partitions did not settle within {timeout}s")
        time.sleep(0.2)


@dataclass
class MemberProcess:
    name: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path
    gossip_address: str = ""
    cmd: tuple[str, ...] = ()
    resp_address: str = ""
    """host:port of the member's RESP front end ("" when it has none)."""
    memcached_address: str = ""
    """host:port of the member's memcached front end ("" when it has none)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_serving(member: MemberProcess, timeout: float = 30.0, credentials: Any = None) -> None:
    """Until the member's health check answers SERVING; fails with its log's tail if it
    exits first or does not serve within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not member.alive():
            raise RuntimeError(
                f"{member.name} exited with code {member.process.returncode}:\n{member.log_tail()}"
            )
        if is_serving(member.address, credentials=credentials):
            return
        time.sleep(0.05)
    raise TimeoutError(
        f"{member.name} not serving at {member.address} after {timeout}s:\n{member.log_tail()}"
    )


class LocalCluster:
    def __init__(
        self,
        size: int = 1,
        base_port: int = 0,
        host: str = "127.0.0.1",
        member_args: Sequence[str] = (),
        log_dir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        join: bool = True,
        launcher: Sequence[str] = ("-m", "grid"),
        health_credentials: Any = None,
        resp: bool = False,
        memcached: bool = False,
    ) -> None:
        """join=False: members are started without --seeds (each its own cluster).
        launcher: what follows the interpreter on a member's command line before `node`
        (the chaos harness's planted members use a wrapper module of their own).
        resp: every member also serves RESP (Redis clients) on a port of its own (the
        gRPC port + 3000 with a base_port).
        memcached: every member also serves memcached clients (the gRPC port + 4000)."""
        self.resp = resp
        self.memcached = memcached
        self.join = join
        self.health_credentials = health_credentials
        """grpc.ssl_channel_credentials for the readiness checks of members serving TLS."""
        self.launcher = tuple(launcher)
        self.size = size
        self.base_port = base_port
        self.host = host
        self.member_args = list(member_args)
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="grid-cluster-"))
        self.env = env
        self.members: list[MemberProcess] = []

    @property
    def addresses(self) -> list[str]:
        return [m.address for m in self.members]

    def start_member(self, index: int, extra_args: Sequence[str] = ()) -> MemberProcess:
        port = self.base_port + index if self.base_port else free_port(self.host)
        gossip_port = port + 1000 if self.base_port else free_gossip_port(self.host)
        data_port = port + 2000 if self.base_port else free_port(self.host)
        resp: list[str] = []
        if self.resp:
            resp_port = port + 3000 if self.base_port else free_port(self.host)
            resp = ["--resp-port", str(resp_port)]
        mc: list[str] = []
        if self.memcached:
            mc_port = port + 4000 if self.base_port else free_port(self.host)
            mc = ["--memcached-port", str(mc_port)]
        name = f"member-{index + 1}"
        seeds: list[str] = []
        if self.join and self.members and index > 0:
            seeds = ["--seeds", self.members[0].gossip_address]
        cmd = [
            sys.executable,
            *self.launcher,
            "node",
            "--name",
            name,
            "--host",
            self.host,
            "--port",
            str(port),
            "--gossip-port",
            str(gossip_port),
            "--data-port",
            str(data_port),
            "--log-format",
            "json",
            "--parent-pid",  # a member stops if this process dies without stopping it
            str(os.getpid()),
            *seeds,
            *resp,
            *mc,
            *self.member_args,
            *extra_args,
        ]
        member = MemberProcess(
            name,
            f"{self.host}:{port}",
            self._spawn(cmd, self.log_dir / f"{name}.log"),
            self.log_dir / f"{name}.log",
            f"{self.host}:{gossip_port}",
            tuple(cmd),
            f"{self.host}:{resp[1]}" if resp else "",
            f"{self.host}:{mc[1]}" if mc else "",
        )
        self.members.append(member)
        return member

    def _spawn(self, cmd: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def restart(self, member: MemberProcess) -> MemberProcess:
        """Start a member that exited (or was killed) again, same name, ports and flags."""
        if member.alive():
            raise RuntimeError(f"{member.name} is still running")
        fresh = MemberProcess(
            member.name,
            member.address,
            self._spawn(member.cmd, member.log_path),
            member.log_path,
            member.gossip_address,
            member.cmd,
            member.resp_address,
            member.memcached_address,
        )
        self.members[self.members.index(member)] = fresh
        return fresh

    def start(
        self, on_ready: Callable[[MemberProcess], None] | None = None, timeout: float = 30.0
    ) -> LocalCluster:
        for attempt in range(START_ATTEMPTS):
            try:
                for i in range(self.size):
                    self.start_member(i)
                for m in self.members:
                    self.wait_ready(m, timeout)
                    if on_ready:
                        on_ready(m)
                return self
            except RuntimeError as e:
                lost_a_port = bool(BIND_FAILED.search(str(e))) and not self.base_port
                self.stop(keep_logs=lost_a_port)
                if not lost_a_port or attempt == START_ATTEMPTS - 1:
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def wait_ready(self, member: MemberProcess, timeout: float = 30.0) -> None:
        wait_serving(member, timeout, self.health_credentials)

    def kill(self, member: MemberProcess, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            member.process.send_signal(sig)

    def stop(self, grace: float = 10.0, keep_logs: bool = False) -> None:
        """SIGTERM every member, wait for a graceful exit, SIGKILL stragglers."""
        for m in self.members:
            if m.alive():
                self.kill(m, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for m in self.members:
            try:
                m.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(m.process.pid, signal.SIGKILL)
                m.process.wait(5)
        self.members.clear()
        # a temporary directory this cluster made: leave nothing behind (but a retry
        # of `start` keeps the failed attempt's logs, the members append to them)
        if self._own_log_dir and not keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
