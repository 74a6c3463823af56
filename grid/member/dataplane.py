"""The member's data plane: client batches in frames over TCP, answered without an await.

An asyncio Protocol per connection (not streams, not a task per request):
`data_received` cuts the bytes into frames (grid/wire/frames.py), runs each batch
through the same `GridService.run` the gRPC service uses, and writes the reply
with `transport.write`, which queues it and returns. A batch that must wait (for
its fsync, its sync backups or the members its operations were forwarded to) gets
a task that writes its reply when done; the frames' ids let that reply overtake
nothing and be overtaken by the reads behind it.

The handshake is the first frame each way: a Hello naming the protocol version and
the cluster, a HelloReply with the member's limits, or its refusal and a close.
Nothing but a Hello is read before it, and it must arrive within
`data_handshake_timeout_s`.

Bad input never costs the member more than the connection (DESIGN.md): a frame
over `max_message_bytes` or with an impossible length, an unknown kind, or a frame
begun and not finished within `data_frame_timeout_s` is answered with an ERROR
frame saying why, and the connection closes; a frame whose body is not a
BatchRequest is answered INVALID_ARGUMENT under its id and the connection goes on.

A member following this one's partitions opens a connection of its own and sends
FOLLOW frames on it; from the first one on, the connection is that follower's
replication stream (grid/member/replicas/link.py), served by the replicator.

Backpressure: a client that stops reading its replies stops being read (the
transport's high-water mark pauses reading until its buffer drains), and so does
one with more than `MAX_HELD` replies waiting.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast

from google.protobuf.message import DecodeError

from grid import logs
from grid.config import Config
from grid.errors import Status
from grid.member.peer import BadRequest
from grid.member.replicas.link import FramePipe
from grid.member.server import GridService
from grid.member.watches import ClientWatches
from grid.wire import frames
from grid.wire.frames import (
    BATCH,
    BATCH_REPLY,
    CALL,
    CALL_REPLY,
    ERROR,
    FOLLOW,
    HELLO,
    HELLO_REPLY,
    REPLICA,
    WATCH,
    FrameError,
)
from grid.wire.tls_gate import gated
from proto import grid_pb2 as pb

log = logs.get("grid.member.dataplane")

MAX_HELD = 4096
"""Replies one connection may have waiting (fsync, sync backups, forwarding) before the
member stops reading from it; a client pipelining more than this is slowed, not refused."""
WRITE_HIGH_WATER = 4 * 1024 * 1024
"""Bytes of replies queued for one client before the member stops reading its requests."""


class DataPlane:
    """The listening socket and its connections."""

    def __init__(self, service: GridService, config: Config) -> None:
        self.service = service
        self.config = config
        self.connections: set[Connection] = set()
        self.accepted = 0
        self.refused = 0
        """Connections closed for bad input or a refused handshake (stats)."""
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Listen (TLS when given a context: grid/wire/security.py, run by tls_gate.py so a
        refused handshake is logged); the bound port. A TLS handshake must finish within
        the Hello's time limit, or the socket is closed."""
        loop = asyncio.get_running_loop()
        factory = gated(lambda: Connection(self), tls, self.config.data_handshake_timeout_s,
                        "data plane", self._refused)  # fmt: skip
        self._server = await loop.create_server(factory, host, port, reuse_address=True,
                                                backlog=1024)  # fmt: skip
        return self._server.sockets[0].getsockname()[1]

    def _refused(self) -> None:
        self.refused += 1

    async def stop(self, grace: float) -> None:
        """Accept no more; idle connections close now, busy ones once their held replies
        are written or `grace` has passed."""
        if self._server is None:
            return
        self._server.close()
        waits = [c.stop() for c in list(self.connections)]
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=grace)
        for c in list(self.connections):
            c.abort()
        self._server = None


