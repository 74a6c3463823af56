"""A text-protocol connection that pipelines: requests in, replies out in request order.

The shape of the member's data plane (grid/member/dataplane.py), for protocols
without request ids (RESP, memcached): an asyncio Protocol, no task and no await
per request. `data_received` parses what arrived, turns each request into a
reply (grid/frontends/ops.py: bytes, a Plan or a coroutine), runs the plans of the
requests that arrived together as one batch, and writes the replies that are
ready with one `transport.write`.

Order is the protocol's only way to pair a reply with its request, so every
request takes a slot in a queue of replies and a reply leaves only when every
slot before it has. Requests also take effect in their order, as on Redis:

- a batch that is held only for its forwarded operations lets the batches after
  it run at once: its local writes are applied already, and operations forwarded
  to one owner travel one connection, in order (measured: serializing them too
  cost 30-40% of a three-member cluster's pipelined throughput);
- where replies wait for fsync (fsync=always) or sync backups, a batch forwards
  only after that wait, so a held batch delays the batches after it until it is
  done (they are parsed and dispatched meanwhile, and run then);
- a coroutine command (a read-modify-write) runs alone, after the batches before
  it are done: requests after it wait, parsed, until it is done.

Bad input costs the connection, never the member: a protocol error is answered
after the replies before it and the connection closes; a request begun and not
finished within `data_frame_timeout_s` closes it too. Backpressure: a client that
does not read its replies, or has more than `MAX_HELD` waiting, is not read.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from grid import logs
from grid.config import Config
from grid.frontends.ops import Close, KeyPlan, Plan, Reply, Runner
from grid.wire.tls_gate import gated
from proto import grid_pb2 as pb

log = logs.get("grid.frontends")

READY_WAIT_S = 10.0
"""How long requests that arrive before the member has its first partition table wait
for it before they run anyway (and are answered "retry" by the member): a client that
connects the moment a member starts is served, not refused."""
MAX_HELD = 4096
"""Replies one connection may have waiting before the member stops reading from it."""
WRITE_HIGH_WATER = 4 * 1024 * 1024
"""Bytes of replies queued for one client before the member stops reading its requests."""


class Slot:
    """A reply's place in the connection's order; `data` is None until it is known."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data


class Listener:
    """A front end's listening socket and its connections."""

    def __init__(
        self, protocol: str, factory: Callable[[Listener], FrontendConnection], config: Config
    ) -> None:
        self.protocol = protocol
        self.factory = factory
        self.config = config
        self.connections: set[FrontendConnection] = set()
        self.accepted = 0
        self.refused = 0
        """Connections closed for bad input (protocol errors, unfinished requests)."""
        self.commands = 0
        self._server: asyncio.Server | None = None

    async def start(
        self, host: str, port: int, label: str, tls: ssl.SSLContext | None = None, **context: Any
    ) -> str:
        """Listen (TLS with the member's context when it has one: every port of a member
        with tls_cert speaks TLS, as redis-server's tls-port and memcached -Z do); returns
        the bound address. A port already taken says which setting moves it
        (`{protocol}_port`), since the member refuses to start over it."""
        loop = asyncio.get_running_loop()
        factory = gated(lambda: self.factory(self), tls, self.config.data_handshake_timeout_s,
                        label, self._refused)  # fmt: skip
        try:
            self._server = await loop.create_server(
                factory, host, port, reuse_address=True, backlog=1024
            )
        except OSError as e:
            raise OSError(
                f"cannot listen on {host}:{port} for {label} ({e.strerror or e}); "
                f"set {self.protocol}_port to a free port"
            ) from e
        address = f"{host}:{self._server.sockets[0].getsockname()[1]}"
        log.info(f"{self.protocol} listening", address=address, tls=tls is not None, **context)
        return address

    def _refused(self) -> None:
        self.refused += 1

    async def stop(self, grace: float) -> None:
        """Accept no more; idle connections close now, busy ones once their replies are
        out or `grace` has passed."""
        if self._server is None:
            return
        self._server.close()
        waits = [asyncio.ensure_future(c.stop()) for c in list(self.connections)]
        if waits:
            await asyncio.wait(waits, timeout=grace)
        for c in list(self.connections):
            c.abort()
        self._server = None


