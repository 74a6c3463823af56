"""memcached clients against a member's memcached port: pymemcache, python-memcached (the
seed's own example), the SDK reading the same items, and bad input that must cost a
connection only.

libmemcached's tools and a three-member cluster are in test_memcached_tools.py;
byte-for-byte comparisons with a real memcached in test_memcached_vs_memcached.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import memcache
import pytest
from pymemcache.client.base import Client as PyMemcache

import grid
from grid.harness.cluster import LocalCluster, MemberProcess
from tests.integration.memcached_support import RawMemcache
from tests.integration.support import assert_taken_port_refused, wait_partitions_settled


@pytest.fixture(scope="module")
def mc_member(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MemberProcess]:
    cluster = LocalCluster(
        1,
        memcached=True,
        member_args=["--data-frame-timeout-s", "2", "--max-batch-ops", "64"],
        log_dir=tmp_path_factory.mktemp("mc-member"),
    )
    cluster.start()
    try:
        wait_partitions_settled(cluster.addresses)
        yield cluster.members[0]
    finally:
        cluster.stop(grace=5)


def pymc(member: MemberProcess) -> PyMemcache:
    host, port = member.memcached_address.rsplit(":", 1)
    return PyMemcache((host, int(port)), timeout=10, connect_timeout=10, default_noreply=False)


def test_the_seed_example_runs_unchanged(mc_member: MemberProcess) -> None:
    """The seed's example: python-memcached, get/set with a TTL."""
    mc = memcache.Client([mc_member.memcached_address])
    assert mc.set("seed:greeting", "hello", time=1)
    assert mc.get("seed:greeting") == "hello"
    assert mc.set("seed:obj", {"a": [1, 2]}, time=60)  # pickled: flags tell it so
    assert mc.get("seed:obj") == {"a": [1, 2]}
    assert mc.set("seed:n", 41) and mc.incr("seed:n") == 42 and mc.decr("seed:n", 2) == 40
    assert mc.get("seed:n") == 40  # an int comes back an int: the flags round-trip
    assert mc.get_multi(["seed:obj", "seed:n", "seed:none"]) == {"seed:obj": {"a": [1, 2]},
                                                                "seed:n": 40}  # fmt: skip
    assert mc.add("seed:n", 1) == 0 and mc.replace("seed:n", 7) and mc.get("seed:n") == 7
    assert mc.delete("seed:n") and mc.get("seed:n") is None
    time.sleep(2.1)
    assert mc.get("seed:greeting") is None  # the TTL ran out
    stats = mc.get_stats()
    assert stats and int(stats[0][1]["get_hits"]) > 0
    mc.disconnect_all()


def test_pymemcache(mc_member: MemberProcess) -> None:
    c = pymc(mc_member)
    assert c.set("py:a", b"1", expire=100, flags=7)
    assert c.get("py:a") == b"1"
    assert c.raw_command(b"get py:a", b"END") == b"VALUE py:a 7 1\r\n1\r\n"
    assert c.add("py:a", b"x") is False and c.add("py:b", b"x") is True
    assert c.replace("py:zz", b"x") is False and c.replace("py:b", b"y") is True
    assert c.append("py:b", b"z") and c.prepend("py:b", b"<") and c.get("py:b") == b"<yz"
    assert c.get_many(["py:a", "py:b", "py:none"]) == {"py:a": b"1", "py:b": b"<yz"}
    value, cas = c.gets("py:b")
    assert value == b"<yz" and int(cas) > 0
    assert c.cas("py:b", b"new", cas) is True
    assert c.cas("py:b", b"newer", cas) is False  # stale: EXISTS
    assert c.cas("py:none", b"x", cas) is None  # NOT_FOUND
    _, cas2 = c.gets("py:b")
    assert cas2 != cas  # every write changes it
    assert c.incr("py:a", 10) == 11 and c.decr("py:a", 20) == 0 and c.incr("py:none", 1) is None
    assert c.set("py:max", b"18446744073709551615") and c.incr("py:max", 1) == 0
    assert c.touch("py:a", 1) is True and c.touch("py:none", 1) is False
    assert c.raw_command(b"gat 100 py:b", b"END") == b"VALUE py:b 0 3\r\nnew\r\n"
    assert c.delete("py:b") is True and c.delete("py:b") is False
    assert c.version().startswith(b"1.6.18")
    stats = c.stats()
    for name in (b"pid", b"uptime", b"time", b"curr_items", b"total_items", b"get_hits",
                 b"get_misses", b"cmd_get", b"cmd_set", b"bytes"):  # fmt: skip
        assert name in stats, name
    assert stats[b"curr_items"] >= 2 and stats[b"get_hits"] > 0
    big = bytes(range(256)) * 4096  # 1 MiB: memcached's largest item
    assert c.set("py:big", big) and c.get("py:big") == big
    with pytest.raises(Exception, match="object too large for cache"):
        c.set("py:big", big + b"x")
    assert c.get("py:big") is None  # a failed set drops the old value, as memcached does
    with pytest.raises(Exception, match=r"bad command line format|contains control"):
        c.get("py:bad\x01key")
    c.close()


def test_meta_commands_through_a_raw_client(mc_member: MemberProcess) -> None:
    raw = RawMemcache(mc_member.memcached_address)
    assert raw.step(b"ms meta:k 2 F5 T100 c\r\nhi\r\n").startswith(b"HD c")
    assert raw.step(b"mg meta:k v f t k O1\r\n") == b"VA 2 f5 t100 kmeta:k O1\r\nhi\r\n"
    assert raw.step(b"ma meta:n N0 J9 v\r\nma meta:n v\r\n") == b"VA 1\r\n9\r\nVA 2\r\n10\r\n"
    assert raw.step(b"md meta:k q\r\nmg meta:k v\r\n") == b"EN\r\n"
    raw.close()