class Connection(asyncio.Protocol):
    """One client's connection: frames in, replies out, in the loop's own callbacks."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.service = plane.service
        self.reader = frames.FrameReader(plane.config.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.greeted = False
        self.held: set[asyncio.Task[None]] = set()
        self._reading_paused = False
        self._paused_for_writes = False
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self.pipe: FramePipe | None = None
        """Set when this connection carries a follower's stream instead of batches."""
        self.follow_task: asyncio.Task[None] | None = None
        self.watches: ClientWatches | None = None
        """A client's watches (grid/member/watches.py), from its first WATCH frame on."""

    # ---- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's transports do not subclass asyncio's
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.plane.connections.add(self)
        self.plane.accepted += 1
        self._timer = asyncio.get_running_loop().call_later(
            self.plane.config.data_handshake_timeout_s, self._timed_out, "no Hello"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.plane.connections.discard(self)
        if self.pipe is not None:
            self.pipe.closed(f"{type(exc).__name__}: {exc}" if exc else "connection closed")
        self._cancel_timer()
        self.transport = None
        for t in self.held:
            t.cancel()
        if self.watches is not None:
            self.watches.close()

    def pause_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.pause_writing()  # the primary's sender waits; acks are still read
            return
        if self.watches is not None:
            self.watches.pause()
        self._paused_for_writes = True
        self._update_reading()

    def resume_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.resume_writing()
            return
        if self.watches is not None:
            self.watches.resume()
        self._paused_for_writes = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        try:
            got = self.reader.feed(data)
        except FrameError as e:
            self._refuse(str(e))
            return
        for kind, request_id, body in got:
            if self._closing:
                return
            if kind == BATCH and self.greeted and self.pipe is None:
                self._batch(request_id, body)
            elif kind == CALL and self.greeted and self.pipe is None:
                self._call(request_id, body)
            elif kind == WATCH and self.greeted and self.pipe is None:
                self._watch(request_id, body)
            elif kind == FOLLOW and self.greeted:
                self._follow(body)
            elif kind == HELLO and not self.greeted:
                self._hello(body)
            elif kind == HELLO:
                self._refuse("a second Hello on one connection")
            elif not self.greeted:
                self._refuse(f"expected Hello first, got a frame of kind {kind}")
            else:
                self._refuse(f"unknown frame kind {kind}")
        if self.greeted and not self._closing:
            self._arm_partial_timer()

    def eof_received(self) -> bool | None:
        # The client is done sending; answer what is held, then close (returning True keeps
        # the write side open until then).
        if self.held:
            self._closing = True
            return True
        return None

    # ---- frames ------------------------------------------------------------------------------
    def _hello(self, body: bytes) -> None:
        self._cancel_timer()
        cfg = self.plane.config
        try:
            hello = pb.Hello.FromString(body)
        except DecodeError:
            self._refuse("the Hello frame is not a Hello message", reply_hello=True)
            return
        if hello.protocol < 1:
            self._refuse(f"protocol version {hello.protocol} is not one this member speaks "
                         f"(it speaks {frames.PROTOCOL})", reply_hello=True)  # fmt: skip
            return
        if hello.cluster != cfg.cluster_name:
            self._refuse(f"cluster name {hello.cluster!r} is not this member's "
                         f"{cfg.cluster_name!r}", reply_hello=True)  # fmt: skip
            return
        why = cfg.credentials().check(hello.user, hello.auth)
        if why:
            who = f" as user {hello.user!r}" if hello.user else ""
            self._refuse(f"authentication failed{who}: {why} (auth_token, users)", reply_hello=True)
            return
        self.greeted = True
        reply = pb.HelloReply(
            protocol=min(hello.protocol, frames.PROTOCOL),
            member=self.service.name,
            max_frame=cfg.max_message_bytes,
            max_batch_ops=cfg.max_batch_ops,
        )
        self._write(HELLO_REPLY, 0, reply.SerializeToString())

    def _follow(self, body: bytes) -> None:
        """A follower's stream (grid/member/replicas/link.py): from its first FOLLOW frame
        on, this connection carries nothing else."""
        if self.pipe is None:
            cluster = self.service.cluster
            if cluster is None or self.held:
                self._refuse("this connection cannot carry a follow stream")
                return
            assert self.transport is not None
            self.pipe = FramePipe(self.transport, FOLLOW, REPLICA)
            self.follow_task = asyncio.get_running_loop().create_task(
                self._serve_follow(cluster.replicator, self.pipe)
            )
        self.pipe.received(FOLLOW, body)

    async def _serve_follow(self, replicator: Any, pipe: FramePipe) -> None:
        try:
            await replicator.serve_follow(pipe)
        except DecodeError:
            await pipe.fail("malformed FollowMessage")
        except Exception:
            log.exception("follow stream failed", peer=self.peer)
            pipe.closed("follow stream failed")
        else:
            pipe.closed("follow stream ended")

    def _watch(self, watch_id: int, body: bytes) -> None:
        """A client's WatchRequest (grid/member/watches.py); refused on a member with no
        cluster runtime (nothing numbers its changes)."""
        if self.watches is None:
            cluster = self.service.cluster
            if cluster is None:
                self._refuse("this member serves no watches (no cluster runtime)")
                return
            self.watches = ClientWatches(
                self.service.store, cluster.replicator.watchers, self._write,
                self.service.store.partitions,
            )  # fmt: skip
        try:
            why = self.watches.request(watch_id, body)
        except DecodeError:
            why = f"malformed WatchRequest ({len(body)} bytes)"
        if why:
            self._refuse(why)

    def _batch(self, request_id: int, body: bytes) -> None:
        try:
            request = pb.BatchRequest.FromString(body)
        except DecodeError:
            self.service.executor.rejected += 1
            reply = pb.BatchReply(
                id=request_id,
                status=Status.INVALID_ARGUMENT,
                error=f"malformed BatchRequest ({len(body)} bytes)",
            )
            self._write(BATCH_REPLY, request_id, reply.SerializeToString())
            return
        reply, later = self.service.run(request)
        if later is None:
            self._write(BATCH_REPLY, request_id, reply.SerializeToString())
            return
        task = asyncio.get_running_loop().create_task(self._reply_later(request_id, reply, later))
        self.held.add(task)
        task.add_done_callback(self._released)
        self._update_reading()

    def _call(self, request_id: int, body: bytes) -> None:
        """A member's Peer call (grid/member/peer.py): answered by a task, since most wait
        (a fill, a hand-off, a leave), under its id."""
        try:
            method, request = frames.parse_call(body)
        except FrameError as e:
            self._refuse(str(e))
            return
        call = self.service.peer_calls.get(method)
        if call is None:
            why = f"no peer method {method!r} here" + ("" if self.service.peer_calls
                                                      else " (no cluster runtime yet)")  # fmt: skip
            self._write(
                CALL_REPLY, request_id, frames.reply_body(frames.UNIMPLEMENTED, why.encode())
            )
            return
        task = asyncio.get_running_loop().create_task(
            self._answer_call(request_id, method, call, request)
        )
        self.held.add(task)
        task.add_done_callback(self._released)
        self._update_reading()

    async def _answer_call(
        self,
        request_id: int,
        method: str,
        call: Callable[[bytes], Awaitable[bytes]],
        request: bytes,
    ) -> None:
        try:
            body = frames.reply_body(frames.OK, await call(request))
        except BadRequest as e:
            self.service.executor.rejected += 1
            body = frames.reply_body(frames.INVALID_ARGUMENT, str(e).encode())
        except Exception as e:  # a bug in a handler costs its call, not the connection
            log.exception("peer call failed", peer=self.peer, method=method)
            body = frames.reply_body(frames.INTERNAL, f"{type(e).__name__}: {e}".encode())
        self._write(CALL_REPLY, request_id, body)

    async def _reply_later(
        self, request_id: int, reply: pb.BatchReply, later: Callable[[], Awaitable[None]]
    ) -> None:
        try:
            await later()
        except Exception as e:  # a bug in a wait must not lose the reply
            log.exception("held reply failed", peer=self.peer)
            reply = pb.BatchReply(id=reply.id, status=Status.INTERNAL, error=str(e))
        self._write(BATCH_REPLY, request_id, reply.SerializeToString())

    def _released(self, task: asyncio.Task[Any]) -> None:
        self.held.discard(task)
        self._update_reading()
        if self._closing and not self.held and self.transport is not None:
            self.transport.close()

    # ---- plumbing ----------------------------------------------------------------------------
    def _write(self, kind: int, request_id: int, body: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(frames.header(kind, request_id, len(body)) + body)

    def _refuse(self, why: str, reply_hello: bool = False) -> None:
        """Say why and close; the member goes on."""
        self.plane.refused += 1
        self.service.executor.rejected += 1  # the `rejected` statistic, as for gRPC
        log.warning("data-plane connection refused", peer=self.peer, reason=why)
        if reply_hello:
            body = pb.HelloReply(protocol=frames.PROTOCOL, error=why).SerializeToString()
            self._write(HELLO_REPLY, 0, body)
        self._write(ERROR, 0, why.encode())
        self._closing = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    def _update_reading(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        want_pause = self._paused_for_writes or len(self.held) >= MAX_HELD
        if want_pause and not self._reading_paused:
            self._reading_paused = True
            t.pause_reading()
        elif not want_pause and self._reading_paused:
            self._reading_paused = False
            t.resume_reading()

    def _arm_partial_timer(self) -> None:
        if self.reader.partial:
            if self._timer is None:
                timeout = self.plane.config.data_frame_timeout_s
                self._timer = asyncio.get_running_loop().call_later(
                    timeout, self._timed_out, "a frame left unfinished"
                )
        else:
            self._cancel_timer()

    def _timed_out(self, what: str) -> None:
        self._timer = None
        self._refuse(f"{what} for too long; closing")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def stop(self) -> None:
        """For shutdown: close now if nothing is held, else once the held replies are out."""
        self._closing = True
        if self.pipe is not None:
            self.pipe.closed("member stopping")
        if self.held:
            await asyncio.gather(*self.held, return_exceptions=True)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
