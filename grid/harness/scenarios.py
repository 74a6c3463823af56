"""The cache workloads grid is for, written once against the map API.

`grid demo` runs them against a local cluster and prints what happened; the
integration tests run the same functions through every client and assert on
what they return. Each takes a map (remote `Map` or embedded `LocalMap`) and
returns plain facts, never prints.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class FakeDatabase:
    """The slow source of truth behind the cache; counts how often it is asked."""

    def __init__(self) -> None:
        self.loads = 0

    def load_user(self, user_id: int) -> dict[str, Any]:
        self.loads += 1
        return {"id": user_id, "name": f"user-{user_id}", "plan": "pro" if user_id % 7 else "free"}


@dataclass
class CacheAside:
    first_hit: bool = False
    second_hit: bool = False
    ttl_s: float | None = None
    db_loads: int = 0
    value: Any = None


def cache_aside(users: Any, db: FakeDatabase, user_id: int = 1) -> CacheAside:
    """get -> miss -> load -> put with a 1-hour TTL; the second read is a hit."""
    out = CacheAside()
    key = f"user:{user_id}"
    for attempt in range(2):
        user = users.get(key)
        hit = user is not None
        if attempt == 0:
            out.first_hit = hit
        else:
            out.second_hit = hit
        if not hit:
            user = db.load_user(user_id)
            users.put(key, user, ttl=3600)
        out.value = user
    out.ttl_s = users.ttl(key)
    out.db_loads = db.loads
    return out


@dataclass
class BatchRead:
    requested: int = 0
    hits_first: int = 0
    loaded: int = 0
    hits_second: int = 0


def batch_read(users: Any, db: FakeDatabase, n: int = 500, warm: int = 200) -> BatchRead:
    """get_many of n users with `warm` of them cached; load the misses, put_many them back."""
    ids = list(range(1000, 1000 + n))
    users.put_many({f"user:{i}": db.load_user(i) for i in ids[:warm]}, ttl=3600)
    keys = [f"user:{i}" for i in ids]
    found = users.get_many(keys)
    missing = [k for k in keys if k not in found]
    loaded = {k: db.load_user(int(k.split(":")[1])) for k in missing}
    users.put_many(loaded, ttl=3600)
    again = users.get_many(keys)
    return BatchRead(requested=n, hits_first=len(found), loaded=len(loaded), hits_second=len(again))


@dataclass
class RateLimit:
    allowed: int = 0
    rejected: int = 0
    counter_ttl_s: float | None = None


def rate_limit(
    limits: Any, user: str = "alice", requests: int = 120, limit: int = 100, window_s: int = 60
) -> RateLimit:
    """A fixed-window limiter: incr with the window as TTL on creation; reject above limit."""
    out = RateLimit()
    key = f"rl:{user}:{int(time.time()) // window_s}"
    for _ in range(requests):
        if limits.incr(key, ttl=window_s) <= limit:
            out.allowed += 1
        else:
            out.rejected += 1
    out.counter_ttl_s = limits.ttl(key)
    return out


@dataclass
class Invalidation:
    before: Any = None
    deleted: bool = False
    after: Any = None


def invalidate(users: Any, user_id: int = 1) -> Invalidation:
    """The source changed: delete the cached copy so the next read reloads it."""
    key = f"user:{user_id}"
    users.put(key, {"id": user_id, "name": "stale"}, ttl=3600)
    return Invalidation(before=users.get(key), deleted=users.delete(key), after=users.get(key))


@dataclass
class Sessions:
    alive_while_active: bool = False
    gone_after_idle: bool = False
    size_bytes: int = 0


def sessions(
    store: Any, idle_s: float = 0.6, sleep: Callable[[float], None] = time.sleep
) -> Sessions:
    """10 KB sessions with sliding expiry: kept alive by use, gone after idle_s of silence."""
    sid = f"session:{random.getrandbits(64):016x}"
    blob = {"user": 7, "cart": list(range(10)), "pad": "x" * 10_000}
    store.put(sid, blob, max_idle=idle_s)
    alive = True
    for _ in range(4):  # use it for 4 x idle/2 = twice its idle time
        sleep(idle_s / 2)
        alive = alive and store.get(sid) is not None
    sleep(idle_s * 1.5)
    return Sessions(
        alive_while_active=alive,
        gone_after_idle=store.get(sid) is None,
        size_bytes=len(blob["pad"]),
    )


@dataclass
class Eviction:
    policy: str = ""
    reads: int = 0
    hits: int = 0
    hit_ratio: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


def zipf_sampler(n: int, s: float, rng: random.Random) -> Callable[[], int]:
    cdf = list(itertools.accumulate(1.0 / (i + 1) ** s for i in range(n)))
    total = cdf[-1]
    # Shuffle ranks over key ids so hot keys are not simply the oldest ones.
    ids = list(range(n))
    rng.shuffle(ids)
    return lambda: ids[bisect.bisect_left(cdf, rng.random() * total)]


def zipf_cache(
    cache: Any,
    keys: int = 4000,
    reads: int = 40_000,
    value_bytes: int = 200,
    seed: int = 7,
    chunk: int = 64,
) -> Eviction:
    """Cache-aside over a zipf(1.0) read pattern, batched: get_many, then put_many the misses.

    The member's max_memory holds only part of the key space, so the hit ratio
    is decided by which entries the eviction policy keeps.
    """
    rng = random.Random(seed)
    sample = zipf_sampler(keys, 1.0, rng)
    payload = "v" * value_bytes
    hits = 0
    done = 0
    while done < reads:
        batch = [f"z:{sample()}" for _ in range(min(chunk, reads - done))]
        found = cache.get_many(batch)
        hits += sum(1 for k in batch if k in found)
        cache.put_many({k: payload for k in batch if k not in found})
        done += len(batch)
    return Eviction(reads=reads, hits=hits, hit_ratio=hits / reads)
