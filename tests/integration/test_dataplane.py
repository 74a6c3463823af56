"""The data plane from outside: raw frames on a socket to a real member process.

What docs/api.md ("The data plane") promises a client library writer: the handshake,
pipelining by id, and that bad input costs the sender its connection (or, for a body
that is not a BatchRequest, one INVALID_ARGUMENT reply) and never the member or what
it stores. One member, small limits and short timeouts so the refusals come quickly.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grid
from grid.errors import Status
from grid.harness.cluster import LocalCluster
from grid.wire import frames
from grid.wire.endpoints import data_plane_target
from proto import grid_pb2 as pb
from tests.integration.support import wait_until

pytestmark = pytest.mark.integration

LIMIT = 1 << 20  # the member's max_message_bytes, so its frame limit
TIMEOUT_S = 1.0  # handshake and partial-frame timeouts
ENDPOINTS = "/grid.v1.Grid/Endpoints"
STATS = "/grid.v1.Grid/Stats"


@pytest.fixture(scope="module")
def member() -> Iterator[tuple[str, pb.EndpointsReply]]:
    env = {
        "GRID_MAX_MESSAGE_BYTES": str(LIMIT),
        "GRID_MAX_VALUE_BYTES": str(LIMIT // 2),
        "GRID_DATA_HANDSHAKE_TIMEOUT_S": str(TIMEOUT_S),
        "GRID_DATA_FRAME_TIMEOUT_S": str(TIMEOUT_S),
    }
    with LocalCluster(1, env=env) as cluster:
        address = cluster.addresses[0]
        with grpc.insecure_channel(address) as channel:
            data = channel.unary_unary(ENDPOINTS)(b"", timeout=10)
        reply = pb.EndpointsReply.FromString(data)
        with grid.Client(address) as client:
            client.map("kept").put("canary", "still here")
        yield address, reply


class Raw:
    """A socket speaking frames, nothing more (no library code on the client side)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.sock = socket.create_connection(target, timeout=10)
        self.reader = frames.FrameReader(LIMIT * 2)
        self.got: list[tuple[int, int, bytes]] = []

    def send(self, kind: int, request_id: int, body: bytes) -> None:
        self.sock.sendall(frames.frame(kind, request_id, body))

    def hello(self, cluster: str, protocol: int = frames.PROTOCOL) -> pb.HelloReply:
        self.send(frames.HELLO, 0, pb.Hello(protocol=protocol, cluster=cluster).SerializeToString())
        kind, _, body = self.next()
        assert kind == frames.HELLO_REPLY
        return pb.HelloReply.FromString(body)

    def next(self) -> tuple[int, int, bytes]:
        """The next frame; AssertionError if the member closed first."""
        while not self.got:
            data = self.sock.recv(65536)
            assert data, "the member closed the connection"
            self.got.extend(self.reader.feed(data))
        return self.got.pop(0)

    def closed_with_error(self) -> str:
        """Read to the end: the ERROR frame's text (the member must say why it closed)."""
        error = ""
        while True:
            while self.got:
                kind, _, body = self.got.pop(0)
                if kind == frames.ERROR:
                    error = body.decode()
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return error
            self.got.extend(self.reader.feed(data))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def target(member: tuple[str, pb.EndpointsReply]) -> tuple[str, int]:
    address, endpoints = member
    return data_plane_target(address, endpoints.data_address, endpoints.data_advertised)


def get_op(key: str, map_name: str = "kept") -> pb.Op:
    return pb.Op(code=pb.GET, map=map_name, key=key.encode())


def still_serving(member: tuple[str, pb.EndpointsReply]) -> None:
    """The member answers and the canary written before the abuse is intact."""
    with grid.Client(member[0], timeout=10) as client:
        assert client.map("kept").get("canary") == "still here"


def test_endpoints_name_the_data_plane_and_the_protocol(
    member: tuple[str, pb.EndpointsReply],
) -> None:
    _, endpoints = member
    assert endpoints.protocol == frames.PROTOCOL
    assert endpoints.cluster and endpoints.name
    assert not endpoints.data_advertised
    assert target(member)[1] > 0


def test_hello_reply_states_the_limits(member: tuple[str, pb.EndpointsReply]) -> None:
    with Raw(target(member)) as raw:
        reply = raw.hello(member[1].cluster)
        assert reply.error == ""
        assert reply.protocol == frames.PROTOCOL
        assert reply.member == member[1].name
        assert reply.max_frame == LIMIT
        assert reply.max_batch_ops > 0


