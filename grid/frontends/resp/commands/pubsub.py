"""Publish/subscribe: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, PUBSUB.

As Redis 7.0 (docs: "Redis Pub/Sub"): a client subscribes to channels or glob patterns
and gets each message published to them afterwards, fire and forget, nothing stored.
The confirmations and messages are arrays in RESP2 and pushes (`>`) in RESP3. In RESP2
a subscribed connection may only (P)SUBSCRIBE, (P)UNSUBSCRIBE, PING (answered
["pong", arg]), QUIT and RESET; in RESP3 any command. A PUBLISH on any member reaches
every member's subscribers (grid/member/pubsub.py, as Redis Cluster's bus does), and
answers how many subscribers of the member it ran on got it, as Redis Cluster does.

`Subscriptions` is the member's registry; RespServer keeps one.
"""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING

from grid.frontends.ops import Reply
from grid.frontends.resp.replies import bulk, error, integer
from grid.frontends.resp.table import command

if TYPE_CHECKING:
    from grid.frontends.resp.server import RespConnection

MAX_OUTPUT_BYTES = 32 * 1024 * 1024
"""A subscriber with more than this waiting to be sent is disconnected, as Redis's
client-output-buffer-limit pubsub (32 MB hard) does: a slow reader must not grow the
member's memory without bound."""


def _glob(pattern: bytes) -> re.Pattern[bytes]:
    """Redis's glob (stringmatchlen): *, ?, [abc], [^abc] or [!abc], \\ escapes."""
    text = pattern.decode("latin-1").replace("[^", "[!")
    return re.compile(fnmatch.translate(text).encode("latin-1"), re.S)


class Subscriptions:
    """Which connections of this member hear which channels and patterns."""

    def __init__(self) -> None:
        self.channels: dict[bytes, set[RespConnection]] = {}
        self.patterns: dict[bytes, set[RespConnection]] = {}
        self._compiled: dict[bytes, re.Pattern[bytes]] = {}

    def deliver(self, channel: bytes, message: bytes) -> int:
        """Push a message to this member's subscribers; how many got it."""
        n = 0
        for conn in list(self.channels.get(channel, ())):
            n += conn.push_message([b"message", channel, message])
        for pattern, conns in list(self.patterns.items()):
            if self._compiled[pattern].fullmatch(channel):
                for conn in list(conns):
                    n += conn.push_message([b"pmessage", pattern, channel, message])
        return n

    def join(self, conn: RespConnection, name: bytes, pattern: bool) -> None:
        mine, table = (conn.patterns, self.patterns) if pattern else (conn.channels, self.channels)
        if name not in mine:
            mine.add(name)
            table.setdefault(name, set()).add(conn)
            if pattern and name not in self._compiled:
                self._compiled[name] = _glob(name)

    def leave(self, conn: RespConnection, name: bytes, pattern: bool) -> None:
        mine, table = (conn.patterns, self.patterns) if pattern else (conn.channels, self.channels)
        mine.discard(name)
        conns = table.get(name)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del table[name]
                self._compiled.pop(name, None)

    def drop(self, conn: RespConnection) -> None:
        for ch in list(conn.channels):
            self.leave(conn, ch, False)
        for p in list(conn.patterns):
            self.leave(conn, p, True)


def _count(c: RespConnection) -> int:
    return len(c.channels) + len(c.patterns)


def _confirm(c: RespConnection, kind: bytes, name: bytes | None) -> bytes:
    enc = c.enc
    return enc.push([bulk(kind), enc.bulk_or_null(name), integer(_count(c))])


def _subscribe(c: RespConnection, names: list[bytes], pattern: bool) -> bytes:
    kind = b"psubscribe" if pattern else b"subscribe"
    out = []
    for name in names:
        c.server.subs.join(c, name, pattern)
        out.append(_confirm(c, kind, name))
    return b"".join(out)


