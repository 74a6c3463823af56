"""memcached requests, cut out of a byte stream: a bounded, incremental, sans-IO parser.

A request is a command line (ended by `\\n`, an optional `\\r` before it dropped),
split on spaces, and for the storage commands (set, add, replace, append,
prepend, cas, ms) a data block of the length the line gives plus `\\r\\n`. Whether
a block follows is decided by grammar.py, as memcached decides it: a storage line
it would refuse (a bad number, a key too long) has no block, and what the client
sends next is read as commands.

What memcached does with blocks that do not fit, the parser does too:

- a block larger than `max_item` is read and dropped, not kept (the request is
  marked TOO_LARGE: "SERVER_ERROR object too large for cache");
- a block not followed by `\\r\\n` is marked BAD_CHUNK ("CLIENT_ERROR bad data
  chunk") and parsing goes on after the bytes its length covered.

A protocol error ends the stream (the connection answers what came before, then
the error, then closes): a line longer than `max_line` without its end (a get,
gets, gat or gats line: `max_block`), or a block longer than `max_block` (more
than any value could be; memcached would read and drop it, which a client could
make last forever). `feed` then returns the requests before it and sets `error`.

Memory: the parser holds at most one unfinished request: a line (up to its limit)
or a block (up to `max_item` + 2); a block being dropped costs a count only.
Neither is re-parsed per packet: a packet without a line end is appended to the
line it continues, and `need` says how many bytes of a block must be buffered
before parsing resumes.
"""

from __future__ import annotations

from grid.frontends.memcached.grammar import StoreLine, data_length

OK, TOO_LARGE, BAD_CHUNK = 0, 1, 2
MAX_LINE = 64 * 1024
"""Longest command line other than a retrieval's (get, gets, gat, gats: up to
`max_block`, as memcached reads a multi-get of any length)."""
RETRIEVALS = (b"get ", b"gets ", b"gat ", b"gats ")


class Request:
    """A command line's tokens, its data block (storage commands), what was wrong with
    the block (`problem`: OK, TOO_LARGE or BAD_CHUNK), and a text storage command's
    parsed header (`head`, else None)."""

    __slots__ = ("args", "data", "head", "problem")

    def __init__(
        self,
        args: list[bytes],
        data: bytes | None = None,
        problem: int = OK,
        head: StoreLine | None = None,
    ) -> None:
        self.args = args
        self.data = data
        self.problem = problem
        self.head = head

    def __repr__(self) -> str:
        return f"Request({self.args!r}, {self.data!r}, {self.problem})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and (self.args, self.data, self.problem) == (
            other.args,
            other.data,
            other.problem,
        )


class MemcacheParser:
    """Feed it bytes as they arrive; it returns the whole requests among them."""

    __slots__ = ("_block", "_head", "_line", "_rest", "_short", "_skip", "error",
                 "max_block", "max_item", "max_line", "need")  # fmt: skip

    def __init__(self, max_item: int, max_block: int, max_line: int = MAX_LINE) -> None:
        self.max_item = max_item
        self.max_block = max_block
        self.max_line = max_line
        self._short = min(max_line, max_block)  # a line this long is within either limit
        self.error: str | None = None
        """Set once the stream broke the protocol: the error line to answer."""
        self.need = 0
        """Buffered bytes needed before parsing can make progress."""
        self._rest = bytearray()
        self._line: list[bytes] | None = None  # a storage line whose block is awaited
        self._block = 0  # that block's length
        self._head: StoreLine | None = None  # that line's parsed header (text storage)
        self._skip = 0  # bytes of a too-large block still to drop

    @property
    def partial(self) -> bool:
        """Whether part of a request is buffered (a client that stops there is stuck)."""
        return bool(self._rest) or self._line is not None or self._skip > 0

    def _line_limit(self, buf: bytes | bytearray, pos: int) -> int:
        """How long the line starting at `pos` may be: a retrieval line may name as many
        keys as a message may hold (clients do not split their multi-gets), any other
        `max_line`."""
        if buf.startswith(RETRIEVALS, pos):
            return self.max_block
        return self.max_line

    def feed(self, data: bytes) -> list[Request]:
        if self.error is not None:
            return []
        out: list[Request] = []
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
            if self._skip:
                return out
            assert self._line is not None
            out.append(Request(self._line, None, TOO_LARGE, self._head))
            self._line = None
        if self._rest:
            if self._line is None and b"\n" not in data:  # still inside one command line
                self._rest += data
                if len(self._rest) > self._line_limit(self._rest, 0):
                    self.error = "CLIENT_ERROR line too long"
                    self._rest = bytearray()
                return out
            self._rest += data
            if len(self._rest) < self.need:
                return out
            buf = bytes(self._rest)
        else:
            if len(data) < self.need:
                self._rest += data
                return out
            buf = data
        self.need = 0
        pos = self._parse(buf, out)
        if self.error is not None or self._skip:  # (a block being dropped took the rest)
            self._rest = bytearray()
        else:
            self._rest = bytearray(buf[pos:]) if pos < len(buf) else bytearray()
        return out

    def _parse(self, buf: bytes, out: list[Request]) -> int:
        pos, n = 0, len(buf)
        while pos < n or self._line is not None:
            line = self._line
            if line is not None:  # a block is awaited
                size = self._block
                end = pos + size
                if end + 2 > n:
                    self.need = end + 2 - pos
                    return pos
                if buf[end : end + 2] == b"\r\n":
                    out.append(Request(line, buf[pos:end], OK, self._head))
                else:
                    out.append(Request(line, None, BAD_CHUNK, self._head))
                self._line = None
                pos = end + 2
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if n - pos > self._line_limit(buf, pos):
                    self.error = "CLIENT_ERROR line too long"
                return pos
            if nl - pos > self._short and nl - pos > self._line_limit(buf, pos):
                self.error = "CLIENT_ERROR line too long"
                return pos
            end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
            args = buf[pos:end].split(b" ")
            if b"" in args:
                args = [a for a in args if a]
            pos = nl + 1
            framing = data_length(args) if args else None
            if framing is None:
                out.append(Request(args))
                continue
            if type(framing) is int:
                head, size = None, framing
            else:
                head = framing
                size = head.length  # type: ignore[union-attr]
            if size > self.max_item:
                if size > self.max_block:
                    self.error = "SERVER_ERROR object too large for cache"
                    return pos
                left = n - pos
                if left >= size + 2:
                    out.append(Request(args, None, TOO_LARGE, head))
                    pos += size + 2
                    continue
                self._skip = size + 2 - left
                self._line, self._head = args, head
                return n
            self._line, self._head = args, head
            self._block = size
        return pos
