"""The wire codec: messages <-> msgpack bytes, with a bounded, strict decoder.

A packet is the msgpack array ``[VERSION, message-or-nil, [gossip, ...]]``.
Every message and gossip entry is an array whose first element is its type
code, followed by positional fields (no maps: smaller, and there is exactly
one shape to validate).  Gossip entries are encoded once when they are queued
and spliced into packets as raw bytes (``assemble``), so piggybacking costs a
``bytes.join`` and the datagram budget is counted exactly.

The decoder trusts nothing: the size is checked before parsing, msgpack is
told the largest string/array it may allocate, and every field is checked
for type (``type(x) is int``, so ``True`` is not an incarnation), range and
length.  Anything wrong raises `MalformedMessage` and nothing else, so the
caller can drop the packet with one ``except`` and carry on (design card:
bad input gets a clear error, never a dead member).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import msgpack

from membership.state import MemberInfo, MemberMeta, MemberState

VERSION = 1

MAX_NAME = 128
MAX_ADDR = 256
MAX_META_STR = 256
MAX_REASON = 512
MAX_SEQ = 2**32 - 1
MAX_INCARNATION = 2**63 - 1
MAX_PARTITIONS = 2**31 - 1
MAX_GOSSIP_PER_PACKET = 512
MAX_STATES = 200_000


class MalformedMessage(ValueError):
    """The only exception `decode_packet` raises: the bytes are not a valid
    message of this protocol (truncated, oversized, wrong shape or type)."""


class Kind(IntEnum):
    """How a message travels.  DATAGRAM is UDP-like: small, may be lost.
    STREAM is TCP-like: reliable and ordered, used for push-pull state sync
    and for the fallback probe."""

    DATAGRAM = 0
    STREAM = 1


# message type codes
PING = 1
PING_REQ = 2
ACK = 3
NACK = 4
PUSH_PULL = 5
REFUSE = 6
# gossip type codes
ALIVE = 16
SUSPECT = 17
DEAD = 18


@dataclass(slots=True)
class Ping:
    seq: int
    target: str
    """Name of the member we mean: a different member now at that address
    must not answer for it."""
    reply_to: str


@dataclass(slots=True)
class PingReq:
    seq: int
    target: str
    target_addr: str
    reply_to: str
    nack: bool
    """Lifeguard: answer with a Nack if the target stays silent, which tells
    the requester its own network path is fine."""


@dataclass(slots=True)
class Ack:
    seq: int


@dataclass(slots=True)
class Nack:
    seq: int


class StateLike(Protocol):
    """What push-pull encodes per member: a MemberInfo, or the core's own
    Member records passed as they are (no snapshot copies on the hot path)."""

    name: str
    addr: str
    incarnation: int
    state: MemberState
    meta: MemberMeta


@dataclass(slots=True)
class PushPull:
    sender: str
    reply_to: str
    join: bool
    reply: bool
    states: Sequence[StateLike]
    """Decoded messages always hold MemberInfo snapshots."""


@dataclass(slots=True)
class Refuse:
    sender: str
    reason: str


@dataclass(slots=True)
class Alive:
    name: str
    addr: str
    incarnation: int
    meta: MemberMeta


@dataclass(slots=True)
class Suspect:
    name: str
    incarnation: int
    source: str


@dataclass(slots=True)
class Dead:
    name: str
    incarnation: int
    source: str
    left: bool
    """A graceful leave; only honoured when source == name."""


Message = Ping | PingReq | Ack | Nack | PushPull | Refuse
Gossip = Alive | Suspect | Dead


@dataclass(slots=True)
class Packet:
    msg: Message | None
    gossip: list[Gossip]


# --------------------------------------------------------------------------- encode


def _meta(m: MemberMeta) -> list[Any]:
    return [m.cluster, m.partitions, m.grpc, m.zone, m.version]


def encode_message(msg: Message) -> bytes:
    """The msgpack bytes of one message (without packet framing)."""
    if type(msg) is Ping:
        body: list[Any] = [PING, msg.seq, msg.target, msg.reply_to]
    elif type(msg) is Ack:
        body = [ACK, msg.seq]
    elif type(msg) is PingReq:
        body = [PING_REQ, msg.seq, msg.target, msg.target_addr, msg.reply_to, msg.nack]
    elif type(msg) is Nack:
        body = [NACK, msg.seq]
    elif type(msg) is PushPull:
        states = [[s.name, s.addr, s.incarnation, int(s.state), _meta(s.meta)] for s in msg.states]
        body = [PUSH_PULL, msg.sender, msg.reply_to, msg.join, msg.reply, states]
    elif type(msg) is Refuse:
        body = [REFUSE, msg.sender, msg.reason]
    else:
        raise TypeError(f"not a message: {msg!r}")
    return msgpack.packb(body)


def encode_gossip(g: Gossip) -> bytes:
    """The msgpack bytes of one gossip entry, ready for `assemble`."""
    if type(g) is Alive:
        body: list[Any] = [ALIVE, g.name, g.addr, g.incarnation, _meta(g.meta)]
    elif type(g) is Suspect:
        body = [SUSPECT, g.name, g.incarnation, g.source]
    elif type(g) is Dead:
        body = [DEAD, g.name, g.incarnation, g.source, g.left]
    else:
        raise TypeError(f"not a gossip entry: {g!r}")
    return msgpack.packb(body)


_NIL = b"\xc0"
_HEAD = b"\x93" + msgpack.packb(VERSION)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def packet_overhead(n_gossip: int) -> int:
    """Bytes of framing around the message and n gossip entries."""
    return len(_HEAD) + len(_array_header(n_gossip))


PACKET_OVERHEAD_MAX = len(_HEAD) + 3  # framing when the gossip array has < 65536 entries


def assemble(body: bytes | None, gossip: list[bytes]) -> bytes:
    """Frame an encoded message (None: gossip only) and encoded gossip."""
    return b"".join((_HEAD, _NIL if body is None else body, _array_header(len(gossip)), *gossip))


def encode_packet(msg: Message | None, gossip: list[Gossip] = ()) -> bytes:  # type: ignore[assignment]
    """Convenience for tests and tools: encode and frame in one go."""
    body = None if msg is None else encode_message(msg)
    return assemble(body, [encode_gossip(g) for g in gossip])


# --------------------------------------------------------------------------- decode


def _fail(what: str) -> MalformedMessage:
    return MalformedMessage(what)


def _str(v: Any, what: str, maxlen: int, empty: bool = False) -> str:
    if type(v) is not str or len(v) > maxlen or (not empty and not v):
        raise _fail(f"bad {what}")
    return v


def _int(v: Any, what: str, hi: int, lo: int = 0) -> int:
    if type(v) is not int or v < lo or v > hi:
        raise _fail(f"bad {what}")
    return v


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise _fail(f"bad {what}")
    return v


def _list(v: Any, what: str, n: int) -> list[Any]:
    if type(v) is not list or len(v) != n:
        raise _fail(f"bad {what}")
    return v


_META_CACHE: dict[tuple[Any, ...], MemberMeta] = {}
_META_CACHE_MAX = 4096
_STATES = tuple(MemberState)


def _decode_meta(v: Any) -> MemberMeta:
    """Validated once per distinct value: a push-pull of N members repeats the
    same few metas N times, and this was the simulator's hottest path."""
    f = _list(v, "meta", 5)
    try:
        key = tuple(f)
        hit = _META_CACHE.get(key)
    except TypeError:  # unhashable junk: let validation reject it
        hit = key = None
    if hit is not None and type(f[1]) is int:  # True == 1 hashes alike
        return hit
    meta = _validate_meta(f)
    if key is not None:
        if len(_META_CACHE) >= _META_CACHE_MAX:
            _META_CACHE.clear()
        _META_CACHE[key] = meta
    return meta


