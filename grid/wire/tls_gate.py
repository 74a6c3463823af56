"""A TLS server handshake whose failure is seen: the audit line for a refused connection.

asyncio and uvloop servers given an SSL context run the handshake themselves and drop a
connection that fails it without a word (asyncio logs it only in debug mode), so a
client without the CA, without a certificate, or speaking plain TCP to a TLS port left
nothing in the member's log. Here the server accepts plain TCP and `TlsGate` runs the
handshake with `loop.start_tls`: a failure is logged as `TLS handshake refused` with
the port, the peer and the reason, counted (`refused`), and the socket closed; a success
hands the TLS transport to the real protocol, which never sees the difference.

The ClientHello may already have been read when the gate starts the handshake: uvloop
starts reading a new connection right after `connection_made`, whatever the protocol
asks (measured: every one of 30 concurrent handshakes hung until this was handled).
Bytes read before `start_tls` took the transport over are handed to its TLS protocol
once it is in place: `start_tls` installs it and schedules its `connection_made` before
its first await, so two turns of the loop later it is ready for them (asyncio and uvloop
alike; tests/wire/test_tls_gate.py runs both with concurrent clients).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from grid import logs

log = logs.get("grid.wire.tls")


class TlsGate(asyncio.Protocol):
    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        timeout: float,
        port: str,
        refused: Callable[[], None],
    ) -> None:
        self.factory = factory
        self.context = context
        self.timeout = timeout
        self.port = port
        """Which port, for the log line: data plane, RESP, memcached, dashboard."""
        self.refused = refused
        self.inner: asyncio.Protocol | None = None
        self.raw_early: list[bytes] = []  # read before the TLS protocol took over
        self.plain_early: list[bytes] = []  # decrypted, before the inner protocol is set
        self.handing = False  # start_tls has the transport: what arrives is decrypted
        self.ended = False
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.task = asyncio.get_running_loop().create_task(self._handshake(transport))

    async def _handshake(self, raw: Any) -> None:
        peer = raw.get_extra_info("peername")
        who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        loop = asyncio.get_running_loop()
        upgrade = loop.create_task(loop.start_tls(
            raw, self, self.context, server_side=True, ssl_handshake_timeout=self.timeout
        ))  # fmt: skip
        await asyncio.sleep(0)  # start_tls installs its protocol, schedules connection_made
        await asyncio.sleep(0)  # ... which has run now
        self.handing = True
        if self.raw_early and not upgrade.done():
            _feed(raw.get_protocol(), b"".join(self.raw_early))
        self.raw_early.clear()
        try:
            secured = await upgrade
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as e:
            self.refused()
            log.warning("TLS handshake refused", port=self.port, peer=who, reason=_reason(e))
            raw.close()
            return
        if secured is None or secured.is_closing():
            return  # the client left right after the handshake
        inner = self.factory()
        self.inner = inner
        secured.set_protocol(inner)
        inner.connection_made(secured)
        for data in self.plain_early:
            inner.data_received(data)
        self.plain_early.clear()
        if self.ended:
            inner.eof_received()

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)
        elif self.handing:
            self.plain_early.append(data)
        else:
            self.raw_early.append(data)

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            return self.inner.eof_received()
        self.ended = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


def _feed(protocol: Any, data: bytes) -> None:
    """Hand raw bytes to the TLS protocol as its transport would: it is a buffered
    protocol in asyncio (3.11) and uvloop, else a plain one."""
    if hasattr(protocol, "get_buffer"):
        while data:
            buf = protocol.get_buffer(len(data))
            n = min(len(buf), len(data))
            buf[:n] = data[:n]
            protocol.buffer_updated(n)
            data = data[n:]
    else:
        protocol.data_received(data)


def _reason(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):
        return e.reason or str(e)
    if isinstance(e, TimeoutError):
        return "no handshake in time"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def gated(
    factory: Callable[[], asyncio.Protocol],
    context: ssl.SSLContext | None,
    timeout: float,
    port: str,
    refused: Callable[[], None] = lambda: None,
) -> Callable[[], asyncio.Protocol]:
    """The protocol factory a server is given: `factory` itself without TLS."""
    if context is None:
        return factory
    return lambda: TlsGate(factory, context, timeout, port, refused)
