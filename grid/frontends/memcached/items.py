"""A memcached item as grid stores it: the value, with the client flags in a header if any.

memcached keeps 32 opaque "client flags" with every item (pymemcache and
python-memcached mark pickled or compressed values with them), and a client must
get them back. grid's entries have no such field, so they travel in the stored
bytes:

    flags == 0:  the value itself          b"hello"
    otherwise:   0xC1, flags (4 bytes, big-endian), the value

0xC1 is a byte no msgpack value and no UTF-8 text begins with, so a value read
through the SDK or RESP in the same map is the plain bytes whenever the flags are
0, the common case, and an item with flags is never mistaken for one without. A
value with flags 0 that itself begins with 0xC1 gets the header too, so reading
back is never ambiguous. Values written into the map by other means that begin
with 0xC1 and are 5 bytes or longer are read as an item with flags.
"""

from __future__ import annotations

MARK = 0xC1
_MARK = b"\xc1"
HEADER = 5


def pack(flags: int, value: bytes) -> bytes:
    """The bytes to store for an item."""
    if flags or value[:1] == _MARK:
        return b"%c%b%b" % (MARK, flags.to_bytes(4, "big"), value)
    return value


def unpack(stored: bytes) -> tuple[int, bytes]:
    """(flags, value) of stored bytes."""
    if stored[:1] == _MARK and len(stored) >= HEADER:
        return int.from_bytes(stored[1:HEADER], "big"), stored[HEADER:]
    return 0, stored
