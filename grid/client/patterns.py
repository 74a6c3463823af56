"""Cache patterns on the map API: get_or_load (single flight, early refresh) and rate limits.

Each pattern is written once, as a generator that says what it needs and is told what
happened: `("ops", [Op...])` -> the Results, `("sleep", s)` -> None, `("load", key)` -> the
loaded value. `drive_async` runs one on an AsyncMap (awaiting calls, asyncio.sleep, an
async or plain loader); `drive_sync` runs one on a blocking Map (its calls inline,
time.sleep, a plain loader). So the sync and async clients cannot differ in what a
pattern does, and the logic is tested apart from any transport.

get_or_load(key, loader, ttl): a read that on a miss loads the value once for the whole
cluster, however many callers miss at once, through however many clients and members.

- Single flight: a caller that misses tries to take a lease, a PUT IF_ABSENT of
  `{key}:lease` with a short TTL. The key's primary decides who gets it, atomically
  (it is one operation on one partition), so exactly one caller loads; the others poll
  the key with backoff (10 ms doubling to 200 ms) until the value is there, or until the
  lease runs out (its holder died or hung), when one of them takes it over. A caller
  that waits past its deadline gets Unavailable saying so; the loader is never called
  twice at once for one key while its holder lives (as with Hazelcast's and Caffeine's
  loaders, but across the cluster).
- Early refresh (XFetch, Vattani, Chierichetti and Lowenstein, "Optimal Probabilistic
  Cache Stampede Prevention", VLDB 2015): a hit whose remaining TTL is small next to the
  time the last load took is refreshed ahead of expiry with probability
  exp(-ttl_left / (delta * beta)): a caller refreshes when -delta*beta*ln(U) >= ttl_left.
  The refresher takes the same lease (so at most one refresh per key at a time) and
  everyone else keeps getting the current value: no caller sees a miss while the key is
  under steady load. `delta` (the last load's duration) is kept beside the value in
  `{key}:xfetch`, so every client knows it. beta = 1 is the paper's optimum; 0 turns
  early refresh off.

The side keys carry the key in braces, so they share its partition (routing keys,
docs/partitioning.md) and one batch reads both. They are stored msgpack-encoded whatever
the map's codec; the key itself holds the plain value, readable by a plain `get`.

Rate limits (`RateLimit`): a fixed window counts calls in `{name:who}:<window number>`
with INCR (the counter created with the window's TTL, as Redis's INCR+EXPIRE recipe); a
sliding window also reads the previous window's count and weighs it by how much of it
still overlaps the last `window` seconds (Cloudflare's estimate: exact when traffic is
even, and never lets through more than twice the limit in any window). A call over the
limit still counts (as with Redis recipes), so a client hammering is not let through the
moment the window slides.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import msgpack

from grid.client.keys import Key, encode_key, to_ms
from grid.errors import Status, Unavailable, error_for
from partitioning.keys import routing_key
from proto import grid_pb2 as pb

Step = tuple[str, Any]
Pattern = Generator[Step, Any, Any]

POLL_FIRST_S = 0.01
POLL_MAX_S = 0.2


def side_key(key: bytes, suffix: bytes) -> bytes:
    """A key in `key`'s partition: the same routing key (the first {...}, or the whole)."""
    if routing_key(key) != key:  # key has a routing tag: keep it first
        return key + suffix
    return b"{" + key + b"}" + suffix


def check(r: pb.Result) -> pb.Result:
    """Raise the exception for a failed result; NOT_FOUND passes (it is an answer)."""
    if r.status and r.status != Status.NOT_FOUND:
        raise error_for(r.status, r.error)
    return r


# ---- get_or_load -----------------------------------------------------------------------------
def get_or_load(
    map_name: str,
    key: Key,
    ttl: float,
    decode: Callable[[bytes], Any],
    encode: Callable[[Any], bytes],
    deadline: float,
    lease_ttl: float = 10.0,
    beta: float = 1.0,
    rng: random.Random | None = None,
) -> Pattern:
    """The single-flight read-through with early refresh (module docstring)."""
    rng = rng or random.Random()
    k = encode_key(key)
    lease, meta = side_key(k, b":lease"), side_key(k, b":xfetch")
    get = pb.Op(code=pb.GET, map=map_name, key=k)
    got, info = yield "ops", [get, pb.Op(code=pb.GET, map=map_name, key=meta)]
    check(got)
    if got.status != Status.NOT_FOUND:
        left_s = got.ttl_ms / 1000 if got.ttl_ms else None
        delta = msgpack.unpackb(info.value) / 1000 if info.status == Status.OK else None
        if beta <= 0 or left_s is None or not delta:
            return decode(got.value)
        if -delta * beta * math.log(1.0 - rng.random()) < left_s:
            return decode(got.value)
        # early refresh: one caller at a time, the others keep the current value
        won, now = yield from _take_lease(map_name, lease, lease_ttl, get)
        if not won:
            return decode(got.value)
        if now.version_ts != got.version_ts or now.version_member != got.version_member:
            yield from _release(map_name, lease)  # refreshed since we read it: done
            return decode(now.value)
        return (yield from _load(map_name, key, k, lease, meta, ttl, encode))
    wait = POLL_FIRST_S
    while True:
        won, now = yield from _take_lease(map_name, lease, lease_ttl, get)
        if won and now.status != Status.NOT_FOUND:
            yield from _release(map_name, lease)  # loaded since our miss: no second load
            return decode(now.value)
        if won:
            return (yield from _load(map_name, key, k, lease, meta, ttl, encode))
        if time.monotonic() + wait > deadline:
            raise Unavailable(
                f"waited for another caller to load {key!r} until the deadline "
                f"(its lease lasts {lease_ttl:g} s)"
            )
        yield "sleep", wait
        wait = min(POLL_MAX_S, wait * 2)
        (got,) = yield "ops", [get]
        check(got)
        if got.status != Status.NOT_FOUND:
            return decode(got.value)