def test_pipelined_batches_are_answered_under_their_ids(
    member: tuple[str, pb.EndpointsReply],
) -> None:
    with Raw(target(member)) as raw:
        raw.hello(member[1].cluster)
        ids = [7 + 3 * i for i in range(200)]
        burst = b"".join(
            frames.frame(
                frames.BATCH, i, pb.BatchRequest(ops=[get_op("canary")]).SerializeToString()
            )
            for i in ids
        )
        raw.sock.sendall(burst)  # all of them before reading any reply
        answered = {}
        for _ in ids:
            kind, request_id, body = raw.next()
            assert kind == frames.BATCH_REPLY
            answered[request_id] = pb.BatchReply.FromString(body)
        assert sorted(answered) == ids
        for reply in answered.values():
            assert reply.status == Status.OK
            assert msgpack.unpackb(reply.results[0].value) == "still here"


@pytest.mark.parametrize(
    ("hello", "why"),
    [
        (pb.Hello(protocol=1, cluster="not-this-one"), "cluster name 'not-this-one'"),
        (pb.Hello(protocol=0, cluster="grid"), "protocol version 0"),
    ],
)
def test_a_refused_hello_says_why_and_closes(
    member: tuple[str, pb.EndpointsReply], hello: pb.Hello, why: str
) -> None:
    if hello.cluster == "grid":
        hello.cluster = member[1].cluster
    with Raw(target(member)) as raw:
        raw.send(frames.HELLO, 0, hello.SerializeToString())
        kind, _, body = raw.next()
        assert kind == frames.HELLO_REPLY
        assert why in pb.HelloReply.FromString(body).error
        assert why in raw.closed_with_error()
    still_serving(member)


def test_a_batch_before_hello_is_refused(member: tuple[str, pb.EndpointsReply]) -> None:
    with Raw(target(member)) as raw:
        raw.send(frames.BATCH, 1, pb.BatchRequest(ops=[get_op("canary")]).SerializeToString())
        assert "expected Hello first" in raw.closed_with_error()


def test_a_frame_over_the_limit_is_refused_before_its_body_is_sent(
    member: tuple[str, pb.EndpointsReply],
) -> None:
    """The member answers the header alone: it never buffers a body it will not take."""
    with Raw(target(member)) as raw:
        raw.hello(member[1].cluster)
        raw.sock.sendall(frames.header(frames.BATCH, 1, LIMIT))  # one byte over, no body
        assert f"over the limit of {LIMIT}" in raw.closed_with_error()
    still_serving(member)


def test_an_impossible_length_is_refused(member: tuple[str, pb.EndpointsReply]) -> None:
    with Raw(target(member)) as raw:
        raw.hello(member[1].cluster)
        raw.sock.sendall(struct.pack(">IBI", 2, frames.BATCH, 1))
        assert "under the header" in raw.closed_with_error()


def test_an_unknown_kind_is_refused(member: tuple[str, pb.EndpointsReply]) -> None:
    with Raw(target(member)) as raw:
        raw.hello(member[1].cluster)
        raw.send(200, 1, b"")
        assert "unknown frame kind 200" in raw.closed_with_error()


def test_a_body_that_is_not_a_batch_gets_invalid_argument_and_the_connection_goes_on(
    member: tuple[str, pb.EndpointsReply],
) -> None:
    with Raw(target(member)) as raw:
        raw.hello(member[1].cluster)
        raw.send(frames.BATCH, 41, b"\xff\xff\xff\xff")
        kind, request_id, body = raw.next()
        reply = pb.BatchReply.FromString(body)
        assert (kind, request_id) == (frames.BATCH_REPLY, 41)
        assert reply.status == Status.INVALID_ARGUMENT
        assert "malformed BatchRequest" in reply.error
        raw.send(frames.BATCH, 42, pb.BatchRequest(ops=[get_op("canary")]).SerializeToString())
        kind, request_id, body = raw.next()
        assert request_id == 42
        assert msgpack.unpackb(pb.BatchReply.FromString(body).results[0].value) == "still here"


