"""RESP requests, cut out of a byte stream: a bounded, incremental, sans-IO parser.

What Redis accepts (networking.c, processMultibulkBuffer and processInlineBuffer),
with its error texts, so clients and test suites see the same thing:

- A request starting with `*` is a multibulk: `*<count>\\r\\n` then `count` bulks
  `$<len>\\r\\n<bytes>\\r\\n`. A count <= 0 is an empty request and is skipped. The two
  bytes after a bulk's data are skipped unchecked, as Redis does.
- Anything else is an inline request: one line (ended by `\\n`, an optional `\\r`
  before it dropped) split on blanks with Redis's quoting rules (sdssplitargs:
  "double quotes" with \\n \\r \\t \\b \\a \\xHH escapes, 'single quotes' with \\'); an
  empty line is skipped.
- A NUL byte before a line's end hides the end, as it does from Redis's strchr: the
  line is waited for (and refused past 64 KiB).
- Limits: a header line or inline request may not go past 64 KiB without its end
  (PROTO_INLINE_MAX_SIZE), a count past `max_args`, a bulk past `max_bulk`, and
  one request's bulks together past `max_request`; each is a protocol error.

A protocol error ends the stream: `feed` returns the requests before it, sets
`error` to the reply text ("Protocol error: ..."), and returns nothing after. The
server answers the requests, then the error, then closes (as Redis does).

Memory: the parser holds at most one request being assembled (its finished
bulks, plus the bytes of the current one), never more than the limits. A bulk
still arriving is not re-parsed per packet: `need` says how many bytes must be
buffered before parsing resumes, so a large value costs amortized appends only.
"""

from __future__ import annotations

INLINE_MAX = 64 * 1024
"""Redis's PROTO_INLINE_MAX_SIZE: the longest header line or inline request."""
MAX_ARGS = 1024 * 1024
"""Most arguments in one request: Redis 6's bound (7.0 allows INT_MAX and waits for
them). No command grid serves needs more, and a count beyond it is refused at once
rather than read; `max_request` bounds the bytes of the arguments either way."""
INT64_MAX = (1 << 63) - 1
_SMALL = {b"%d" % i: i for i in range(4096)}
"""Header numbers up to 4095 by their text: one dict lookup instead of a parse, for the
lengths nearly every request carries."""
_COUNTS = {b"*%d" % i: i for i in range(1, 4096)}
_BULKS = {b"$%d" % i: i for i in range(4096)}
"""Multibulk and bulk headers of the fast path, with their marks: no slicing to look up."""
_FAST_REQUEST_MAX = 7 + 4095 * (7 + 4095 + 2)
"""The most bytes a request of the fast path can take (4,095 arguments of 4,095 bytes):
below `max_request` and with `max_bulk` and `max_args` at 4,095 or more, the fast path
need not count bytes against the limits."""
_BLANK = b" \t\n\r\v\f"  # isspace(): skipped between words, and after a closing quote
_WORD_END = b" \t\n\r"  # what ends an unquoted word (not \v or \f: sdssplitargs)
_SLOW = (b'"', b"'", b"\v", b"\f")
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX = b"0123456789abcdefABCDEF"


def parse_ll(s: bytes) -> int | None:
    """A signed 64-bit integer written as Redis's string2ll accepts it (no sign but a
    leading minus, no blank, no leading zero), or None."""
    if s.isdigit():
        if (s[0] != 48 or len(s) == 1) and len(s) <= 19:
            n = int(s)
            return n if n <= INT64_MAX else None
        return None
    if len(s) > 1 and s[0] == 45 and s[1] != 48 and len(s) <= 20 and s[1:].isdigit():
        n = int(s)
        return n if n >= -INT64_MAX - 1 else None
    return None


