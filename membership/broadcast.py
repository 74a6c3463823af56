"""The piggyback queue (memberlist's TransmitLimitedQueue).

Each update (one per member name: a newer update about a member replaces the
older one) is sent at most retransmit_mult x ceil(log10(N+1)) times, least
transmitted first, newest first among equals, packed into whatever room a
datagram has left.  Updates live in tiers indexed by transmit count, so
taking a batch costs O(taken), not O(queue).
"""

from __future__ import annotations

from collections.abc import Callable

MIN_ENTRY = 8
"""No gossip entry is smaller; stop scanning when less room is left."""

SCAN_LIMIT = 256
"""Entries examined per batch, bounding the cost when the head ones don't fit."""


class BroadcastQueue:
    __slots__ = ("_limit", "_tiers", "_where")

    def __init__(self, limit: Callable[[int], int]) -> None:
        self._limit = limit
        self._tiers: list[dict[str, bytes]] = [{}]
        self._where: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._where)

    def pending(self, key: str) -> bool:
        return key in self._where

    def queue(self, key: str, payload: bytes) -> None:
        """Queue an update about `key`, replacing any older one."""
        tier = self._where.get(key)
        if tier is not None:
            del self._tiers[tier][key]
        self._tiers[0][key] = payload
        self._where[key] = 0

    def take(self, room: int, n_members: int) -> list[bytes]:
        """Updates fitting in `room` bytes; each counts as one more transmit."""
        if not self._where:
            return []
        limit = self._limit(n_members)
        out: list[bytes] = []
        moved: list[tuple[str, bytes, int]] = []
        scanned = 0
        for t, tier in enumerate(self._tiers):
            if room < MIN_ENTRY or scanned >= SCAN_LIMIT:
                break
            for key in reversed(tier):
                scanned += 1
                payload = tier[key]
                if len(payload) <= room:
                    room -= len(payload)
                    out.append(payload)
                    moved.append((key, payload, t))
                    if room < MIN_ENTRY:
                        break
                if scanned >= SCAN_LIMIT:
                    break
        tiers = self._tiers
        where = self._where
        for key, payload, t in moved:
            del tiers[t][key]
            nt = t + 1
            if nt >= limit:
                del where[key]
                continue
            if nt == len(tiers):
                tiers.append({})
            tiers[nt][key] = payload
            where[key] = nt
        return out
