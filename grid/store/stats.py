"""Counters per map; member totals are their sum.

Plain integer attributes bumped inline on the hot path (an attribute add is
the cheapest thing Python does); nothing is computed until someone asks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class MapStats:
    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    puts: int = 0
    deletes: int = 0
    evictions: int = 0
    expirations: int = 0

    @property
    def hit_ratio(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def add(self, other: MapStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