def split_inline(line: bytes) -> list[bytes] | None:
    """Redis's sdssplitargs: the words of an inline request, None for unbalanced quotes.
    (The parser never passes a line with a NUL byte.)"""
    if not any(c in line for c in _SLOW):
        return line.split()  # (bytes.split splits on exactly these blanks then)
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _BLANK:
            i += 1
        if i >= n:
            return args
        word = bytearray()
        inq = insq = False
        while True:
            c = line[i] if i < n else 0
            if inq:
                if (
                    c == 92
                    and i + 3 < n
                    and line[i + 1] == 120
                    and line[i + 2] in _HEX
                    and line[i + 3] in _HEX
                ):
                    word.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    word.append(_ESCAPES.get(line[i], line[i]))
                elif c == 34:
                    if i + 1 < n and line[i + 1] not in _BLANK:
                        return None
                    i += 1
                    break
                elif i >= n:
                    return None
                else:
                    word.append(c)
            elif insq:
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    word.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in _BLANK:
                        return None
                    i += 1
                    break
                elif i >= n:
                    return None
                else:
                    word.append(c)
            elif i >= n or c in _WORD_END:
                break
            elif c == 34:
                inq = True
            elif c == 39:
                insq = True
            else:
                word.append(c)
            i += 1
        args.append(bytes(word))


