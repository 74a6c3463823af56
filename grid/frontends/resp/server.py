"""The RESP front end of a member: Redis clients and tools talk to grid on `resp_port`.

Each connection parses RESP2/RESP3 requests (parser.py), looks the command up in
the table (commands/), checks its arity, and hands it to its handler, which
answers with bytes, a Plan of grid operations, or a coroutine (grid/frontends/ops.py).
Ordering, pipelining, backpressure and bad input are the shared front-end
connection's (grid/frontends/connection.py).

Keys and values are raw bytes in one map (`frontend_map`), the same map an SDK
client reads with the raw codec; any member serves any key (operations for
partitions it does not own are forwarded to their owner). There is one database,
0, as in Redis Cluster.
"""

from __future__ import annotations

import itertools
import ssl
import time
from typing import TYPE_CHECKING, Any

from grid import logs
from grid.config import Config
from grid.frontends.connection import FrontendConnection, Listener, Slot
from grid.frontends.ops import Reply, Runner
from grid.frontends.resp import replies
from grid.frontends.resp.commands import COMMANDS, NOT_SUPPORTED
from grid.frontends.resp.commands.pubsub import (
    MAX_OUTPUT_BYTES,
    SUBSCRIBED_OK,
    Subscriptions,
    refused_while_subscribed,
)
from grid.frontends.resp.common import wrong_args
from grid.frontends.resp.parser import RespParser
from grid.frontends.resp.replies import RESP2, Encoder, bulk, error, error_bytes

if TYPE_CHECKING:
    from grid.member.server import GridService

log = logs.get("grid.frontends.resp")
BY_SPELLING = {**COMMANDS, **{name.upper(): cmd for name, cmd in COMMANDS.items()}}
"""The table under the two spellings clients send (redis-py upper case, redis-benchmark
and redis-cli as typed): most commands are found without lower-casing their name."""
PLAIN = {spelling: cmd for spelling, cmd in BY_SPELLING.items() if not cmd.subcommands}
"""The commands without subcommands, which `dispatch` hands over after the arity check
when the client is authenticated and not subscribed."""


class RespServer:
    """The listener, and what every connection shares: the member, the map, counters."""

    def __init__(self, service: GridService, config: Config) -> None:
        self.service = service
        self.config = config
        self.map = config.frontend_map
        self.runner = Runner(service, self.map)
        self.listener = Listener("resp", lambda lst: RespConnection(self, lst), config)
        self.ids = itertools.count(1)
        self.started = time.time()
        self.address = ""
        self.subs = Subscriptions()
        cluster = service.cluster
        self.relay = cluster.pubsub if cluster is not None else None
        if self.relay is not None:
            self.relay.deliver = self.subs.deliver  # peers' PUBLISHes reach ours

    def publish(self, channel: bytes, message: bytes) -> int:
        """To every member's subscribers; how many of this member's got it."""
        if self.relay is None:
            return self.subs.deliver(channel, message)
        return self.relay.publish(channel, message)

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        self.address = await self.listener.start(host, port, "RESP", tls, map=self.map)
        return int(self.address.rsplit(":", 1)[1])

    async def stop(self, grace: float) -> None:
        await self.listener.stop(grace)


NOAUTH = error("NOAUTH Authentication required.")


