"""The membership transport in process: security (HMAC, AES-GCM keyring), the
fuzzed input path (sealer + decoder + core, as the runtime runs it), bounded
TCP frames, discovery, and the embedded and SDK faces (members, listeners)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grid
from grid.config import Config, ConfigError
from grid.member.gossip.discovery import Discovery, parse_seeds
from grid.member.gossip.runtime import GossipRuntime, _ip_of, gossip_endpoint
from grid.member.gossip.security import MAX_OVERHEAD, REASONS, Rejected, Sealer, parse_keys
from grid.member.gossip.transport import Transport, split_addr
from tests.integration.support import AsyncRunner, wait_until

K1, K2, K3 = (bytes([i]) * 32 for i in (1, 2, 3))


def b64(*keys: bytes) -> str:
    return ",".join(base64.b64encode(k).decode() for k in keys)


# ---- security ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("secret", "keys"),
    [("", []), ("s", []), ("", [K1]), ("s", [K1, K2])],
)
def test_seal_open_round_trip(secret: str, keys: list[bytes]) -> None:
    s = Sealer(secret, keys)
    for payload in (b"", b"x", bytes(range(256)) * 5):
        frame = s.seal(payload)
        assert s.open(frame) == payload
        assert len(frame) <= len(payload) + MAX_OVERHEAD
        if keys:
            assert payload[:16] not in frame or len(payload) < 4  # really encrypted


def test_key_rotation_every_step_interoperates() -> None:
    """add the new key second everywhere, make it first, remove the old one."""
    steps = [[K1], [K1, K2], [K2, K1], [K2]]
    for a, b in itertools.pairwise(steps):
        x, y = Sealer("s", a), Sealer("s", b)
        assert y.open(x.seal(b"hello")) == b"hello"
        assert x.open(y.seal(b"hello")) == b"hello"


@pytest.mark.parametrize(
    ("sender", "receiver", "reason"),
    [
        (Sealer("a"), Sealer("b"), "bad_mac"),
        (Sealer(""), Sealer("b"), "unauthenticated"),
        (Sealer("a"), Sealer(""), "unexpected_mac"),
        (Sealer("s"), Sealer("s", [K1]), "not_encrypted"),
        (Sealer("s", [K1]), Sealer("s"), "unexpected_encryption"),
        (Sealer("s", [K3]), Sealer("s", [K1, K2]), "unknown_key"),
    ],
)
def test_rejections_are_counted_by_reason(sender: Sealer, receiver: Sealer, reason: str) -> None:
    with pytest.raises(Rejected) as e:
        receiver.open(sender.seal(b"payload"))
    assert e.value.reason == reason
    assert receiver.rejected == {reason: 1}


def test_tampered_ciphertext_is_rejected() -> None:
    plain = Sealer("", [K1])  # encryption alone still authenticates (GCM tag)
    frame = bytearray(plain.seal(b"payload"))
    frame[-1] ^= 1
    with pytest.raises(Rejected, match="decrypt_failed"):
        plain.open(bytes(frame))
    both = Sealer("s", [K1])
    frame = bytearray(both.seal(b"payload"))
    frame[20] ^= 1
    with pytest.raises(Rejected, match="bad_mac"):
        both.open(bytes(frame))


def test_parse_keys() -> None:
    assert parse_keys(b64(K1, K2)) == [K1, K2]
    assert parse_keys("") == []
    with pytest.raises(ValueError, match="#2 is 5 bytes"):
        parse_keys(b64(K1) + "," + base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="not base64"):
        parse_keys("not base64!")
    with pytest.raises(ConfigError, match="encryption_keys"):
        GossipRuntime(Config(encryption_keys="nope"), "m", "127.0.0.1:1", "0")


SEALERS = [Sealer(""), Sealer("s"), Sealer("", [K1]), Sealer("s", [K1, K2])]


@settings(max_examples=400, deadline=None, database=None)
@given(st.binary(max_size=3000), st.sampled_from(range(len(SEALERS))))
def test_open_raises_only_rejected(data: bytes, which: int) -> None:
    s = SEALERS[which]
    try:
        s.open(data)
    except Rejected as e:
        assert e.reason in REASONS


# ---- the whole input path of a running member, fed directly --------------------------------------
@pytest.fixture(scope="module")
def runtime(no_grid_env: None) -> Iterator[tuple[AsyncRunner, GossipRuntime]]:
    runner = AsyncRunner()
    rt = GossipRuntime(Config(port=0, secret="s", name="fuzzed"), "fuzzed", "127.0.0.1:1", "0")
    runner.run(rt.start())
    try:
        yield runner, rt
    finally:
        runner.run(rt.stop())
        runner.close()


def msgpack_trees() -> st.SearchStrategy[bytes]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.text(max_size=20),
        st.binary(max_size=20),
    )
    trees = st.recursive(leaves, lambda ch: st.lists(ch, max_size=6), max_leaves=30)
    # shaped like a packet: [version, message, [gossip...]] with random contents
    shaped = st.tuples(st.sampled_from([1, 0, 2]), trees, st.lists(trees, max_size=4)).map(list)
    return st.one_of(trees, shaped).map(lambda t: msgpack.packb(t, use_bin_type=True))


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.one_of(st.binary(max_size=1500), msgpack_trees()),
    st.booleans(),
    st.booleans(),
)
def test_fuzzed_input_never_escapes_the_runtime(
    runtime: tuple[AsyncRunner, GossipRuntime], payload: bytes, seal: bool, stream: bool
) -> None:
    """Garbage, and well-authenticated garbage that reaches the decoder and the core."""
    runner, rt = runtime
    frame = Sealer("s").seal(payload) if seal else payload

    async def feed() -> None:
        (rt._on_stream if stream else rt._on_datagram)(frame, "198.51.100.7:9")

    before = sum(rt.sealer.rejected.values())
    runner.run(feed())
    assert rt.counters().get("internal_errors", 0) == 0
    assert rt.node is not None and rt.node.num_alive() == 1
    assert sum(rt.sealer.rejected.values()) >= before  # counted, not raised


# ---- transport -----------------------------------------------------------------------------------
def test_tcp_frames_are_bounded_and_time_out() -> None:
    got: list[bytes] = []

    async def scenario() -> dict[str, int]:
        t = Transport(
            lambda d, s: None,
            lambda d, s: got.append(d),
            max_datagram=100,
            max_frame=1000,
            read_timeout=0.3,
        )
        await t.start("127.0.0.1", 0)
        try:

            async def send(raw: bytes, wait_close: bool = True) -> None:
                r, w = await asyncio.open_connection("127.0.0.1", t.port)
                w.write(raw)
                await w.drain()
                if wait_close:
                    await asyncio.wait_for(r.read(), 3)  # the member hangs up
                w.close()

            await send(struct.pack(">I", 5) + b"hello" + struct.pack(">I", 2) + b"hi", False)
            await send(struct.pack(">I", 10**9))  # oversized: refused before reading
            await send(struct.pack(">I", 100) + b"short")  # then silence: timeout
            await send(b"\x00\x00")  # truncated header, then silence
            t.send_stream("127.0.0.1:1", b"nobody listens")  # failure is counted
            t.send_datagram("not-an-address", b"x")
            expected = {"stream_oversized", "stream_timeout", "stream_send_failed",
                        "udp_send_failed"}  # fmt: skip
            deadline = asyncio.get_running_loop().time() + 5
            while not expected <= set(t.errors) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)  # the send failure is counted asynchronously
            return dict(t.errors)
        finally:
            await t.close()

    errors = asyncio.run(scenario())
    assert got == [b"hello", b"hi"]
    assert errors["stream_oversized"] == 1
    assert errors["stream_timeout"] == 2
    assert errors["stream_send_failed"] == 1
    assert errors["udp_send_failed"] == 1


def test_oversized_datagrams_are_dropped_and_counted() -> None:
    got: list[bytes] = []

    async def scenario() -> int:
        t = Transport(
            lambda d, s: got.append(d), lambda d, s: None, max_datagram=100, max_frame=1000
        )
        await t.start("127.0.0.1", 0)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"x" * 101, ("127.0.0.1", t.port))
                s.sendto(b"y" * 100, ("127.0.0.1", t.port))
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.01)
            return t.oversized_datagrams
        finally:
            await t.close()

    assert asyncio.run(scenario()) == 1
    assert got == [b"y" * 100]


def test_addresses() -> None:
    assert split_addr("10.0.0.1:7946") == ("10.0.0.1", 7946)
    assert split_addr("[::1]:7946") == ("::1", 7946)
    for bad in ("nohost", ":1", "h:0", "h:x"):
        with pytest.raises(ValueError):
            split_addr(bad)
    assert gossip_endpoint(Config(port=5701)) == ("127.0.0.1", 6701, "127.0.0.1")
    assert gossip_endpoint(Config(port=0))[1] == 0
    assert gossip_endpoint(Config(port=5701, gossip_port=7000, advertise="10.1.1.1:5701")) == (
        "127.0.0.1",
        7000,
        "10.1.1.1",
    )
    with pytest.raises(ConfigError, match="gossip_port"):
        gossip_endpoint(Config(port=65000))
    assert asyncio.run(_ip_of("localhost")) == "127.0.0.1"  # peers get an IP, never a name
    assert asyncio.run(_ip_of("::1")) == "::1"


# ---- discovery -----------------------------------------------------------------------------------
def test_discovery_resolves_seeds_and_a_dns_name_to_every_address() -> None:
    assert parse_seeds(" a:1, ,b:2 ") == ["a:1", "b:2"]
    d = Discovery(["127.0.0.1:7000", "localhost:7001", "bad-seed"], "localhost", 6701)
    found = asyncio.run(d.resolve())
    assert "127.0.0.1:7000" in found and "127.0.0.1:7001" in found and "127.0.0.1:6701" in found
    assert len(found) == len(set(found))
    nowhere = Discovery([], "no-such-host.invalid:6701", 6701)
    assert asyncio.run(nowhere.resolve()) == []


# ---- embedded API and SDK ------------------------------------------------------------------------
def test_embedded_members_listeners_and_the_sdk(no_grid_env: None) -> None:
    events: list[tuple[str, str]] = []
    with grid.Node(port=0, name="emb-a", zone="z1") as a:
        a.add_member_listener(lambda kind, m: events.append((kind, m.name)))
        seed = a._member.gossip.address
        with grid.Node(port=0, name="emb-b", seeds=seed) as b:
            wait_until(lambda: len(a.members()) == 2, timeout=5, what="b in a's view")
            names = [m.name for m in b.members()]
            assert names == ["emb-b", "emb-a"]  # itself first
            me = a.members()[0]
            assert (me.name, me.state, me.zone, me.address) == ("emb-a", "alive", "z1", a.address)
            with grid.Client(b.address) as client:
                view = client.members()
                assert {m.name: m.state for m in view} == {"emb-a": "alive", "emb-b": "alive"}
                assert view[1].address == a.address and view[1].zone == "z1"
                counters = client.membership_counters()
                assert counters["rejected"] == 0 and counters["datagrams_out"] >= 0
            p = subprocess.run(
                [sys.executable, "-m", "grid", "status", "-a", b.address],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert p.returncode == 0, p.stderr
            assert "cluster (2 alive" in p.stdout and "emb-a" in p.stdout
        wait_until(lambda: ("left", "emb-b") in events, timeout=5, what="the leave event")
    assert events[0] == ("joined", "emb-b")


def test_dns_discovery_joins_a_member_that_starts_later(no_grid_env: None) -> None:
    """b resolves a DNS name (localhost) to a gossip port nobody serves yet; once a
    member appears there, b joins it without being told again."""
    from grid.harness.cluster import free_gossip_port

    port = free_gossip_port()
    with grid.Node(port=0, name="dns-b", discovery_dns=f"localhost:{port}") as b:
        assert [m.name for m in b.members()] == ["dns-b"]
        with grid.Node(port=0, name="dns-a", gossip_port=port) as a:
            wait_until(lambda: len(a.members()) == 2, timeout=10, what="b to join a")
            assert {m.state for m in b.members()} == {"alive"}
