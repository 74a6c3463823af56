"""Redis's own tools against grid: redis-cli and redis-benchmark on one member, and a
three-member cluster where every member serves every key over RESP."""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from grid.harness.cluster import LocalCluster
from tests import needs
from tests.integration.memcached_support import RawMemcache
from tests.integration.resp_support import RawResp, encode
from tests.integration.support import wait_partitions_settled


@pytest.fixture(scope="module")
def single(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(1, resp=True, log_dir=tmp_path_factory.mktemp("resp-tools"))
    cluster.start()  # and no waiting for the partition table: requests wait for it
    try:
        yield cluster
    finally:
        cluster.stop(grace=5)


def cli(address: str, *args: str, stdin: str | None = None) -> str:
    host, port = address.rsplit(":", 1)
    out = subprocess.run(
        [needs.command("redis-cli"), "-h", host, "-p", port, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout


def test_redis_cli_commands_and_its_interactive_start(single: LocalCluster) -> None:
    address = single.members[0].resp_address
    assert cli(address, "SET", "cli:k", "hello") == "OK\n"
    assert cli(address, "GET", "cli:k") == "hello\n"
    assert cli(address, "INCR", "cli:n") == "1\n"
    assert cli(address, "--no-raw", "GET", "cli:n") == '"1"\n'
    assert cli(address, "TTL", "cli:k") == "-1\n"
    # piped input: redis-cli reads commands line by line, as a user would type them
    out = cli(address, stdin="SET cli:p world\nGET cli:p\nDEL cli:p\nHELLO 3\n")
    assert out.startswith("OK\nworld\n1\n")
    assert "proto" in out
    info = cli(address, "INFO", "server")
    assert "redis_version:7.0.15" in info


def interactive(address: str, lines: list[bytes]) -> str:
    """redis-cli at a terminal (a pseudo-terminal): its interactive start, the prompt, the
    replies as a user sees them."""
    host, port = address.rsplit(":", 1)
    binary = needs.command("redis-cli")
    pid, fd = pty.fork()
    if pid == 0:  # the child: redis-cli on the terminal
        os.environ["TERM"] = "dumb"
        os.execv(binary, [binary, "-h", host, "-p", port])
    out = b""

    def read(seconds: float) -> None:
        nonlocal out
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    return
                out += chunk
                if b"\x1b[6n" in chunk:  # linenoise asks where the cursor is
                    os.write(fd, b"\x1b[1;1R")

    try:
        for line in lines:
            read(0.5)
            os.write(fd, line + b"\r")
        read(1.0)
    finally:
        os.close(fd)
        os.waitpid(pid, 0)
    return out.decode(errors="replace")


def test_redis_cli_interactive(single: LocalCluster) -> None:
    typed = [b"set tty:a b", b"get tty:a", b"hello 3", b"incr tty:n", b"quit"]
    out = interactive(single.members[0].resp_address, typed)
    assert "> set tty:a b\r\nOK" in out
    assert '"b"' in out
    assert '"server" => "redis"' in out
    assert "(integer) 1" in out


def test_redis_benchmark_set_get_pipelined(single: LocalCluster) -> None:
    address = single.members[0].resp_address
    host, port = address.rsplit(":", 1)
    out = subprocess.run(
        [needs.command("redis-benchmark"), "-h", host, "-p", port, "-t", "set,get",
         "-n", "20000", "-P", "16", "-q"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    rates = dict(re.findall(r"(SET|GET): ([\d.]+) requests per second", out))
    assert set(rates) == {"SET", "GET"}, out
    assert all(float(v) > 0 for v in rates.values())
    r = redis.Redis(host=host, port=int(port))
    assert r.get("key:__rand_int__") == b"VXK"  # redis-benchmark's value, read back
    r.close()


def test_three_members_every_member_serves_every_key(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cluster = LocalCluster(3, resp=True, log_dir=tmp_path_factory.mktemp("resp-three"))
    cluster.start()
    try:
        wait_partitions_settled(cluster.addresses)
        clients = []
        for m in cluster.members:
            host, port = m.resp_address.rsplit(":", 1)
            clients.append(redis.Redis(host=host, port=int(port), socket_timeout=10))
        first, *others = clients
        pipe = first.pipeline(transaction=False)
        for i in range(300):
            pipe.set(f"three:{i}", i)
        pipe.execute()
        for r in others:
            assert r.mget([f"three:{i}" for i in range(300)]) == [
                str(i).encode() for i in range(300)
            ]
        for r in clients:  # increments through every member land on one counter
            for _ in range(10):
                r.incr("three:counter")
        assert {r.get("three:counter") for r in clients} == {b"30"}
        for r in clients:
            assert r.dbsize() == 301
            assert len(list(r.scan_iter(match="three:*", count=50))) == 301
            assert len(r.keys("three:*")) == 301
        pipe = others[0].pipeline(transaction=False)  # forwarded writes, then their reads
        for i in range(100):
            pipe.set(f"three:p{i}", i)
            pipe.append(f"three:p{i}", "x")
            pipe.incr("three:pipeline-counter")
            pipe.get(f"three:p{i}")
        replies = pipe.execute()
        assert replies[3::4] == [f"{i}x".encode() for i in range(100)]
        assert replies[2::4] == list(range(1, 101))
        first.delete(*(f"three:p{i}" for i in range(100)), "three:pipeline-counter")
        assert others[0].append("three:0", "x") == 2
        assert others[1].getset("three:0", "y") == b"0x"
        assert first.rename("{t}a" if first.set("{t}a", 1) else "", "{t}b") is True
        assert others[1].get("{t}b") == b"1"
        with pytest.raises(redis.ResponseError, match="same slot"):
            others[0].rename("three:1", "three:2")
        assert first.flushdb() is True
        assert others[1].dbsize() == 0
        for r in clients:
            r.close()
    finally:
        cluster.stop(grace=5)


def test_pipelines_keep_their_order_where_replies_wait_for_backups(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With sync backups a batch forwards its operations only after its own wait: the
    batches behind it must wait too, or a pipelined read could overtake its write."""
    cluster = LocalCluster(3, resp=True, member_args=["--sync-backups", "1"],
                           log_dir=tmp_path_factory.mktemp("resp-sync"))  # fmt: skip
    cluster.start()
    try:
        wait_partitions_settled(cluster.addresses)
        raw = RawResp(cluster.members[1].resp_address)
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        keys = [f"sync:{i}" for i in range(50)]
        for round_ in range(5):
            # an MSET whose batch both writes here (and waits for its backups) and
            # forwards, then an MGET in a segment of its own: a batch of its own
            values = [f"{round_}-{k}".encode() for k in keys]
            raw.send(encode("MSET", *(x for kv in zip(keys, values, strict=True) for x in kv)))
            raw.send(encode("MGET", *keys))
            assert raw.reply() == b"+OK\r\n"
            expected = b"*50\r\n" + b"".join(b"$%d\r\n%b\r\n" % (len(v), v) for v in values)
            assert raw.reply() == expected
        raw.close()
    finally:
        cluster.stop(grace=5)


def test_pipelined_gets_and_sets_right_where_batches_forward_and_wait(
    no_grid_env: None, tmp_path: Path
) -> None:
    """GET and SET (and memcached's get and set) run without protobuf messages unless their
    batch must wait; here every batch waits for its fsync and its sync backup and forwards
    two thirds of its keys, so each reply comes back through that path: all must be right,
    in order, each GET seeing the SET before it."""
    (tmp_path / "logs").mkdir()
    args = ["--sync-backups", "1", "--fsync", "always"]
    with LocalCluster(0, resp=True, memcached=True, member_args=args,
                      log_dir=tmp_path / "logs") as cluster:  # fmt: skip
        for i in range(3):
            cluster.start_member(i, ["--data-dir", str(tmp_path / f"data-{i + 1}")])
        for mp in cluster.members:
            cluster.wait_ready(mp)
        wait_partitions_settled(cluster.addresses, timeout=30)
        raw = RawResp(cluster.members[0].resp_address)
        n = 200
        raw.send(
            b"".join(encode("SET", f"k{i}", f"v{i}") + encode("GET", f"k{i}") for i in range(n))
        )
        for i in range(n):
            assert raw.reply() == b"+OK\r\n"
            assert raw.reply() == b"$%d\r\n%b\r\n" % (len(f"v{i}"), f"v{i}".encode())
        raw.close()
        mc = RawMemcache(cluster.members[0].memcached_address)
        mc.send(b"".join(b"set m%d 7 0 2\r\nv%d\r\nget m%d\r\n" % (i, i % 10, i) for i in range(n)))
        for i in range(n):
            assert mc.until(b"END\r\n") == b"STORED\r\nVALUE m%d 7 2\r\nv%d\r\n" % (i, i % 10)
        mc.close()