def test_the_sdk_reads_items_with_the_raw_codec(mc_member: MemberProcess) -> None:
    c = pymc(mc_member)
    c.set("sdk:k", b"\x00bytes")
    c.set("sdk:flags", b"v", flags=3)
    with grid.Client(mc_member.address, timeout=10) as client:
        m = client.map("memcached", codec="raw")
        assert m.get("sdk:k") == b"\x00bytes"  # flags 0: the plain value
        assert m.get("sdk:flags") == b"\xc1\x00\x00\x00\x03v"  # the flags header
        m.put("sdk:from-sdk", b"hello")
    assert c.get("sdk:from-sdk") == b"hello"
    c.close()


def test_more_keys_than_a_batch_holds(mc_member: MemberProcess) -> None:
    c = pymc(mc_member)
    keys = [f"many:{i}" for i in range(300)]
    c.set_many({k: k.encode() for k in keys})
    assert c.get_many(keys) == {k: k.encode() for k in keys}
    wanted = [f"many:{i:012d}" for i in range(10_000)]  # one get line of about 200 kB
    assert c.get_many(wanted + keys) == {k: k.encode() for k in keys}
    c.close()


# ---- bad input --------------------------------------------------------------------------------
def healthy(member: MemberProcess) -> None:
    """The member still answers new connections and still has what it stored."""
    c = pymc(member)
    assert c.get("bad:canary") == b"alive"
    c.close()


@pytest.fixture
def canary(mc_member: MemberProcess) -> MemberProcess:
    c = pymc(mc_member)
    c.set("bad:canary", b"alive")
    c.close()
    return mc_member


def test_an_unknown_command_is_error_and_the_connection_goes_on(canary: MemberProcess) -> None:
    raw = RawMemcache(canary.memcached_address)
    assert raw.step(b"frob x\r\n") == b"ERROR\r\n"
    assert raw.step(b"get bad:canary\r\n") == b"VALUE bad:canary 0 5\r\nalive\r\nEND\r\n"
    raw.close()


def test_binary_garbage_is_answered_and_the_member_stays(canary: MemberProcess) -> None:
    raw = RawMemcache(canary.memcached_address)
    raw.send(b"\xff\xfe\x00garbage\r\n\x01\x02\r\n")
    assert raw.step(b"") == b"ERROR\r\nERROR\r\n"
    raw.send(b"x" * (70 * 1024))  # a line past 64 KiB without its end
    data, closed = raw.rest()
    assert data == b"CLIENT_ERROR line too long\r\n" and closed
    healthy(canary)


def test_an_impossible_value_length_closes_the_connection(canary: MemberProcess) -> None:
    raw = RawMemcache(canary.memcached_address)
    raw.send(b"set bad:canary 0 0 1000000000\r\n")
    data, closed = raw.rest()
    assert data == b"SERVER_ERROR object too large for cache\r\n" and closed
    healthy(canary)


def test_a_half_sent_command_is_closed_after_the_timeout(canary: MemberProcess) -> None:
    raw = RawMemcache(canary.memcached_address)
    raw.send(b"set bad:canary 0 0 5\r\nde")
    healthy(canary)  # others are served meanwhile
    started = time.monotonic()
    data, closed = raw.rest(timeout=10)
    assert closed and data == b""
    assert time.monotonic() - started < 8
    healthy(canary)  # and the half-sent write was never applied


def test_many_connections_of_garbage_leave_the_member_serving(canary: MemberProcess) -> None:
    host, port = canary.memcached_address.rsplit(":", 1)
    for i in range(50):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(bytes((i * 37 + j) % 256 for j in range(200)) + b"\r\n")
    healthy(canary)


def test_quit_closes_after_the_replies_before_it(canary: MemberProcess) -> None:
    raw = RawMemcache(canary.memcached_address)
    raw.send(b"get bad:canary\r\nquit\r\nget bad:canary\r\n")
    data, closed = raw.rest()
    assert data == b"VALUE bad:canary 0 5\r\nalive\r\nEND\r\n" and closed


def test_a_taken_memcached_port_is_a_clear_start_failure(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert_taken_port_refused("--memcached-port", "memcached", tmp_path_factory.mktemp("mc-taken"))


def test_large_values_arrive_whole_in_any_pieces(mc_member: MemberProcess) -> None:
    """A value of 1,000,000 bytes (CR LF pairs inside) sent in small pieces, read back whole."""
    value = bytes(range(256)) * 3906 + b"\r\n" * 32  # 1,000,000 bytes
    raw = RawMemcache(mc_member.memcached_address)
    request = b"set big:v 5 0 %d\r\n%b\r\nmn\r\n" % (len(value), value)
    for at in range(0, len(request), 7919):
        raw.send(request[at : at + 7919])
    assert raw.until(b"MN\r\n") == b"STORED\r\n"
    assert raw.step(b"mg big:v s f\r\n") == b"HD s1000000 f5\r\n"
    raw.close()
    c = pymc(mc_member)
    assert c.get("big:v") == value
    c.close()


def test_flush_all_with_a_delay(mc_member: MemberProcess) -> None:
    c = pymc(mc_member)
    c.set("later:a", b"1")
    assert c.flush_all(delay=1) is True
    assert c.get("later:a") == b"1"  # not yet
    time.sleep(1.8)
    assert c.get("later:a") is None
    c.set("later:b", b"2")  # stored after the flush: kept
    assert c.get("later:b") == b"2"
    c.close()
