"""The sync client's own data path: blocking sockets in the caller's thread.

Why: the blocking `Client` used to run every call on a private event-loop thread, and
the hop there and back cost about 150 µs a call, more than the member's work
(docs/benchmarks.md). Now a call takes a socket to the owner from a small pool,
writes one frame (grid/wire/frames.py), reads its reply and gives the socket back,
all in the calling thread, as redis-py does. Threads never share a socket while a
call is on it, so the client stays safe to use from many threads; a batch for
several owners writes to each of them before it reads any reply (one round trip).

What it does not do itself it hands to the async router on the loop thread, which
has the retries, the table refreshes and the splitting: a call with no table yet, a
call too large for one frame, reads from backups, a link that breaks before
anything was sent, and the operations a member answered NOT_OWNER or UNAVAILABLE
(none of those were applied, so sending them again is safe). An operation that
is not idempotent (incr) and whose frame may have reached the member is never sent
again: it raises Unavailable saying it may or may not have been applied.

The maps themselves are AsyncMap's: `run_inline` drives an AsyncMap coroutine to its
end in the caller's thread, which works because `BlockingRouter.call` never
suspends (it blocks instead). One implementation of every map method serves both
clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import grpc

from grid.client.connection import CallFailed, ConnectionOptions, batch_bytes, hello
from grid.client.router import Router, group_by_owner
from grid.client.wireops import AnyOp
from grid.errors import DeadlineExceeded, Status, Unavailable, error_for
from grid.wire import frames
from grid.wire.endpoints import data_plane_address, split_address
from proto import grid_pb2 as pb

T = TypeVar("T")
MAX_IDLE_PER_MEMBER = 16
"""Idle sockets kept per member: one per thread that calls at once, up to this many;
more threads open more and close the extras when done."""
READ_BYTES = 256 * 1024


def run_inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end, here, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a blocking client call suspended; it must not")


class Link:
    """One blocking socket to a member's data plane, greeted, owned by one call at a time."""

    def __init__(
        self,
        address: str,
        cluster: str,
        max_frame: int,
        timeout: float,
        tls: ssl.SSLContext | None = None,
        login: tuple[str, str] = ("", ""),
    ) -> None:
        self.address = address
        host, port = split_address(address)
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            # the handshake runs here, under the connect timeout still set on the socket
            self.sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        except BaseException:
            raw.close()
            raise
        # Blocking mode with kernel timeouts, not socket.settimeout: with a Python-level
        # timeout CPython polls before every send and recv (two syscalls more a call, and
        # one more to set it); SO_RCVTIMEO makes recv fail with EAGAIN instead.
        self.sock.settimeout(None)
        self.recv_timeout = 0.0
        self._set_recv_timeout(timeout)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(max(timeout, 1.0)))
        self.reader = frames.FrameReader(max_frame)
        self.ready: list[tuple[int, int, bytes]] = []
        self.next_id = 1
        try:
            self.send(frames.HELLO, 0, hello(cluster, login))
            kind, _, body = self.receive_frame(time.monotonic() + timeout)
            if kind != frames.HELLO_REPLY:
                raise Unavailable(f"{address} answered the Hello with a frame of kind {kind}")
            reply = pb.HelloReply.FromString(body)
            if reply.error:
                raise Unavailable(f"{address} refused the connection: {reply.error}")
        except BaseException:
            self.close()
            raise
        self.max_frame = reply.max_frame
        self.max_batch_ops = reply.max_batch_ops

    def send(self, kind: int, request_id: int, body: bytes) -> None:
        self.sock.sendall(frames.header(kind, request_id, len(body)) + body)

    def _set_recv_timeout(self, seconds: float) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
        self.recv_timeout = seconds

    def receive_frame(self, deadline: float) -> tuple[int, int, bytes]:
        while not self.ready:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from {self.address} before the deadline")
            # A call's deadline is usually the client's timeout from now: the kernel
            # timeout set for the last call still fits within 10 ms, so no syscall here.
            if not left - 0.01 <= self.recv_timeout <= left:
                self._set_recv_timeout(left)
            try:
                data = self.sock.recv(READ_BYTES)
            except (BlockingIOError, ssl.SSLWantReadError):  # SO_RCVTIMEO ran out
                continue  # the deadline check above decides
            if not data:
                raise ConnectionResetError(f"{self.address} closed the connection")
            self.ready.extend(self.reader.feed(data))
        kind, request_id, body = self.ready.pop(0)
        if kind == frames.ERROR:
            raise ConnectionResetError(body.decode(errors="replace"))
        return kind, request_id, body

    def receive(self, request_id: int, deadline: float) -> pb.BatchReply:
        while True:
            kind, rid, body = self.receive_frame(deadline)
            if kind == frames.BATCH_REPLY and rid == request_id:
                return pb.BatchReply.FromString(body)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _timeval(seconds: float) -> bytes:
    """struct timeval for SO_RCVTIMEO/SO_SNDTIMEO (at least 1 ms: 0 means never)."""
    whole = int(seconds)
    micros = max(1000, int((seconds - whole) * 1e6)) if whole == 0 else int((seconds - whole) * 1e6)
    return struct.pack("@ll", whole, micros)


