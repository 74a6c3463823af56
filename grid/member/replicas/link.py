"""Follow streams on the data plane: one TCP connection per follower and primary.

A follower used to open a gRPC `Follow` stream to each primary. Every message on it
paid gRPC's per-message cost (the hand-off between its I/O thread and the loop, an
awaited write), the same cost that made client batches slow, so single puts with
an async backup reached 0.60-0.79x of no backup (issue 12). Now the follower
opens a data-plane connection (grid/member/dataplane.py), says Hello, and the two
sides exchange frames: FOLLOW frames carry `FollowMessage`s to the primary,
REPLICA frames carry `ReplicaBatch`es back (grid/wire/frames.py).

Both ends see a `Pipe`: `read()` the next message's bytes (or `EOF`), `write()`
one, `fail()` to end it with a reason. `replica.py` serves a follower through a
pipe without knowing the transport; the gRPC `Follow` RPC still works through
`GrpcPipe` (a portable API for other languages, and tests).

Backpressure is TCP's: a primary whose follower does not read stops at the
transport's high-water mark (`write` waits), and a follower whose apply falls
behind stops reading once `INBOX_LIMIT` messages wait.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from typing import Protocol, cast

import grpc

from grid.client.connection import hello
from grid.wire import frames
from grid.wire.endpoints import split_address

EOF = None
"""What `read()` returns when the other side is done."""
INBOX_LIMIT = 64
"""Messages received and not yet read before a side stops reading its socket."""
WRITE_HIGH_WATER = 8 * 1024 * 1024
"""Bytes queued for the other side before `write` waits (a chunk is at most ~1 MiB)."""


class PipeClosed(ConnectionError):
    """The pipe ended: the connection closed, or the other side sent an ERROR."""


class Pipe(Protocol):
    async def read(self) -> bytes | None: ...

    async def write(self, data: bytes) -> None: ...

    async def fail(self, why: str) -> None: ...


class GrpcPipe:
    """A pipe over a gRPC Follow stream (server side)."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.context = context

    async def read(self) -> bytes | None:
        data = await self.context.read()
        return EOF if data is grpc.aio.EOF else data

    async def write(self, data: bytes) -> None:
        await self.context.write(data)

    async def fail(self, why: str) -> None:
        await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)


class FramePipe:
    """A pipe over one data-plane connection: frames of `in_kind` are read, frames of
    `out_kind` written. Fed by an asyncio Protocol (`received`, `closed`,
    `pause_writing`/`resume_writing`), so reading costs no task and no await per frame."""

    def __init__(self, transport: asyncio.Transport, in_kind: int, out_kind: int) -> None:
        self.transport = transport
        self.in_kind = in_kind
        self.out_kind = out_kind
        self._inbox: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._reading_paused = False
        self.why = ""
        self.done = False

    # ---- fed by the protocol -----------------------------------------------------------------
    def received(self, kind: int, body: bytes) -> None:
        if kind == frames.ERROR:
            self.closed(body.decode(errors="replace"))
            return
        if kind != self.in_kind:
            self.closed(f"unexpected frame kind {kind} on a follow stream")
            return
        self._inbox.append(body)
        self._ready.set()
        if len(self._inbox) >= INBOX_LIMIT and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def closed(self, why: str) -> None:
        if not self.done:
            self.done = True
            self.why = why
            self._ready.set()
            self._writable.set()
            self.transport.close()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ---- the Pipe ----------------------------------------------------------------------------
    async def read(self) -> bytes | None:
        while not self._inbox:
            if self.done:
                return EOF
            self._ready.clear()
            await self._ready.wait()
        body = self._inbox.popleft()
        if self._reading_paused and len(self._inbox) < INBOX_LIMIT // 2 and not self.done:
            self._reading_paused = False
            self.transport.resume_reading()
        return body

    async def write(self, data: bytes) -> None:
        if not self._writable.is_set():
            await self._writable.wait()
        if self.done:
            raise PipeClosed(self.why or "the follow stream is closed")
        self.transport.write(frames.header(self.out_kind, 0, len(data)) + data)

    async def fail(self, why: str) -> None:
        if not self.done:
            self.transport.write(frames.frame(frames.ERROR, 0, why.encode()))
        self.closed(why)


class _FollowerProtocol(asyncio.Protocol):
    """The follower's end: Hello, then frames into a FramePipe."""

    def __init__(self, max_frame: int) -> None:
        self.reader = frames.FrameReader(max_frame)
        self.pipe: FramePipe | None = None
        self.hello: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's transports do not subclass asyncio's
        stream = cast(asyncio.Transport, transport)
        sock = stream.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.pipe = FramePipe(stream, frames.REPLICA, frames.FOLLOW)

    def data_received(self, data: bytes) -> None:
        assert self.pipe is not None
        try:
            got = self.reader.feed(data)
        except frames.FrameError as e:
            self.pipe.closed(f"bad frame from the primary: {e}")
            return
        for kind, _, body in got:
            if not self.hello.done():
                if kind == frames.HELLO_REPLY:
                    self.hello.set_result(body)
                else:
                    self.hello.set_exception(PipeClosed(f"expected HelloReply, got kind {kind}"))
                continue
            self.pipe.received(kind, body)

    def connection_lost(self, exc: Exception | None) -> None:
        why = f"{type(exc).__name__}: {exc}" if exc else "closed by the primary"
        if not self.hello.done():
            self.hello.set_exception(PipeClosed(why))
        if self.pipe is not None:
            self.pipe.closed(why)

    def pause_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.pause_writing()

    def resume_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.resume_writing()


async def open_follow(
    data_address: str,
    cluster: str,
    max_frame: int,
    timeout: float,
    tls: ssl.SSLContext | None = None,
    token: str = "",
) -> FramePipe:
    """Connect to a primary's data plane (TLS when given a context) and say Hello, with
    the cluster token; a pipe for the Follow messages.

    Raises OSError (connect, TLS), PipeClosed (refused) or TimeoutError."""
    from proto import grid_pb2 as pb

    host, port = split_address(data_address)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        transport, proto = await loop.create_connection(
            lambda: _FollowerProtocol(max_frame), host, port,
            ssl=tls, server_hostname=host if tls is not None else None,
        )  # fmt: skip
        try:
            transport.write(frames.frame(frames.HELLO, 0, hello(cluster, ("", token))))
            reply = pb.HelloReply.FromString(await proto.hello)
        except BaseException:
            transport.close()
            raise
    if reply.error:
        transport.close()
        raise PipeClosed(f"{data_address} refused the follow stream: {reply.error}")
    assert proto.pipe is not None
    return proto.pipe
