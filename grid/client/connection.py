"""One connection to a member: a bidirectional stream shared by every caller.

Why this shape (measured, DESIGN.md): a gRPC call in Python costs hundreds of
microseconds of CPU, a message on an open stream a fraction of that, and a
message carrying 64 operations barely more than one carrying one. So:

- All callers share one `Stream` call. Each batch carries an id; the member
  answers in order, and the reader matches replies to callers by id.
- Callers never send directly. They append their operations to a pending
  list and one writer task drains it: while it awaits a write, new callers
  queue up, and the next write carries all of them. Under load batches grow
  by themselves; when idle a lone call goes out at once (no timer, no delay).
- Batches are assembled from bytes, not messages: a protobuf repeated field
  is just its elements' encodings one after another, so each caller's ops
  become the bytes of a `BatchRequest(ops=...)` once (`wireops.ops_bytes`; the
  maps' ops are already bytes) and the writer joins those behind an id field.
  No message is copied or re-encoded.

Failures: if the stream breaks (member restarted, network), every call in
flight fails with a retryable error and the next write opens a new stream.
Idempotent calls (everything but incr) retry with jittered exponential
backoff until their deadline; a non-idempotent call that may have reached the
member is not retried (it could apply twice) and raises Unavailable.

With `ConnectionOptions.fail_fast` a lost stream is not retried here at all: the
call raises `StreamLost` at once, saying whether the batch may have been sent.
The smart client's router (router.py) uses that for its per-member connections:
when a member dies, waiting for it until the deadline is wrong; the router
refreshes its partition table and sends the operations to the new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import grpc

from grid import __version__
from grid.client.wireops import AnyOp, WireOp, entry, ops_bytes, varint
from grid.errors import (
    AuthenticationFailed,
    DeadlineExceeded,
    GridError,
    Status,
    TooLarge,
    Unavailable,
    error_for,
)
from grid.wire import frames
from grid.wire.endpoints import data_plane_address, split_address
from grid.wire.security import PLAIN, Security
from proto import grid_pb2 as pb

ENDPOINTS_METHOD = "/grid.v1.Grid/Endpoints"
READ_FROM_BACKUP = b"\x20\x01"  # BatchRequest field 4 (read_from_backup) = true
STATS_METHOD = "/grid.v1.Grid/Stats"
FRAMING = 1024  # bytes of headroom for the id field and gRPC framing


SMALL_VALUE = 4096
"""Ops with values under this many bytes are counted, not measured, when a call is cut
into chunks that fit one frame (64 bytes of headroom an op)."""


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    timeout: float = 5.0
    """Default deadline of a call, seconds (every call may override it)."""
    max_batch_ops: int = 4096
    """Operations per stream message; under the member's max_batch_ops (10,000)."""
    max_batch_bytes: int = 4 * 1024 * 1024
    """Bytes per stream message; many moderate messages pipeline better than one huge one."""
    max_message_bytes: int = 64 * 1024 * 1024
    retry_base: float = 0.05
    retry_cap: float = 1.0
    read_from_backup: bool = False
    """Let members answer reads (get, contains, ttl) from a backup copy: the smart client
    spreads reads over each partition's replicas. A value may be older than the
    primary's by the replication lag (docs/replication.md, "Reads from backups")."""
    cluster: str = ""
    """The cluster name the data plane's Hello carries; empty: whatever the member says it
    is (set it to refuse talking to another cluster's member by mistake)."""
    max_connections: int = 64
    """Sockets a sync Client opens to one member at most (one per thread calling it at
    once); a thread past the limit waits for a free one within its deadline. The
    AsyncClient needs one connection per member whatever the load."""
    fail_fast: bool = False
    """Raise StreamLost as soon as the stream breaks instead of retrying until the deadline:
    for a caller (the smart client's router) that retries elsewhere and must know at once."""
    security: Security = PLAIN
    """TLS and the cluster token (grid/wire/security.py); the default is plain TCP."""


