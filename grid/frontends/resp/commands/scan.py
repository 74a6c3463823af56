"""Iterating keys: SCAN (MATCH, COUNT, TYPE), KEYS, RANDOMKEY.

A Redis cursor is a number; grid's scan cursor is (partition, last key). The RESP
cursor is the partition to start at: a SCAN call reads whole partitions, starting
there, until it has COUNT keys or none are left, and answers the next partition
as the cursor (0 when done). That needs no state on the member and keeps grid's
guarantee, stronger than Redis's: a key present for the whole scan is returned
exactly once. A call returns about COUNT keys, more when a partition holds more
than that (Redis may also return more than COUNT). Pages of a partition come from
its owner, so every member answers for the whole cluster.

MATCH is applied to the keys read, after reading (as Redis does), so a page may
be empty while the cursor is not 0. TYPE matches "string" or nothing.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import msgpack

from grid.frontends.ops import Reply
from grid.frontends.resp.common import NOT_INTEGER, SYNTAX, failed, int_arg, result_error
from grid.frontends.resp.glob import match
from grid.frontends.resp.keyspace import SCAN
from grid.frontends.resp.replies import bulk, bulks, error
from grid.frontends.resp.table import NO_KEYS, command
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.resp.server import RespConnection

PAGE = 1000
"""Keys asked of a member per grid SCAN while reading a partition."""


class ScanError(Exception):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply


async def read_keys(
    c: RespConnection, start: int, count: int, stop: int = 0
) -> tuple[list[bytes], int]:
    """Keys of whole partitions from `start` on until at least `count` are read (or the
    partition `stop`, if given, is reached); returns them and the next partition (0:
    the last partition was read)."""
    partitions = c.config.partitions
    if start >= partitions:
        return [], 0
    cursor = msgpack.packb([start, b""]) if start else b""
    keys: list[bytes] = []
    while True:
        r = (await c.runner.call([pb.Op(code=SCAN, map=c.map, cursor=cursor, limit=PAGE)]))[0]
        if failed(r) or r.status == pb.NOT_FOUND:
            raise ScanError(result_error(r))
        keys.extend(r.keys)
        if not r.cursor:
            return keys, 0
        part, after = msgpack.unpackb(r.cursor)
        cursor = r.cursor
        if not after and (len(keys) >= count or (stop and part >= stop)):
            return keys, part


def parse_cursor(arg: bytes) -> int | None:
    """strtoul's reading of a cursor, as Redis's parseScanCursorOrReply takes it."""
    text = arg
    if text[:1] in (b"+", b"-"):
        text = text[1:]
    if arg[:1].isspace() or (text and not text.isdigit()):
        return None
    if not text:
        return 0
    n = int(text)
    if n >= 1 << 64:
        return None
    if arg[:1] == b"-" and n:
        n = (1 << 64) - n
    return n


def scan(c: RespConnection, args: list[bytes]) -> Reply:
    cursor = parse_cursor(args[1])
    if cursor is None:
        return error("ERR invalid cursor")
    count = 10
    pattern: bytes | None = None
    kind: bytes | None = None
    i = 2
    while i < len(args):
        opt = args[i].lower()
        more = len(args) - i
        if opt == b"count" and more >= 2:
            n = int_arg(args[i + 1])
            if n is None:
                return NOT_INTEGER
            if n < 1:
                return SYNTAX
            count = n
        elif opt == b"match" and more >= 2:
            pattern = None if args[i + 1] == b"*" else args[i + 1]
        elif opt == b"type" and more >= 2:
            kind = args[i + 1]
        else:
            return SYNTAX
        i += 2
    return _scan(c, cursor, count, pattern, kind)


async def _scan(
    c: RespConnection, cursor: int, count: int, pattern: bytes | None, kind: bytes | None
) -> bytes:
    try:
        keys, nxt = await read_keys(c, cursor, count)
    except ScanError as e:
        return e.reply
    if kind is not None and kind.lower() != b"string":
        keys = []
    if pattern is not None:
        keys = [k for k in keys if match(pattern, k)]
    return c.enc.array([bulk(b"%d" % nxt), bulks(keys)])


def keys_(c: RespConnection, args: list[bytes]) -> Reply:
    return _keys(c, args[1])


async def _keys(c: RespConnection, pattern: bytes) -> bytes:
    try:
        keys, _ = await read_keys(c, 0, 1 << 62)
    except ScanError as e:
        return e.reply
    return bulks([k for k in keys if match(pattern, k)])


def randomkey(c: RespConnection, args: list[bytes]) -> Reply:
    return _randomkey(c)


async def _randomkey(c: RespConnection) -> bytes:
    start = random.randrange(c.config.partitions)
    try:
        keys, _ = await read_keys(c, start, 1)
        if not keys and start:
            keys, _ = await read_keys(c, 0, 1, stop=start)
    except ScanError as e:
        return e.reply
    return bulk(random.choice(keys)) if keys else c.enc.null


COMMANDS = [
    command("scan", -2, "readonly", NO_KEYS, "keyspace", scan),
    command("keys", 2, "readonly", NO_KEYS, "keyspace", keys_),
    command("randomkey", 1, "readonly", NO_KEYS, "keyspace", randomkey),
]