class RespParser:
    """Feed it bytes as they arrive; it returns the whole requests among them."""

    __slots__ = ("_args", "_left", "_rest", "_size", "error", "max_args", "max_bulk",
                 "max_request", "need", "unbounded")  # fmt: skip

    def __init__(self, max_bulk: int, max_request: int, max_args: int = MAX_ARGS) -> None:
        self.max_bulk = max_bulk
        self.max_request = max_request
        self.max_args = max_args
        self.error: str | None = None
        """Set once the stream broke the protocol: the error reply, "Protocol error: ..."."""
        self.need = 0
        """Buffered bytes needed before parsing can make progress."""
        self._rest = bytearray()
        self._args: list[bytes] | None = None  # the multibulk being assembled
        self._left = 0  # its bulks still to come
        self._size = 0  # its bytes so far
        self.unbounded = min(max_bulk, max_args) >= 4095 and max_request >= _FAST_REQUEST_MAX
        """No request the fast path takes can reach a limit (see _FAST_REQUEST_MAX)."""

    @property
    def partial(self) -> bool:
        """Whether part of a request is buffered (a client that stops there is stuck)."""
        return bool(self._rest) or self._args is not None

    def _fail(self, why: str) -> None:
        """(`why` may hold a byte of the request as the character of the same code.)"""
        self.error = f"Protocol error: {why}"
        self._rest = bytearray()
        self._args = None

    def feed(self, data: bytes) -> list[list[bytes]]:
        if self.error is not None:
            return []
        if self._rest:
            self._rest += data
            if len(self._rest) < self.need:
                return []
            buf = bytes(self._rest)
        else:
            if len(data) < self.need:
                self._rest += data
                return []
            buf = data
        self.need = 0
        out: list[list[bytes]] = []
        pos = self._parse(buf, out)
        if self.error is None:
            self._rest = bytearray(buf[pos:]) if pos < len(buf) else bytearray()
        return out

    def _fast(self, buf: bytes, out: list[list[bytes]]) -> int:
        """The common case, cheaply: whole multibulk requests of small arguments (counts and
        lengths under 4096) with no CR LF inside them, cut by one `split`. Stops at the
        first request that is anything else (or unfinished) and returns where; `_parse`
        goes on from there, so the two agree on every stream (the split tests hold them
        to it). An argument holding CR LF is cut in two by the split, so the part after
        its header is shorter than the header says and the check stops there."""
        if not self.unbounded:
            return self._fast_bounded(buf, out)
        parts = buf.split(b"\r\n")
        last = len(parts) - 2  # the last part is what follows the final CR LF
        counts, bulks = _COUNTS.get, _BULKS.get
        i = 0
        while i <= last:
            count = counts(parts[i])
            if count is None:
                break
            end = i + 1 + 2 * count
            if end > last + 1:
                break
            k = i + 1
            while k < end and bulks(parts[k]) == len(parts[k + 1]):
                k += 2
            if k < end:
                break
            out.append(parts[i + 2 : end : 2])
            i = end
        if i > last:  # all of it up to the final CR LF (the commonest: a whole pipeline)
            return len(buf) - len(parts[-1])
        return sum(map(len, parts[:i])) + 2 * i if i else 0

    def _fast_bounded(self, buf: bytes, out: list[list[bytes]]) -> int:
        """`_fast` where a request it takes could reach a limit: it counts each one."""
        parts = buf.split(b"\r\n")
        last = len(parts) - 2  # the last part is what follows the final CR LF
        small = _SMALL.get
        max_bulk, max_request, max_args = self.max_bulk, self.max_request, self.max_args
        i = pos = 0
        while i <= last:
            head = parts[i]
            if head[:1] != b"*":
                break
            count = small(head[1:])
            if not count or count > max_args or i + 2 * count > last:
                break
            end = i + 1 + 2 * count
            size = len(head) + 2
            for k in range(i + 1, end, 2):
                h, arg = parts[k], parts[k + 1]
                if h[:1] != b"$" or small(h[1:]) != len(arg) or len(arg) > max_bulk:
                    return pos
                size += len(h) + len(arg) + 4
            if size > max_request:
                break
            out.append(parts[i + 2 : end : 2])
            pos += size
            i = end
        return pos

    def _parse(self, buf: bytes, out: list[list[bytes]]) -> int:
        """Parse from the start of `buf`; returns where the unparsed bytes begin."""
        pos, n = 0, len(buf)
        if self._args is None and buf[:1] == b"*":
            pos = self._fast(buf, out)
        while pos < n:
            args = self._args
            if args is None:
                if buf[pos] != 42:  # not '*': an inline request
                    nl = buf.find(b"\n", pos)
                    if nl >= 0 and 0 in buf[pos:nl]:
                        nl = -1  # Redis's strchr stops at a NUL: no line end yet
                    if nl < 0:
                        if n - pos > INLINE_MAX:
                            self._fail("too big inline request")
                        return pos
                    end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
                    words = split_inline(buf[pos:end])
                    if words is None:
                        self._fail("unbalanced quotes in request")
                        return pos
                    pos = nl + 1
                    if words:
                        out.append(words)
                    continue
                nl = buf.find(b"\r", pos)
                if nl < 0 or nl + 1 >= n:
                    if nl < 0 and n - pos > INLINE_MAX:
                        self._fail("too big mbulk count string")
                    return pos
                head = buf[pos + 1 : nl]
                count = _SMALL.get(head)
                if count is None:
                    count = parse_ll(head)
                if count is None or count > self.max_args:
                    if 0 in buf[pos:nl]:  # Redis's strchr stops there: no line end yet
                        if n - pos > INLINE_MAX:
                            self._fail("too big mbulk count string")
                        return pos
                    self._fail("invalid multibulk length")
                    return pos
                pos = nl + 2
                if count <= 0:
                    continue
                args = self._args = []
                self._left = count
                self._size = 0
            # the bulks: the hot loop, with its attributes in locals
            left, size_so_far, max_bulk = self._left, self._size, self.max_bulk
            find, small, append = buf.find, _SMALL.get, args.append
            while left:
                if pos >= n:
                    break
                nl = find(b"\r", pos)
                if nl < 0 or nl + 1 >= n:
                    if nl < 0 and n - pos > INLINE_MAX:
                        self._fail("too big bulk count string")
                        return pos
                    break
                size = None
                if buf[pos] == 36:  # '$'
                    head = buf[pos + 1 : nl]
                    size = small(head)
                    if size is None:
                        size = parse_ll(head)
                if size is None or size < 0 or size > max_bulk:
                    if 0 in buf[pos:nl]:  # Redis's strchr stops there: no line end yet
                        if n - pos > INLINE_MAX:
                            self._fail("too big bulk count string")
                            return pos
                        break
                    if buf[pos] != 36:
                        self._fail(f"expected '$', got '{chr(buf[pos])}'")
                    else:
                        self._fail("invalid bulk length")
                    return pos
                start = nl + 2
                end = start + size
                if size_so_far + end - pos > self.max_request:
                    self._fail(f"request larger than {self.max_request} bytes")
                    return pos
                if end + 2 > n:
                    self.need = end + 2 - pos
                    break
                append(buf[start:end])
                size_so_far += end + 2 - pos
                pos = end + 2
                left -= 1
            self._left, self._size = left, size_so_far
            if left:
                return pos
            out.append(args)
            self._args = None
        return pos