def _take_lease(
    map_name: str, lease: bytes, lease_ttl: float, get: pb.Op
) -> Generator[Step, Any, tuple[bool, pb.Result]]:
    """Try to take the key's lease, and read the key right after in the same batch: both
    keys are in one partition, and a member runs a batch's operations on a partition in
    order under its store's lock, so the read sees any load that finished (and released
    its lease) before ours was taken. Without it, a caller that missed just before a
    load ended would take the freed lease and load a second time."""
    op = pb.Op(
        code=pb.PUT, map=map_name, key=lease, value=msgpack.packb(os.getpid()),
        ttl_ms=to_ms(lease_ttl), condition=pb.IF_ABSENT,
    )  # fmt: skip
    taken, now = yield "ops", [op, get]
    check(now)
    if taken.status == Status.CAS_FAILED:
        return False, now
    check(taken)
    return True, now


def _release(map_name: str, lease: bytes) -> Generator[Step, Any, None]:
    yield "ops", [pb.Op(code=pb.DELETE, map=map_name, key=lease)]


def _load(
    map_name: str,
    key: Key,
    k: bytes,
    lease: bytes,
    meta: bytes,
    ttl: float,
    encode: Callable[[Any], bytes],
) -> Pattern:
    started = time.monotonic()
    try:
        value = yield "load", key
    except BaseException:  # the loader failed: free the lease so a waiter loads at once
        yield from _release(map_name, lease)
        raise
    took_ms = max(1, int((time.monotonic() - started) * 1000))
    if value is None:  # nothing to cache: let the next caller try again
        yield from _release(map_name, lease)
        return None
    ms = to_ms(ttl)
    results = yield (
        "ops",
        [
            pb.Op(code=pb.PUT, map=map_name, key=k, value=encode(value), ttl_ms=ms),
            pb.Op(code=pb.PUT, map=map_name, key=meta, value=msgpack.packb(took_ms), ttl_ms=ms),
            pb.Op(code=pb.DELETE, map=map_name, key=lease),
        ],
    )
    for r in results:
        check(r)
    return value


# ---- rate limits -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    allowed: bool
    count: float
    """Calls counted in the last window (the sliding estimate for a sliding window)."""
    remaining: int
    retry_after: float
    """Seconds until the current window ends (0 when allowed)."""