class WatchHandler(Protocol):
    """Who receives a watch's EVENTS frames on a connection (grid/client/watch.py)."""

    watch_id: int

    def events(self, address: str, body: bytes) -> None: ...

    def lost(self, address: str, why: str) -> None: ...


class StreamLost(Unavailable):
    """The stream to the member broke under a call (fail_fast connections only).

    `sent` is False only when the operations certainly never left this process: then even
    a non-idempotent call may be sent again, to this member or another.
    """

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class CallFailed(Unavailable):
    """A unary or server-streaming call failed; `code` is gRPC's status (UNIMPLEMENTED tells
    an older member from one that is down)."""

    def __init__(self, message: str, code: grpc.StatusCode | None) -> None:
        super().__init__(message)
        self.code = code


class _Lost(Exception):
    """The stream broke; `sent` says whether the batch may have reached the member."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def batch_bytes(request_id: int, ops: Sequence[pb.Op | WireOp]) -> bytes:
    """A serialized BatchRequest{id, ops} made of the ops' own encodings (a repeated field
    is the concatenation of its elements), without building the message: the sync
    client's hot path, where constructing a BatchRequest costs more than sending it."""
    return b"".join([b"\x08", varint(request_id), *[entry(op) for op in ops]])


class _Refused(Exception):
    """The member refused the whole batch unapplied (over its max_batch_ops): send again."""


class _Resplit(Exception):
    """The member's message limit was learned and this chunk no longer fits: split again."""


class _Call:
    __slots__ = ("body", "count", "deadline", "future", "sent")

    def __init__(
        self, body: bytes, count: int, future: asyncio.Future[list[pb.Result]], deadline: float
    ) -> None:
        self.body = body  # serialized BatchRequest(ops=...) without an id: the ops' encodings
        self.count = count
        self.future = future
        self.deadline = deadline  # loop time; the connection's sweep fails it after this
        self.sent = False


class _Expired(Exception):
    """The call's deadline passed before its reply (set by the connection's sweep)."""


SWEEP_S = 0.02
"""How often a connection with calls waiting checks their deadlines: a call's
DeadlineExceeded comes at most this late. One timer per connection instead of one
per call (asyncio.timeout costs a heap push and pop of a Python-compared TimerHandle,
a sixth of an async get's client CPU with 64 callers)."""


AUTH_REFUSED = "authentication failed"
"""How a member's refusal of credentials begins (grid/member/dataplane.py, guard.py)."""


def refusal(e: CallFailed, security: Security) -> GridError:
    """A gRPC call's failure as the client should see it: the token refused is
    AuthenticationFailed (never retried); a connection the member closed during the TLS
    handshake stays Unavailable (a restarting member closes sockets too), with a hint."""
    if e.code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationFailed(str(e))
    if hint := tls_hint(str(e), security):
        return Unavailable(f"{e} ({hint})")
    return e


def tls_hint(text: str, security: Security) -> str:
    """What to check when a member closed the connection the way a TLS mismatch does."""
    if not _TLS_TROUBLE.search(text):
        return ""
    if not security.client_tls:
        return (
            "if the member serves TLS, give tls_ca (and tls_cert/tls_key if it requires "
            "client certificates)"
        )
    return (
        "if TLS failed, check tls_ca, and tls_cert/tls_key if the member requires a client "
        "certificate signed by its tls_ca"
    )


_TLS_TROUBLE = re.compile(r"Socket closed|SSL|handshake|certificate", re.IGNORECASE)


def hello(cluster: str, login: tuple[str, str] = ("", "")) -> bytes:
    """The first frame's body on a data-plane connection: the login (`Security.login`) in
    `user` and `auth`."""
    user, secret = login
    return pb.Hello(
        protocol=frames.PROTOCOL,
        cluster=cluster,
        client=f"grid-python/{__version__}",
        auth=secret.encode(),
        user=user,
    ).SerializeToString()


