"""The record store: named maps over partitions, TTL, eviction, memory accounting."""

from grid.store.entry import Entry
from grid.store.stats import MapStats
from grid.store.store import ALWAYS, IF_ABSENT, IF_PRESENT, IF_VERSION, Store, wall_ms

__all__ = [
    "ALWAYS",
    "IF_ABSENT",
    "IF_PRESENT",
    "IF_VERSION",
    "Entry",
    "MapStats",
    "Store",
    "wall_ms",
]
