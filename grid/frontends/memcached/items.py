"""A memcached item as grid stores it: the value, with the client flags in a header if any.

memcached keeps 32 opaque "client flags" with every item (pymemcache and
python-memcached mark pickled or compressed values with them), and a client must
get them back. grid's entries have no such field, so they travel in the stored
bytes:

    flags == 0:  the value itself          b"hello"
    otherwise:   0xC1, flags (4 bytes, big-endian), the value

A stub that `mg ... N` (vivify) created carries the header with 0xC2 instead, so a
later `mg` knows another client already won the right to fill it (its Z flag); any
write replaces the stub with a plain item.

0xC1 is a byte no msgpack value and no UTF-8 text begins with, so a value read
through the SDK or RESP in the same map is the plain bytes whenever the flags are
0, the common case, and an item with flags is never mistaken for one without. A
value with flags 0 that itself begins with 0xC1 gets the header too, so reading
back is never ambiguous. Values written into the map by other means that begin
with 0xC1 and are 5 bytes or longer are read as an item with flags.
"""

from __future__ import annotations

from typing import Literal, overload

MARK = 0xC1
STUB = 0xC2
_MARKS = (b"\xc1", b"\xc2")
HEADER = 5


def pack(flags: int, value: bytes) -> bytes:
    """The bytes to store for an item."""
    if flags or value[:1] in _MARKS:
        return b"%c%b%b" % (MARK, flags.to_bytes(4, "big"), value)
    return value


def stub(flags: int, value: bytes) -> bytes:
    """The bytes of a vivified stub (mg's N flag)."""
    return b"%c%b%b" % (STUB, flags.to_bytes(4, "big"), value)


@overload
def unpack(stored: bytes) -> tuple[int, bytes]: ...
@overload
def unpack(stored: bytes, with_stub: Literal[True]) -> tuple[int, bytes, bool]: ...
def unpack(stored: bytes, with_stub: bool = False) -> tuple[int, bytes] | tuple[int, bytes, bool]:
    """(flags, value) of stored bytes, and with `with_stub` whether it is a stub."""
    head = stored[:1]
    if head in _MARKS and len(stored) >= HEADER:
        flags, value = int.from_bytes(stored[1:HEADER], "big"), stored[HEADER:]
        return (flags, value, head == b"\xc2") if with_stub else (flags, value)
    return (0, stored, False) if with_stub else (0, stored)
