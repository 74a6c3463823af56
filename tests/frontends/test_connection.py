"""The shared front-end connection (grid/frontends/connection.py), with a toy line protocol
and a fake member: replies in request order, requests in effect in order, closes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from grid.config import Config
from grid.frontends.connection import FrontendConnection, Listener
from grid.frontends.ops import Close, Plan, Reply, Runner
from proto import grid_pb2 as pb


class FakeService:
    """Answers GET with the key as its value; keys starting with b"held" wait for `release`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.release = asyncio.Event()
        self.ran: list[bytes] = []
        self.cluster: Any = None  # no cluster: always placed

    def run(
        self, request: pb.BatchRequest
    ) -> tuple[pb.BatchReply, Callable[[], Awaitable[None]] | None]:
        reply = pb.BatchReply()
        held = False
        for op in request.ops:
            self.ran.append(op.key)
            reply.results.add(value=op.key)
            held = held or op.key.startswith(b"held")
        return reply, (self.release.wait if held else None)  # type: ignore[return-value]


class Transport:
    def __init__(self) -> None:
        self.out = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Lines(FrontendConnection):
    """One request a line: PING, GET key, SLOW (a coroutine that waits), QUIT."""

    def __init__(self, listener: Listener, runner: Runner, slow: asyncio.Event) -> None:
        super().__init__(listener, runner)
        self.buf = b""
        self.slow = slow

    def parse(self, data: bytes) -> list[Any]:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return lines

    def parse_error(self) -> bytes | None:
        return None

    @property
    def partial(self) -> bool:
        return bool(self.buf)

    def internal_error(self, e: Exception) -> bytes:
        return b"ERR\n"

    def dispatch(self, line: bytes) -> Reply:
        if line == b"PING":
            return b"PONG\n"
        if line == b"QUIT":
            return Close(b"BYE\n")
        if line == b"SLOW":
            return self._slow()
        key = line.split()[1]
        return Plan([pb.Op(code=pb.GET, map="m", key=key)], lambda rs: rs[0].value + b"\n")

    async def _slow(self) -> bytes:
        await self.slow.wait()
        return b"SLOW\n"


def connect() -> tuple[Lines, Transport, FakeService, asyncio.Event]:
    config = Config()
    service = FakeService(config)
    slow = asyncio.Event()
    listener = Listener("lines", lambda lst: Lines(lst, Runner(service, "m"), slow), config)  # type: ignore[arg-type]
    conn = listener.factory(listener)
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, service, slow  # type: ignore[return-value]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_held_batch_holds_the_replies_behind_it() -> None:
    async def main() -> None:
        conn, t, service, _ = connect()
        conn.data_received(b"GET held1\nPING\n")
        conn.data_received(b"GET a\n")
        await settle()
        assert t.out == b""  # PONG and a wait behind held1
        service.release.set()
        await settle()
        assert t.out == b"held1\nPONG\na\n"

    asyncio.run(main())


def test_a_coroutine_runs_alone_and_requests_after_it_wait() -> None:
    async def main() -> None:
        conn, t, service, slow = connect()
        conn.data_received(b"GET a\nSLOW\nGET b\nPING\n")
        await settle()
        assert service.ran == [b"a"] and t.out == b"a\n"
        slow.set()
        await settle()
        assert service.ran == [b"a", b"b"]
        assert t.out == b"a\nSLOW\nb\nPONG\n"

    asyncio.run(main())


def test_requests_split_across_reads_are_one_pipeline() -> None:
    async def main() -> None:
        conn, t, _service, _ = connect()
        for piece in (b"GET a\nGE", b"T b\nPI", b"NG\n"):
            conn.data_received(piece)
        assert t.out == b"a\nb\nPONG\n"

    asyncio.run(main())


def test_close_answers_what_came_before_and_nothing_after() -> None:
    async def main() -> None:
        conn, t, service, _ = connect()
        conn.data_received(b"PING\nQUIT\nPING\nGET a\n")
        assert t.out == b"PONG\nBYE\n" and t.closed
        assert service.ran == []

    asyncio.run(main())


def test_eof_closes_once_everything_is_answered() -> None:
    async def main() -> None:
        conn, t, service, _ = connect()
        conn.data_received(b"GET held2\n")
        assert conn.eof_received() is True  # keep the write side open for the reply
        assert not t.closed
        service.release.set()
        await settle()
        assert t.out == b"held2\n" and t.closed

    asyncio.run(main())


def test_requests_before_the_first_partition_table_wait_for_it() -> None:
    class Routing:
        version = 0

    class Cluster:
        routing = Routing()

    async def main() -> None:
        conn, t, service, _ = connect()
        service.cluster = Cluster()
        conn.data_received(b"GET a\nPING\n")
        await asyncio.sleep(0.2)
        assert t.out == b"" and service.ran == []
        Routing.version = 7
        await asyncio.sleep(0.2)
        assert t.out == b"a\nPONG\n"

    asyncio.run(main())
