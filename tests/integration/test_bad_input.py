"""Bad input gets a clear error, never a dead member (DESIGN.md principle).

Each case speaks raw gRPC (bytes and proto messages on /grid.v1.Grid/Execute
and /grid.v1.Grid/Stream) and, where the SDK can express it, goes through the
SDK too. Before each case a canary set is written; after it the member must
still answer health and stats and the canary must be unchanged.

The module's member runs with small limits so oversize cases stay fast:
--max-value-bytes 1MiB --max-message-bytes 2MiB --max-batch-ops 100.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import msgpack
import pytest

import grid
from proto import grid_pb2 as pb
from tests.integration.support import (
    STREAM,
    Canary,
    assert_member_healthy,
    execute,
    execute_bytes,
    raw_channel,
    raw_stats,
    wait_until,
)

pytestmark = pytest.mark.integration

MAX_VALUE = 1024 * 1024
MAX_MESSAGE = 2 * 1024 * 1024
MAX_BATCH = 100
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def member_args() -> list[str]:
    return [
        "--max-value-bytes",
        "1MiB",
        "--max-message-bytes",
        "2MiB",
        "--max-batch-ops",
        str(MAX_BATCH),
    ]


@pytest.fixture
def canary(address: str, map_name: str) -> Canary:
    """Known data, written before the case; the test calls canary.check() after it."""
    c = Canary(address, map_name)
    c.write()
    return c


@pytest.fixture
def m(client: grid.Client, map_name: str) -> grid.Map:
    return client.map(map_name)


def _op(code: int, map_name: str, key: bytes = b"k", **fields: object) -> pb.Op:
    return pb.Op(code=code, map=map_name, key=key, **fields)


def _statuses(reply: pb.BatchReply) -> list[int]:
    return [r.status for r in reply.results]


KEYED_OPS = {
    "GET": {},
    "PUT": {"value": b"\x01"},
    "DELETE": {},
    "EXPIRE": {"ttl_ms": 10},
    "TTL": {},
    "CONTAINS": {},
    "INCR": {"delta": 1},
    "TOUCH": {},
}


# ---- keys and values -----------------------------------------------------------------------------
@pytest.mark.parametrize("existing_map", [True, False], ids=["existing-map", "unknown-map"])
def test_empty_key_is_invalid_argument(
    address: str, map_name: str, canary: Canary, m: grid.Map, existing_map: bool
) -> None:
    """Every keyed opcode answers an empty key with INVALID_ARGUMENT, in any map."""
    name = map_name if existing_map else map_name + "-never-written"
    if existing_map:
        m.put("other", 1)
    ops = [_op(getattr(pb, code), name, b"", **f) for code, f in KEYED_OPS.items()]
    reply = execute(address, ops)
    assert reply.status == pb.OK
    for code, r in zip(KEYED_OPS, reply.results, strict=True):
        assert (r.status, r.error) == (pb.INVALID_ARGUMENT, "key is empty"), code
    with pytest.raises(grid.InvalidArgument, match="key is empty"):
        m.get("")
    with pytest.raises(grid.InvalidArgument, match="key is empty"):
        m.put("", 1)
    with pytest.raises(grid.InvalidArgument, match="key is empty"):
        m.incr(b"")
    canary.check()


def test_key_over_1kib_is_too_large(
    address: str, map_name: str, canary: Canary, m: grid.Map
) -> None:
    """A 1025-byte key is TOO_LARGE for every keyed opcode; 1024 bytes is accepted."""
    long_key = b"k" * 1025
    ops = [_op(getattr(pb, code), map_name, long_key, **f) for code, f in KEYED_OPS.items()]
    for code, r in zip(KEYED_OPS, execute(address, ops).results, strict=True):
        assert r.status == pb.TOO_LARGE, code
        assert "1025 bytes; max_key_bytes is 1024" in r.error, code
    with pytest.raises(grid.TooLarge, match="max_key_bytes"):
        m.put("k" * 1025, 1)
    m.put("k" * 1024, "fits")
    assert m.get("k" * 1024) == "fits"
    canary.check()


def test_value_over_limit_is_too_large(
    address: str, map_name: str, canary: Canary, client: grid.Client
) -> None:
    """With --max-value-bytes 1MiB: 1 MiB is stored, one byte more is TOO_LARGE and not stored."""
    big, contains = execute(
        address,
        [
            _op(pb.PUT, map_name, b"big", value=b"v" * (MAX_VALUE + 1)),
            _op(pb.CONTAINS, map_name, b"big"),
        ],
    ).results
    assert big.status == pb.TOO_LARGE
    assert f"value is {MAX_VALUE + 1} bytes; max_value_bytes is {MAX_VALUE}" in big.error
    assert contains.count == 0
    (exact,) = execute(address, [_op(pb.PUT, map_name, b"max", value=b"v" * MAX_VALUE)]).results
    assert exact.status == pb.OK
    raw = client.map(map_name, codec="raw")
    with pytest.raises(grid.TooLarge, match="max_value_bytes"):
        raw.put("sdk-big", b"x" * (MAX_VALUE + 1))
    assert raw.contains("sdk-big") is False
    raw.put("sdk-max", b"x" * MAX_VALUE)
    assert raw.get("sdk-max") == b"x" * MAX_VALUE
    canary.check()


# ---- counters and TTLs ---------------------------------------------------------------------------
def test_incr_on_non_integer_is_invalid_argument(
    address: str, map_name: str, canary: Canary, client: grid.Client
) -> None:
    """incr of a non-integer value (text, float, map) or past int64 is INVALID_ARGUMENT."""
    raw = client.map(map_name, codec="raw")
    values = {
        "text": b"abc",
        "float": msgpack.packb(1.5),
        "map": msgpack.packb({"a": 1}),
        "long": b"\x01" * 20,
    }
    raw.put_many(values)
    ops = [_op(pb.INCR, map_name, k.encode(), delta=1) for k in values]
    for key, r in zip(values, execute(address, ops).results, strict=True):
        assert r.status == pb.INVALID_ARGUMENT, key
        assert "not an integer" in r.error, key
    assert raw.get_many(list(values)) == values  # unchanged
    m = client.map(map_name)
    with pytest.raises(grid.InvalidArgument, match="not an integer"):
        m.incr("text")
    assert m.incr("big", 2**63 - 1) == 2**63 - 1
    with pytest.raises(grid.InvalidArgument, match="overflow"):
        m.incr("big")
    assert m.get("big") == 2**63 - 1
    canary.check()


def test_negative_ttl_is_invalid_argument(
    address: str, map_name: str, canary: Canary, m: grid.Map
) -> None:
    """A negative ttl on put/expire/incr (or max_idle on put) is refused and writes nothing."""
    m.put("exists", "v", ttl=60)
    reply = execute(
        address,
        [
            _op(pb.PUT, map_name, b"p", value=b"\x01", ttl_ms=-1),
            _op(pb.PUT, map_name, b"p", value=b"\x01", max_idle_ms=-5),
            _op(pb.EXPIRE, map_name, b"exists", ttl_ms=-1),
            _op(pb.EXPIRE, map_name + "-none", b"exists", ttl_ms=-1),
            _op(pb.INCR, map_name, b"n", delta=1, ttl_ms=-1),
        ],
    )
    for r in reply.results:
        assert r.status == pb.INVALID_ARGUMENT
        assert "is negative" in r.error
    with pytest.raises(grid.InvalidArgument, match="negative"):
        m.put("p", 1, ttl=-1)
    with pytest.raises(grid.InvalidArgument, match="negative"):
        m.put("p", 1, max_idle=-0.5)
    with pytest.raises(grid.InvalidArgument, match="negative"):
        m.expire("exists", -1)
    with pytest.raises(grid.InvalidArgument, match="negative"):
        m.incr("n", ttl=-1)
    assert m.get_many(["p", "n"]) == {}
    assert 50 < (m.ttl("exists") or 0) <= 60  # the refused expire left the TTL alone
    canary.check()


def test_undecodable_value_raises_codec_error(
    address: str, map_name: str, canary: Canary, client: grid.Client
) -> None:
    """A value stored raw and read with the msgpack or json codec raises grid.CodecError."""
    raw = client.map(map_name, codec="raw")
    raw.put("not-msgpack", b"\xc1")  # 0xc1 is never used in msgpack
    raw.put("not-json", b"\xff\xfe{")
    raw.put("trailing", msgpack.packb(1) + b"junk")
    with pytest.raises(grid.CodecError, match="not msgpack"):
        client.map(map_name).get("not-msgpack")
    with pytest.raises(grid.CodecError, match="not msgpack"):
        client.map(map_name).get_many(["trailing"])
    with pytest.raises(grid.CodecError, match="not JSON"):
        client.map(map_name, codec="json").get("not-json")
    with pytest.raises(grid.CodecError, match="JSON"):
        client.map(map_name, codec="json").put("set", {1, 2})
    assert isinstance(grid.CodecError("x"), grid.GridError)
    assert raw.get("not-msgpack") == b"\xc1"  # the member never judged the bytes
    canary.check()


# ---- malformed and oversized messages ------------------------------------------------------------
GARBAGE = [b"garbage!!", b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05abc", b"\x08"]


@pytest.mark.parametrize("data", GARBAGE, ids=lambda d: d.hex())
def test_malformed_protobuf_on_execute(address: str, canary: Canary, data: bytes) -> None:
    """Garbage to Execute: gRPC INVALID_ARGUMENT naming the problem; `rejected` grows by one."""
    before = raw_stats(address).rejected
    with pytest.raises(grpc.RpcError) as info:
        execute_bytes(address, data)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == f"malformed BatchRequest ({len(data)} bytes)"
    assert raw_stats(address).rejected == before + 1
    canary.check()


def test_malformed_protobuf_on_stream(address: str, map_name: str, canary: Canary) -> None:
    """A good batch is answered, then garbage ends the stream with INVALID_ARGUMENT."""
    before = raw_stats(address).rejected
    good = pb.BatchRequest(id=7, ops=[_op(pb.PUT, map_name, b"s", value=b"\x05")])
    with raw_channel(address) as ch:
        call = ch.stream_stream(STREAM)(iter([good.SerializeToString(), b"garbage!!"]), timeout=10)
        first = pb.BatchReply.FromString(next(call))
        assert first.id == 7 and _statuses(first) == [pb.OK]
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed BatchRequest (9 bytes)" in info.value.details()
    assert raw_stats(address).rejected == before + 1
    # A fresh stream works and sees what the good batch wrote.
    with raw_channel(address) as ch:
        get = pb.BatchRequest(id=8, ops=[_op(pb.GET, map_name, b"s")]).SerializeToString()
        reply = pb.BatchReply.FromString(next(ch.stream_stream(STREAM)(iter([get]), timeout=10)))
        assert reply.results[0].value == b"\x05"
    canary.check()


def test_oversized_message_is_resource_exhausted(address: str, canary: Canary) -> None:
    """A message over --max-message-bytes is refused with RESOURCE_EXHAUSTED on both methods."""
    data = pb.BatchRequest(
        id=1, ops=[pb.Op(code=pb.PUT, map="m", key=b"k", value=b"x" * (MAX_MESSAGE + 10))]
    ).SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        execute_bytes(address, data)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with raw_channel(address) as ch:
        call = ch.stream_stream(STREAM)(iter([data]), timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    canary.check()


def test_sdk_batch_over_member_message_limit_is_resplit(
    address: str, map_name: str, canary: Canary, client: grid.Client
) -> None:
    """put_many/get_many of 3 x 900 KB (2.7 MB > the member's 2 MiB message limit) via the SDK.

    Every value is under max_value_bytes but the batch is not. The SDK must not retry
    the same oversized message until its deadline: it learns the member's limit,
    splits the write, and re-asks for reads the member could not fit in one reply.
    """
    m = client.map(map_name, codec="raw")
    values = {f"v{i}": bytes([i]) * 900_000 for i in range(3)}
    t0 = time.monotonic()
    m.put_many(values, timeout=5)
    assert time.monotonic() - t0 < 2
    t0 = time.monotonic()
    assert m.get_many(list(values), timeout=5) == values
    assert time.monotonic() - t0 < 2
    canary.check()


def test_reply_over_message_limit_answers_unavailable_per_op(
    address: str, map_name: str, canary: Canary, client: grid.Client
) -> None:
    """Reads whose results would push a reply past max_message_bytes answer UNAVAILABLE
    ("retry in a smaller batch") one by one; the reply itself stays deliverable."""
    client.map(map_name, codec="raw").put_many({f"v{i}": b"x" * 900_000 for i in range(3)})
    reply = execute(address, [_op(pb.GET, map_name, f"v{i}".encode()) for i in range(3)])
    assert reply.status == pb.OK
    assert _statuses(reply) == [pb.OK, pb.OK, pb.UNAVAILABLE]
    assert "smaller batch" in reply.results[2].error
    assert [len(r.value) for r in reply.results] == [900_000, 900_000, 0]
    canary.check()


def test_sdk_single_op_over_member_message_limit_is_too_large(
    address: str, map_name: str, canary: Canary, client: grid.Client
) -> None:
    """One put bigger than the member's whole message limit fails fast with TooLarge."""
    m = client.map(map_name, codec="raw")
    t0 = time.monotonic()
    with pytest.raises(grid.TooLarge):
        m.put("huge", b"x" * (MAX_MESSAGE + 1000), timeout=5)
    assert time.monotonic() - t0 < 2
    assert m.contains("huge") is False
    canary.check()


def reply_max_batch_ops(address: str, ops: list[pb.Op]) -> int:
    return execute(address, ops).max_batch_ops


def test_batch_over_max_ops_is_refused_whole(
    address: str, map_name: str, canary: Canary, m: grid.Map
) -> None:
    """101 ops with --max-batch-ops 100: whole-batch TOO_LARGE, none applied; 100 ops pass;
    the SDK splits a 101-key get_many by the limit the refusal carries."""
    before = raw_stats(address).rejected
    ops = [_op(pb.PUT, map_name, f"b{i}".encode(), value=b"\x01") for i in range(MAX_BATCH + 1)]
    reply = execute(address, ops, request_id=42)
    assert reply.id == 42
    assert reply.status == pb.TOO_LARGE
    assert reply.error == f"batch has {MAX_BATCH + 1} operations; max_batch_ops is {MAX_BATCH}"
    assert len(reply.results) == 0
    assert raw_stats(address).rejected == before + 1
    assert m.size() == 0
    reply = execute(address, ops[:MAX_BATCH])
    assert reply.status == pb.OK and _statuses(reply) == [pb.OK] * MAX_BATCH
    # The SDK learns the limit from the refusal (which carries it) and splits the call:
    # nothing of the refused batch was applied, so resending is safe.
    assert reply_max_batch_ops(address, ops) == MAX_BATCH
    found = m.get_many([f"b{i}" for i in range(MAX_BATCH + 1)])
    assert len(found) == MAX_BATCH and f"b{MAX_BATCH}" not in found
    canary.check()


def test_unknown_opcode_fails_only_that_op(address: str, map_name: str, canary: Canary) -> None:
    """An unknown opcode (or OP_UNSPECIFIED) is INVALID_ARGUMENT; its neighbours succeed."""
    reply = execute(
        address,
        [
            _op(pb.PUT, map_name, b"a", value=b"\x01"),
            _op(42, map_name, b"a"),
            _op(pb.GET, map_name, b"a"),
            _op(pb.OP_UNSPECIFIED, map_name, b"a"),
            _op(pb.INCR, map_name, b"n", delta=2),
        ],
    )
    assert reply.status == pb.OK
    assert _statuses(reply) == [pb.OK, pb.INVALID_ARGUMENT, pb.OK, pb.INVALID_ARGUMENT, pb.OK]
    assert reply.results[1].error == "unknown operation code 42"
    assert reply.results[3].error == "unknown operation code 0"
    assert reply.results[2].value == b"\x01"
    assert reply.results[4].count == 2
    canary.check()


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (pb.Op(code=pb.PUT, map="", key=b"k", value=b"\x01"), "map name is empty"),
        (pb.Op(code=pb.PUT, map="m" * 256, key=b"k", value=b"\x01"), "map name is over"),
        (pb.Op(code=pb.PUT, map="m", key=b"k", value=b"\x01", condition=9), "unknown put cond"),
        (pb.Op(code=pb.SCAN, map="canary", cursor=b"\xc1junk"), "scan cursor is malformed"),
        (pb.Op(code=pb.SCAN, map="canary", cursor=msgpack.packb([9999, b""])), "malformed"),
        (pb.Op(code=pb.SCAN, map="canary", limit=10_001), "scan limit must be"),
        (pb.Op(code=pb.GET, map="", key=b"k"), "map name is empty"),
    ],
    ids=["empty-map", "long-map", "condition", "cursor", "cursor-part", "limit", "get-no-map"],
)
def test_malformed_op_fields_are_invalid_argument(
    address: str, canary: Canary, op: pb.Op, message: str
) -> None:
    """Bad map names, put conditions, scan cursors and limits: INVALID_ARGUMENT for that op."""
    reply = execute(address, [op, pb.Op(code=pb.SIZE, map=Canary.MAP)])
    bad, size = reply.results
    assert bad.status == pb.INVALID_ARGUMENT
    assert message in bad.error
    assert size.status == pb.OK and size.count > 0
    canary.check()