def test_peer_calls_answer_under_their_ids_with_a_status(
    member: tuple[str, pb.EndpointsReply],
) -> None:
    """CALL frames carry the members' own calls: a malformed request is INVALID_ARGUMENT,
    an unknown method UNIMPLEMENTED, and neither costs the connection."""
    with Raw(target(member)) as raw:
        raw.hello(member[1].cluster)
        raw.send(frames.CALL, 5, frames.call_body("Compare", b"\xff\xff"))
        raw.send(frames.CALL, 6, frames.call_body("NoSuchMethod", b""))
        replies = {}
        for _ in range(2):
            kind, request_id, body = raw.next()
            assert kind == frames.CALL_REPLY
            replies[request_id] = frames.parse_reply(body)
        assert replies[5][0] == frames.INVALID_ARGUMENT
        assert b"malformed CompareRequest" in replies[5][1]
        assert replies[6][0] == frames.UNIMPLEMENTED
        assert b"NoSuchMethod" in replies[6][1]
        raw.send(frames.CALL, 7, b"\x00")  # a name of length 0: not a CALL at all
        assert "holds no method name" in raw.closed_with_error()


@pytest.mark.parametrize("greeted", [False, True])
def test_a_silent_or_half_sent_connection_is_closed_after_its_timeout(
    member: tuple[str, pb.EndpointsReply], greeted: bool
) -> None:
    """A connection that never says Hello, or starts a frame and stalls, does not hold
    the member's memory forever."""
    with Raw(target(member)) as raw:
        if greeted:
            raw.hello(member[1].cluster)
            raw.sock.sendall(frames.header(frames.BATCH, 1, 100) + b"only part")
        start = time.monotonic()
        why = raw.closed_with_error()
        assert ("unfinished" if greeted else "no Hello") in why
        assert time.monotonic() - start < TIMEOUT_S + 8  # the timeout, with a wide margin


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(junk=st.binary(min_size=1, max_size=2048))
def test_any_bytes_after_hello_cost_at_most_the_connection(
    member: tuple[str, pb.EndpointsReply], junk: bytes
) -> None:
    """Whatever follows the Hello, the member answers, waits for more, or refuses with an
    ERROR frame; it never dies and never loses what it stores."""
    with Raw(target(member)) as raw:
        raw.hello(member[1].cluster)
        raw.sock.sendall(junk)
        raw.sock.shutdown(socket.SHUT_WR)  # no more from us: the member must still answer
        raw.sock.settimeout(TIMEOUT_S + 10)
        while True:
            try:
                data = raw.sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            for kind, _, _ in raw.reader.feed(data):
                assert kind in (frames.BATCH_REPLY, frames.ERROR, frames.REPLICA)
    with grpc.insecure_channel(member[0]) as channel:
        pb.StatsReply.FromString(channel.unary_unary(STATS)(b"", timeout=10))


def test_the_member_survived_everything_and_counted_the_refusals(
    member: tuple[str, pb.EndpointsReply],
) -> None:
    still_serving(member)
    with grpc.insecure_channel(member[0]) as channel:
        stats = pb.StatsReply.FromString(channel.unary_unary(STATS)(b"", timeout=10))
    assert stats.rejected >= 8  # the refusals above, each counted


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_members_serve_and_replicate_on_either_event_loop(loop: str, tmp_path: Path) -> None:
    """uvloop is optional (grid[fast]); a member without it runs on asyncio's loop. Both
    must carry client batches, forwarding and the replication stream: the same code, on
    transports that differ (uvloop's do not subclass asyncio's)."""
    with LocalCluster(2, env={"GRID_EVENT_LOOP": loop}, log_dir=tmp_path) as cluster:
        for member in cluster.members:
            log = tmp_path / f"{member.name}.log"
            wait_until(lambda log=log: '"member ready"' in log.read_text(), what="member ready")
            assert f'"event_loop": "{loop}"' in log.read_text()
        with grid.Client(cluster.addresses[0], timeout=10, smart_routing=False) as client:
            m = client.map("loops")
            m.put_many({f"k{i}": i for i in range(200)})  # half forwarded to member 2
            assert m.get_many([f"k{i}" for i in range(200)]) == {f"k{i}": i for i in range(200)}
        # backups=1 on two members: each holds every key, as primary or as backup
        wait_until(
            lambda: all(entries(a) == 200 for a in cluster.addresses),
            timeout=30,
            what="every key's backup copy to arrive over the follow streams",
        )


def entries(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        data = channel.unary_unary(STATS)(b"", timeout=10)
    return pb.StatsReply.FromString(data).total.entries
