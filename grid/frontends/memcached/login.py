"""memcached's text-protocol login (`memcached -Y`), before any other command.

memcached 1.6 has no authentication in its text protocol but this one: with an auth
file, a connection must first send a `set` whose data is `<user> <password>`; the key,
flags and expiry are ignored. Until then every command, `quit` and `version` too, is
answered `CLIENT_ERROR unauthenticated`, and nothing else is read. grid keeps the
scheme, so any memcached client that can send one raw `set` logs in, and checks the
pair with the member's credentials: the user `default` with the cluster's auth_token,
or one of the member's `users` with its password. The password crosses the network in
clear unless the port serves TLS (tls_cert), as with memcached.

What memcached 1.6.18 answers, byte for byte (tests/integration/test_memcached_vs_
memcached.py runs both against `memcached -Y`):

- a line that is not `set <key> <flags> <exptime> <bytes> ...` with a number of bytes
  (fewer than five tokens, another command, a bad number): `CLIENT_ERROR
  unauthenticated`; no data block is read after it;
- the data block not ended by CR LF: `CLIENT_ERROR bad command line termination`;
- fewer than two space-separated tokens in it: `CLIENT_ERROR bad authentication token
  format`;
- a pair the member does not accept: `CLIENT_ERROR authentication failure`;
- an accepted pair: `STORED` (even with noreply), and from the next byte on the
  connection speaks the whole protocol.

Limits memcached leaves to its buffer sizes are explicit here: a line of more than
`MAX_LINE` bytes without its end, or a block of more than `MAX_BLOCK`, closes the
connection (memcached closes on the first; the second it would wait for forever).
"""

from __future__ import annotations

from collections.abc import Callable

from grid.frontends.memcached.grammar import unsigned

MAX_LINE = 1024
MAX_BLOCK = 4096

UNAUTHENTICATED = b"CLIENT_ERROR unauthenticated\r\n"
BAD_TERMINATION = b"CLIENT_ERROR bad command line termination\r\n"
BAD_FORMAT = b"CLIENT_ERROR bad authentication token format\r\n"
FAILURE = b"CLIENT_ERROR authentication failure\r\n"
STORED = b"STORED\r\n"


class LoginGate:
    """Sans-IO: feed it bytes; it answers each login attempt, and once one succeeds it
    hands back what followed, for the protocol parser."""

    __slots__ = ("_buf", "_need", "accepts", "closed", "passed")

    def __init__(self, accepts: Callable[[bytes, bytes], bool]) -> None:
        self.accepts = accepts
        """(user, password) -> whether they may in."""
        self.passed = False
        self.closed = False
        """Set when the stream broke a limit: close the connection, answering nothing."""
        self._buf = b""
        self._need = 0  # the awaited data block's length with its CR LF; 0: a line

    @property
    def partial(self) -> bool:
        return bool(self._buf) or self._need > 0

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """The answers to the attempts completed by `data`, and, once logged in, the
        bytes after the successful one (else b"")."""
        buf = self._buf + data
        answers: list[bytes] = []
        while not (self.passed or self.closed):
            if self._need:
                if len(buf) < self._need:
                    break
                block, buf = buf[: self._need], buf[self._need :]
                self._need = 0
                answers.append(self._attempt(block))
                continue
            nl = buf.find(b"\n")
            if nl < 0:
                self.closed = len(buf) > MAX_LINE
                break
            tokens = [t for t in buf[:nl].rstrip(b"\r").split(b" ") if t]
            buf = buf[nl + 1 :]
            size = unsigned(tokens[4]) if len(tokens) >= 5 and tokens[0] == b"set" else None
            if size is None:
                answers.append(UNAUTHENTICATED)
            elif size > MAX_BLOCK:
                self.closed = True
            else:
                self._need = size + 2
        if self.passed:
            self._buf = b""
            return answers, buf
        self._buf = b"" if self.closed else buf
        return answers, b""

    def _attempt(self, block: bytes) -> bytes:
        if not block.endswith(b"\r\n"):
            return BAD_TERMINATION
        tokens = block[:-2].split(b" ")
        tokens = [t for t in tokens if t]
        if len(tokens) < 2:
            return BAD_FORMAT
        if not self.accepts(tokens[0], tokens[1]):
            return FAILURE
        self.passed = True
        return STORED
