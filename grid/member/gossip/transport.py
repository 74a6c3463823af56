"""The membership transport: one UDP socket for probes and gossip, one TCP
listener on the same port for stream messages (push-pull state sync and the
TCP fallback probe), and one-shot TCP connections to send them.

Why TCP is one message per connection: stream traffic is rare (a push-pull
every 30 s, a fallback probe only when UDP got no answer), and a fresh
connection per message needs no pooling, reconnect or head-of-line logic.
Reads are bounded: a frame is a 4-byte big-endian length plus that many
bytes, the length is checked against `max_frame` before anything is read,
and a connection must deliver its frame within `read_timeout`, so a peer
that sends garbage or nothing cannot hold memory or a task for long.  The
number of inbound connections handled at once is capped too.

The transport moves bytes; it does not seal or open them (security.py) and
never raises into its caller: send failures are counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from collections.abc import Callable

from grid import logs

log = logs.get("grid.member.gossip")

Handler = Callable[[bytes, str], None]
"""handler(data, source "host:port")."""

FRAME_HEADER = struct.Struct(">I")
MAX_INBOUND_CONNECTIONS = 64


def split_addr(addr: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; ValueError if it is neither."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host:
        raise ValueError(f"not host:port: {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"bad port in {addr!r}")
    return host, number


def join_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple) -> None:
        self._t._on_datagram(data, join_addr(addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable after sending to a dead member: expected, not an error
        self._t.errors["udp_error"] += 1


class Transport:
    """UDP + TCP on one host:port.  Handlers run on the event loop."""

    def __init__(
        self,
        on_datagram: Handler,
        on_stream: Handler,
        *,
        max_datagram: int,
        max_frame: int,
        read_timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self._on_datagram_cb = on_datagram
        self._on_stream_cb = on_stream
        self.max_datagram = max_datagram
        self.max_frame = max_frame
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.errors: Counter[str] = Counter()
        """Transport-level problems: udp_error, stream_oversized, stream_timeout,
        stream_send_failed, busy (too many inbound connections)."""
        self.oversized_datagrams = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbound = 0
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Bind UDP and TCP on host:port (port 0: a free port, the same for both)."""
        loop = asyncio.get_running_loop()
        for _attempt in range(20 if port == 0 else 1):
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self), local_addr=(host, port), reuse_port=False
                )
            except OSError as e:
                raise OSError(
                    f"cannot bind the gossip UDP port {join_addr(host, port)}: {e.strerror or e}"
                ) from e
            bound = udp.get_extra_info("sockname")[1]
            try:
                server = await asyncio.start_server(
                    self._serve, host, bound, reuse_address=True, limit=64 * 1024
                )
            except OSError as e:
                udp.close()
                if port == 0:
                    continue  # the free UDP port is taken for TCP: try another
                raise OSError(
                    f"cannot bind the gossip TCP port {join_addr(host, bound)}: {e.strerror or e}"
                ) from e
            self._udp, self._server = udp, server
            self.host, self.port = host, bound
            sock = udp.get_extra_info("socket")
            with contextlib.suppress(OSError):  # a burst of gossip must not be dropped locally
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            return
        raise OSError(f"no free port on {host} for both UDP and TCP")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- sending --------------------------------------------------------------------------
    def send_datagram(self, addr: str, data: bytes) -> None:
        if self._udp is None:
            return
        try:
            self._udp.sendto(data, split_addr(addr))
        except (OSError, ValueError) as e:
            self.errors["udp_send_failed"] += 1
            log.debug("gossip datagram not sent", to=addr, error=str(e))

    def send_stream(self, addr: str, data: bytes) -> None:
        """Connect, write one frame, close; in the background."""
        if self._server is None:
            return
        task = asyncio.get_running_loop().create_task(self._send_stream(addr, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_stream(self, addr: str, data: bytes) -> None:
        writer = None
        try:
            host, port = split_addr(addr)
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.connect_timeout
            )
            writer.write(FRAME_HEADER.pack(len(data)) + data)
            await asyncio.wait_for(writer.drain(), self.read_timeout)
        except (OSError, ValueError, TimeoutError) as e:
            self.errors["stream_send_failed"] += 1
            log.debug("gossip stream message not sent", to=addr, error=str(e) or type(e).__name__)
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)

    # ---- receiving ------------------------------------------------------------------------
    def _on_datagram(self, data: bytes, src: str) -> None:
        if len(data) > self.max_datagram:
            self.oversized_datagrams += 1
            return
        self._on_datagram_cb(data, src)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        src = join_addr(peer[0], peer[1]) if peer else "?"
        if self._inbound >= MAX_INBOUND_CONNECTIONS:
            self.errors["busy"] += 1
            writer.close()
            return
        self._inbound += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            # a sender may put several frames on one connection; each is bounded
            while True:
                try:
                    header = await asyncio.wait_for(
                        reader.readexactly(FRAME_HEADER.size), self.read_timeout
                    )
                except asyncio.IncompleteReadError as e:
                    if e.partial:
                        self.errors["stream_truncated"] += 1
                    return
                (size,) = FRAME_HEADER.unpack(header)
                if size > self.max_frame:
                    self.errors["stream_oversized"] += 1
                    return
                data = await asyncio.wait_for(reader.readexactly(size), self.read_timeout)
                self._on_stream_cb(data, src)
        except asyncio.IncompleteReadError:
            self.errors["stream_truncated"] += 1
        except TimeoutError:
            self.errors["stream_timeout"] += 1
        except OSError:
            self.errors["stream_error"] += 1
        finally:
            self._inbound -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
