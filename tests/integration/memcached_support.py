"""Helpers for the memcached tests: a raw client and a real memcached to compare with.

The raw client sends exactly the bytes a test gives and returns the exact bytes that
came back: each step is sent with an `mn` (meta no-op) after it, and its reply is
everything before the `MN` that answers the no-op, so a step's reply is cut out of
the stream without knowing the reply's shape. CAS uniques differ between servers
(memcached counts, grid uses its versions), so `normalize` hides them.
"""

from __future__ import annotations

import re
import shutil
import socket
from contextlib import AbstractContextManager

from grid.harness.cluster import free_port
from tests.integration.support import reference_server

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"
_VALUE_CAS = re.compile(rb"^(VALUE \S+ \d+ \d+) \d+\r$", re.M)
_META_CAS = re.compile(rb"(?<= )c\d+(?=[ \r])")
_ME_CAS = re.compile(rb"cas=\d+")
_CAS_LINE = re.compile(rb"^VALUE \S+ \d+ \d+ (\d+)\r$", re.M)


def normalize(reply: bytes) -> bytes:
    """A reply with its CAS uniques replaced by 'CAS'."""
    reply = _VALUE_CAS.sub(rb"\1 CAS\r", reply)
    reply = _META_CAS.sub(b"cCAS", reply)
    return _ME_CAS.sub(b"cas=CAS", reply)


def cas_of(reply: bytes) -> bytes | None:
    """The CAS unique of the first item in a gets reply."""
    found = _CAS_LINE.search(reply)
    return found.group(1) if found else None


class RawMemcache:
    """One connection; `step` sends bytes and returns the bytes they were answered with."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def step(self, data: bytes) -> bytes:
        self.send(data + b"mn\r\n")
        return self.until(b"MN\r\n")

    def until(self, end: bytes) -> bytes:
        """The bytes up to `end` (which is read and dropped)."""
        while True:
            at = self.buf.find(end)
            if at >= 0 and (at == 0 or self.buf[at - 2 : at] == b"\r\n"):
                out, self.buf = self.buf[:at], self.buf[at + len(end) :]
                return out
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; read {self.buf!r}")
            self.buf += chunk

    def rest(self, timeout: float = 5.0) -> tuple[bytes, bool]:
        """What the server sends until it closes or goes quiet, and whether it closed."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return self.buf, True
                self.buf += chunk
        except TimeoutError:
            return self.buf, False
        except ConnectionResetError:
            return self.buf, True


def memcached_server(*args: str) -> AbstractContextManager[str]:
    """A real memcached on a free loopback port."""
    port = free_port()
    return reference_server(
        "memcached",
        [MEMCACHED, "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-u", "nobody", *args],
        port,
    )
