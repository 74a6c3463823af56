"""A dense list of entries with O(1) add, remove and uniform random pick.

Sampled eviction and the active expiry cycle need random entries. Picking a
random item from a Python dict is O(n), so entries are also kept in a list
and each remembers its index; removal swaps the last entry into the hole
(the effect of Redis's dictGetSomeKeys, without rehash buckets). A store has
two: all entries (index in `Entry.slot`) and the volatile ones, those with a
TTL or max-idle (index in `Entry.vslot`).
"""

from __future__ import annotations

from random import Random

from grid.store.entry import Entry


class SlotList:
    __slots__ = ("attr", "items")

    def __init__(self, attr: str) -> None:
        self.attr = attr  # the Entry attribute holding the index: "slot" or "vslot"
        self.items: list[Entry] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, e: Entry) -> None:
        setattr(e, self.attr, len(self.items))
        self.items.append(e)

    def remove(self, e: Entry) -> None:
        items = self.items
        last = items.pop()
        if last is not e:
            i = getattr(e, self.attr)
            items[i] = last
            setattr(last, self.attr, i)
        setattr(e, self.attr, -1)

    def clear(self) -> None:
        for e in self.items:
            setattr(e, self.attr, -1)
        self.items.clear()

    def sample(self, rng: Random, n: int) -> list[Entry]:
        """n entries picked uniformly with replacement (all of them if there are few)."""
        items = self.items
        size = len(items)
        if size <= n:
            return list(items)
        rand = rng.randrange
        return [items[rand(size)] for _ in range(n)]
