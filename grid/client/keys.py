"""Key and duration conversions shared by every map implementation."""

from __future__ import annotations

from datetime import timedelta

Key = str | bytes
Duration = float | int | timedelta | None


def encode_key(key: Key) -> bytes:
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes):
        return key
    raise TypeError(f"keys are str or bytes, not {type(key).__name__}")


def decode_key(key: bytes, raw: bool) -> Key:
    return key if raw else key.decode("utf-8", "surrogateescape")


def to_ms(duration: Duration) -> int:
    """Seconds (or a timedelta) -> whole ms; None -> 0 (none). Negative stays negative so the
    member answers it with a precise INVALID_ARGUMENT; a positive value never rounds to 0."""
    if duration is None:
        return 0
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    ms = round(seconds * 1000)
    if ms == 0 and seconds > 0:
        return 1
    return ms


def from_ms(ms: int) -> float:
    return ms / 1000.0
