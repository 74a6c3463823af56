"""Memory-bounded eviction: which entry goes when `max_memory` is reached.

The algorithm is Redis's (evict.c), carried over to a Python member.

Exact LRU or LFU would need a global ordered structure touched on every read:
a linked list or heap across all maps and partitions, costing time on the hot
path and pointers in every entry. Instead each entry records only *when* it
was last accessed (`last_access`, ms) and *how often* (`lfu`, a logarithmic
8-bit counter), and eviction approximates the ideal by sampling:

1. Pick `eviction_samples` entries uniformly at random (O(1) each, thanks to
   the store's slot lists).
2. Score each: LRU by idle time, LFU by 255 minus the decayed counter,
   volatile-ttl by how soon it expires, random by nothing at all.
3. Merge them into a small pool (16 entries, sorted by score) that survives
   between evictions. The pool is what makes 5 samples behave like many: a
   cold entry seen once stays a candidate until something colder shows up.
4. Evict the best-scored pool entry that is still stored.

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

from grid.store.entry import Entry
from grid.store.slots import SlotList

POOL_SIZE = 16
LFU_INIT = 5
LFU_MAX = 255


def lfu_decayed(e: Entry, now: int, decay_ms: int) -> int:
    """The entry's counter after idle-time decay (not stored; see lfu_touch)."""
    counter = e.lfu
    if decay_ms:
        periods = (now - e.last_access) // decay_ms
        if periods > 0:
            return counter - periods if counter > periods else 0
    return counter


def lfu_touch(e: Entry, now: int, decay_ms: int, log_factor: int, rng: Random) -> None:
    """Record one access in the LFU counter: decay first, then a logarithmic increment."""
    counter = lfu_decayed(e, now, decay_ms)
    if counter < LFU_MAX:
        base = counter - LFU_INIT
        if base <= 0 or rng.random() < 1.0 / (base * log_factor + 1):
            counter += 1
    e.lfu = counter


class Evictor:
    """Chooses victims for one policy; the store removes them."""

    __slots__ = ("_decay_ms", "_pool", "_score", "policy", "rng", "samples", "source")

    def __init__(
        self,
        policy: str,
        samples: int,
        all_entries: SlotList,
        volatile: SlotList,
        rng: Random,
        lfu_decay_minutes: int,
    ) -> None:
        self.policy = policy
        self.samples = samples
        self.rng = rng
        self._decay_ms = lfu_decay_minutes * 60_000
        self.source = volatile if policy == "volatile-ttl" else all_entries
        self._pool: list[tuple[int, Entry]] = []  # (score, entry), best candidate last
        scores: dict[str, Callable[[Entry, int], int]] = {
            "lru": lambda e, now: now - e.last_access,
            "lfu": lambda e, now: LFU_MAX - lfu_decayed(e, now, self._decay_ms),
            # Sooner expiry = better victim; deadline() is 0 only for non-volatile entries,
            # which this policy never samples.
            "volatile-ttl": lambda e, now: -e.deadline(),
        }
        self._score = scores.get(policy)

    def victim(self, now: int) -> Entry | None:
        """The next entry to evict, or None when the policy has nothing to offer."""
        if self.policy == "noeviction" or not len(self.source):
            return None
        if self._score is None:  # random
            return self.source.sample(self.rng, 1)[0]
        score = self._score
        pool = self._pool
        for e in self.source.sample(self.rng, self.samples):
            if any(p is e for _, p in pool):
                continue
            pool.append((score(e, now), e))
        pool.sort(key=lambda item: item[0])
        del pool[:-POOL_SIZE]
        in_source = self.source.attr  # a pooled entry may have been removed since
        while pool:
            _, e = pool.pop()
            if getattr(e, in_source) >= 0:
                return e
        return None