def rate_limit(
    map_name: str, name: str, who: str, limit: int, window: float, sliding: bool, now: float
) -> Pattern:
    tag = f"{{{name}:{who}}}"
    n = int(now // window)
    current = f"{tag}:{n}".encode()
    ops = [pb.Op(code=pb.INCR, map=map_name, key=current, delta=1, ttl_ms=to_ms(2 * window))]
    if sliding:
        ops.append(pb.Op(code=pb.GET, map=map_name, key=f"{tag}:{n - 1}".encode()))
    results = yield "ops", ops
    count: float = check(results[0]).count
    if sliding:
        prev = results[1]
        before = msgpack.unpackb(prev.value) if check(prev).status == Status.OK else 0
        overlap = 1.0 - (now - n * window) / window
        count += before * overlap
    allowed = count <= limit
    left = max(0, math.floor(limit - count))
    retry = 0.0 if allowed else (n + 1) * window - now
    return Decision(allowed, count, left, retry)


# ---- lease locks ------------------------------------------------------------------------------
RELEASED = b"\x00released"
"""What a released lock holds for a millisecond (a CAS cannot delete): taken as absent."""


def lock_keys(name: str) -> tuple[bytes, bytes]:
    """The lock's key and its fencing counter's, in one partition."""
    return f"{{lock:{name}}}".encode(), f"{{lock:{name}}}:fence".encode()


def acquire(
    map_name: str, name: str, owner: bytes, ttl: float, deadline: float
) -> Generator[Step, Any, tuple[int, pb.Result]]:
    """Take the lock or wait for it: (fencing token, the lock's entry as written).

    One batch on the lock's partition: INCR of the fencing counter, then PUT IF_ABSENT of
    the lock holding our owner id. The primary runs them in order under its lock, so when
    the PUT succeeds the INCR's value is ours and greater than every token handed out
    before it: a resource that remembers the highest token it has seen refuses a holder
    whose lease ran out while it was paused (Kleppmann's fencing). A failed try costs a
    token number, never an order."""
    lock, fence = lock_keys(name)
    wait = POLL_FIRST_S
    while True:
        ops = [
            pb.Op(code=pb.INCR, map=map_name, key=fence, delta=1),
            pb.Op(code=pb.PUT, map=map_name, key=lock, value=owner, ttl_ms=to_ms(ttl),
                  condition=pb.IF_ABSENT),
        ]  # fmt: skip
        counted, taken = yield "ops", ops
        check(counted)
        if taken.status != Status.CAS_FAILED:
            check(taken)
            return counted.count, taken
        if time.monotonic() + wait > deadline:
            raise Unavailable(f"lock {name!r} is held by another owner; gave up at the deadline")
        yield "sleep", wait
        wait = min(POLL_MAX_S, wait * 2)


def release(map_name: str, name: str, held: pb.Result) -> Generator[Step, Any, bool]:
    """Give the lock up if it is still the entry we wrote (compare-and-set on its version
    to a value that expires in a millisecond); False if it had run out and is another's."""
    lock, _ = lock_keys(name)
    op = pb.Op(
        code=pb.PUT, map=map_name, key=lock, value=RELEASED, ttl_ms=1,
        condition=pb.IF_VERSION, expected_ts=held.version_ts,
        expected_member=held.version_member,
    )  # fmt: skip
    (r,) = yield "ops", [op]
    if r.status == Status.CAS_FAILED or r.status == Status.NOT_FOUND:
        return False
    check(r)
    return True


# ---- whole-map scans --------------------------------------------------------------------------
SCAN_PAGE = 500


def scan_pages(
    map_name: str,
    on_page: Callable[[list[bytes], list[pb.Result]], Generator[Step, Any, None]],
) -> Generator[Step, Any, None]:
    """Every entry of a map, a page at a time: SCAN for keys, then one batch of GETs, then
    `on_page(keys, results)` (a pattern of its own: it may write). A key present for the
    whole scan is seen once, migrations included (the SCAN cursor's guarantee)."""
    cursor = b""
    while True:
        (page,) = yield "ops", [pb.Op(code=pb.SCAN, map=map_name, cursor=cursor, limit=SCAN_PAGE)]
        check(page)
        keys, cursor = list(page.keys), page.cursor
        if keys:
            got = yield "ops", [pb.Op(code=pb.GET, map=map_name, key=k) for k in keys]
            for r in got:
                check(r)
            found = [(k, r) for k, r in zip(keys, got, strict=True) if r.status == Status.OK]
            if found:
                yield from on_page([k for k, _ in found], [r for _, r in found])
        if not cursor:
            return


# ---- drivers ---------------------------------------------------------------------------------
class _Failed:
    """A loader's exception on its way into the pattern (thrown in at its `load` step)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _resume(pattern: Pattern, reply: Any) -> Step:
    if isinstance(reply, _Failed):
        return pattern.throw(reply.error)
    return pattern.send(reply)


async def drive_async(
    pattern: Pattern, call: Callable[[list[pb.Op]], Any], loader: Callable[[Any], Any] | None
) -> Any:
    reply: Any = None
    while True:
        try:
            kind, arg = _resume(pattern, reply)
        except StopIteration as done:
            return done.value
        if kind == "ops":
            reply = await call(arg)
        elif kind == "sleep":
            reply = await asyncio.sleep(arg)
        else:
            assert loader is not None
            try:
                reply = loader(arg)
                if inspect.isawaitable(reply):
                    reply = await reply
            except Exception as e:  # into the pattern, which frees its lease and re-raises
                reply = _Failed(e)


def drive_sync(
    pattern: Pattern, call: Callable[[list[pb.Op]], Any], loader: Callable[[Any], Any] | None
) -> Any:
    reply: Any = None
    while True:
        try:
            kind, arg = _resume(pattern, reply)
        except StopIteration as done:
            return done.value
        if kind == "ops":
            reply = call(arg)
        elif kind == "sleep":
            time.sleep(arg)
            reply = None
        else:
            assert loader is not None
            try:
                reply = loader(arg)
            except Exception as e:  # into the pattern, which frees its lease and re-raises
                reply = _Failed(e)
