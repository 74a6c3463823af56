"""The client SDK against real members: deadlines, retries, coalescing, codecs, lifecycle.

Tests that pause, kill or restart a member use a dedicated one (`spawn`); the
rest share the module's member and measure it through its stats counters
(`requests` = batches served, `operations` = operations served; a Stats call
counts as neither), so the tests of this module must not run concurrently.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import msgpack
import pytest

import grid
from grid.client.connection import ConnectionOptions
from grid.harness.cluster import free_port
from tests.conftest import Spawn
from tests.integration.support import AsyncRunner, raw_stats, wait_paused

pytestmark = pytest.mark.integration


def _counters(address: str) -> tuple[int, int]:
    st = raw_stats(address)
    return st.requests, st.operations


# ---- deadlines -----------------------------------------------------------------------------------
def test_deadline_against_paused_member(spawn: Spawn, aio: AsyncRunner) -> None:
    """A member paused with SIGSTOP: a 0.3 s call raises DeadlineExceeded within a bound."""
    cluster = spawn()
    member = cluster.members[0]
    address = member.address
    with grid.Client(address, timeout=5) as client:
        m = client.map("d")
        m.put("k", 1)

        async def make() -> grid.AsyncClient:
            return grid.AsyncClient(address, timeout=5)

        aclient = aio.run(make())
        aio.run(aclient.map("d").get("k"))  # connected before the pause
        cluster.kill(member, signal.SIGSTOP)
        try:
            wait_paused(member.pid)
            for call in (
                lambda: m.get("k", timeout=0.3),
                lambda: m.incr("n", timeout=0.3),
                lambda: aio.run(aclient.map("d").get("k", timeout=0.3)),
            ):
                t0 = time.monotonic()
                with pytest.raises(grid.DeadlineExceeded, match="before the deadline"):
                    call()
                assert 0.25 <= time.monotonic() - t0 < 1.5
            with grid.Client(address, timeout=0.3) as fresh:  # never connected: same bound
                t0 = time.monotonic()
                with pytest.raises(grid.DeadlineExceeded):
                    fresh.map("d").get("k")
                assert time.monotonic() - t0 < 1.5
        finally:
            cluster.kill(member, signal.SIGCONT)
            aio.run(aclient.close())
        assert issubclass(grid.DeadlineExceeded, grid.Unavailable)
        assert m.get("k", timeout=5) == 1  # the same client works again after SIGCONT


# ---- retries across an outage --------------------------------------------------------------------
def _restart(cluster: Any) -> None:
    old = cluster.members[0]
    assert old.process.wait(10) is not None
    cluster.members.remove(old)
    cluster.wait_ready(cluster.start_member(0), timeout=20)


def test_calls_made_during_an_outage_succeed_once_the_member_is_back(spawn: Spawn) -> None:
    """kill -9, restart on the same port: get, put and incr issued during the outage wait
    and succeed afterwards. incr too: the data plane knows it never left the process (no
    connection to send it on), so sending it later cannot count it twice. An incr that
    may have reached the member is the next test's case."""
    port = free_port()
    cluster = spawn(port=port)
    address = cluster.members[0].address
    with grid.Client(address, timeout=15) as client, ThreadPoolExecutor(4) as pool:
        m = client.map("r")
        m.put("k", "v")
        cluster.kill(cluster.members[0], signal.SIGKILL)
        cluster.members[0].process.wait(10)
        t0 = time.monotonic()
        get = pool.submit(m.get, "k", "lost")
        put = pool.submit(m.put, "p", 42)
        incr = pool.submit(m.incr, "n")
        done, _ = wait([get, put, incr], timeout=0.3)
        if incr in done:  # the loss was not seen yet when incr was written: may have gone out
            with pytest.raises(grid.Unavailable, match="may or may not have been applied"):
                incr.result()
        assert not done - {incr}, "calls completed while no member was running"
        _restart(cluster)
        assert cluster.members[0].address == address
        assert get.result(timeout=15) == "lost"  # a restarted member starts empty
        assert isinstance(put.result(timeout=15), grid.Version)
        assert time.monotonic() - t0 < 15
        assert m.get("p") == 42
        if incr in done:
            assert m.get("n") is None  # the failed incr was not re-sent
        else:
            assert incr.result(timeout=15) == 1
            assert m.get("n") == 1  # applied exactly once


