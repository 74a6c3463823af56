"""The data plane's frames: a length, a kind and a request id before each message.

Why frames over TCP and not gRPC for the data path (issue 12, docs/benchmarks.md): a
gRPC message in Python costs a hand-off between gRPC's I/O thread and the event
loop plus an awaited write, several times the work of executing a 64-key batch.
A frame costs a `struct.unpack` and a slice. Every data-plane system of this kind
does the same (Hazelcast's client protocol, Redis's RESP, memcached's binary one).

    frame  := length:u32 | kind:u8 | id:u32 | body
    length := the bytes after the length field (5 + len(body)); big-endian throughout

`id` pairs a reply with its request, so a client may send many requests before
reading (pipelining) and a member may answer them out of order (a write held for
its fsync or its sync backups does not hold up the reads behind it). Bodies are
the protobuf messages of proto/grid.proto: Hello/HelloReply, BatchRequest/BatchReply,
FollowMessage/ReplicaBatch between members; an ERROR frame carries a UTF-8 message
and is the last thing the member sends before it closes the connection. CALL and
CALL_REPLY carry the members' own unary calls (Publish, Fill, Handoff, Leave,
Compare, Repair, ReadRepair: the `grid.v1.Peer` service) on the same connections.

`FrameReader` is sans-IO: it is fed whatever bytes arrived and returns the whole
frames among them, keeping a partial one for the next call. It refuses a frame
longer than its limit as soon as the header is in, before buffering the body, so
a peer cannot make it hold more than one frame's limit of memory.
"""

from __future__ import annotations

import struct

PROTOCOL = 1
"""The data-plane protocol version this code speaks (Hello.protocol)."""

HELLO, HELLO_REPLY, BATCH, BATCH_REPLY, ERROR, FOLLOW, REPLICA = 1, 2, 3, 4, 5, 6, 7
CALL, CALL_REPLY = 8, 9
WATCH, EVENTS = 10, 11
KINDS = {HELLO: "HELLO", HELLO_REPLY: "HELLO_REPLY", BATCH: "BATCH", BATCH_REPLY: "BATCH_REPLY",
         ERROR: "ERROR", FOLLOW: "FOLLOW", REPLICA: "REPLICA", CALL: "CALL",
         CALL_REPLY: "CALL_REPLY", WATCH: "WATCH", EVENTS: "EVENTS"}  # fmt: skip
"""FOLLOW (a follower's FollowMessage) and REPLICA (a primary's ReplicaBatch) are the
member-to-member replication stream (grid/member/replicas/link.py); their id is 0.
WATCH (a client's WatchRequest) and EVENTS (the member's WatchEvents) are a client's
change streams (replication/watch.py); their id is the client's watch id."""

HEADER = struct.Struct(">IBI")
"""length, kind, id: 9 bytes."""
HEADER_SIZE = HEADER.size
MIN_LENGTH = 5  # kind + id, an empty body
ID_MASK = 0xFFFF_FFFF


class FrameError(ValueError):
    """The bytes are not a frame this side accepts; the connection cannot go on."""


def frame(kind: int, request_id: int, body: bytes) -> bytes:
    """One frame's bytes."""
    return HEADER.pack(len(body) + MIN_LENGTH, kind, request_id & ID_MASK) + body


def header(kind: int, request_id: int, body_length: int) -> bytes:
    """Just the header, for a writer that sends the body as separate bytes (no copy)."""
    return HEADER.pack(body_length + MIN_LENGTH, kind, request_id & ID_MASK)


class FrameReader:
    """Whole frames out of a byte stream, each at most `max_frame` bytes long."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = b""

    @property
    def partial(self) -> int:
        """Bytes held of a frame not yet complete (0 between frames)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """The (kind, id, body) of every frame completed by `data`, in order.

        Raises FrameError for a length under the header's or over `max_frame`; what
        was returned before stays valid, and the reader must not be fed again.
        """
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, int, bytes]] = []
        pos = 0
        end = len(buf)
        unpack = HEADER.unpack_from
        limit = self.max_frame
        while end - pos >= HEADER_SIZE:
            length, kind, request_id = unpack(buf, pos)
            if length < MIN_LENGTH or length > limit:
                self._buf = b""
                if length < MIN_LENGTH:
                    raise FrameError(f"frame length {length} is under the header's {MIN_LENGTH}")
                raise FrameError(f"frame of {length} bytes is over the limit of {limit}")
            stop = pos + 4 + length
            if stop > end:
                break
            out.append((kind, request_id, buf[pos + HEADER_SIZE : stop]))
            pos = stop
        self._buf = buf[pos:] if pos < end else b""
        return out


# ---- member-to-member calls -----------------------------------------------------------------
#   CALL       := name_length:u8 | name (ASCII, a grid.v1.Peer method: "Compare") | request
#   CALL_REPLY := status:u8 (a gRPC status code: 0 OK) | reply (OK) or UTF-8 detail
OK, INVALID_ARGUMENT, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 0, 3, 12, 13, 14


def call_body(method: str, request: bytes) -> bytes:
    name = method.encode("ascii")
    if not 0 < len(name) < 256:
        raise ValueError(f"method name {method!r} is not 1-255 ASCII bytes")
    return bytes((len(name),)) + name + request


def parse_call(body: bytes) -> tuple[str, bytes]:
    """(method, request) of a CALL body; FrameError if it cannot be one."""
    if not body or len(body) < 1 + body[0] or body[0] == 0:
        raise FrameError(f"a CALL of {len(body)} bytes holds no method name")
    try:
        name = body[1 : 1 + body[0]].decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("a CALL's method name is not ASCII") from None
    return name, body[1 + body[0] :]


def reply_body(status: int, payload: bytes) -> bytes:
    return bytes((status,)) + payload


def parse_reply(body: bytes) -> tuple[int, bytes]:
    """(status, reply or detail) of a CALL_REPLY body; FrameError if it is empty."""
    if not body:
        raise FrameError("an empty CALL_REPLY")
    return body[0], body[1:]