class LinkPool:
    """Links per member data-plane address: idle ones kept for the next call, at most
    `max_connections` open per member. A thread that finds them all busy waits for one
    within its deadline, as with redis-py's BlockingConnectionPool: a burst of threads
    cannot open thousands of sockets to one member."""

    def __init__(self, options: ConnectionOptions) -> None:
        self.options = options
        self._tls = options.security.client_context()  # one context for every link
        self._idle: dict[str, list[Link]] = {}
        self._open: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        """The most links ever open at once per member (for tests and stats)."""
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._waiters = 0  # threads in take() waiting for a link to be given back
        self._closed = False

    def take(self, address: str, cluster: str, timeout: float) -> Link:
        """An idle link, a new one, or the next one given back; TimeoutError if none frees
        up within `timeout`, Unavailable once the pool is closed."""
        deadline = time.monotonic() + timeout
        limit = max(1, self.options.max_connections)
        with self._freed:
            while True:
                if self._closed:
                    raise Unavailable("the client is closed")
                idle = self._idle.get(address)
                if idle:
                    return idle.pop()
                n = self._open.get(address, 0)
                if n < limit:
                    self._open[address] = n + 1
                    self.peak[address] = max(self.peak.get(address, 0), n + 1)
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"all {limit} connections to {address} stayed busy")
                self._waiters += 1
                try:
                    self._freed.wait(left)
                finally:
                    self._waiters -= 1
        try:
            return Link(
                address, cluster, self.options.max_message_bytes, timeout,
                self._tls, self.options.security.login,
            )  # fmt: skip
        except BaseException:
            self._forget(address)
            raise

    def give_back(self, link: Link) -> None:
        with self._freed:
            idle = self._idle.setdefault(link.address, [])
            if not self._closed and len(idle) < MAX_IDLE_PER_MEMBER:
                idle.append(link)
                if self._waiters:  # Condition.notify costs as much as the rest of this
                    self._freed.notify()
                return
        self.discard(link)

    def discard(self, link: Link) -> None:
        """A link that must not be used again (broken, or a reply may still be on its
        way): closed, and its place freed."""
        link.close()
        self._forget(link.address)

    def _forget(self, address: str) -> None:
        with self._freed:
            self._open[address] = max(0, self._open.get(address, 0) - 1)
            self._freed.notify()

    def close(self) -> None:
        with self._freed:
            self._closed = True
            links = [link for idle in self._idle.values() for link in idle]
            self._idle.clear()
            self._freed.notify_all()
        for link in links:
            self.discard(link)


