"""The per-member record store model: partition -> key -> (value, ts, member).

A value of None is a tombstone. Tombstones are never collected during a simulated
run: the grace period of DESIGN.md (1 h in docs/replication.md's plan) outlasts
any run we do, so collecting them would only model a case that cannot happen here.

Every change goes through `apply`, which decides by the one last-writer-wins merge
(`replication.lww.write_wins`, as the real store does); the snapshot, stream,
anti-entropy and hand-off paths all use it, and its hook lets `invariants.py` check
every change independently. A tombstone here is a record like any other and there is
no clear, expiry or eviction, so every record is a write of rule 1 (a delete a write
of nothing) and no clear marker ever stands in the way (ZERO).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from replication.digest import LIVE, TOMBSTONE, Digest, bucket_of
from replication.lww import ZERO, write_wins

MAP = b"m"
"""One map per simulated cluster: the digest covers (map, key) like the real store."""

Rec = tuple[bytes | None, int, int]
"""(value or None for a tombstone, ts, member)."""

WireRec = list  # [key, value|None, ts, member] on the wire (msgpack arrays)

ApplyHook = Callable[[str, int, bytes, Rec | None, Rec], None]
"""hook(member, partition, key, old, new) after a record changed."""


class Store:
    """One member's copy of every partition it holds."""

    __slots__ = ("hook", "member", "parts")

    def __init__(self, member: str, hook: ApplyHook | None = None) -> None:
        self.member = member
        self.parts: dict[int, dict[bytes, Rec]] = {}
        self.hook = hook

    def get(self, p: int, key: bytes) -> Rec | None:
        part = self.parts.get(p)
        return None if part is None else part.get(key)

    def apply(self, p: int, key: bytes, value: bytes | None, ts: int, member: int) -> bool:
        """LWW: store the record if its version is newer than what is held. True if stored."""
        part = self.parts.get(p)
        if part is None:
            part = self.parts[p] = {}
        old = part.get(key)
        if not write_wins((ts, member), None if old is None else (old[1], old[2]), ZERO):
            return False
        new = (value, ts, member)
        part[key] = new
        if self.hook is not None:
            self.hook(self.member, p, key, old, new)
        return True

    def apply_wire(self, p: int, recs: Iterable[WireRec]) -> int:
        """Apply records as they travel; returns how many changed the copy."""
        n = 0
        for key, value, ts, member in recs:
            n += self.apply(p, key, value, ts, member)
        return n

    def records(self, p: int, buckets: set[int] | None = None) -> list[WireRec]:
        """The partition's records (all, or those in `buckets`), in key order."""
        part = self.parts.get(p)
        if not part:
            return []
        return [
            [k, r[0], r[1], r[2]]
            for k, r in sorted(part.items())
            if buckets is None or bucket_of(k) in buckets
        ]

    def digest(self, p: int, cut: int | None = None) -> Digest:
        """replication/digest.py over items at or below `cut` (None: every item)."""
        d = Digest()
        part = self.parts.get(p)
        if part:
            for k, (value, ts, member) in part.items():
                if cut is None or ts <= cut:
                    d.add(MAP, k, ts, member, LIVE if value is not None else TOMBSTONE)
        return d

    def drop(self, p: int) -> None:
        self.parts.pop(p, None)

    def held(self) -> list[int]:
        """Partitions with at least one record, in order."""
        return sorted(p for p, part in self.parts.items() if part)
