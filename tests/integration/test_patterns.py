"""get_or_load and rate limits against three real members (grid/client/patterns.py).

Clients are connected to different members on purpose: single flight must hold across
the cluster, not only inside one client. Every load loop is bounded in time and count.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator

import pytest

import grid
from grid.harness.cluster import LocalCluster
from tests.integration.support import wait_partitions_settled, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def three(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(3, log_dir=tmp_path_factory.mktemp("patterns"))
    try:
        c.start()
        wait_partitions_settled(c.addresses)
        yield c
    finally:
        c.stop(grace=5)


@pytest.fixture(scope="module")
def clients(three: LocalCluster) -> Iterator[list[grid.Client]]:
    cs = [grid.Client(a, timeout=30) for a in three.addresses]
    try:
        yield cs
    finally:
        for c in cs:
            c.close()


class Loader:
    """Counts calls, and how many ran at once at most."""

    def __init__(self, seconds: float, value: object = "loaded") -> None:
        self.seconds = seconds
        self.value = value
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, key: object) -> object:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(self.seconds)
            return {"key": key, "value": self.value}
        finally:
            with self.lock:
                self.running -= 1


def test_a_thousand_callers_through_three_members_cause_one_load(
    three: LocalCluster, clients: list[grid.Client]
) -> None:
    loader = Loader(0.3)
    threads_n, tasks_n = 300, 700
    go = threading.Barrier(threads_n + 1)
    got: list[object] = []

    def thread(i: int) -> None:
        m = clients[i % 3].map("cache")
        go.wait()
        got.append(m.get_or_load("hot", loader, ttl=60))

    async def aload(key: object) -> object:
        return await asyncio.to_thread(loader, key)

    async def tasks() -> list[object]:
        acs = [grid.AsyncClient(a, timeout=30) for a in three.addresses]
        try:
            await asyncio.gather(*(c.map("cache").get("warm-up") for c in acs))
            go.wait()
            return await asyncio.gather(
                *(acs[i % 3].map("cache").get_or_load("hot", aload, ttl=60)
                  for i in range(tasks_n))
            )  # fmt: skip
        finally:
            for c in acs:
                await c.close()

    workers = [threading.Thread(target=thread, args=(i,)) for i in range(threads_n)]
    for w in workers:
        w.start()
    from_tasks = asyncio.run(tasks())
    for w in workers:
        w.join(60)
    assert loader.calls == 1, f"{loader.calls} loader calls"
    want = {"key": "hot", "value": "loaded"}
    assert len(got) == threads_n and all(v == want for v in got)
    assert len(from_tasks) == tasks_n and all(v == want for v in from_tasks)


def test_early_refresh_keeps_a_hot_key_loaded_with_one_load_per_expiry(
    clients: list[grid.Client],
) -> None:
    """XFetch under steady load: the key is refreshed before it expires, one loader at a
    time, and a reader watching the key never finds it missing. How early depends on the
    load's time d and the call rate r (about d*ln(r*d) before expiry: XFetch refreshes
    sooner under more traffic); with a 20 ms load that is tens of milliseconds here, so
    the loads stay about one per TTL."""
    ttl, run_s = 2.0, 8.0
    loader = Loader(0.02)
    clients[0].map("cache").get_or_load("steady", loader, ttl=ttl)  # the first load
    stop = time.monotonic() + run_s
    missing: list[float] = []

    def caller(i: int) -> None:
        m = clients[i % 3].map("cache")
        for _ in range(20_000):
            if time.monotonic() > stop:
                return
            m.get_or_load("steady", loader, ttl=ttl)
            time.sleep(0.005)

    def watcher() -> None:
        m = clients[2].map("cache")
        while time.monotonic() < stop:
            if m.get("steady") is None:
                missing.append(time.monotonic())
            time.sleep(0.01)

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    workers.append(threading.Thread(target=watcher))
    for w in workers:
        w.start()
    for w in workers:
        w.join(run_s + 30)
    assert not missing, f"the key was missing {len(missing)} times"
    assert loader.most_at_once == 1
    expiries = run_s / ttl
    print(f"\n{loader.calls} loads in {run_s} s with a {ttl} s TTL ({expiries:.0f} expiries)")
    assert 2 <= loader.calls <= expiries + 3, loader.calls


def test_without_early_refresh_the_key_expires_and_is_loaded_again(
    clients: list[grid.Client],
) -> None:
    loader = Loader(0.05)
    m = clients[1].map("cache")
    m.get_or_load("plain", loader, ttl=0.5, beta=0)
    for _ in range(20):
        m.get_or_load("plain", loader, ttl=0.5, beta=0)
    assert loader.calls == 1  # hits, no early refresh
    wait_until(lambda: m.get("plain") is None, 10, 0.05, "the key to expire")
    m.get_or_load("plain", loader, ttl=0.5, beta=0)
    assert loader.calls == 2


def test_a_failed_load_frees_the_lease_for_the_next_caller(clients: list[grid.Client]) -> None:
    m = clients[0].map("cache")
    entered = threading.Event()

    def failing(key: object) -> object:
        entered.set()
        time.sleep(0.3)
        raise RuntimeError("database down")

    errors: list[BaseException] = []

    def first() -> None:
        try:
            m.get_or_load("flaky", failing, ttl=30, lease_ttl=20)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=first)
    t.start()
    assert entered.wait(10)
    started = time.monotonic()
    loader = Loader(0.01, "second try")
    value = clients[1].map("cache").get_or_load("flaky", loader, ttl=30, lease_ttl=20)
    t.join(10)
    assert [str(e) for e in errors] == ["database down"]  # the caller sees its loader's error
    assert value == {"key": "flaky", "value": "second try"} and loader.calls == 1
    assert time.monotonic() - started < 5, "the waiter took over long before the lease's 20 s"


def test_a_waiter_gives_up_at_its_deadline_saying_why(clients: list[grid.Client]) -> None:
    m = clients[0].map("cache")
    slow = threading.Thread(target=lambda: m.get_or_load("slow", Loader(3.0), ttl=30, timeout=20))
    slow.start()
    wait_until(lambda: m.contains("{slow}:lease"), 10, 0.01, "the first caller's lease")
    with pytest.raises(grid.Unavailable, match="waited for another caller to load"):
        clients[1].map("cache").get_or_load("slow", Loader(0), ttl=30, timeout=1)
    slow.join(20)


def test_fixed_and_sliding_windows(clients: list[grid.Client]) -> None:
    c = clients[0]
    fixed = [c.rate_limit("api", "ada", limit=5, window=3) for _ in range(8)]
    assert [d.allowed for d in fixed] == [True] * 5 + [False] * 3
    assert fixed[-1].remaining == 0 and 0 < fixed[-1].retry_after <= 3
    other = clients[1].rate_limit("api", "bob", limit=5, window=3)  # per caller, any member
    assert other.allowed and other.remaining == 4
    sliding = [clients[2].rate_limit("api2", "ada", limit=5, window=3, sliding=True)
               for _ in range(7)]  # fmt: skip
    assert [d.allowed for d in sliding] == [True] * 5 + [False] * 2


def test_a_lock_excludes_across_members_and_its_tokens_grow(clients: list[grid.Client]) -> None:
    inside = 0
    most = 0
    tokens: list[int] = []
    guard = threading.Lock()

    def worker(i: int) -> None:
        nonlocal inside, most
        for _ in range(8):
            with clients[i % 3].lock("job", ttl=10, timeout=30) as token:
                with guard:
                    inside += 1
                    most = max(most, inside)
                    tokens.append(token)
                time.sleep(0.005)
                with guard:
                    inside -= 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert most == 1, "two holders at once"
    assert len(tokens) == 48
    assert tokens == sorted(tokens) and len(set(tokens)) == 48, "tokens in acquisition order grow"


def test_an_expired_lock_is_taken_over_and_the_old_holder_cannot_release_it(
    clients: list[grid.Client],
) -> None:
    first = clients[0].lock("lease", ttl=0.5)
    old_token = first.__enter__()
    time.sleep(0.8)  # the lease runs out while its holder is "paused"
    with clients[1].lock("lease", ttl=10, timeout=5) as new_token:
        assert new_token > old_token  # a fenced resource would refuse the old holder
        first.__exit__(None, None, None)  # the late release must not free the new lease
        refused = pytest.raises(grid.Unavailable, match="held by another owner")
        with refused, clients[2].lock("lease", timeout=0.3):
            pass


def test_fencing_tokens_grow_across_a_failover_under_sync_backups(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """kill -9 of the lock's primary midway: the tokens handed out before and after it
    still grow (the fencing counter's increments are confirmed by a backup before the
    holder gets its token)."""
    c = LocalCluster(3, member_args=["--sync-backups", "1"],
                     log_dir=tmp_path_factory.mktemp("lock-failover"))  # fmt: skip
    try:
        c.start()
        wait_partitions_settled(c.addresses)
        tokens: list[int] = []
        from grid.client.patterns import lock_keys
        from partitioning import partition_of

        with grid.Client(c.addresses[0], timeout=30) as probe:
            table = probe.table()
        assert table is not None
        owner = table.owner(partition_of(lock_keys("fenced")[0], table.partition_count))
        victim = next(m for m in c.members if m.name == owner)
        seed = next(m for m in c.members if m is not victim)
        with grid.Client(seed.address, timeout=30) as client:
            for i in range(60):
                if i == 20:
                    c.kill(victim)
                    victim.process.wait(10)
                try:
                    with client.lock("fenced", ttl=5, timeout=30) as token:
                        tokens.append(token)
                except grid.Unavailable:
                    continue  # a try cut by the failover: it may have used a number
        assert len(tokens) >= 50
        assert all(a < b for a, b in itertools.pairwise(tokens)), tokens
    finally:
        c.stop(grace=5)