def _validate_meta(f: list[Any]) -> MemberMeta:
    return MemberMeta(
        _str(f[0], "cluster", MAX_META_STR, empty=True),
        _int(f[1], "partitions", MAX_PARTITIONS, lo=1),
        _str(f[2], "grpc address", MAX_META_STR, empty=True),
        _str(f[3], "zone", MAX_META_STR, empty=True),
        _str(f[4], "version", MAX_META_STR, empty=True),
    )


def _decode_state(v: Any) -> MemberInfo:
    f = _list(v, "state entry", 5)
    return MemberInfo(
        _str(f[0], "name", MAX_NAME),
        _str(f[1], "address", MAX_ADDR),
        _decode_meta(f[4]),
        _int(f[2], "incarnation", MAX_INCARNATION),
        _STATES[_int(f[3], "state", 3)],
    )


def _decode_gossip(v: Any) -> Gossip:
    if type(v) is not list or not v:
        raise _fail("bad gossip entry")
    t = v[0]
    if t == ALIVE and type(t) is int:
        _list(v, "alive", 5)
        return Alive(
            _str(v[1], "name", MAX_NAME),
            _str(v[2], "address", MAX_ADDR),
            _int(v[3], "incarnation", MAX_INCARNATION),
            _decode_meta(v[4]),
        )
    if t == SUSPECT and type(t) is int:
        _list(v, "suspect", 4)
        return Suspect(
            _str(v[1], "name", MAX_NAME),
            _int(v[2], "incarnation", MAX_INCARNATION),
            _str(v[3], "source", MAX_NAME),
        )
    if t == DEAD and type(t) is int:
        _list(v, "dead", 5)
        return Dead(
            _str(v[1], "name", MAX_NAME),
            _int(v[2], "incarnation", MAX_INCARNATION),
            _str(v[3], "source", MAX_NAME),
            _bool(v[4], "left flag"),
        )
    raise _fail("unknown gossip type")