# ---- clients that go away ------------------------------------------------------------------------
def test_stream_cancelled_mid_stream(address: str, map_name: str, canary: Canary) -> None:
    """A raw stream writes batches, then is cancelled with one in flight: the member goes on."""
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def requests() -> Iterator[bytes]:
        while (item := outbox.get(timeout=10)) is not None:
            yield item

    ch = raw_channel(address)
    try:
        call = ch.stream_stream(STREAM)(requests(), timeout=30)
        for i in range(3):
            ops = [_op(pb.INCR, map_name, b"n", delta=1)] * 10
            outbox.put(pb.BatchRequest(id=i, ops=ops).SerializeToString())
            reply = pb.BatchReply.FromString(next(call))
            assert reply.id == i and reply.results[-1].count == 10 * (i + 1)
        big = [_op(pb.PUT, map_name, f"k{j}".encode(), value=b"x" * 1000) for j in range(100)]
        outbox.put(pb.BatchRequest(id=99, ops=big).SerializeToString())
        call.cancel()
    finally:
        outbox.put(None)
        ch.close()
    assert_member_healthy(address)
    with grid.Client(address) as c:
        assert c.map(map_name).get("n") == 30
    canary.check()


CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    import grid

    async def worker(m, w, deadline):
        i = 0
        while time.monotonic() < deadline and i < 2000:
            await m.put_many({f"w{w}-{i}-{j}": "v" * 200 for j in range(10)})
            await m.incr("ops")
            i += 1

    async def main(address, name):
        async with grid.AsyncClient(address) as client:
            m = client.map(name)
            deadline = time.monotonic() + 30
            await m.put("started", 1)
            print("ready", flush=True)
            await asyncio.gather(*(worker(m, w, deadline) for w in range(4)))
            print("finished", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_client_process_killed_mid_stream(address: str, map_name: str, canary: Canary) -> None:
    """An SDK client pipelining batches from 4 tasks is SIGKILLed: the member stays up.

    4 tasks x (10 puts + 1 incr) keeps coalesced batches under this member's 100-op limit.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT_SCRIPT, address, map_name],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with grid.Client(address) as c:
            # Kill it once it is busy: a few hundred operations have landed.
            wait_until(lambda: (c.map(map_name).get("ops") or 0) >= 20, 20, what="client load")
        assert proc.poll() is None, proc.communicate(timeout=5)
        proc.kill()
        assert proc.wait(10) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert_member_healthy(address)
    with grid.Client(address) as c:
        m = c.map(map_name)
        n = m.get("ops")
        assert n is not None and n >= 20
        assert m.incr("ops") == n + 1  # no half-applied state blocks the counter
    canary.check()


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00",  # preface, then a cut frame
        bytes(range(256)) * 8,
    ],
    ids=["http1", "cut-http2", "binary"],
)
def test_garbage_on_the_tcp_port(address: str, canary: Canary, payload: bytes) -> None:
    """Non-gRPC bytes on the member's port, then an abrupt close: the member goes on."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(payload)
        s.settimeout(0.5)
        try:
            while s.recv(4096):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
    canary.check()
