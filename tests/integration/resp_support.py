"""Helpers for the RESP tests: a raw RESP client and a real redis-server to compare with.

The raw client sends exactly the bytes a test gives and returns each reply as the
exact bytes on the wire, so a test compares grid's replies with Redis's byte for byte
(redis-py would hide differences in types and error prefixes).
"""

from __future__ import annotations

import shutil
import socket
from contextlib import AbstractContextManager

from grid.harness.cluster import free_port
from tests.integration.support import reference_server

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def encode(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


class RawResp:
    """One connection; `call` sends a command and returns its reply's raw bytes."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, *args: bytes | str | int) -> bytes:
        self.send(encode(*args))
        return self.reply()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def _line(self, pos: int) -> int:
        while True:
            end = self.buf.find(b"\r\n", pos)
            if end >= 0:
                return end
            self._fill()

    def _skip(self, pos: int) -> int:
        """The end of the reply starting at pos."""
        end = self._line(pos)
        kind = self.buf[pos : pos + 1]
        if kind in (b"$", b"=", b"!"):
            n = int(self.buf[pos + 1 : end])
            if n < 0:
                return end + 2
            while len(self.buf) < end + 2 + n + 2:
                self._fill()
            return end + 2 + n + 2
        if kind in (b"*", b"~", b">", b"%", b"|"):
            n = int(self.buf[pos + 1 : end])
            if kind in (b"%", b"|"):
                n *= 2
            pos = end + 2
            for _ in range(max(n, 0)):
                pos = self._skip(pos)
            return pos
        return end + 2

    def reply(self) -> bytes:
        end = self._skip(0)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closed the connection (after what it sent is read)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def redis_server(*args: str) -> AbstractContextManager[str]:
    """A real redis-server on a free loopback port, without persistence."""
    port = free_port()
    return reference_server(
        "redis-server",
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", *args],
        port,
    )  # fmt: skip