def _decode_message(v: Any) -> Message:
    if type(v) is not list or not v or type(v[0]) is not int:
        raise _fail("bad message")
    t = v[0]
    if t == PING:
        _list(v, "ping", 4)
        return Ping(
            _int(v[1], "seq", MAX_SEQ),
            _str(v[2], "target", MAX_NAME),
            _str(v[3], "reply_to", MAX_ADDR),
        )
    if t == ACK:
        _list(v, "ack", 2)
        return Ack(_int(v[1], "seq", MAX_SEQ))
    if t == PING_REQ:
        _list(v, "ping-req", 6)
        return PingReq(
            _int(v[1], "seq", MAX_SEQ),
            _str(v[2], "target", MAX_NAME),
            _str(v[3], "target address", MAX_ADDR),
            _str(v[4], "reply_to", MAX_ADDR),
            _bool(v[5], "nack flag"),
        )
    if t == NACK:
        _list(v, "nack", 2)
        return Nack(_int(v[1], "seq", MAX_SEQ))
    if t == PUSH_PULL:
        _list(v, "push-pull", 6)
        raw = v[5]
        if type(raw) is not list or len(raw) > MAX_STATES:
            raise _fail("bad push-pull states")
        return PushPull(
            _str(v[1], "sender", MAX_NAME),
            _str(v[2], "reply_to", MAX_ADDR),
            _bool(v[3], "join flag"),
            _bool(v[4], "reply flag"),
            [_decode_state(s) for s in raw],
        )
    if t == REFUSE:
        _list(v, "refuse", 3)
        return Refuse(_str(v[1], "sender", MAX_NAME), _str(v[2], "reason", MAX_REASON))
    raise _fail("unknown message type")


def decode_packet(data: bytes, max_size: int) -> Packet:
    """Parse one packet of at most max_size bytes; raise MalformedMessage."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail("not bytes")
    if len(data) > max_size:
        raise _fail(f"packet of {len(data)} bytes exceeds the {max_size}-byte limit")
    try:
        top = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=max(MAX_REASON, MAX_META_STR) * 4,
            max_bin_len=0,
            max_ext_len=0,
            max_map_len=0,
            max_array_len=max(MAX_GOSSIP_PER_PACKET, min(len(data), MAX_STATES)),
        )
    except Exception as exc:  # msgpack raises many types; all mean "not a packet"
        raise _fail(f"undecodable msgpack: {type(exc).__name__}") from None
    try:
        if type(top) is not list or len(top) != 3:
            raise _fail("bad packet framing")
        if top[0] != VERSION or type(top[0]) is not int:
            raise _fail("unsupported protocol version")
        gossip = top[2]
        if type(gossip) is not list or len(gossip) > MAX_GOSSIP_PER_PACKET:
            raise _fail("bad gossip list")
        msg = None if top[1] is None else _decode_message(top[1])
        return Packet(msg, [_decode_gossip(g) for g in gossip])
    except MalformedMessage:
        raise
    except Exception as exc:  # defence in depth: a validator bug must not kill the member
        raise _fail(f"invalid packet: {type(exc).__name__}") from None