class BlockingRouter:
    """The `call` surface AsyncMap uses, served from the caller's thread."""

    def __init__(
        self,
        router: Router,
        loop: asyncio.AbstractEventLoop,
        run: Callable[[Coroutine[Any, Any, Any]], Any],
    ) -> None:
        self.router = router
        self.loop = loop
        """The loop thread's loop, which the router lives on."""
        self.run = run
        """Runs a coroutine on the loop thread (the slow path)."""
        self.options = router.options
        self.pool = LinkPool(router.options)
        self._endpoints: dict[str, tuple[str, str]] = {}  # gRPC address -> (data, cluster)

    async def call(
        self, ops: Sequence[AnyOp], timeout: float | None = None, idempotent: bool = True
    ) -> list[pb.Result]:
        """Run ops on their owners: one result per op, in order (never suspends)."""
        budget = self.options.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        results = self._fast(ops, deadline, idempotent)
        if results is None:
            return self.run(self.router.call(ops, budget, idempotent))  # type: ignore[no-any-return]
        return results

    def close(self) -> None:
        self.pool.close()

    # ---- the fast path -----------------------------------------------------------------------
    def _fast(
        self, ops: Sequence[AnyOp], deadline: float, idempotent: bool
    ) -> list[pb.Result] | None:
        """The results, or None when the async router must take the whole call."""
        router = self.router
        if not router.discovered or self.options.read_from_backup:
            return None
        if len(ops) > self.options.max_batch_ops:
            return None
        route = router.route
        if route is None:
            groups = {router.seed.address: list(range(len(ops)))}
        else:
            groups = group_by_owner(ops, range(len(ops)), route.owners, router.any_address(route))
        sent: list[tuple[Link, list[int], int]] = []
        try:
            for address, idxs in groups.items():
                data_address, cluster = self._endpoint(address, deadline)
                left = max(0.001, deadline - time.monotonic())
                link = self.pool.take(data_address, cluster, left)
                request_id = link.next_id
                link.next_id = (request_id + 1) & frames.ID_MASK or 1
                data = batch_bytes(request_id, [ops[i] for i in idxs])
                if len(data) + frames.HEADER_SIZE > link.max_frame:
                    self.pool.give_back(link)
                    raise _TooBig
                sent.append((link, idxs, request_id))
                link.send(frames.BATCH, request_id, data)
            replies = [(idxs, link.receive(rid, deadline)) for link, idxs, rid in sent]
        except TimeoutError:
            for link, _, _ in sent:
                self.pool.discard(link)  # a late reply must not be read as the next call's
            address = sent[-1][0].address if sent else next(iter(groups))
            raise DeadlineExceeded(f"no answer from {address} before the deadline") from None
        except (OSError, frames.FrameError, Unavailable, _TooBig) as e:
            for link, _, _ in sent:
                self.pool.discard(link)
            if not isinstance(e, _TooBig):
                for address in groups:  # it may have restarted elsewhere: ask again next time
                    self._endpoints.pop(address, None)
            if sent and not idempotent and not isinstance(e, _TooBig):
                raise Unavailable(
                    f"connection to {sent[0][0].address} lost ({e}); the operation may or "
                    "may not have been applied"
                ) from None
            return None  # idempotent, or nothing left: the async router retries it all
        for link, _, _ in sent:
            self.pool.give_back(link)
        results: list[pb.Result | None] = [None] * len(ops)
        again: list[int] = []
        newest = 0
        resend = RESEND_IDEMPOTENT if idempotent else RESEND
        for idxs, reply in replies:
            newest = max(newest, reply.table_version)
            if reply.status != Status.OK:
                if reply.status in (Status.TOO_LARGE, Status.NOT_OWNER) or (
                    reply.status == Status.UNAVAILABLE and idempotent
                ):
                    again.extend(idxs)  # the whole batch refused: nothing of it applied
                    continue
                raise error_for(reply.status, reply.error)
            got = list(reply.results)
            if len(got) != len(idxs):
                raise ValueError(f"{len(got)} results for {len(idxs)} operations")
            if len(replies) == 1:  # one member took the whole call: its results, in order
                results = got  # type: ignore[assignment]
            else:
                for i, r in zip(idxs, got, strict=True):
                    results[i] = r
            # the slots of ops sent again are overwritten below
            again += [idxs[j] for j, r in enumerate(got) if r.status in resend]
        if newest > router.version:
            self.loop.call_soon_threadsafe(router.refresh)
        if again:
            again.sort()
            left = max(0.0, deadline - time.monotonic())
            redone = self.run(self.router.call([ops[i] for i in again], left, idempotent))
            for i, r in zip(again, redone, strict=True):
                results[i] = r
        return results  # type: ignore[return-value]  # every slot is filled

    def _endpoint(self, address: str, deadline: float) -> tuple[str, str]:
        """A member's data-plane address and cluster name, asked once (gRPC, loop thread)."""
        found = self._endpoints.get(address)
        if found is None:
            left = deadline - time.monotonic()
            try:
                reply = self.run(self.router.endpoints(address, left))
            except CallFailed as e:
                if e.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise DeadlineExceeded(f"no answer from {address} before the deadline") from e
                raise
            if not reply.data_address:
                raise Unavailable(f"{address} has no data plane (is it an older member?)")
            found = self._endpoints[address] = (
                data_plane_address(address, reply.data_address, reply.data_advertised),
                self.options.cluster or reply.cluster,
            )
        return found


RESEND = frozenset({Status.NOT_OWNER})
"""Answers to send again through the router: not applied (the member does not own it)."""
RESEND_IDEMPOTENT = frozenset({Status.NOT_OWNER, Status.UNAVAILABLE})
"""The same for an idempotent call, which may also be sent again after UNAVAILABLE."""


class _TooBig(Exception):
    """The batch does not fit one frame: the async router splits it."""