class RespConnection(FrontendConnection):
    """One Redis client."""

    def __init__(self, server: RespServer, listener: Listener) -> None:
        super().__init__(listener, server.runner)
        self.server = server
        self.map = server.map
        self.id = next(server.ids)
        self.name = b""
        self.lib: dict[str, bytes] = {}
        self.enc: Encoder = RESP2
        self.created = time.time()
        self.last_command = "NULL"
        self.authenticated = not self.config.credentials().required
        """With an auth_token, nothing but AUTH, HELLO ... AUTH, QUIT and RESET until the
        client gives it as its password (user `default`), as a Redis with requirepass."""
        self.parser = RespParser(
            max_bulk=max(self.config.max_value_bytes, self.config.max_key_bytes),
            max_request=self.config.max_message_bytes,
        )
        self.channels: set[bytes] = set()
        self.patterns: set[bytes] = set()

    def push_message(self, items: list[bytes]) -> int:
        """A pub/sub message, after every reply already due (1: sent, 0: this subscriber
        was too far behind and is cut off, as Redis cuts it off)."""
        t = self.transport
        if t is None or t.is_closing():
            return 0
        if t.get_write_buffer_size() > MAX_OUTPUT_BYTES:
            log.warning("pub/sub subscriber too far behind: disconnected", peer=self.peer)
            self.server.subs.drop(self)
            t.abort()
            return 0
        self.slots.append(Slot(self.enc.push([bulk(i) for i in items])))
        self._flush()
        return 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.channels or self.patterns:
            self.server.subs.drop(self)
        super().connection_lost(exc)

    def parse(self, data: bytes) -> list[Any]:
        return self.parser.feed(data)

    def parse_error(self) -> bytes | None:
        why = self.parser.error
        return None if why is None else error_bytes(b"ERR " + why.encode("latin-1"))

    @property
    def partial(self) -> bool:
        return self.parser.partial

    def internal_error(self, e: Exception) -> bytes:
        return error(f"ERR internal error in grid: {type(e).__name__}: {e}")

    def dispatch(self, args: list[bytes]) -> Reply:
        cmd = PLAIN.get(args[0])
        if cmd is not None and self.authenticated and not self.channels and not self.patterns:
            arity = cmd.arity  # what nearly every command is: `_dispatch`'s checks all pass
            if (len(args) == arity) if arity > 0 else (len(args) >= -arity):
                self.last_command = cmd.name
                return cmd.handler(self, args)
        return self._dispatch(args)

    def _dispatch(self, args: list[bytes]) -> Reply:
        """The command's checks, in Redis's order, each with its error."""
        cmd = BY_SPELLING.get(args[0])
        if cmd is None:
            name = args[0].lower()
            cmd = COMMANDS.get(name)
            if cmd is None:
                why = NOT_SUPPORTED.get(name)
                if why is not None:
                    return error(f"ERR {why}")
                return unknown_command(args)
        if cmd.subcommands and len(args) >= 2:
            sub = cmd.subcommands.get(args[1].lower().decode(errors="replace"))
            if sub is None:
                return error(
                    f"ERR unknown subcommand '{args[1][:128].decode(errors='replace')}'. "
                    f"Try {cmd.name.upper()} HELP."
                )
            cmd = sub
        arity = cmd.arity
        if (len(args) != arity) if arity > 0 else (len(args) < -arity):
            return wrong_args(cmd.name)
        if not self.authenticated and "no_auth" not in cmd.flags:
            return NOAUTH  # Redis checks after the command and its arity, as here
        if (self.channels or self.patterns) and self.enc.protocol == 2:
            base = cmd.name.split("|")[0]
            if base not in SUBSCRIBED_OK:
                return refused_while_subscribed(base)
            if base == "ping":  # answered as a pub/sub message in this state
                return self.enc.array([bulk(b"pong"), bulk(args[1] if len(args) > 1 else b"")])
        self.last_command = cmd.name
        return cmd.handler(self, args)

    def info_line(self) -> str:
        """This client as CLIENT INFO and CLIENT LIST describe it."""
        laddr = ""
        if self.transport is not None:
            sock = self.transport.get_extra_info("sockname")
            if isinstance(sock, tuple):
                laddr = f"{sock[0]}:{sock[1]}"
        now = time.time()
        lib = " ".join(f"{k}={v.decode(errors='replace')}" for k, v in self.lib.items())
        return (
            f"id={self.id} addr={self.peer} laddr={laddr} fd=-1 "
            f"name={self.name.decode(errors='replace')} age={int(now - self.created)} idle=0 "
            f"flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 "
            f"multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r "
            f"cmd={self.last_command} user=default redir=-1 resp={self.enc.protocol}"
            + (f" {lib}" if lib else "")
        )


def unknown_command(args: list[bytes]) -> bytes:
    """Redis's reply to a command it does not know, with its first arguments."""
    shown = ""
    for a in args[1:]:
        if len(shown) >= 128:
            break
        shown += f"'{a[: 128 - len(shown)].decode(errors='replace')}' "
    name = args[0][:128].decode(errors="replace")
    return replies.error(f"ERR unknown command '{name}', with args beginning with: {shown}")