def _unsubscribe(c: RespConnection, names: list[bytes], pattern: bool) -> bytes:
    """Leave these, or with none named every one; Redis confirms each (or says nil, 0)."""
    kind = b"punsubscribe" if pattern else b"unsubscribe"
    names = names or sorted(c.patterns if pattern else c.channels)
    if not names:
        return _confirm(c, kind, None)
    out = []
    for name in names:
        c.server.subs.leave(c, name, pattern)
        out.append(_confirm(c, kind, name))
    return b"".join(out)


def subscribe(c: RespConnection, args: list[bytes]) -> Reply:
    return _subscribe(c, args[1:], pattern=False)


def psubscribe(c: RespConnection, args: list[bytes]) -> Reply:
    return _subscribe(c, args[1:], pattern=True)


def unsubscribe(c: RespConnection, args: list[bytes]) -> Reply:
    return _unsubscribe(c, args[1:], pattern=False)


def punsubscribe(c: RespConnection, args: list[bytes]) -> Reply:
    return _unsubscribe(c, args[1:], pattern=True)


def publish(c: RespConnection, args: list[bytes]) -> Reply:
    return integer(c.server.publish(args[1], args[2]))


def pubsub_channels(c: RespConnection, args: list[bytes]) -> Reply:
    channels = sorted(c.server.subs.channels)
    if len(args) == 3:
        rx = _glob(args[2])
        channels = [ch for ch in channels if rx.fullmatch(ch)]
    return c.enc.array([bulk(ch) for ch in channels])


def pubsub_numsub(c: RespConnection, args: list[bytes]) -> Reply:
    table = c.server.subs.channels
    pairs = [(bulk(ch), integer(len(table.get(ch, ())))) for ch in args[2:]]
    return c.enc.map(pairs)


def pubsub_numpat(c: RespConnection, args: list[bytes]) -> Reply:
    return integer(len(c.server.subs.patterns))


def pubsub_help(c: RespConnection, args: list[bytes]) -> Reply:
    lines = [
        b"PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        b"CHANNELS [<pattern>]",
        b"    Return the currently active channels matching a <pattern> (default: '*').",
        b"NUMPAT",
        b"    Return number of subscriptions to patterns.",
        b"NUMSUB [<channel> ...]",
        b"    Return the number of subscribers for the specified channels, excluding",
        b"    pattern subscriptions(default: no channels).",
        b"HELP",
        b"    Print this help.",
    ]
    return c.enc.array([b"+%b\r\n" % line for line in lines])


SUBSCRIBED_OK = frozenset({"subscribe", "unsubscribe", "psubscribe", "punsubscribe",
                           "ssubscribe", "sunsubscribe", "ping", "quit", "reset"})  # fmt: skip
"""What a RESP2 connection with subscriptions may still run, as Redis 7.0 allows."""


def refused_while_subscribed(name: str) -> bytes:
    return error(
        f"ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
        "RESET are allowed in this context"
    )


# fmt: off
COMMANDS = [
    command("subscribe", -2, "pubsub noscript loading stale", (0, 0, 0), "pubsub", subscribe),
    command("unsubscribe", -1, "pubsub noscript loading stale", (0, 0, 0), "pubsub",
            unsubscribe),
    command("psubscribe", -2, "pubsub noscript loading stale", (0, 0, 0), "pubsub", psubscribe),
    command("punsubscribe", -1, "pubsub noscript loading stale", (0, 0, 0), "pubsub",
            punsubscribe),
    command("publish", 3, "pubsub loading stale fast may_replicate", (0, 0, 0), "pubsub",
            publish),
    command("pubsub", -2, "", (0, 0, 0), "pubsub", pubsub_help, [
        command("pubsub|channels", -2, "pubsub loading stale", (0, 0, 0), "pubsub",
                pubsub_channels),
        command("pubsub|numsub", -2, "pubsub loading stale", (0, 0, 0), "pubsub",
                pubsub_numsub),
        command("pubsub|numpat", 2, "pubsub loading stale", (0, 0, 0), "pubsub",
                pubsub_numpat),
        command("pubsub|help", 2, "loading stale", (0, 0, 0), "pubsub", pubsub_help),
    ]),
]
# fmt: on