class _Link(asyncio.Protocol):
    """The TCP connection of an AsyncConnection: frames out as they are written, replies
    delivered from `data_received` (no reader task, no await per message)."""

    def __init__(self, conn: AsyncConnection, max_frame: int) -> None:
        self.conn = conn
        self.reader = frames.FrameReader(max_frame)
        self.transport: asyncio.Transport | None = None
        self.hello: asyncio.Future[pb.HelloReply] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.error = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's transports do not subclass asyncio's
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, kind: int, request_id: int, body: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frames.header(kind, request_id, len(body)) + body)

    def data_received(self, data: bytes) -> None:
        try:
            got = self.reader.feed(data)
        except frames.FrameError as e:
            self._lost(f"bad frame from the member: {e}")
            return
        deliver = self.conn._deliver
        for kind, request_id, body in got:
            if kind == frames.BATCH_REPLY:
                deliver(request_id, pb.BatchReply.FromString(body))
            elif kind == frames.CALL_REPLY:
                self.conn._deliver_call(request_id, body)
            elif kind == frames.EVENTS:
                self.conn._deliver_events(request_id, body)
            elif kind == frames.HELLO_REPLY and not self.hello.done():
                self.hello.set_result(pb.HelloReply.FromString(body))
            elif kind == frames.ERROR:
                self.error = body.decode(errors="replace")

    def connection_lost(self, exc: Exception | None) -> None:
        why = self.error or (f"{type(exc).__name__}: {exc}" if exc else "closed by the member")
        self._lost(why)

    def _lost(self, why: str) -> None:
        if not self.hello.done():
            self.hello.set_exception(ConnectionResetError(why))
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.conn._link_lost(self, why)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class AsyncConnection:
    def __init__(self, address: str, options: ConnectionOptions | None = None) -> None:
        self.address = address
        self.options = opts = options or ConnectionOptions()
        channel_options = [
            ("grpc.max_receive_message_length", opts.max_message_bytes),
            ("grpc.max_send_message_length", opts.max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.enable_retries", 0),  # retries are ours: we know what is idempotent
        ]
        security = opts.security
        if security.client_tls:
            self._channel = grpc.aio.secure_channel(
                address, security.grpc_channel_credentials(), options=channel_options
            )
        else:
            self._channel = grpc.aio.insecure_channel(address, options=channel_options)
        self._metadata = security.grpc_metadata()
        self._tls = security.client_context()
        self._link: _Link | None = None
        self._link_lock = asyncio.Lock()
        self._raw: dict[int, asyncio.Future[Any]] = {}  # exchange() and call_peer() calls
        self._writer: asyncio.Task[None] | None = None
        self._pending: deque[_Call] = deque()
        self._inflight: dict[int, list[_Call]] = {}
        self._wakeup = asyncio.Event()
        self._waiting: set[_Call] = set()  # calls whose future is not done: the sweep's
        self._sweeper: asyncio.TimerHandle | None = None
        self._next_id = 1
        self._closed = False
        self._member_limit = 0  # the member's max message size, once an error has told us
        self._member_batch_ops = 0  # the member's max_batch_ops, once a refusal has told us
        self._watches: dict[int, WatchHandler] = {}  # watch id -> its events' receiver
        self.table_version = 0
        """The highest partition table version the member's replies have carried: a smart
        client compares it with its own table to notice that it is stale."""

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- public ------------------------------------------------------------------------------
    async def call(
        self, ops: Sequence[AnyOp], timeout: float | None = None, idempotent: bool = True
    ) -> list[pb.Result]:
        """Run ops on the member and return one result per op, in order."""
        if self._closed:
            raise Unavailable("the client is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.options.timeout if timeout is None else timeout)
        if len(ops) == 1 and len(ops[0].value) < SMALL_VALUE:
            # one chunk that cannot need splitting, and nothing to ask again: an op the
            # member could not fit in its reply is the whole reply
            return await self._call_with_retry(list(ops), deadline, idempotent, loop)
        while True:
            chunks = self._split(ops)
            try:
                if len(chunks) == 1:
                    results = await self._call_with_retry(chunks[0], deadline, idempotent, loop)
                else:
                    parts = await asyncio.gather(
                        *(self._call_with_retry(c, deadline, idempotent, loop) for c in chunks)
                    )
                    results = [r for part in parts for r in part]
            except _Resplit:
                continue  # chunks already applied are idempotent, the only kind split
            except StreamLost as lost:
                if len(chunks) > 1 and not lost.sent:  # another chunk may have gone out
                    raise StreamLost(str(lost), sent=True) from None
                raise
            break
        # Ops the member could not fit in its reply come back UNAVAILABLE: ask again for
        # just those (always fewer, so this ends), within the same deadline.
        again = [i for i, r in enumerate(results) if r.status == Status.UNAVAILABLE]
        if idempotent and again and len(again) < len(ops):
            left = deadline - loop.time()
            if left > 0:
                retried = await self.call([ops[i] for i in again], left, idempotent)
                for i, r in zip(again, retried, strict=True):
                    results[i] = r
        return results

    async def unary(
        self, method: str, request: bytes, timeout: float | None = None
    ) -> tuple[bytes, grpc.aio.Metadata]:
        """A plain unary call on this connection's channel (stats, members): the reply's
        bytes and its trailing metadata; gRPC errors become Unavailable."""
        call = self._channel.unary_unary(method)(
            request, timeout=timeout or self.options.timeout, metadata=self._metadata
        )
        try:
            data = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as e:
            raise CallFailed(f"{method.rsplit('/', 1)[-1]} from {self.address}: "
                             f"{e.details()}", e.code()) from e  # fmt: skip
        return data, trailing

    async def watch(self, method: str, request: bytes) -> AsyncIterator[bytes]:
        """A server-streaming call on this connection's channel (WatchTable): each message's
        bytes until the member ends the stream; gRPC errors become CallFailed. No deadline:
        the stream lives as long as the caller iterates (cancel the task to stop it)."""
        call = self._channel.unary_stream(method)(request, metadata=self._metadata)
        try:
            while True:
                data = await call.read()
                if data is grpc.aio.EOF:
                    return
                yield data
        except grpc.aio.AioRpcError as e:
            raise CallFailed(f"{method.rsplit('/', 1)[-1]} from {self.address}: "
                             f"{e.details()}", e.code()) from e  # fmt: skip
        finally:
            call.cancel()

    async def stats(self, timeout: float | None = None) -> pb.StatsReply:
        data, _ = await self.unary(STATS_METHOD, pb.StatsRequest().SerializeToString(), timeout)
        return pb.StatsReply.FromString(data)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._writer is not None:
            self._writer.cancel()
        if self._link is not None:
            self._link.close()
            self._link = None
        self._fail_all(Unavailable("the client is closed"))
        await self._channel.close()

    # ---- submission --------------------------------------------------------------------------
    def _max_bytes(self) -> int:
        limit = self.options.max_batch_bytes
        if self._member_limit:
            limit = min(limit, self._member_limit - FRAMING)
        return limit

    def _max_ops(self) -> int:
        limit = self.options.max_batch_ops
        return min(limit, self._member_batch_ops) if self._member_batch_ops else limit

    def _split(self, ops: Sequence[AnyOp]) -> list[list[AnyOp]]:
        """Cut a call into chunks that fit one stream message each."""
        max_ops, max_bytes = self._max_ops(), self._max_bytes()
        if (
            len(ops) <= max_ops
            and len(ops) * 64 < max_bytes
            and all(len(op.value) < SMALL_VALUE for op in ops)
        ):
            return [list(ops)]
        chunks: list[list[AnyOp]] = [[]]
        size = 0
        for op in ops:
            n = op.ByteSize() + 8
            if chunks[-1] and (len(chunks[-1]) >= max_ops or size + n > max_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append(op)
            size += n
        return chunks

    async def _call_with_retry(
        self,
        ops: list[AnyOp],
        deadline: float,
        idempotent: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> list[pb.Result]:
        """`loop`: the running loop, passed down (asyncio.get_running_loop costs a getpid
        system call on Python 3.11)."""
        body = ops_bytes(ops)
        attempt = 0
        while True:
            if len(ops) > self._max_ops():
                raise _Resplit
            if self._member_limit and len(body) + FRAMING > self._member_limit:
                if len(ops) > 1:
                    raise _Resplit
                raise TooLarge(
                    f"request is {len(body)} bytes; {self.address} accepts messages of at "
                    f"most {self._member_limit} bytes (its max_message_bytes)"
                )
            future: asyncio.Future[list[pb.Result]] = loop.create_future()
            call = _Call(body, len(ops), future, deadline)
            self._pending.append(call)
            self._waiting.add(call)
            if self._sweeper is None:
                self._sweeper = loop.call_later(SWEEP_S, self._sweep)
            self._ensure_writer()
            self._wakeup.set()
            try:
                return await future
            except _Expired:
                with contextlib.suppress(ValueError):
                    self._pending.remove(call)
                raise DeadlineExceeded(
                    f"no answer from {self.address} before the deadline"
                ) from None
            except _Refused:
                continue  # not applied: resend at once, split to the limit now known
            except _Lost as lost:
                if self.options.fail_fast:
                    raise StreamLost(
                        f"connection to {self.address} lost ({lost})", lost.sent
                    ) from None
                if lost.sent and not idempotent:
                    raise Unavailable(
                        f"connection to {self.address} lost ({lost}); the "
                        "operation may or may not have been applied"
                    ) from None
                attempt += 1
                delay = min(self.options.retry_cap, self.options.retry_base * 2**attempt)
                delay *= 0.5 + random.random() / 2
                if loop.time() + delay >= deadline:
                    raise Unavailable(f"{self.address} unavailable: {lost}") from None
                await asyncio.sleep(delay)
            finally:
                self._waiting.discard(call)

    # ---- the writer and the reader -----------------------------------------------------------
    def _ensure_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        while not self._closed:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                max_ops, max_bytes = self._max_ops(), self._max_bytes()
                batch: list[_Call] = []
                n_ops = n_bytes = 0
                pending = self._pending
                while pending and (
                    not batch
                    or (
                        n_ops + pending[0].count <= max_ops
                        and n_bytes + len(pending[0].body) <= max_bytes
                    )
                ):
                    call = pending.popleft()
                    if call.future.done():  # timed out while queued
                        continue
                    batch.append(call)
                    n_ops += call.count
                    n_bytes += len(call.body)
                if not batch:
                    break
                request_id = self._next_id
                self._next_id = (self._next_id + 1) & frames.ID_MASK or 1
                flag = READ_FROM_BACKUP if self.options.read_from_backup else b""
                message = b"".join((b"\x08", varint(request_id), *(c.body for c in batch), flag))
                link = self._link
                if link is None or link.closed:
                    try:
                        link = await self._ensure_link()
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:  # nothing left this process: every call may retry
                        self._fail_unsent(batch, e)
                        continue
                self._inflight[request_id] = batch
                for c in batch:
                    c.sent = True
                link.send(frames.BATCH, request_id, message)

    async def exchange(self, request: pb.BatchRequest, timeout: float) -> pb.BatchReply:
        """One whole BatchRequest as one frame, its reply back: no coalescing, no retry
        (members forwarding a batch, which carries `hops`, use this)."""
        reply: pb.BatchReply = await self._one_frame(
            frames.BATCH, request.SerializeToString(), timeout
        )
        return reply

    async def call_peer(self, method: str, request: bytes, timeout: float) -> tuple[int, bytes]:
        """A member's unary call to this member (a `grid.v1.Peer` method) on the data plane:
        (status, reply or detail), status a gRPC status code. No retry: the caller knows
        whether the call may be repeated. Unavailable / DeadlineExceeded as exchange()."""
        reply: tuple[int, bytes] = await self._one_frame(
            frames.CALL, frames.call_body(method, request), timeout
        )
        return reply

    async def _one_frame(self, kind: int, body: bytes, timeout: float) -> Any:
        """Send one frame under a fresh id and wait for the reply delivered under that id
        (`_deliver` for BATCH_REPLY, `_deliver_call` for CALL_REPLY)."""
        if self._closed:
            raise Unavailable("the connection is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                link = await self._ensure_link()
                request_id = self._next_id
                self._next_id = (self._next_id + 1) & frames.ID_MASK or 1
                future: asyncio.Future[Any] = loop.create_future()
                self._raw[request_id] = future
                try:
                    link.send(kind, request_id, body)
                    return await future
                finally:
                    self._raw.pop(request_id, None)
        except TimeoutError:
            raise DeadlineExceeded(f"no answer from {self.address} before the deadline") from None
        except _Lost as lost:
            raise Unavailable(f"connection to {self.address} lost ({lost})") from None

    # ---- watches (grid/client/watch.py) -------------------------------------------------------
    async def send_watch(self, handler: WatchHandler, body: bytes, timeout: float) -> None:
        """Send a WatchRequest for `handler.watch_id` (opening the link if need be); its
        EVENTS go to `handler.events`, and `handler.lost()` is called if the link breaks
        (the member forgets the link's watches with it). Raises Unavailable."""
        if self._closed:
            raise Unavailable("the connection is closed")
        try:
            async with asyncio.timeout(timeout):
                link = await self._ensure_link()
        except TimeoutError:
            raise DeadlineExceeded(f"no data plane at {self.address} in time") from None
        self._watches[handler.watch_id] = handler
        link.send(frames.WATCH, handler.watch_id, body)

    def forget_watch(self, watch_id: int) -> None:
        self._watches.pop(watch_id, None)

    def _deliver_events(self, watch_id: int, body: bytes) -> None:
        handler = self._watches.get(watch_id)
        if handler is not None:
            handler.events(self.address, body)

    def _deliver_call(self, request_id: int, body: bytes) -> None:
        future = self._raw.pop(request_id, None)
        if future is None or future.done():
            return
        try:
            future.set_result(frames.parse_reply(body))
        except frames.FrameError as e:
            future.set_result((frames.INTERNAL, str(e).encode()))

    async def _ensure_link(self) -> _Link:
        async with self._link_lock:
            link = self._link
            if link is None or link.closed:
                link = await self._open_link()
            return link

    async def _open_link(self) -> _Link:
        """Ask the member (gRPC) where its data plane is, connect, and say Hello."""
        loop = asyncio.get_running_loop()
        timeout = self.options.timeout
        try:
            data, _ = await self.unary(ENDPOINTS_METHOD, b"", timeout)
        except CallFailed as e:
            raise refusal(e, self.options.security) from None
        endpoints = pb.EndpointsReply.FromString(data)
        if not endpoints.data_address:
            raise Unavailable(f"{self.address} has no data plane (is it an older member?)")
        target = data_plane_address(self.address, endpoints.data_address, endpoints.data_advertised)
        host, port = split_address(target)
        try:
            async with asyncio.timeout(timeout):
                _, link = await loop.create_connection(
                    lambda: _Link(self, self.options.max_message_bytes), host, port,
                    ssl=self._tls, server_hostname=host if self._tls is not None else None,
                )  # fmt: skip
                cluster = self.options.cluster or endpoints.cluster
                link.send(frames.HELLO, 0, hello(cluster, self.options.security.login))
                reply = await link.hello
        except TimeoutError:
            raise Unavailable(
                f"{self.address}'s data plane at {target} did not answer within {timeout:g} s"
            ) from None
        except ssl.SSLError as e:
            raise AuthenticationFailed(
                f"TLS with {self.address}'s data plane at {target} failed: {e.reason or e}"
            ) from None
        except OSError as e:
            raise Unavailable(
                f"cannot connect to {self.address}'s data plane at {target}: {e.strerror or e}"
            ) from None
        if reply.error:
            link.close()
            kind = AuthenticationFailed if AUTH_REFUSED in reply.error else Unavailable
            raise kind(f"{self.address} refused the connection: {reply.error}")
        self._member_limit = reply.max_frame
        self._member_batch_ops = reply.max_batch_ops
        self._link = link
        return link

    def _link_lost(self, link: _Link, why: str) -> None:
        if self._link is link:
            self._reset(why)

    def _fail_unsent(self, batch: list[_Call], error: Exception) -> None:
        """The link could not be opened: this batch and everything queued never left.
        They may go again elsewhere or later, unless the member refused our credentials."""
        why = error.message if isinstance(error, GridError) else f"{type(error).__name__}: {error}"
        calls = [*batch, *self._pending]
        self._pending.clear()
        for c in calls:
            if not c.future.done():
                refused = isinstance(error, AuthenticationFailed)
                c.future.set_exception(error if refused else _Lost(why, sent=False))

    def _deliver(self, request_id: int, reply: pb.BatchReply) -> None:
        if reply.table_version > self.table_version:
            self.table_version = reply.table_version
        raw = self._raw.pop(request_id, None) if self._raw else None
        if raw is not None:
            if not raw.done():
                raw.set_result(reply)
            return
        calls = self._inflight.pop(request_id, None)
        if calls is None:
            return
        if reply.status == Status.TOO_LARGE and reply.max_batch_ops:
            self._member_batch_ops = reply.max_batch_ops
            for c in calls:
                if not c.future.done():
                    c.future.set_exception(_Refused())
            return
        if reply.status != Status.OK:
            error = error_for(reply.status, reply.error)
            for c in calls:
                if not c.future.done():
                    c.future.set_exception(error)
            return
        results = reply.results
        start = 0
        for c in calls:
            end = start + c.count
            if not c.future.done():
                c.future.set_result(results[start:end])
            start = end

    def _reset(self, why: str) -> None:
        """Forget the broken link; fail what was in flight so it can retry."""
        link, self._link = self._link, None
        if link is not None:
            link.close()
        watches, self._watches = self._watches, {}
        for handler in watches.values():
            handler.lost(self.address, why)
        inflight, self._inflight = self._inflight, {}
        for calls in inflight.values():
            for c in calls:
                if not c.future.done():
                    c.future.set_exception(_Lost(why, sent=True))
        raw, self._raw = self._raw, {}
        for future in raw.values():
            if not future.done():
                future.set_exception(_Lost(why, sent=True))

    def _sweep(self) -> None:
        """Fail the calls whose deadline has passed; forget the answered ones; again in
        SWEEP_S while any is waiting."""
        now = asyncio.get_running_loop().time()
        done = [c for c in self._waiting if c.future.done() or c.deadline <= now]
        for c in done:
            self._waiting.discard(c)
            if not c.future.done():
                c.future.set_exception(_Expired())
        self._sweeper = (
            asyncio.get_running_loop().call_later(SWEEP_S, self._sweep) if self._waiting else None
        )

    def _fail_all(self, error: GridError) -> None:
        for c in self._pending:
            if not c.future.done():
                c.future.set_exception(error)
        self._pending.clear()
        for calls in self._inflight.values():
            for c in calls:
                if not c.future.done():
                    c.future.set_exception(error)
        self._inflight.clear()
