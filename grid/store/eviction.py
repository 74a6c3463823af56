"""Memory-bounded eviction: which entry goes when `max_memory` is reached.

The algorithm is Redis's (evict.c), carried over to a Python member.

Exact LRU or LFU would need a global ordered structure touched on every read:
a linked list or heap across all maps and partitions, costing time on the hot
path and pointers in every entry. Instead each entry records only *when* it
was last accessed (`last_access`, ms) and *how often* (`lfu`, a logarithmic
8-bit counter), both in the all list's arrays (grid/store/slots.py), and
eviction approximates the ideal by sampling:

1. Pick `eviction_samples` entries uniformly at random (O(1) each, thanks to
   the store's slot lists).
2. Score each: LRU by idle time, LFU by 255 minus the decayed counter,
   volatile-ttl by how soon it expires, random by nothing at all.
3. Merge them into a small pool (16 entries, sorted by score) that survives
   between evictions. The pool is what makes 5 samples behave like many: a
   cold entry seen once stays a candidate until something colder shows up.
   It holds keys and where they live, as Redis's holds key names: slots
   move when other entries are removed.
4. Evict the best-scored pool entry whose key is still stored.

With 5 samples and the pool, Redis measured the result to be close to true
LRU on skewed workloads; the test suite checks that lfu beats random on a
zipf read pattern, which is the property a cache user cares about.

The LFU counter (Redis's "Morris counter"): a new entry starts at 5 so it is
not evicted before it had a chance to be read. On access the counter grows
by one with probability 1 / ((counter - 5) * lfu_log_factor + 1), so it
climbs logarithmically and saturates at 255 after about a million hits
(factor 10). It decays by one for every `lfu_decay_minutes` the entry has
been idle, computed lazily from `last_access`, so yesterday's hot keys do not
stay hot forever.

`noeviction` never picks anything: a write that needs memory fails with
OUT_OF_MEMORY. The primary evicts; the eviction is a mutation like a delete,
which is how replicas will stay identical (replication issue).
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random

from grid.store.slots import SlotList

POOL_SIZE = 16
LFU_INIT = 5
LFU_MAX = 255

Lookup = Callable[[bytes, int], "bytes | None"]
"""The record stored under (key, where), or None (the store's `record_at`)."""
Deadline = Callable[[bytes], int]
"""When a record expires, 0 = never (the store's `deadline`)."""


def lfu_decayed(counter: int, last_access: int, now: int, decay_ms: int) -> int:
    """A counter after idle-time decay (not stored; see lfu_touch)."""
    if decay_ms:
        periods = (now - last_access) // decay_ms
        if periods > 0:
            return counter - periods if counter > periods else 0
    return counter


def lfu_touch(
    counter: int, last_access: int, now: int, decay_ms: int, log_factor: int, rng: Random
) -> int:
    """A counter after one more access: decay first, then a logarithmic increment."""
    counter = lfu_decayed(counter, last_access, now, decay_ms)
    if counter < LFU_MAX:
        base = counter - LFU_INIT
        if base <= 0 or rng.random() < 1.0 / (base * log_factor + 1):
            counter += 1
    return counter


class Evictor:
    """Chooses victims for one policy; the store removes them."""

    __slots__ = (
        "_deadline",
        "_decay_ms",
        "_lookup",
        "_pool",
        "_timed",
        "policy",
        "rng",
        "samples",
        "source",
    )

    def __init__(
        self,
        policy: str,
        samples: int,
        all_entries: SlotList,
        volatile: SlotList,
        rng: Random,
        lfu_decay_minutes: int,
        lookup: Lookup,
        deadline: Deadline,
    ) -> None:
        self.policy = policy
        self.samples = samples
        self.rng = rng
        self._decay_ms = lfu_decay_minutes * 60_000
        self._timed = all_entries
        self._lookup = lookup
        self._deadline = deadline
        self.source = volatile if policy == "volatile-ttl" else all_entries
        self._pool: list[tuple[int, bytes, int]] = []  # (score, key, where), best last

    def _score(self, slot: int, now: int) -> int | None:
        """The sampled entry's score (higher: better victim), None if it vanished."""
        policy = self.policy
        if policy == "lru":
            return now - self._timed.last_access[slot]
        if policy == "lfu":
            timed = self._timed
            return LFU_MAX - lfu_decayed(
                timed.lfu[slot], timed.last_access[slot], now, self._decay_ms
            )
        # volatile-ttl: sooner expiry = better victim
        source = self.source
        blob = self._lookup(source.keys[slot], source.where[slot])
        return None if blob is None else -self._deadline(blob)

    def victim(self, now: int) -> tuple[bytes, int] | None:
        """The next entry to evict as (key, where), or None when the policy has nothing
        to offer."""
        source = self.source
        if self.policy == "noeviction" or not len(source):
            return None
        keys, where = source.keys, source.where
        if self.policy == "random":
            slot = source.sample(self.rng, 1)[0]
            return keys[slot], where[slot]
        pool = self._pool
        for slot in source.sample(self.rng, self.samples):
            key, w = keys[slot], where[slot]
            if any(k == key and pw == w for _, k, pw in pool):
                continue
            score = self._score(slot, now)
            if score is not None:
                pool.append((score, key, w))
        pool.sort(key=lambda item: item[0])
        del pool[:-POOL_SIZE]
        lookup = self._lookup
        while pool:  # a pooled entry may have been removed since
            _, key, w = pool.pop()
            if lookup(key, w) is not None:
                return key, w
        return None
