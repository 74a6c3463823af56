"""Hybrid logical clock versions (the last-writer-wins merge is replication/lww.py).

Every record carries a version `(ts, member)`. `ts` is a 64-bit hybrid
logical clock timestamp: the upper 48 bits are wall-clock milliseconds, the
lower 16 a logical counter. It never goes backwards on a member even if the
wall clock does, it moves past any timestamp the member has seen (so causally
later writes win), and it stays close to real time (so "last writer" means
what an operator expects). `member` breaks ties between members that write
the same key in the same millisecond and counter, which makes the order total:
apply, anti-entropy and split-brain merge all decide by it (replication/lww.py),
so merging is commutative, associative and idempotent.

The clock is injected (a function returning wall milliseconds) so tests and
the simulator drive it deterministically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


class Version(NamedTuple):
    """A record version; tuples compare in LWW order (ts first, then member)."""

    ts: int
    member: int

    @property
    def wall_ms(self) -> int:
        return self.ts >> LOGICAL_BITS


ZERO = Version(0, 0)


class HybridClock:
    """Issues strictly increasing HLC timestamps for one member."""

    __slots__ = ("_last", "_now_ms", "member")

    def __init__(self, member: int, now_ms: Callable[[], int]) -> None:
        self.member = member
        self._now_ms = now_ms
        self._last = 0

    def tick(self) -> Version:
        """A new version for a local write."""
        wall = self._now_ms() << LOGICAL_BITS
        last = self._last
        ts = wall if wall > last else last + 1
        self._last = ts
        return Version(ts, self.member)

    def stamp(self, wall_ms: int) -> int:
        """A new timestamp for a local write, from a wall reading the caller already took
        (a batch's one clock reading; the member is `member`): `tick` without its clock
        call and its Version, which were a tenth of a put's CPU in the member."""
        wall = wall_ms << LOGICAL_BITS
        last = self._last
        ts = self._last = wall if wall > last else last + 1
        return ts

    def observe(self, remote_ts: int) -> None:
        """Move past a timestamp seen from another member (receive rule)."""
        if remote_ts > self._last:
            self._last = remote_ts

    @property
    def last(self) -> int:
        return self._last