def test_broken_connection_fails_inflight_incr_but_retries_reads(spawn: Spawn) -> None:
    """Calls in flight on a paused member whose connection then breaks (SIGKILL):
    incr raises Unavailable and is not applied twice; get and put retry and succeed."""
    cluster = spawn(port=free_port())
    member = cluster.members[0]
    with grid.Client(member.address, timeout=15) as client, ThreadPoolExecutor(4) as pool:
        m = client.map("b")
        m.put("k", "v")
        assert m.incr("n") == 1
        cluster.kill(member, signal.SIGSTOP)
        wait_paused(member.pid)
        incr: Future[int] = pool.submit(m.incr, "n")
        get = pool.submit(m.get, "k", "lost")
        put = pool.submit(m.put, "p", 42)
        done, _ = wait([incr, get, put], timeout=0.3)
        assert not done, "calls completed on a paused member"
        cluster.kill(member, signal.SIGKILL)
        with pytest.raises(grid.Unavailable, match="may or may not have been applied"):
            incr.result(timeout=5)
        assert not get.done() and not put.done()
        _restart(cluster)
        assert get.result(timeout=15) == "lost"
        assert isinstance(put.result(timeout=15), grid.Version)
        assert m.get("p") == 42
        assert m.get("n") is None


# ---- batching ------------------------------------------------------------------------------------
def test_concurrent_callers_coalesce_into_few_batches(
    address: str, aio: AsyncRunner, async_client: grid.AsyncClient, map_name: str
) -> None:
    """64 asyncio callers x 40 gets: operations grow by 2560, requests by far fewer."""
    callers, n = 64, 40
    m = async_client.map(map_name)
    aio.run(m.put_many({f"k{i}": i for i in range(callers)}))
    requests0, ops0 = _counters(address)

    async def caller(i: int) -> list[Any]:
        return [await m.get(f"k{i}") for _ in range(n)]

    async def main() -> list[list[Any]]:
        return await asyncio.gather(*(caller(i) for i in range(callers)))

    results = aio.run(main())
    assert results == [[i] * n for i in range(callers)]
    requests1, ops1 = _counters(address)
    assert ops1 - ops0 == callers * n
    assert requests1 - requests0 <= callers * n // 8, f"{requests1 - requests0} batches"


def test_many_calls_are_one_round_trip(address: str, client: grid.Client, map_name: str) -> None:
    """put_many/get_many/delete_many of 500 keys: one batch each."""
    m = client.map(map_name)
    items = {f"k{i}": {"i": i} for i in range(500)}
    for call, expected in (
        (lambda: m.put_many(items), None),
        (lambda: m.get_many([*items, "missing"]), items),
        (lambda: m.delete_many(list(items)[:100]), 100),
    ):
        requests0, ops0 = _counters(address)
        assert call() == expected
        requests1, ops1 = _counters(address)
        assert requests1 - requests0 == 1
        assert ops1 - ops0 in (500, 501, 100)


def test_small_concurrent_calls_never_exceed_member_batch_limit(spawn: Spawn) -> None:
    """A member with --max-batch-ops 100 and 64 concurrent callers of 2 ops each.

    Each call is tiny, but the SDK coalesces concurrent callers into one stream
    message. It must keep coalesced messages within what the member accepts,
    otherwise every innocent caller fails with the whole batch's TOO_LARGE.
    """
    address = spawn("--max-batch-ops", "100").addresses[0]

    async def main() -> list[Any]:
        async with grid.AsyncClient(address, timeout=5) as c:
            m = c.map("small")
            await m.put_many({"a": 1, "b": 2})
            return await asyncio.gather(
                *(m.get_many(["a", "b"]) for _ in range(64)), return_exceptions=True
            )

    results = asyncio.run(main())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of 64 calls failed, e.g. {errors[0]!r}"
    assert results == [{"a": 1, "b": 2}] * 64


# ---- codecs --------------------------------------------------------------------------------------
class Zjson:
    """A custom codec: zlib-compressed JSON."""

    name = "zjson"

    def encode(self, value: Any) -> bytes:
        return zlib.compress(json.dumps(value).encode())

    def decode(self, data: bytes) -> Any:
        return json.loads(zlib.decompress(data))


def test_codecs(address: str, client: grid.Client, map_name: str) -> None:
    """msgpack by default, json, raw and a custom codec object; bytes on the member match."""
    raw = client.map(map_name, codec="raw")
    doc = {"name": "Ada", "tags": ["a", "b"], "n": 3}

    client.map(map_name).put("mp", doc)
    assert raw.get("mp") == msgpack.packb(doc, use_bin_type=True)
    client.map(map_name).put("bin", b"\x00\xff")
    assert client.map(map_name).get("bin") == b"\x00\xff"
    assert client.map(map_name).get_entry("mp").value == doc  # type: ignore[union-attr]

    client.map(map_name, codec="json").put("js", doc)
    assert json.loads(raw.get("js")) == doc
    assert raw.get("js") == b'{"name":"Ada","tags":["a","b"],"n":3}'
    with grid.Client(address, codec="json") as jclient:  # client-wide default codec
        assert jclient.map(map_name).get("js") == doc
        jclient.map(map_name).put("js2", [1, 2])
    assert raw.get("js2") == b"[1,2]"

    raw.put("r", b"\x00\x01")
    raw.put("s", "héllo")
    assert raw.get("r") == b"\x00\x01" and raw.get("s") == "héllo".encode()
    with pytest.raises(grid.CodecError, match="raw codec"):
        raw.put("i", 5)

    z = client.map(map_name, codec=Zjson())
    z.put("z", doc)
    assert z.get("z") == doc
    assert zlib.decompress(raw.get("z")) == json.dumps(doc).encode()
    assert z.get_many(["z", "nope"]) == {"z": doc}

    with pytest.raises(ValueError, match="unknown codec"):
        client.map(map_name, codec="pickle")
    with pytest.raises(TypeError):
        client.map(map_name, codec=object())  # type: ignore[arg-type]


