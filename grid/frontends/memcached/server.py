"""The memcached front end of a member: memcached clients and tools talk to grid on
`memcached_port`.

Each connection parses the text protocol (parser.py), looks the command up by its
name (commands/), and hands it to its handler, which answers with bytes, a Plan of
grid operations, or a coroutine (grid/frontends/ops.py). Ordering, pipelining,
backpressure and bad input are the shared front-end connection's
(grid/frontends/connection.py).

Items live in one map (`memcached_map`) as raw bytes with the client flags in a
header (items.py); any member serves any key (operations for partitions it does
not own are forwarded to their owner). The counters `stats` reports are this
member's, kept here (Stats).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING, Any

from grid import logs
from grid.config import Config
from grid.frontends.connection import FrontendConnection, Listener
from grid.frontends.memcached.commands import COMMANDS
from grid.frontends.memcached.items import HEADER
from grid.frontends.memcached.login import LoginGate
from grid.frontends.memcached.parser import MemcacheParser, Request
from grid.frontends.memcached.replies import ERROR
from grid.frontends.ops import Reply, Runner

if TYPE_CHECKING:
    from grid.member.server import GridService

log = logs.get("grid.frontends.memcached")


class Stats:
    """What `stats` counts, as memcached names it: this member's commands since it started."""

    __slots__ = ("cas_badval", "cas_hits", "cas_misses", "cmd_flush", "cmd_get", "cmd_set",
                 "cmd_touch", "decr_hits", "decr_misses", "delete_hits", "delete_misses",
                 "get_hits", "get_misses", "incr_hits", "incr_misses", "total_items",
                 "touch_hits", "touch_misses")  # fmt: skip

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)


class MemcachedServer:
    """The listener, and what every connection shares: the member, the map, the counters."""

    def __init__(self, service: GridService, config: Config) -> None:
        self.service = service
        self.config = config
        self.map = config.memcached_map
        self.runner = Runner(service, self.map)
        self.listener = Listener("memcached", lambda lst: MemcachedConnection(self, lst), config)
        self.stats = Stats()
        self.started = time.time()
        self.address = ""
        self.flush_timer: asyncio.TimerHandle | None = None
        """A delayed flush_all, pending (a later flush_all replaces it)."""
        self.flush_task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        self.address = await self.listener.start(host, port, "memcached", tls, map=self.map)
        return int(self.address.rsplit(":", 1)[1])

    async def stop(self, grace: float) -> None:
        if self.flush_timer is not None:
            self.flush_timer.cancel()
        await self.listener.stop(grace)


class Answered:
    """A request the login gate has already answered (its reply is ready)."""

    __slots__ = ("reply",)

    def __init__(self, reply: bytes) -> None:
        self.reply = reply


class MemcachedConnection(FrontendConnection):
    """One memcached client."""

    def __init__(self, server: MemcachedServer, listener: Listener) -> None:
        super().__init__(listener, server.runner)
        self.server = server
        self.map = server.map
        self.stats = server.stats
        config = self.config
        self.max_item = min(config.memcached_max_item_bytes, config.max_value_bytes - HEADER)
        self.parser = MemcacheParser(max_item=self.max_item, max_block=config.max_message_bytes)
        logins = config.credentials()
        self.gate = LoginGate(self._accepts) if logins.required else None
        """Until a login: memcached -Y's exchange (login.py), then None."""

    def _accepts(self, user: bytes, password: bytes) -> bool:
        name = user.decode(errors="replace")
        why = self.config.credentials().check(name, password)
        if why:
            self.listener.refused += 1
            log.warning("memcached login refused", peer=self.peer, user=name, reason=why)
        return not why

    def parse(self, data: bytes) -> list[Any]:
        gate = self.gate
        if gate is None:
            return self.parser.feed(data)
        answers, rest = gate.feed(data)
        out: list[Any] = [Answered(a) for a in answers]
        if gate.passed:
            self.gate = None
            out += self.parser.feed(rest)
        return out

    def parse_error(self) -> bytes | None:
        if self.gate is not None and self.gate.closed:
            return b""  # memcached closes without a word
        why = self.parser.error
        return None if why is None else why.encode() + b"\r\n"

    @property
    def partial(self) -> bool:
        return self.gate.partial if self.gate is not None else self.parser.partial

    def internal_error(self, e: Exception) -> bytes:
        return f"SERVER_ERROR internal error in grid: {type(e).__name__}: {e}\r\n".encode()

    def dispatch(self, request: Request | Answered) -> Reply:
        if type(request) is Answered:
            return request.reply
        args = request.args
        if not args:
            return ERROR
        handler = COMMANDS.get(args[0])
        if handler is None:
            return ERROR
        return handler(self, request)
