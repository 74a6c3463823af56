"""Value codecs: the client turns objects into bytes; members only ever see bytes.

msgpack is the default (compact, fast, and the format of counters, so
`incr` results read back as ints). json is there for interoperability with
other languages' clients, raw for callers that serialize themselves. Any
object with `name`, `encode` and `decode` is a codec too. There is no pickle
codec on purpose: unpickling data from a shared cache executes code.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Protocol, runtime_checkable

import msgpack

from grid.errors import CodecError


@runtime_checkable
class Codec(Protocol):
    name: str

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class MsgpackCodec:
    """msgpack with one `Packer` per thread: `packb` builds a Packer (and its buffer) for
    every value, eight times the cost of packing 100 bytes with one kept; a Packer is not
    safe to share between threads, hence one each."""

    name = "msgpack"

    def __init__(self) -> None:
        self._local = threading.local()

    def encode(self, value: Any) -> bytes:
        try:
            packer = self._local.packer
        except AttributeError:
            packer = self._local.packer = msgpack.Packer(use_bin_type=True)
        try:
            return packer.pack(value)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as e:
            packer.reset()  # (pack already drops a half-written value; say so anyway)
            raise CodecError(f"cannot encode {type(value).__name__} as msgpack: {e}") from e

    def decode(self, data: bytes) -> Any:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise CodecError(f"value is not msgpack data ({len(data)} bytes: {e})") from e


class JsonCodec:
    name = "json"

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as e:
            raise CodecError(f"cannot encode {type(value).__name__} as JSON: {e}") from e

    def decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (UnicodeDecodeError, ValueError) as e:
            raise CodecError(f"value is not JSON ({len(data)} bytes: {e})") from e


class RawCodec:
    """Bytes in, bytes out (str is stored as UTF-8)."""

    name = "raw"

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        if isinstance(value, str):
            return value.encode()
        raise CodecError(f"the raw codec stores bytes or str, not {type(value).__name__}")

    def decode(self, data: bytes) -> bytes:
        return data


CODECS: dict[str, Codec] = {c.name: c for c in (MsgpackCodec(), JsonCodec(), RawCodec())}


def resolve(codec: str | Codec) -> Codec:
    if isinstance(codec, str):
        try:
            return CODECS[codec]
        except KeyError:
            raise ValueError(
                f"unknown codec {codec!r}; use one of {', '.join(CODECS)} "
                "or an object with name, encode and decode"
            ) from None
    if not isinstance(codec, Codec):
        raise TypeError("a codec needs name, encode(value) -> bytes and decode(bytes)")
    return codec
