"""The same commands against a grid member's RESP port and a real redis-server 7: the
replies must be the same bytes.

This is the strongest check of compatibility there is without Redis's own suite:
every reply, error text and RESP2/RESP3 type below is compared byte for byte with
what Redis 7.0 answers. Each case starts from an empty keyspace on both sides.
Replies that depend on the server (HELLO's id and version, INFO) are left to
test_resp.py.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest

from grid.harness.cluster import LocalCluster
from tests import needs
from tests.integration.resp_support import RawResp, redis_server
from tests.integration.support import wait_partitions_settled

Case = list[tuple[str | bytes | int, ...]]

CASES: dict[str, Case] = {
    "ping echo": [("PING",), ("PING", "hi"), ("PING", "a", "b"), ("ECHO", "x"), ("ECHO",),
                  ("ping",), ("EcHo", "")],
    "select": [("SELECT", 0), ("SELECT", 1), ("SELECT", "x"), ("SELECT",)],
    "unknown": [("NOSUCHCMD",), ("NOSUCHCMD", "a", "b"), ("GET",), ("GET", "a", "b"),
                ("SET", "k"), ("CLIENT",), ("CLIENT", "NOSUCH"), ("CLIENT", "SETNAME"),
                ("CONFIG",), ("CONFIG", "NOSUCH")],
    "get set": [("GET", "k"), ("SET", "k", "v"), ("GET", "k"), ("SET", "k", "v2"),
                ("GET", "k"), ("SET", "k", b"\x00\xff\r\n"), ("GET", "k"), ("SET", "e", ""),
                ("GET", "e"), ("STRLEN", "e"), ("STRLEN", "k"), ("STRLEN", "missing")],
    "set nx xx": [("SET", "k", "1", "NX"), ("SET", "k", "2", "NX"), ("GET", "k"),
                  ("SET", "k", "3", "XX"), ("SET", "m", "3", "XX"), ("GET", "m"),
                  ("SET", "k", "4", "NX", "XX"), ("SET", "k", "4", "XX", "NX"),
                  ("SET", "k", "5", "nx", "get"), ("SET", "n", "5", "NX", "GET"), ("GET", "n"),
                  ("SET", "k", "6", "XX", "GET"), ("GET", "k"), ("SET", "z", "6", "XX", "GET")],
    "set get": [("SET", "k", "a", "GET"), ("SET", "k", "b", "GET"), ("GET", "k"),
                ("GETSET", "k", "c"), ("GETSET", "new", "d"), ("GET", "new"), ("GETSET", "k")],
    "set expiry options": [
        ("SET", "k", "v", "EX", 100), ("TTL", "k"), ("SET", "k", "v", "PX", 100000),
        ("TTL", "k"), ("SET", "k", "v", "EX", 0), ("SET", "k", "v", "EX", -1),
        ("SET", "k", "v", "PX", 0), ("SET", "k", "v", "EX", "x"), ("SET", "k", "v", "EX"),
        ("SET", "k", "v", "EX", 10, "PX", 100), ("SET", "k", "v", "EX", 10, "KEEPTTL"),
        ("SET", "k", "v", "KEEPTTL", "EX", 10), ("SET", "k", "v", "EX", 10, "EX", 100),
        ("TTL", "k"), ("SET", "k", "v2", "KEEPTTL"), ("TTL", "k"), ("GET", "k"),
        ("SET", "k", "v3"), ("TTL", "k"), ("SET", "k", "v", "EXAT", 4102444800),
        ("EXPIRETIME", "k"), ("SET", "k", "v", "PXAT", 4102444800000), ("PEXPIRETIME", "k"),
        ("SET", "k", "v", "EXAT", 1), ("GET", "k"), ("EXISTS", "k"), ("SET", "k", "v", "PERSIST"),
        ("SET", "k", "v", "EX", 9223372036854775807), ("SET", "k", "v", "FOO"),
        ("SET", "k", "v", "EX", 10, "GET"), ("TTL", "k"),
    ],
    "setex psetex setnx": [
        ("SETEX", "k", 100, "v"), ("TTL", "k"), ("GET", "k"), ("SETEX", "k", 0, "v"),
        ("SETEX", "k", -5, "v"), ("SETEX", "k", "x", "v"), ("PSETEX", "p", 100000, "v"),
        ("TTL", "p"), ("PSETEX", "p", 0, "v"), ("SETNX", "n", "1"), ("SETNX", "n", "2"),
        ("GET", "n"), ("SETEX", "k", 10), ("SETNX", "n"),
        ("PSETEX", "p", 9223372036854775807, "v"), ("PSETEX", "p", 9223372036854775806, "v"),
        ("SETEX", "k", 9223372036854775, "v"),
    ],
    "getdel getex": [
        ("GETDEL", "k"), ("SET", "k", "v"), ("GETDEL", "k"), ("GET", "k"), ("SET", "k", "v"),
        ("GETEX", "k"), ("GETEX", "k", "EX", 100), ("TTL", "k"), ("GETEX", "k", "PERSIST"),
        ("TTL", "k"), ("GETEX", "k", "PX", 50000), ("TTL", "k"), ("GETEX", "missing", "EX", 10),
        ("GETEX", "k", "EX", 0), ("GETEX", "missing", "EX", 0), ("GETEX", "k", "NX"),
        ("GETEX", "k", "EX", 10, "PERSIST"), ("GETEX", "k", "KEEPTTL"),
        ("GETEX", "k", "EXAT", 1), ("EXISTS", "k"),
    ],
    "mget mset": [
        ("MSET", "a", "1", "b", "2"), ("MGET", "a", "b", "c"), ("MSET", "a"),
        ("MSET", "a", "1", "b"), ("MSETNX", "a", "x", "c", "3"), ("MGET", "a", "c"),
        ("MSETNX", "c", "3", "d", "4"), ("MGET", "a", "b", "c", "d"),
        ("MSETNX", "e", "5", "e", "6"),
        ("GET", "e"), ("MGET",),
    ],
    "counters": [
        ("INCR", "c"), ("INCR", "c"), ("GET", "c"), ("INCRBY", "c", 10), ("DECR", "c"),
        ("DECRBY", "c", 5), ("GET", "c"), ("INCRBY", "c", "x"), ("INCRBY", "c", "1.5"),
        ("SET", "s", "abc"), ("INCR", "s"), ("SET", "s", " 1"), ("INCR", "s"), ("SET", "s", "01"),
        ("INCR", "s"), ("SET", "s", "-0"), ("INCR", "s"), ("SET", "s", "-5"), ("INCR", "s"),
        ("SET", "big", "9223372036854775807"), ("INCR", "big"), ("GET", "big"),
        ("SET", "small", "-9223372036854775808"), ("DECR", "small"),
        ("DECRBY", "x", "-9223372036854775808"), ("INCRBY", "x", "9223372036854775808"),
        ("SET", "t", "10", "EX", 100), ("INCR", "t"), ("TTL", "t"), ("GET", "t"),
        ("INCR", "c", "d"),
    ],
    "incrbyfloat": [
        ("INCRBYFLOAT", "f", "10.5"), ("INCRBYFLOAT", "f", "0.1"), ("GET", "f"),
        ("INCRBYFLOAT", "f", "-10.6"), ("INCRBYFLOAT", "f", "5.0e3"), ("INCRBYFLOAT", "f", "abc"),
        ("INCRBYFLOAT", "f", "inf"), ("SET", "g", "1 "), ("INCRBYFLOAT", "g", "1"),
        ("SET", "h", "17179869184"), ("INCRBYFLOAT", "h", "1.5"), ("INCRBYFLOAT", "n", "3"),
        ("INCRBYFLOAT", "n", "-3"), ("GET", "n"), ("SET", "i", "1"), ("INCRBYFLOAT", "i", "1e1"),
    ],
    "append strlen ranges": [
        ("APPEND", "a", "hello"), ("APPEND", "a", " world"), ("GET", "a"), ("STRLEN", "a"),
        ("GETRANGE", "a", 0, 4), ("GETRANGE", "a", -5, -1), ("GETRANGE", "a", 5, 2),
        ("GETRANGE", "a", -1, -5), ("GETRANGE", "a", 0, 100), ("GETRANGE", "a", 100, 200),
        ("GETRANGE", "missing", 0, -1), ("GETRANGE", "a", "x", 1), ("SUBSTR", "a", 0, 2),
        ("SETRANGE", "a", 6, "WORLD"), ("GET", "a"), ("SETRANGE", "a", 20, "!"), ("GET", "a"),
        ("SETRANGE", "b", 3, "x"), ("GET", "b"), ("SETRANGE", "c", 3, ""), ("EXISTS", "c"),
        ("SETRANGE", "a", 0, ""), ("SETRANGE", "a", -1, "x"), ("SETRANGE", "a", "x", "y"),
        ("SET", "t", "abc", "EX", 100), ("APPEND", "t", "d"), ("TTL", "t"),
    ],
    "del exists type touch": [
        ("MSET", "a", "1", "b", "2"), ("EXISTS", "a", "b", "c", "a"), ("TYPE", "a"),
        ("TYPE", "zz"), ("TOUCH", "a", "zz", "b"), ("DEL", "a", "zz"), ("UNLINK", "b", "b"),
        ("EXISTS", "a", "b"), ("DEL",),
    ],
    "expire": [
        ("EXPIRE", "k", 100), ("SET", "k", "v"), ("EXPIRE", "k", 100), ("TTL", "k"),
        ("PEXPIRE", "k", 200000), ("TTL", "k"), ("EXPIREAT", "k", 4102444800),
        ("EXPIRETIME", "k"), ("PEXPIREAT", "k", 4102444800000), ("PEXPIRETIME", "k"),
        ("PERSIST", "k"), ("PERSIST", "k"), ("TTL", "k"), ("EXPIRETIME", "k"), ("TTL", "none"),
        ("PTTL", "none"), ("EXPIRETIME", "none"), ("EXPIRE", "k", "x"),
        ("EXPIRE", "k", 100, "NX"), ("EXPIRE", "k", 200, "NX"), ("TTL", "k"),
        ("EXPIRE", "k", 50, "GT"), ("EXPIRE", "k", 150, "GT"), ("TTL", "k"),
        ("EXPIRE", "k", 500, "LT"), ("EXPIRE", "k", 120, "LT"), ("TTL", "k"),
        ("EXPIRE", "k", 10, "NX", "XX"), ("EXPIRE", "k", 10, "GT", "LT"),
        ("EXPIRE", "k", 10, "FOO"), ("PERSIST", "k"), ("EXPIRE", "k", 10, "XX"),
        ("EXPIRE", "k", 10, "GT"), ("EXPIRE", "k", 10, "LT"), ("TTL", "k"),
        ("EXPIRE", "k", 9223372036854775807), ("PEXPIRE", "k", 9223372036854775807),
        ("EXPIRE", "k", 0), ("EXISTS", "k"), ("SET", "k", "v"), ("EXPIRE", "k", -1),
        ("EXISTS", "k"), ("SET", "k", "v"), ("EXPIREAT", "k", 1), ("EXISTS", "k"),
        ("EXPIRE", "k"), ("PERSIST", "missing"),
    ],
    "rename": [
        ("RENAME", "a", "b"), ("SET", "a", "1"), ("RENAME", "a", "a"), ("RENAMENX", "a", "a"),
        ("SET", "{t}x", "1", "EX", 100), ("RENAME", "{t}x", "{t}y"), ("GET", "{t}y"),
        ("TTL", "{t}y"), ("EXISTS", "{t}x"), ("SET", "{t}z", "2"), ("RENAMENX", "{t}y", "{t}z"),
        ("RENAMENX", "{t}y", "{t}w"), ("GET", "{t}w"), ("RENAMENX", "{t}none", "{t}q"),
        ("RENAME", "none", "other"),
    ],
    "dbsize flush": [
        ("DBSIZE",), ("MSET", "a", "1", "b", "2", "c", "3"), ("DBSIZE",), ("FLUSHDB",),
        ("DBSIZE",), ("SET", "a", "1"), ("FLUSHALL", "ASYNC"), ("DBSIZE",), ("FLUSHALL", "x"),
        ("FLUSHDB", "SYNC", "x"),
    ],
    "scan keys": [
        ("MSET", "user:1", "a", "user:2", "b", "other", "c"), ("KEYS", "nomatch*"),
        ("SCAN", "x"), ("SCAN", 0, "COUNT", 0), ("SCAN", 0, "COUNT", "x"), ("SCAN", 0, "FOO"),
        ("SCAN", 0, "MATCH"), ("SCAN", 0, "TYPE", "list"), ("RANDOMKEY", "x"),
    ],
    "client": [
        ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "my-name"), ("CLIENT", "GETNAME"),
        ("CLIENT", "SETNAME", "bad name"), ("CLIENT", "SETNAME", "a\nb"), ("CLIENT", "SETNAME", ""),
        ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "a", "b"),
    ],
    "hello errors": [("HELLO", 4), ("HELLO", "x"), ("HELLO", 2, "FOO"), ("HELLO", 3, "SETNAME"),
                     ("HELLO", 2, "SETNAME", "a b")],
    "resp3 types": [
        ("HELLO", 3, "SETNAME", "x"), ("GET", "missing"), ("SET", "k", "v"), ("GET", "k"),
        ("MGET", "k", "missing"), ("SET", "k", "v", "NX"), ("CLIENT", "GETNAME"),
        ("SCAN", 0, "TYPE", "list"), ("GETEX", "missing"), ("GETDEL", "missing"),
        ("INCRBYFLOAT", "f", "1.5"), ("CONFIG", "GET", "databases"),
    ],
    "case and arity": [
        ("gEt", "k"), ("sEt", "k", "v", "ex", "100", "nX"), ("Set", "k", "v", "Px", "100000", "xx"),
        ("TYPE",), ("TYPE", "k", "x"), ("SELECT", 0, 1), ("DBSIZE", "x"), ("TIME", "x"),
        ("ECHO", "a", "b"), ("STRLEN",), ("INCR",), ("INCRBY", "k"), ("EXPIRE", "k"),
        ("TTL",), ("MGET",), ("DEL",), ("RENAME", "k"), ("GETEX",), ("GETDEL", "a", "b"),
        ("SETRANGE", "k", 0), ("GETRANGE", "k", 0), ("APPEND", "k"), ("SCAN",),
        ("RANDOMKEY",), ("KEYS",), ("PERSIST",), ("MSETNX", "a"),
    ],
    "keys patterns": [
        ("MSET", "hello", "1", "hallo", "2", "hxllo", "3", "hllo", "4", "heeeello", "5"),
        ("KEYS", "h?llo"), ("KEYS", "h*llo"), ("KEYS", "h[ae]llo"), ("KEYS", "h[^e]llo"),
        ("KEYS", "h[a-b]llo"), ("KEYS", ""), ("KEYS", "nomatch"), ("KEYS", "hello"),
        ("DEL", "hello", "hallo", "hxllo", "hllo", "heeeello"), ("RANDOMKEY",),
        ("SCAN", "999999"), ("SCAN", "0", "MATCH", "x*", "COUNT", "5", "TYPE", "string"),
    ],
    "integers and ranges": [
        ("SET", "n", "1234"), ("GETRANGE", "n", 0, 2), ("APPEND", "n", "5"), ("INCR", "n"),
        ("SETRANGE", "n", 1, "0"), ("GET", "n"), ("INCRBY", "n", "-12346"), ("DECRBY", "n", "-1"),
        ("GETRANGE", "n", -100, -50), ("GETRANGE", "n", 0, -100), ("GETRANGE", "n", -1, 0),
        ("GETRANGE", "n", 0, "9223372036854775807"), ("GETRANGE", "n", "-9223372036854775808", 0),
        ("SETRANGE", "n", 0, "abc"), ("INCR", "n"), ("INCRBYFLOAT", "n", 1), ("STRLEN", "n"),
        ("SET", "n", "1"), ("SETRANGE", "n", 2, "2"), ("INCRBYFLOAT", "n", 1),
        ("INCR", "n"), ("SET", "z", "0"), ("INCRBYFLOAT", "z", "+inf"), ("INCRBYFLOAT", "z", "nan"),
        ("INCRBYFLOAT", "z", "1e10"), ("INCRBYFLOAT", "z", "-1e10"), ("GET", "z"),
        ("INCRBYFLOAT", "z", "0x10"), ("INCRBYFLOAT", "z", ".5"), ("INCRBYFLOAT", "z", "5."),
        ("INCRBYFLOAT", "z", " 1"), ("INCRBYFLOAT", "z", ""), ("GET", "z"),
    ],
    "expire flags on missing and persistent keys": [
        ("EXPIRE", "none", 10, "NX"), ("EXPIRE", "none", 10, "XX"), ("EXPIRE", "none", 10, "GT"),
        ("SET", "k", "v"), ("EXPIRE", "k", 10, "XX"), ("EXPIRE", "k", 10, "GT"),
        ("EXPIRE", "k", 10, "LT"), ("TTL", "k"), ("EXPIRE", "k", -10, "LT"), ("EXISTS", "k"),
        ("SET", "k", "v"), ("EXPIRE", "k", 100, "nx", "nx"), ("EXPIRE", "k", 200, "xx", "gt"),
        ("EXPIRE", "k", 50, "xx", "lt"), ("TTL", "k"), ("EXPIRE", "k", 10, "GT", "XX", "LT"),
        ("PEXPIRE", "k", 100000000, "GT"), ("TTL", "k"),
    ],
    "config": [("CONFIG", "GET", "databases"), ("CONFIG", "GET", "nosuch"),
               ("CONFIG", "SET", "nosuch", "1"), ("CONFIG", "SET", "maxmemory")],
}  # fmt: skip


def sorted_bulks(reply: bytes) -> bytes:
    """An array of bulk strings with its items sorted (KEYS: the order is the server's)."""
    head, _, rest = reply.partition(b"\r\n")
    items = re.findall(rb"\$\d+\r\n.*?\r\n", rest, re.S)
    return head + b"\r\n" + b"".join(sorted(items))


@pytest.fixture(scope="module")
def addresses(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    needs.command("redis-server")
    cluster = LocalCluster(1, resp=True, log_dir=tmp_path_factory.mktemp("resp-member"))
    cluster.start()
    try:
        wait_partitions_settled(cluster.addresses)  # until then: -TRYAGAIN, no table yet
        with redis_server("--databases", "1") as redis:
            yield cluster.members[0].resp_address, redis
    finally:
        cluster.stop(grace=5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_replies_are_redis_replies(addresses: tuple[str, str], name: str) -> None:
    grid_address, redis_address = addresses
    sides = [RawResp(grid_address), RawResp(redis_address)]
    try:
        for side in sides:
            side.call("FLUSHALL")
        for cmd in CASES[name]:
            ours, theirs = (side.call(*cmd) for side in sides)
            if cmd[0] == "HELLO":  # the client ids differ
                ours, theirs = (re.sub(rb"id\r\n:\d+", b"id", r) for r in (ours, theirs))
            if cmd[0] == "KEYS":  # in the order of each one's hash table
                ours, theirs = (sorted_bulks(r) for r in (ours, theirs))
            assert ours == theirs, f"{cmd}: grid {ours!r}, redis {theirs!r}"
    finally:
        for side in sides:
            side.close()


def test_incrbyfloat_prints_the_long_double_sum_as_redis(addresses: tuple[str, str]) -> None:
    """INCRBYFLOAT's 17 decimals show the long double's rounding (123.456 + 7.1 is
    130.55600000000000001 in Redis): 300 random operand pairs of the shapes clients send
    (decimals, Python floats' reprs, exponents, signs) must give the same bytes. An
    exact decimal sum differed in most of them."""
    rng = random.Random(7)

    def number() -> str:
        shape = rng.randrange(4)
        if shape == 0:
            return f"{rng.randint(-(10**6), 10**6)}.{rng.randint(0, 99999)}"
        if shape == 1:
            return repr(rng.uniform(-1e9, 1e9))
        if shape == 2:
            return f"{rng.randint(1, 999)}e{rng.randint(-30, 30)}"
        return repr(rng.random() * 10 ** rng.randint(-8, 18))

    sides = [RawResp(grid_address) for grid_address in addresses]
    try:
        for side in sides:
            side.call("FLUSHALL")
        for i in range(300):
            cmds = [("SET", f"f{i}", number()), ("INCRBYFLOAT", f"f{i}", number()),
                    ("INCRBYFLOAT", f"f{i}", number()), ("GET", f"f{i}")]  # fmt: skip
            for cmd in cmds:
                ours, theirs = (side.call(*cmd) for side in sides)
                assert ours == theirs, f"{cmd}: grid {ours!r}, redis {theirs!r}"
    finally:
        for side in sides:
            side.close()


def test_pipelined_replies_come_back_in_order(addresses: tuple[str, str]) -> None:
    """A pipeline mixing batched ops, coroutine commands and plain replies."""
    from tests.integration.resp_support import encode

    cmds = [("SET", "p", "1"), ("INCR", "p"), ("APPEND", "p", "x"), ("GET", "p"), ("PING",),
            ("GETSET", "p", "9"), ("INCRBY", "p", 5), ("MGET", "p", "q"), ("DEL", "p"),
            ("GET", "p")] * 20  # fmt: skip
    stream = b"".join(encode(*c) for c in cmds)
    replies = []
    for address in addresses:
        side = RawResp(address)
        side.call("FLUSHALL")
        side.send(stream)
        replies.append([side.reply() for _ in cmds])
        side.close()
    assert replies[0] == replies[1]


def test_inline_commands_as_redis(addresses: tuple[str, str]) -> None:
    stream = b'SET "a b" \'c d\'\r\nGET "a b"\r\n\r\nPING\nECHO "\\x41\\n"\r\n'
    replies = []
    for address in addresses:
        side = RawResp(address)
        side.call("FLUSHALL")
        side.send(stream)
        replies.append([side.reply() for _ in range(4)])
        side.close()
    assert replies[0] == replies[1]


@pytest.mark.parametrize(
    "garbage",
    [
        b"*1\r\nX3\r\n",
        b"*1\r\n\xff\r\n",
        b"*x\r\n",
        b"*1\r\n$-5\r\n",
        b'GET "unbalanced\r\n',
        b"*2147483648\r\n",
    ],
)
def test_protocol_errors_as_redis(addresses: tuple[str, str], garbage: bytes) -> None:
    """The reply to garbage is Redis's error, after the replies before it, then a close."""
    seen = []
    for address in addresses:
        side = RawResp(address)
        side.send(b"*1\r\n$4\r\nPING\r\n" + garbage)
        first, second = side.reply(), side.reply()
        assert side.closed()
        seen.append((first, second))
        side.close()
    assert seen[0] == seen[1]


AUTH_CASES = [
    ("GET", "k"),  # before AUTH: NOAUTH
    ("AUTH", "wrong"),
    ("AUTH", "someone", "s3cret"),
    ("HELLO", "3"),  # HELLO without AUTH before authenticating
    ("HELLO", "2", "AUTH", "default", "wrong"),
    ("SET", "k", "v"),
    ("AUTH", "s3cret"),
    ("SET", "k", "v"),
    ("GET", "k"),
    ("AUTH", "default", "s3cret"),
    ("HELLO", "2", "AUTH", "default", "s3cret"),
]


def test_auth_with_a_password_as_redis_requirepass(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """auth_token is the password of Redis's `default` user: the same replies, byte for byte,
    as a redis-server started with --requirepass, before and after AUTH."""
    needs.command("redis-server")
    cluster = LocalCluster(1, resp=True, member_args=["--auth-token", "s3cret"],
                           log_dir=tmp_path_factory.mktemp("resp-auth"))  # fmt: skip
    cluster.start()
    try:
        with redis_server("--databases", "1", "--requirepass", "s3cret") as redis:
            sides = [RawResp(cluster.members[0].resp_address), RawResp(redis)]
            try:
                for cmd in AUTH_CASES:
                    ours, theirs = (side.call(*cmd) for side in sides)
                    if cmd[0] == "HELLO":  # the client ids differ
                        ours, theirs = (re.sub(rb"id\r\n:\d+", b"id", r) for r in (ours, theirs))
                    assert ours == theirs, f"{cmd}: grid {ours!r}, redis {theirs!r}"
            finally:
                for side in sides:
                    side.close()
    finally:
        cluster.stop(grace=5)
