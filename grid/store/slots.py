"""A dense list of entries with O(1) add, remove and uniform random pick.

Sampled eviction and the active expiry cycle need random entries. Picking a
random item from a Python dict is O(n), so entries are also kept in a dense
list and each record remembers its index (its slot, grid/store/entry.py);
removal swaps the last entry into the hole (the effect of Redis's
dictGetSomeKeys, without rehash buckets) and the caller rewrites the moved
entry's record with its new slot. A store has two: all entries, and the
volatile ones, those with a TTL or max-idle.

A slot holds the entry's key (the dict's own key object, so a pointer) and
where the entry lives, `map id * partitions + partition`, in typed arrays:
no Python object per entry. The all list also holds what changes on every
read, which a bytes record cannot: `last_access` (wall ms) and `lfu` (the
eviction counter).
"""

from __future__ import annotations

from array import array
from random import Random


class SlotList:
    __slots__ = ("keys", "last_access", "lfu", "timed", "where")

    def __init__(self, timed: bool) -> None:
        self.timed = timed  # holds last_access and lfu (the all list)
        self.keys: list[bytes] = []
        self.where = array("I")
        self.last_access = array("q")
        self.lfu = array("B")

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: bytes, where: int, now: int = 0, lfu: int = 0) -> int:
        """Append an entry; returns its slot."""
        slot = len(self.keys)
        self.keys.append(key)
        self.where.append(where)
        if self.timed:
            self.last_access.append(now)
            self.lfu.append(lfu)
        return slot

    def remove(self, slot: int) -> bool:
        """Remove the entry at `slot`; True if the last entry moved into it (the caller
        rewrites that entry's record: its key and where are now at `slot`)."""
        keys = self.keys
        last = len(keys) - 1
        moved = slot != last
        if moved:
            keys[slot] = keys[last]
            self.where[slot] = self.where[last]
            if self.timed:
                self.last_access[slot] = self.last_access[last]
                self.lfu[slot] = self.lfu[last]
        keys.pop()
        self.where.pop()
        if self.timed:
            self.last_access.pop()
            self.lfu.pop()
        return moved

    def clear(self) -> None:
        self.keys.clear()
        del self.where[:]  # (in place: the store keeps references to the arrays)
        del self.last_access[:]
        del self.lfu[:]

    def sample(self, rng: Random, n: int) -> list[int]:
        """n slots picked uniformly with replacement (all of them if there are few)."""
        size = len(self.keys)
        if size <= n:
            return list(range(size))
        rand = rng.randrange
        return [rand(size) for _ in range(n)]
