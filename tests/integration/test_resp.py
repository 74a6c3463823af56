"""Redis clients against a member's RESP port: redis-py (sync and asyncio, RESP2 and RESP3),
pipelines, the SDK reading the same keys, and bad input that must cost a connection only.

Tools (redis-cli, redis-benchmark) and a three-member cluster are in test_resp_tools.py;
byte-for-byte comparisons with a real redis-server in test_resp_vs_redis.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

import grid
from grid.harness.cluster import LocalCluster, MemberProcess
from tests.integration.resp_support import RawResp, encode
from tests.integration.support import assert_taken_port_refused, wait_partitions_settled


@pytest.fixture(scope="module")
def resp_member(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MemberProcess]:
    cluster = LocalCluster(
        1,
        resp=True,
        member_args=[
            "--data-frame-timeout-s",
            "2",
            "--max-value-bytes",
            "1MiB",
            "--max-batch-ops",
            "64",
        ],
        log_dir=tmp_path_factory.mktemp("resp-member"),
    )
    cluster.start()
    try:
        wait_partitions_settled(cluster.addresses)  # until then: -TRYAGAIN, no table yet
        yield cluster.members[0]
    finally:
        cluster.stop(grace=5)


def connect(member: MemberProcess, protocol: int = 2) -> redis.Redis:
    host, port = member.resp_address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), protocol=protocol, socket_timeout=10)


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_sync(resp_member: MemberProcess, protocol: int) -> None:
    r = connect(resp_member, protocol)
    p = f"sync{protocol}:"
    assert r.ping() is True
    assert r.set(p + "a", "1") is True
    assert r.get(p + "a") == b"1"
    assert r.get(p + "missing") is None
    assert r.incr(p + "a") == 2
    assert r.incrby(p + "a", 10) == 12
    assert r.get(p + "a") == b"12"  # a RESP counter is a decimal string
    assert r.incrbyfloat(p + "f", 1.5) == 1.5
    assert r.set(p + "a", "x", nx=True) is None
    assert r.set(p + "t", "v", ex=100) is True
    assert 99 <= r.ttl(p + "t") <= 100
    assert r.expire(p + "t", 200, gt=True) is True
    assert r.persist(p + "t") is True
    assert r.ttl(p + "t") == -1
    assert r.mset({p + "m1": "1", p + "m2": "2"}) is True
    assert r.mget([p + "m1", p + "m2", p + "m3"]) == [b"1", b"2", None]
    assert r.append(p + "m1", "00") == 3
    assert r.getrange(p + "m1", 1, -1) == b"00"
    assert r.setrange(p + "m1", 1, "23") == 3
    assert r.getdel(p + "m1") == b"123"
    assert r.exists(p + "m1", p + "m2") == 1
    assert r.type(p + "m2") == b"string"
    assert r.delete(p + "m2", p + "a") == 2
    assert sorted(r.scan_iter(match=p + "*", count=5)) == sorted(r.keys(p + "*"))
    assert r.client_setname("tester") is True
    assert r.client_getname() in ("tester", b"tester")  # (redis-py decodes it)
    assert r.client_id() > 0
    assert isinstance(r.info("keyspace"), dict)
    assert r.dbsize() >= 1
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.incrby(p + "f", 1)
    with pytest.raises(redis.ResponseError, match="grid does not support HSET"):
        r.hset(p + "h", "f", "v")
    r.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_pipeline(resp_member: MemberProcess, protocol: int) -> None:
    r = connect(resp_member, protocol)
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"pipe{protocol}:{i}", i)
        pipe.incr(f"pipe{protocol}:{i}")
        pipe.append(f"pipe{protocol}:{i}", "x")
        pipe.get(f"pipe{protocol}:{i}")
    replies = pipe.execute()
    assert replies[3::4] == [f"{i + 1}x".encode() for i in range(200)]
    with pytest.raises(redis.ResponseError, match=r"transactions \(MULTI/EXEC/WATCH\)"):
        r.pipeline(transaction=True).set("x", 1).execute()
    r.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_asyncio(resp_member: MemberProcess, protocol: int) -> None:
    host, port = resp_member.resp_address.rsplit(":", 1)

    async def main() -> list[bytes | None]:
        r = redis.asyncio.Redis(host=host, port=int(port), protocol=protocol)
        try:
            await asyncio.gather(*(r.set(f"aio{protocol}:{i}", i) for i in range(100)))
            await asyncio.gather(*(r.incr(f"aio{protocol}:{i}") for i in range(100)))
            return list(await r.mget([f"aio{protocol}:{i}" for i in range(100)]))
        finally:
            await r.aclose()

    assert asyncio.run(main()) == [str(i + 1).encode() for i in range(100)]


def test_the_sdk_reads_resp_keys_with_the_raw_codec(resp_member: MemberProcess) -> None:
    r = connect(resp_member)
    r.set("sdk:k", b"\x00bytes")
    r.incr("sdk:n")
    with grid.Client(resp_member.address, timeout=10) as client:
        kv = client.map("kv", codec="raw")
        assert kv.get("sdk:k") == b"\x00bytes"
        assert kv.get("sdk:n") == b"1"
        kv.put("sdk:from-sdk", b"hello")
    assert r.get("sdk:from-sdk") == b"hello"
    r.close()


# ---- bad input --------------------------------------------------------------------------------
def healthy(member: MemberProcess) -> None:
    """The member still answers new connections and still has what it stored."""
    r = connect(member)
    assert r.ping() is True
    assert r.get("bad:canary") == b"alive"
    r.close()


@pytest.fixture
def canary(resp_member: MemberProcess) -> MemberProcess:
    r = connect(resp_member)
    r.set("bad:canary", "alive")
    r.close()
    return resp_member


def test_an_oversized_bulk_is_refused_and_closes_the_connection(canary: MemberProcess) -> None:
    raw = RawResp(canary.resp_address)
    raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$" + str(2 << 20).encode() + b"\r\n")
    assert raw.reply() == b"-ERR Protocol error: invalid bulk length\r\n"
    assert raw.closed()
    healthy(canary)


def test_binary_garbage_is_answered_and_closed(canary: MemberProcess) -> None:
    raw = RawResp(canary.resp_address)
    raw.send(encode("PING") + b"*1\r\n\xff\xfegarbage\r\n" + encode("PING"))
    assert raw.reply() == b"+PONG\r\n"
    assert raw.reply() == b"-ERR Protocol error: expected '$', got '\xff'\r\n"
    assert raw.closed()
    healthy(canary)


def test_an_unknown_command_is_an_error_and_the_connection_goes_on(canary: MemberProcess) -> None:
    raw = RawResp(canary.resp_address)
    assert raw.call("FROB", "x").startswith(b"-ERR unknown command 'FROB'")
    assert raw.call("GET", "bad:canary") == b"$5\r\nalive\r\n"
    raw.close()


def test_a_half_sent_command_is_closed_after_the_timeout(canary: MemberProcess) -> None:
    """A client that stops in the middle of a request holds nothing for long, and stalls
    nobody meanwhile."""
    raw = RawResp(canary.resp_address)
    raw.send(b"*3\r\n$3\r\nSET\r\n$10\r\nbad:canary\r\n$5\r\nde")
    healthy(canary)  # others are served meanwhile
    started = time.monotonic()
    assert raw.closed(timeout=10)
    assert time.monotonic() - started < 8
    healthy(canary)  # and the half-sent write was never applied


def test_many_connections_of_garbage_leave_the_member_serving(canary: MemberProcess) -> None:
    host, port = canary.resp_address.rsplit(":", 1)
    for i in range(50):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(bytes((i * 37 + j) % 256 for j in range(200)) + b"\r\n")
    healthy(canary)


def test_server_and_connection_commands(resp_member: MemberProcess) -> None:
    r = connect(resp_member)
    assert r.command_count() >= 50
    info = r.command()  # redis-py parses COMMAND's reply into a dict
    assert info["get"]["arity"] == 2 and info["get"]["flags"] == ["readonly", "fast"]
    assert len(info) == r.command_count()
    raw = RawResp(resp_member.resp_address)
    assert raw.call("COMMAND", "INFO", "nosuch").endswith(b"*-1\r\n")
    assert b"$3\r\nset\r\n" in raw.call("COMMAND", "LIST")
    assert raw.call("COMMAND", "DOCS", "get").startswith(b"*2\r\n$3\r\nget\r\n")
    secs, micros = r.time()
    assert abs(secs - time.time()) < 5 and 0 <= micros < 1_000_000
    r.set("srv:only", "1")
    assert r.randomkey() is not None
    assert r.config_get("maxmemory") == {"maxmemory": "0"}
    assert r.config_set("maxmemory", "64mb") is True
    assert r.config_get("maxmemory") == {"maxmemory": "64000000"}
    assert r.config_set("maxmemory", "0") is True
    info_all = r.info("all")
    for field in ("redis_version", "connected_clients", "used_memory", "keyspace_hits",
                  "keyspace_misses", "role", "db0"):  # fmt: skip
        assert field in info_all, field
    assert raw.call("HELLO", "3").startswith(b"%7\r\n")
    assert raw.call("RESET") == b"+RESET\r\n"
    assert raw.call("GET", "srv:none") == b"$-1\r\n"  # back to RESP2
    assert raw.call("QUIT") == b"+OK\r\n"
    assert raw.closed()
    r.close()


def test_expiry_times_are_exact_to_the_millisecond(resp_member: MemberProcess) -> None:
    """Absolute times travel as such: PXAT then PEXPIRETIME gives the same number back,
    and a command that keeps a TTL keeps it to the millisecond."""
    r = connect(resp_member)
    at = int(time.time() * 1000) + 100_000
    r.set("exact:k", "v", pxat=at)
    assert r.pexpiretime("exact:k") == at
    r.set("exact:k", "w", keepttl=True)
    r.append("exact:k", "x")
    r.setrange("exact:k", 0, "y")
    r.incrbyfloat("exact:n", 1)
    r.pexpireat("exact:n", at)
    r.incrbyfloat("exact:n", 1)
    assert r.pexpiretime("exact:k") == at
    assert r.pexpiretime("exact:n") == at
    assert r.pexpireat("exact:k", at + 5, gt=True) is True
    assert r.pexpiretime("exact:k") == at + 5
    r.set("{e}a", "1", pxat=at)
    r.rename("{e}a", "{e}b")
    assert r.pexpiretime("{e}b") == at
    assert r.getex("{e}b", pxat=at + 7) == b"1"
    assert r.pexpiretime("{e}b") == at + 7
    r.close()


def test_more_keys_than_a_batch_holds(resp_member: MemberProcess) -> None:
    """The member takes at most max_batch_ops (64 here) operations a batch: multi-key
    commands and pipelines longer than that are split, and answered as one."""
    r = connect(resp_member)
    keys = [f"many:{i}" for i in range(300)]
    assert r.mset({k: k for k in keys}) is True
    assert r.mget(keys) == [k.encode() for k in keys]
    assert r.exists(*keys) == 300
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.append(k, "!")
        pipe.get(k)
    assert pipe.execute()[1::2] == [f"{k}!".encode() for k in keys]
    assert r.delete(*keys) == 300
    r.close()


def test_a_client_that_does_not_read_is_not_read(canary: MemberProcess) -> None:
    """Backpressure: a client pipelining reads of a large value without reading the
    replies stops being read; the member serves others meanwhile."""
    r = connect(canary)
    r.set("bad:big", b"x" * 500_000)
    host, port = canary.resp_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        request = encode("GET", "bad:big") * 100
        sent = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                sent += s.send(request)
            except BlockingIOError:
                time.sleep(0.05)
        healthy(canary)
    healthy(canary)
    r.close()


def test_a_taken_resp_port_is_a_clear_start_failure(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What the harness (and an operator) reads when the RESP port is taken."""
    assert_taken_port_refused("--resp-port", "RESP", tmp_path_factory.mktemp("resp-taken"))


def test_large_values_arrive_whole_in_any_pieces(resp_member: MemberProcess) -> None:
    """A value near max_value_bytes (1 MiB here) sent in small pieces, read back whole."""
    value = bytes(range(256)) * 4000  # 1,024,000 bytes, CR LF pairs inside
    raw = RawResp(resp_member.resp_address)
    request = encode("SET", "big:v", value)
    for at in range(0, len(request), 7919):
        raw.send(request[at : at + 7919])
    assert raw.reply() == b"+OK\r\n"
    assert raw.call("STRLEN", "big:v") == b":1024000\r\n"
    raw.close()
    r = connect(resp_member, 3)
    assert r.get("big:v") == value
    assert r.append("big:v", b"x" * 100) == 1_024_100
    r.close()