class FrontendConnection(asyncio.Protocol):
    """Subclasses parse their protocol and turn requests into replies (`dispatch`)."""

    def __init__(self, listener: Listener, runner: Runner) -> None:
        self.listener = listener
        self.runner = runner
        self.config = listener.config
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.last_active = time.monotonic()
        """When the client last sent something (memcached's `stats conns`)."""
        self.slots: deque[Slot | Plan | KeyPlan] = deque()
        self.queue: deque[Any] = deque()  # requests parsed, not yet dispatched
        self.busy: asyncio.Task[None] | None = None  # a coroutine command running alone
        self.held: set[asyncio.Task[None]] = set()  # batches waiting on `later`
        self.closing = False  # no more requests are dispatched; close once replies are out
        self.eof = False  # the client sent all it will: close once it is answered
        self._reading_paused = False
        self._paused_for_writes = False
        self._timer: asyncio.TimerHandle | None = None
        self._placed = False  # the member has a partition table (once it has, for good)

    # ---- what a protocol supplies -------------------------------------------------------------
    def parse(self, data: bytes) -> list[Any]:
        """The whole requests in `data` (plus what was buffered before)."""
        raise NotImplementedError

    def parse_error(self) -> bytes | None:
        """The reply to a protocol error the parser met (the connection then closes)."""
        raise NotImplementedError

    @property
    def partial(self) -> bool:
        """Whether part of a request is buffered."""
        raise NotImplementedError

    def dispatch(self, request: Any) -> Reply:
        raise NotImplementedError

    def internal_error(self, e: Exception) -> bytes:
        """The reply to a command that failed with a bug (the connection goes on)."""
        raise NotImplementedError

    # ---- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.listener.connections.add(self)
        self.listener.accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        self._cancel_timer()
        self.transport = None
        self.closing = True
        if self.busy is not None:
            self.busy.cancel()
        for t in self.held:
            t.cancel()

    def pause_writing(self) -> None:
        self._paused_for_writes = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused_for_writes = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = time.monotonic()
        requests = self.parse(data)
        self.listener.commands += len(requests)
        self.queue.extend(requests)
        error = self.parse_error()
        if error is not None:
            self.listener.refused += 1
            log.warning(
                "front-end connection closed: protocol error",
                peer=self.peer,
                protocol=self.listener.protocol,
                error=error.decode(errors="replace"),
            )
            self.queue.append(Close(error))
        self._drain()
        if not self.closing:
            self._arm_partial_timer()

    def eof_received(self) -> bool | None:
        # The client is done sending: answer what it asked, then close (True keeps the
        # write side open until then).
        self.eof = True
        if self.slots or self.queue or self.busy is not None:
            return True
        return None

    # ---- requests to replies -----------------------------------------------------------------
    def _drain(self) -> None:
        """Dispatch queued requests until one must run alone; write what is ready.

        Consecutive Plans run as one batch, consecutive KeyPlans as another: a run of
        one kind ends where the other kind begins, as at max_batch_ops."""
        ops: list[pb.Op] = []  # of the plans gathered into the next batch
        plans: list[Plan] = []
        keys: list[KeyPlan] = []  # or the KeyPlans gathered into it
        queue, slots, dispatch = self.queue, self.slots, self.dispatch
        max_ops = self.runner.max_ops
        if not self._placed:
            self._placed = self.runner.placed()
        while queue and self.busy is None:
            if not self._placed:
                self.busy = asyncio.get_running_loop().create_task(self._until_placed())
                break
            item = queue.popleft()
            if type(item) is Close:
                reply: Reply = item
            else:
                try:
                    reply = dispatch(item)
                except Exception as e:  # a bug costs its command, not the connection
                    log.exception("front-end command failed", protocol=self.listener.protocol)
                    reply = self.internal_error(e)
            kind = type(reply)
            if kind is KeyPlan:  # (no cast() here: a call a command, on the hottest path)
                if ops:
                    self._run(ops, plans)
                    ops, plans = [], []
                elif len(keys) >= max_ops:
                    self._run_keys(keys)
                    keys = []
                keys.append(reply)  # type: ignore[arg-type]
                slots.append(reply)  # type: ignore[arg-type]
            elif kind is Plan:
                if keys:
                    self._run_keys(keys)
                    keys = []
                plan = cast(Plan, reply)
                if len(ops) + len(plan.ops) > max_ops and ops:
                    self._run(ops, plans)
                    ops, plans = [], []
                ops += plan.ops
                slots.append(plan)
                plans.append(plan)
            elif kind is bytes:
                slots.append(Slot(cast(bytes, reply)))
            elif kind is Close:
                slots.append(Slot(cast(Close, reply).data))
                self.closing = True
                queue.clear()
            else:  # a coroutine: it runs alone, after the batch before it
                if ops:
                    self._run(ops, plans)
                    ops, plans = [], []
                if keys:
                    self._run_keys(keys)
                    keys = []
                slot = Slot()
                slots.append(slot)
                self.busy = asyncio.get_running_loop().create_task(
                    self._alone(cast(Awaitable[bytes], reply), slot)
                )
        if ops:
            self._run(ops, plans)
        elif keys:
            self._run_keys(keys)
        self._flush()
        self._update_reading()

    def _run(self, ops: list[pb.Op], plans: list[Plan]) -> None:
        if self.held and self.runner.waits_before_forwarding:  # see the module doc
            task = asyncio.get_running_loop().create_task(self._after(list(self.held), ops, plans))
        else:
            results, later = self.runner.run(pb.BatchRequest(ops=ops))
            if later is None:
                self._finish(results, plans)
                return
            task = asyncio.get_running_loop().create_task(
                self._later(plans, later, functools.partial(self._finish, results, plans))
            )
        self.held.add(task)
        task.add_done_callback(self._released)

    def _run_keys(self, keys: list[KeyPlan]) -> None:
        if self.held and self.runner.waits_before_forwarding:  # see the module doc
            task = asyncio.get_running_loop().create_task(self._after(list(self.held), [], keys))
        else:
            later = self.runner.run_keys(keys)
            if later is None:
                self._finish_keys(keys)
                return
            task = asyncio.get_running_loop().create_task(
                self._later(keys, later, functools.partial(self._finish_keys, keys))
            )
        self.held.add(task)
        task.add_done_callback(self._released)

    async def _after(
        self, before: list[asyncio.Task[None]], ops: list[pb.Op], plans: Sequence[Plan | KeyPlan]
    ) -> None:
        """Run a batch (of Plans with their `ops`, or of KeyPlans) once `before` is done."""
        await asyncio.gather(*before, return_exceptions=True)
        if ops:
            results, later = self.runner.run(pb.BatchRequest(ops=ops))
            done = functools.partial(self._finish, results, cast(list[Plan], plans))
        else:
            keys = cast(list[KeyPlan], plans)
            later = self.runner.run_keys(keys)
            done = functools.partial(self._finish_keys, keys)
        if later is None:
            done()
            self._flush()
        else:
            await self._later(plans, later, done)

    def _finish_keys(self, keys: list[KeyPlan]) -> None:
        for plan in keys:
            try:
                plan.data = plan.finish(plan)
            except Exception as e:
                log.exception("front-end reply failed", protocol=self.listener.protocol)
                plan.data = self.internal_error(e)

    def _finish(self, results: Sequence[pb.Result], plans: list[Plan]) -> None:
        at = 0
        for plan in plans:
            n = len(plan.ops)
            try:
                data = plan.finish(results[at : at + n] if n != 1 else (results[at],))
            except Exception as e:
                log.exception("front-end reply failed", protocol=self.listener.protocol)
                data = self.internal_error(e)
            if type(data) is bytes:
                plan.data = data
            else:  # what it read calls for a write first (a memcached win token): it waits
                task = asyncio.get_running_loop().create_task(self._settle(plan, data))
                self.held.add(task)
                task.add_done_callback(self._released)
            at += n

    async def _settle(self, plan: Plan, pending: Awaitable[bytes]) -> None:
        """The reply of a plan whose finish needed more calls; the replies after it wait
        in their slots meanwhile, so the order holds."""
        try:
            plan.data = await pending
        except Exception as e:
            log.exception("front-end reply failed", protocol=self.listener.protocol)
            plan.data = self.internal_error(e)
        self._flush()

    async def _later(
        self,
        plans: Sequence[Plan | KeyPlan],
        later: Callable[[], Awaitable[None]],
        done: Callable[[], None],
    ) -> None:
        """Wait for what a batch's replies wait for, then make them (`done`)."""
        try:
            await later()
        except Exception as e:  # a bug in a wait must not lose the replies
            log.exception("held front-end batch failed", protocol=self.listener.protocol)
            for plan in plans:
                plan.data = self.internal_error(e)
        else:
            done()
        self._flush()

    async def _alone(self, command: Awaitable[bytes], slot: Slot) -> None:
        try:
            if self.held:  # its reads must see the writes of the batches before it
                await asyncio.gather(*self.held, return_exceptions=True)
            slot.data = await command
        except asyncio.CancelledError:
            if inspect.iscoroutine(command):
                command.close()  # cancelled before it started: no "never awaited" warning
            raise
        except Exception as e:
            log.exception("front-end command failed", protocol=self.listener.protocol)
            slot.data = self.internal_error(e)
        self.busy = None
        if self.transport is not None:
            self._drain()

    async def _until_placed(self) -> None:
        deadline = asyncio.get_running_loop().time() + READY_WAIT_S
        while not self.runner.placed() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        self._placed = True  # placed, or waited long enough: run, and say so if it fails
        self.busy = None
        if self.transport is not None:
            self._drain()

    def _released(self, task: asyncio.Task[None]) -> None:
        self.held.discard(task)
        self._update_reading()

    # ---- plumbing ----------------------------------------------------------------------------
    def _flush(self) -> None:
        """Write the replies at the head of the order that are ready."""
        slots = self.slots
        out = []
        while slots and slots[0].data is not None:
            out.append(slots.popleft().data)
        t = self.transport
        if t is None:
            return
        if out:
            t.write(b"".join(out) if len(out) > 1 else out[0])
        if (self.closing or self.eof) and not slots and not self.queue and self.busy is None:
            self._cancel_timer()
            t.close()

    def _update_reading(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        waiting = len(self.slots) >= MAX_HELD or (self.busy is not None and len(self.queue) > 64)
        want_pause = self._paused_for_writes or waiting
        if want_pause and not self._reading_paused:
            self._reading_paused = True
            t.pause_reading()
        elif not want_pause and self._reading_paused:
            self._reading_paused = False
            t.resume_reading()

    def _arm_partial_timer(self) -> None:
        if self.partial:
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(
                    self.config.data_frame_timeout_s, self._timed_out
                )
        else:
            self._cancel_timer()

    def _timed_out(self) -> None:
        self._timer = None
        self.listener.refused += 1
        log.warning("front-end connection closed: a request left unfinished", peer=self.peer,
                    protocol=self.listener.protocol,
                    timeout_s=self.config.data_frame_timeout_s)  # fmt: skip
        self.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def stop(self) -> None:
        """For shutdown: close once the replies owed are written."""
        self.closing = True
        self.queue.clear()
        waits = list(self.held) + ([self.busy] if self.busy is not None else [])
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