def test_async_client_codec(
    aio: AsyncRunner, async_client: grid.AsyncClient, client: grid.Client, map_name: str
) -> None:
    """AsyncClient maps honour the codec too (json and a custom object)."""
    aio.run(async_client.map(map_name, codec="json").put("j", {"a": 1}))
    aio.run(async_client.map(map_name, codec=Zjson()).put("z", [1]))
    raw = client.map(map_name, codec="raw")
    assert raw.get("j") == b'{"a":1}'
    assert client.map(map_name, codec=Zjson()).get("z") == [1]


# ---- lifecycle and threads -----------------------------------------------------------------------
def _client_threads(address: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"grid-client-{address}" and t.is_alive()]


def test_context_managers_close_cleanly(address: str, map_name: str) -> None:
    """`with Client` and `async with AsyncClient` close their stream, loop and thread."""
    baseline = len(_client_threads(address))
    with grid.Client(address) as c:
        c.map(map_name).put("k", 1)
        assert len(_client_threads(address)) == baseline + 1
    assert len(_client_threads(address)) == baseline
    c.close()  # closing twice is harmless

    async def main() -> None:
        async with grid.AsyncClient(address) as ac:
            assert await ac.map(map_name).get("k") == 1
        with pytest.raises(grid.Unavailable, match="closed"):
            await ac.map(map_name).get("k")
        await ac.close()

    asyncio.run(main())


def test_closed_sync_client_raises_grid_error(address: str) -> None:
    """A call on a closed Client raises grid.Unavailable, as AsyncClient does after close."""
    c = grid.Client(address)
    m = c.map("closed")
    c.close()
    with pytest.raises(grid.Unavailable, match="closed"):
        m.get("k")


def test_sync_client_threads_share_a_bounded_pool_of_sockets(address: str) -> None:
    """16 threads, at most 2 sockets: the others wait for a free one (within their
    deadline) instead of opening their own, and every call still gets its own answer."""
    options = ConnectionOptions(timeout=10, max_connections=2)
    with grid.Client(address, options=options) as client:
        m = client.map("bounded-pool")
        m.put_many({f"k{i}": i for i in range(16)})

        def work(t: int) -> int:
            return sum(m.get(f"k{t}") for _ in range(50))

        with ThreadPoolExecutor(16) as pool:
            sums = [f.result(timeout=60) for f in [pool.submit(work, t) for t in range(16)]]
        assert sums == [50 * t for t in range(16)]
        peaks = client._blocking.pool.peak
        assert peaks and max(peaks.values()) <= 2, peaks


def test_sync_client_shared_by_8_threads(address: str, client: grid.Client, map_name: str) -> None:
    """8 threads share one Client: counters are exact and every thread reads its own writes."""
    m = client.map(map_name)
    rounds = 150
    m.get("warm-up")  # the table is known: from here on no call takes the async path
    requests0, _ = _counters(address)

    def work(t: int) -> list[int]:
        seen = []
        for i in range(rounds):
            m.put(f"t{t}:{i}", {"t": t, "i": i})
            assert m.get(f"t{t}:{i}") == {"t": t, "i": i}
            seen.append(m.incr("shared"))
            m.incr(f"own:{t}", 2)
        return seen

    with ThreadPoolExecutor(8) as pool:
        seen = [v for f in [pool.submit(work, t) for t in range(8)] for v in f.result(timeout=60)]
    assert sorted(seen) == list(range(1, 8 * rounds + 1))  # every increment applied once
    assert m.get("shared") == 8 * rounds
    assert m.get_many([f"own:{t}" for t in range(8)]) == {f"own:{t}": 2 * rounds for t in range(8)}
    assert m.size() == 8 * rounds + 1 + 8
    requests1, _ = _counters(address)
    # Each thread's call is one request on its own pooled socket (no coalescing through a
    # loop thread any more, as redis-py): nothing was sent twice or retried. The 4 calls
    # after the threads and the counter reads add a few.
    assert 4 * 8 * rounds <= requests1 - requests0 <= 4 * 8 * rounds + 8
