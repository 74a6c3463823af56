"""What a memcached command line must look like: keys, numbers, storage headers.

memcached splits a command line on spaces (runs of them count as one) and checks
its tokens where each command reads them; these are those checks, shared by the
parser (which must know whether a data block follows a line, and how long it is)
and the commands. The parser and a command must agree on every line, or a value
would be read as a command: so a storage line's framing is decided here once.

Keys: at most 250 bytes (KEY_MAX_LENGTH) and, as protocol.txt requires of
clients, no control characters (memcached 1.6.18 itself accepts them; grid
refuses them with "CLIENT_ERROR bad command line format").
"""

from __future__ import annotations

from typing import NamedTuple

KEY_MAX = 250
"""memcached's KEY_MAX_LENGTH."""
UINT64_MAX = (1 << 64) - 1
STORAGE = frozenset({b"set", b"add", b"replace", b"append", b"prepend"})
_CONTROL = bytes(range(33)) + b"\x7f"


def key_ok(key: bytes) -> bool:
    """A key memcached's protocol allows: 1 to 250 bytes, no control characters or space."""
    return 0 < len(key) <= KEY_MAX and key.translate(None, _CONTROL) == key


def number(token: bytes) -> int | None:
    """A decimal integer as strtol reads a whole token (an optional sign), or None."""
    if token.isdigit():
        return int(token)
    if len(token) > 1 and token[0] in b"+-" and token[1:].isdigit():
        return int(token)
    return None


def unsigned(token: bytes) -> int | None:
    """An unsigned 64-bit decimal (memcached's safe_strtoull: no sign), or None."""
    if token.isdigit():
        n = int(token)
        return n if n <= UINT64_MAX else None
    return None


class StoreLine(NamedTuple):
    """A storage command's header: what follows it is `length` bytes and CR LF."""

    key: bytes
    flags: int
    exptime: int
    length: int
    cas: int  # `cas` only
    noreply: bool


def store_line(args: list[bytes]) -> StoreLine | None:
    """The header of set/add/replace/append/prepend/cas, or None when memcached would answer
    the line with an error and read no data block after it (the block is then read as
    commands, as memcached does). Flags wrap to 32 bits as memcached 1.6.18's parse does."""
    cas = args[0] == b"cas"
    n = len(args)
    if n not in ((6, 7) if cas else (5, 6)):
        return None
    key = args[1]
    if len(key) > KEY_MAX:
        return None
    a, b, c = args[2], args[3], args[4]
    if a.isdigit() and b.isdigit() and c.isdigit():  # the common line, without three calls
        flags, exptime, length = int(a), int(b), int(c)
        if flags > UINT64_MAX:
            return None
    else:
        flags, exptime, length = unsigned(a), number(b), number(c)
        if flags is None or exptime is None or length is None or length < 0:
            return None
    unique = 0
    if cas:
        u = unsigned(args[5])
        if u is None:
            return None
        unique = u
    noreply = args[-1] == b"noreply" and n == (7 if cas else 6)
    return StoreLine(key, flags & 0xFFFFFFFF, exptime, length, unique, noreply)


def meta_length(args: list[bytes]) -> int | None:
    """The data length of an `ms` line, or None when no data block follows it."""
    if len(args) < 3 or len(args[1]) > KEY_MAX:
        return None
    n = number(args[2])
    return n if n is not None and n >= 0 else None


def data_length(args: list[bytes]) -> StoreLine | int | None:
    """How many bytes of data follow this command line (before its CR LF), None: none.
    For the text storage commands, their whole parsed header (its `length`), so the
    command does not parse the line again."""
    name = args[0]
    if name in STORAGE or name == b"cas":
        return store_line(args)
    if name == b"ms":
        return meta_length(args)
    return None
