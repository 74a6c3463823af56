"""The active expiry cycle: reclaiming expired entries nobody reads.

Expiry is lazy first: every access checks the entry's deadline and removes it
if it has passed, so a client never sees an expired value. But an entry that
is never read again would sit in memory forever, so a periodic cycle samples
volatile entries (those with a TTL or max-idle) and removes the expired ones.
This is Redis's expire.c cycle, adapted:

- every `expiry_sweep_interval_ms` (100 ms) the member runs one cycle;
- a cycle takes 20 random volatile entries and removes the expired ones;
- if more than 10% of the sample had expired, memory is probably full of dead
  entries, so it samples again at once; otherwise it stops;
- it never runs longer than `expiry_sweep_budget_ms` (5 ms), so a mass
  expiry (a million keys written with the same TTL) is spread over many
  cycles instead of stalling requests.

The steady state this gives (Redis's analysis): expired-but-unreclaimed
entries stay below about 10% of the volatile set, at a cost of a fraction of
a millisecond per cycle when little is expiring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grid.store.store import Store

SAMPLE = 20
STALE_FRACTION = 0.10


def expire_cycle(
    store: Store, now: int, budget_ms: float, monotonic_ms: Callable[[], float]
) -> int:
    """Run one cycle; returns how many entries it removed. Caller holds store.lock."""
    removed = 0
    start = monotonic_ms()
    volatile = store.volatile
    while len(volatile):
        keys, where = volatile.keys, volatile.where
        sample = [(keys[i], where[i]) for i in volatile.sample(store.rng, SAMPLE)]
        expired = 0
        for key, w in sample:
            blob = store.record_at(key, w)  # (None: removed earlier in this sample)
            if blob is not None and store.expired(blob, now):
                store.remove_expired_at(key, w, blob)
                expired += 1
        removed += expired
        if expired <= STALE_FRACTION * len(sample) or monotonic_ms() - start >= budget_ms:
            break
    return removed
