"""A memcached item as grid stores it: the value, with the client flags in a header if any.

memcached keeps 32 opaque "client flags" with every item (pymemcache and
python-memcached mark pickled or compressed values with them), and a client must
get them back. grid's entries have no such field, so they travel in the stored
bytes:

    flags == 0:  the value itself          b"hello"
    otherwise:   0xC1, flags (4 bytes, big-endian), the value

An item with meta-protocol state carries 0xC0, a state byte, then the flags:

    state != 0:  0xC0, state (1 byte), flags (4 bytes, big-endian), the value

The state bits are memcached's: TOKEN_SENT, a client was told it won the right to
recache the item (mg's W; later readers get Z): set on a stub that `mg ... N`
created, on a stale item's first read, and on an `mg ... R` win; STALE, `md ... I`
(or `ms ... I` with an older CAS) marked it stale (mg's X). Any write of a new item
replaces them (ma keeps them, as memcached's in-place increment does).

0xC0 and 0xC1 are bytes no UTF-8 text begins with, and no msgpack value longer than
one byte (0xC0 is nil, 0xC1 unused), so a value read through the SDK or RESP in the
same map is the plain bytes whenever the flags are 0 and there is no state, the
common case, and an item with flags is never mistaken for one without. A value with
flags 0 that itself begins with 0xC0 or 0xC1 gets the header too, so reading back is
never ambiguous. Values written into the map by other means that begin with 0xC1 and
are 5 bytes or longer (0xC0: 6) are read as an item with a header. (Before the state
byte, a stub was marked 0xC2, a UTF-8 lead byte; such a stub left over from an older
member reads as a 5-byte value until it expires.)
"""

from __future__ import annotations

MARK = 0xC1
STATE = 0xC0
TOKEN_SENT = 1
STALE = 2
_MARKS = (b"\xc0", b"\xc1")
HEADER = 6
"""The most bytes a header adds to a value."""


def pack(flags: int, value: bytes, state: int = 0) -> bytes:
    """The bytes to store for an item."""
    if state:
        return b"%c%c%b%b" % (STATE, state, flags.to_bytes(4, "big"), value)
    if flags or value[:1] in _MARKS:
        return b"%c%b%b" % (MARK, flags.to_bytes(4, "big"), value)
    return value


def unpack(stored: bytes) -> tuple[int, bytes]:
    """(flags, value) of stored bytes."""
    flags, value, _ = unpack_state(stored)
    return flags, value


def unpack_state(stored: bytes) -> tuple[int, bytes, int]:
    """(flags, value, state bits) of stored bytes."""
    head = stored[:1]
    if head == b"\xc1" and len(stored) >= 5:
        return int.from_bytes(stored[1:5], "big"), stored[5:], 0
    if head == b"\xc0" and len(stored) >= 6:
        return int.from_bytes(stored[2:6], "big"), stored[6:], stored[1]
    return 0, stored, 0
