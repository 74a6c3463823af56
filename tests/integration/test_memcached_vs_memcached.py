"""The same commands against a grid member's memcached port and a real memcached 1.6:
the replies must be the same bytes.

Every reply and error line below is compared byte for byte with what memcached
answers, CAS uniques aside (memcached counts them, grid uses entry versions:
docs/memcached.md); `{cas}` in a step stands for the CAS unique the side last
showed. Each case starts from an empty cache on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from grid.harness.cluster import LocalCluster
from tests import needs
from tests.integration.memcached_support import RawMemcache, memcached_server, normalize
from tests.integration.support import wait_partitions_settled

# fmt: off
CASES: dict[str, list[str]] = {
    "get set": [
        "get a", "set a 0 0 3\r\nabc", "get a", "gets a", "set a 5 0 0\r\n", "get a",
        "set b 4294967295 0 2\r\nxy", "get a b c", "set b 0 0 4\r\n\r\n\r\n", "get b",
        "set c 4294967296 0 1\r\nz", "get c",
    ],
    "add replace": [
        "add k 1 0 1\r\na", "add k 2 0 1\r\nb", "get k", "replace k 3 0 1\r\nc", "get k",
        "replace m 0 0 1\r\nx", "get m", "add k 0 0 1 noreply\r\nz", "get k",
    ],
    "append prepend": [
        "append k 0 0 1\r\nx", "prepend k 0 0 1\r\nx", "set k 9 0 2\r\nmm", "append k 0 0 2\r\n>>",
        "prepend k 5 0 2\r\n<<", "get k", "append k 0 0 0\r\n", "gets k",
    ],
    "cas": [
        "cas k 0 0 1 1\r\nx", "set k 0 0 1\r\na", "gets k", "cas k 0 0 1 {cas}\r\nb", "get k",
        "cas k 0 0 1 {cas}\r\nc", "gets k", "cas k 7 0 1 {cas}\r\nd", "get k",
        "cas k 0 0 1\r\nx", "cas k 0 0 1 abc\r\nx", "cas k 0 0 1 {cas} noreply\r\ne", "get k",
    ],
    "delete": [
        "delete k", "set k 0 0 1\r\na", "delete k", "get k", "delete k 0", "delete k 5",
        "delete k noreply", "delete", "delete a b c d", "set k 0 0 1\r\na", "delete k 0 noreply",
        "get k",
    ],
    "incr decr": [
        "incr n 1", "set n 0 0 2\r\n10", "incr n 5", "decr n 100", "get n", "incr n 7", "get n",
        "decr n 3", "incr n abc", "incr n -1", "incr n", "set n 3 0 20\r\n18446744073709551615",
        "incr n 2", "get n", "set s 0 0 2\r\nab", "incr s 1", "decr s 1",
        "set n 0 0 1\r\n5", "incr n 18446744073709551615", "incr n 1 noreply", "get n",
        "incr n 18446744073709551616", "set sp 0 0 3\r\n 7 ", "incr sp 1",
    ],
    "touch gat": [
        "touch k 10", "set k 3 0 1\r\nx", "touch k 100", "touch k abc", "touch k", "gat 100 k",
        "gats 100 k nokey", "gat abc k", "gat 100", "touch k 0", "gat 0 k", "touch k -1",
        "get k", "touch k 10 noreply",
    ],
    "expiry": [
        "set k 0 -1 1\r\nx", "get k", "set k 0 0 1\r\ny", "set k 0 -1 1\r\nx", "get k",
        "add k 0 -1 1\r\nx", "get k", "set k 0 0 1\r\ny", "add k 0 -1 1\r\nx", "get k",
        "replace k 0 -1 1\r\nz", "get k", "replace k 0 -1 1\r\nz",
        "set k 0 1000000000 1\r\nx", "get k", "set k 0 4102444800 1\r\nx", "get k",
        "set k 0 2592000 1\r\nx", "get k", "mg k t", "set k 0 100 1\r\nx", "mg k t v",
    ],
    "bad lines": [
        "", "FOO", "GET a", "get", "set", "set a 0 0", "set a -1 0 1\r\nx", "set a 0 0 -1",
        "set a 0 0 abc", "set a x 0 1", "set a 0 x 1", "set a 0 0 1 noreply extra\r\nx",
        "set a 0 0 3\r\nabcd", "get a", "get " + "k" * 250, "get " + "k" * 251,
        "set " + "k" * 251 + " 0 0 1\r\nx", "incr " + "k" * 251 + " 1",
        "delete " + "k" * 251, "touch " + "k" * 251 + " 1",
    ],
    "noreply": [
        "set k 0 0 1 noreply\r\na", "get k", "add k 0 0 1 noreply\r\nb",
        "replace k 0 0 1 noreply\r\nc",
        "append k 0 0 1 noreply\r\nd", "prepend k 0 0 1 noreply\r\ne", "get k",
        "delete k noreply", "get k", "incr k 1 noreply", "flush_all noreply",
        "set s 0 0 1\r\na", "incr s 1 noreply", "incr s x noreply", "touch s abc noreply",
        "delete s 5 noreply", "cas s 0 0 1 1 noreply\r\nb", "cas zz 0 0 1 1 noreply\r\nb",
        "verbosity noreply", "set t 0 0 1 noreply\r\nab", "get s t",
    ],
    "misc": [
        "verbosity 1", "verbosity", "verbosity 1 noreply", "flush_all", "flush_all 0",
        "flush_all abc", "flush_all noreply", "mn", "stats nosuch",
    ],
    "mg": [
        "mg k v", "mg k v q", "mg k v k O123 f t", "mg k k", "set k 7 0 3\r\nabc",
        "mg k v k O9 f t c s", "mg k", "mg k k f q", "mg k T30 t", "mg k t v", "mg k u v",
        "mg", "mg k zz", "mg k v v", "mg k O123456789012345678901234567890123", "mg k T",
        "mg k Tabc", "mg " + "k" * 251 + " v",
    ],
    "mg vivify": [
        "mg m N30 v t", "mg m v t", "mg m N30 t", "ms m 2 T0\r\nhi", "mg m v t",
        "mg n N0 s k", "mg n s",
    ],
    "ms": [
        "ms x 3 k O5 F9 T100\r\nabc", "mg x f t v", "ms x 3 q\r\nxyz", "ms x 3 q ME\r\nxyz",
        "ms x 3 MX\r\nxyz", "ms x 3 ME\r\nxyz", "ms x 2 MA\r\n!!", "ms x 2 MP\r\n<<",
        "mg x v f", "ms y 3 MR\r\nabc", "ms y 3 MA\r\nabc", "ms y 3 MP\r\nabc", "ms y 3 MS\r\nabc",
        "mg y v", "ms y 1 Me\r\nz", "ms y 1 Mr\r\nz", "mg y v", "ms x", "ms x abc\r\nabc",
        "ms x 3 zz\r\nabc", "ms x 3 T-1\r\nabc", "mg x v", "ms x 3 F1 F2\r\nabc",
        "ms x 0\r\n", "mg x v s",
    ],
    "ms cas": [
        "ms x 3 C1\r\nabc", "ms y 3 C1\r\nabc", "set x 0 0 1\r\na", "gets x",
        "ms x 3 C{cas}\r\nabc",
        "mg x v", "ms x 3 C{cas}\r\nabc", "ms x 3 C{cas} q\r\nabc", "ms x 3 Cabc\r\nabc",
    ],
    "md": [
        "md x", "ms x 1\r\na", "md x", "md x q", "md x O3 k", "set y 0 0 1\r\n1", "md y C1",
        "md y q", "md y", "set z 0 0 1\r\n1", "gets z", "md z C{cas} k", "md z zz", "md",
    ],
    "ma": [
        "ma c", "ma c N0 J10 v t", "ma c v", "ma c MD D100 v", "ma c q",
        "ma c D18446744073709551615 v",
        "ma c O1 k", "ma nc", "ma nc q", "ma nc O2 k", "set s 0 0 2\r\nab", "ma s", "ma c Dx",
        "ma c MZ", "ma c M+ v", "ma c M- v", "ma c Md D5 v", "set t 5 0 2\r\n10", "ma t MI v",
        "mg t v f", "ma t D10 v", "get t", "ma",
    ],
    "me": ["me k", "me"],
    "stale while revalidate": [
        "ms k 2 T100\r\nhi", "md k I", "mg k v", "mg k v", "mg k s v c", "mg k v k O1 q",
        "ms k 2 T100\r\nho", "mg k v", "md k I T30", "mg k t v", "mg k t v", "md nope I",
        "mg nope v", "md k I q", "mg k v", "md k I C1", "md k I k O9", "md k T30", "mg k v",
        "ms r 1 T10\r\nx", "mg r v R30", "mg r v R30", "mg r v R5", "ms s 1 T100\r\nx",
        "mg s v R5", "mg s R30 k", "mg s", "ms z 1\r\nx", "mg z v R30 t", "mg z v R30",
        "mg n v N30", "mg n v N30", "mg n v R50", "md n I", "mg n v", "mg n v",
        "ms c 1 T100\r\nx", "ms c 1 C1 I\r\ny", "mg c v", "mg c v", "ms c 1 I\r\nz", "mg c v",
        "ms c 1 C999999999999999999 I\r\nw", "mg c v", "ms m 1 T100\r\n5", "md m I",
        "ma m v", "mg m v", "mg m v", "ms k 2 T100\r\nhi", "md k I", "mg k v T50 t",
        "mg k v t", "gets k", "append k 0 0 1\r\nA", "mg k v", "md k I T-1", "mg k v",
        "mg nokey v N10 R10", "mg nokey v", "mg k v Rx", "md k I Tx", "md k Cx", "md k I Cx",
    ],
    "meta base64 keys": [
        "ms Zm9v 2 b\r\nhi", "get foo", "mg Zm9v b v k", "mg Zm9v v b", "mg Zm9v k b O1",
        "mg bm9wZQ== b k v", "mg !!! b v", "ma Y250 b N0 v k", "md Zm9v b k", "md Zm9v b k q",
        "ms AAEC 1 b k\r\nx", "mg AAEC b k v", "ms Zm9v 1 b MA C1\r\nx",
        "ms Zm9v 1 b MR C1\r\nx", "ms Zm9v 1 b ME C1\r\nx", "mg Zm9v b v",
        "ms Zm9v 1 b ME C1\r\ny", "ms Zm9v 1 b MR C1\r\ny", "ms Zm9v 1 b MA C1\r\ny",
        "mg Zm9v b v",
    ],
    "too large": [
        "set k 0 0 1\r\na", "set k 0 0 1048577\r\n" + "x" * 1048577, "get k",
        "set k 0 0 1\r\na", "add k 0 0 2000000\r\n" + "y" * 2000000, "get k",
        "set big 0 0 1000000\r\n" + "z" * 1000000, "mg big s",
        "ms k 1048577 T0\r\n" + "x" * 1048577, "get k",
        "set k 0 0 2000000 noreply\r\n" + "y" * 2000000, "get k", "set k 0 0 1\r\na",
        "ms k 2000000 MA\r\n" + "y" * 2000000, "get k", "set k 0 0 1\r\na",
        "replace k 0 0 2000000\r\n" + "y" * 2000000, "get k",
        "append k 0 0 2000000\r\n" + "y" * 2000000, "get k",
        "set k 0 0 1 noreply\r\nabc", "get k",
    ],
    "flags": [
        "ms k 1 F4294967295\r\nx", "mg k f", "ms k 1 F4294967296\r\nx", "mg k f",
        "ms k 1 F-1\r\nx", "ms k 1 Fabc\r\nx", "ms k 1 T-1\r\nx", "mg k v", "ms k 1 Tx\r\nx",
        "ms k 1 Cx\r\nx", "set k 65535 0 1\r\nx", "gets k", "append k 1 0 1\r\ny", "get k",
        "ma k", "set n 77 0 1\r\n1", "incr n 1", "get n", "touch n 100", "get n",
    ],
}
# fmt: on


@pytest.fixture(scope="module")
def addresses(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    needs.command("memcached")
    cluster = LocalCluster(1, memcached=True, log_dir=tmp_path_factory.mktemp("mc-member"))
    cluster.start()
    try:
        wait_partitions_settled(cluster.addresses)
        with memcached_server() as real:
            yield cluster.members[0].memcached_address, real
    finally:
        cluster.stop(grace=5)


_CAS = re.compile(rb"^VALUE \S+ \d+ \d+ (\d+)\r$", re.M)


def run(side: RawMemcache, steps: list[str], cas: list[bytes]) -> list[bytes]:
    out = []
    for step in steps:
        data = step.encode().replace(b"{cas}", cas[0])
        reply = side.step(data + b"\r\n")
        found = _CAS.search(reply)
        if found:
            cas[0] = found.group(1)
        out.append(reply)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_replies_are_memcached_replies(addresses: tuple[str, str], name: str) -> None:
    ours, theirs = (RawMemcache(a) for a in addresses)
    try:
        for side in (ours, theirs):
            assert side.step(b"flush_all\r\n") == b"OK\r\n"
        for step in CASES[name]:
            a = run(ours, [step], ours_cas := getattr(ours, "cas", [b"0"]))
            ours.cas = ours_cas  # type: ignore[attr-defined]
            b = run(theirs, [step], theirs_cas := getattr(theirs, "cas", [b"0"]))
            theirs.cas = theirs_cas  # type: ignore[attr-defined]
            assert normalize(a[0]) == normalize(b[0]), (
                f"{step!r}: grid {a[0]!r}, memcached {b[0]!r}"
            )
    finally:
        ours.close()
        theirs.close()


def test_a_pipelined_stream_as_memcached(addresses: tuple[str, str]) -> None:
    """One write of many commands, good and bad, answered in order as memcached answers."""
    stream = b"".join(
        b"set p%d %d 0 2\r\nv%d\r\nget p%d p%d\r\nincr p%d 1\r\nappend p%d 0 0 1\r\n!\r\n"
        b"bogus\r\nmg p%d v f k\r\ndelete p%d\r\nmn\r\n"
        % (i, i, i % 10, i, i + 1, i, i, i, i) for i in range(100)
    )  # fmt: skip
    seen = []
    for address in addresses:
        side = RawMemcache(address)
        assert side.step(b"flush_all\r\n") == b"OK\r\n"
        side.send(stream)
        seen.append([side.until(b"MN\r\n") for _ in range(100)])
        side.close()
    assert seen[0] == seen[1]


def test_many_keys_in_one_get_as_memcached(addresses: tuple[str, str]) -> None:
    keys = b" ".join(b"m%d" % i for i in range(300))
    seen = []
    for address in addresses:
        side = RawMemcache(address)
        assert side.step(b"flush_all\r\n") == b"OK\r\n"
        side.step(
            b"".join(b"set m%d 0 0 1 noreply\r\n%d\r\n" % (i, i % 10) for i in range(0, 300, 3))
        )
        seen.append(side.step(b"get " + keys + b"\r\n"))
        side.close()
    assert seen[0] == seen[1] and seen[0].count(b"VALUE") == 100


def test_stats_subcommands_speak_memcacheds_names(addresses: tuple[str, str]) -> None:
    """`stats settings/items/slabs/conns` list only names memcached lists (grid has no
    slab classes: one class holds every item); the rest answer as memcached's bytes."""
    ours, theirs = (RawMemcache(a) for a in addresses)
    try:
        for side in (ours, theirs):
            assert side.step(b"set stats-key 0 0 1\r\nx\r\n") == b"STORED\r\n"
        for sub in (b"sizes", b"detail dump", b"extstore", b"bogus", b"detail on", b"detail off"):
            a, b = ours.step(b"stats " + sub + b"\r\n"), theirs.step(b"stats " + sub + b"\r\n")
            assert a == b, f"stats {sub!r}: grid {a!r}, memcached {b!r}"
        for sub in (b"settings", b"items", b"slabs", b"conns"):
            names = [
                {re.sub(rb"^\d+:", b"N:", line.split(b" ")[1])
                 for line in side.step(b"stats " + sub + b"\r\n").splitlines()
                 if line.startswith(b"STAT ")}
                for side in (ours, theirs)
            ]  # fmt: skip
            assert names[0] and names[0] <= names[1], f"stats {sub!r}: {names[0] - names[1]}"
    finally:
        ours.close()
        theirs.close()
