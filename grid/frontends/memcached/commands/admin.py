"""delete, touch, flush_all, stats, version, verbosity, quit.

flush_all empties the whole cluster's memcached map (grid's CLEAR runs on every
member). With a delay it is a timer on this member that clears the map then (a
later flush_all replaces a pending one, as memcached keeps one flush time); a
member that stops before it fires forgets it.

stats answers this member's counters since it started (commands it served,
hits and misses), the items of the whole map (`curr_items`, a SIZE on every
member), and the bytes of the items this member holds.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from grid import __version__, logs
from grid.frontends.memcached import replies as R
from grid.frontends.memcached.commands.storage import key_line, quiet
from grid.frontends.memcached.grammar import KEY_MAX, key_ok, number
from grid.frontends.memcached.keyspace import EXPIRED, expire_at
from grid.frontends.memcached.parser import Request
from grid.frontends.ops import Close, Plan, Reply
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.memcached.server import MemcachedConnection

log = logs.get("grid.frontends.memcached")
VERSION = "1.6.18"
"""The memcached version whose documented behaviour the front end follows: what `version`
answers (clients check it to know the meta commands are there), with grid's after it."""
DELETE_USAGE = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"


def delete(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args
    if not 2 <= len(args) <= 4:
        return R.ERROR
    key = args[1]
    if len(key) > KEY_MAX or not key_ok(key):
        return R.BAD_FORMAT
    rest = args[2:]
    noreply = bool(rest) and rest[-1] == b"noreply"
    if noreply:
        rest = rest[:-1]
    if rest and rest != [b"0"]:  # a legacy "hold" time: memcached takes only 0
        return quiet(DELETE_USAGE, noreply)
    stats = c.stats

    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        if R.failed(r):
            return quiet(R.result_error(r), noreply)
        if r.count:
            stats.delete_hits += 1
            return quiet(R.DELETED, noreply)
        stats.delete_misses += 1
        return quiet(R.NOT_FOUND, noreply)

    return Plan([pb.Op(code=pb.DELETE, map=c.map, key=key)], finish)


def touch(c: MemcachedConnection, req: Request) -> Reply:
    line = key_line(req.args)
    if isinstance(line, bytes):
        return line
    key, argument, noreply = line
    exptime = number(argument)
    if exptime is None:
        return quiet(R.BAD_EXPTIME, noreply)
    at = expire_at(exptime)
    stats = c.stats
    stats.cmd_touch += 1
    if at == EXPIRED:
        op = pb.Op(code=pb.DELETE, map=c.map, key=key)
    else:
        op = pb.Op(code=pb.EXPIRE, map=c.map, key=key, expire_at_ms=at)

    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        if R.failed(r):
            return quiet(R.result_error(r), noreply)
        if r.count:
            stats.touch_hits += 1
            return quiet(R.TOUCHED, noreply)
        stats.touch_misses += 1
        return quiet(R.NOT_FOUND, noreply)

    return Plan([op], finish)


def flush_all(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args[1:]
    noreply = bool(args) and args[-1] == b"noreply"
    if noreply:
        args = args[:-1]
    if len(args) > 1:
        return R.ERROR
    delay = 0
    if args:
        n = number(args[0])
        if n is None:
            return quiet(R.BAD_EXPTIME, noreply)
        delay = n
    server = c.server
    server.stats.cmd_flush += 1
    if server.flush_timer is not None:
        server.flush_timer.cancel()
        server.flush_timer = None
    clear = pb.Op(code=pb.CLEAR, map=c.map)
    if delay > 0:
        at = expire_at(delay)
        wait = max(0.0, (at / 1000 - time.time())) if at not in (0, EXPIRED) else 0.0
        loop = asyncio.get_running_loop()

        def fire() -> None:
            server.flush_timer = None
            server.flush_task = loop.create_task(_flush_later(c, clear))

        server.flush_timer = loop.call_later(wait, fire)
        return quiet(R.OK, noreply)

    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        return quiet(R.result_error(r) if R.failed(r) else R.OK, noreply)

    return Plan([clear], finish)


async def _flush_later(c: MemcachedConnection, clear: pb.Op) -> None:
    try:
        r = (await c.runner.call([clear]))[0]
    except Exception as e:
        log.warning("delayed flush_all failed", error=str(e))
        return
    if R.failed(r):
        log.warning("delayed flush_all failed", error=r.error)


def version(c: MemcachedConnection, req: Request) -> Reply:
    return f"VERSION {VERSION} grid-{__version__}\r\n".encode()


def verbosity(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args
    if len(args) not in (2, 3):
        return R.ERROR
    return quiet(R.OK, args[-1] == b"noreply")


def quit_(c: MemcachedConnection, req: Request) -> Reply:
    return Close(b"")


def stats(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args
    if len(args) > 1:
        sub = args[1]
        if sub == b"reset" and len(args) == 2:
            s = c.server.stats
            for name in s.__slots__:
                setattr(s, name, 0)
            return b"RESET\r\n"
        if sub == b"settings":
            return _lines(_settings(c))
        if sub == b"sizes":
            return _lines([("sizes_status", "disabled")])
        if sub == b"conns":
            return _lines(_conns(c))
        if sub in (b"extstore", b"detail") and (sub != b"detail" or args[2:3] == [b"dump"]):
            return R.END  # no external storage; detail tracking off: nothing to dump
        if sub == b"detail" and args[2:3] in ([b"on"], [b"off"]):
            return b"OK\r\n"  # accepted as memcached does; grid keeps no per-prefix detail
        if sub in (b"items", b"slabs"):
            return Plan([pb.Op(code=pb.SIZE, map=c.map)], lambda rs: _classes(c, sub, rs[0]))
        return R.ERROR

    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        if R.failed(r):
            return R.result_error(r)
        return _stats_text(c, r.count)

    return Plan([pb.Op(code=pb.SIZE, map=c.map)], finish)


def _stats_text(c: MemcachedConnection, items: int) -> bytes:
    server = c.server
    s = server.stats
    store = server.service.store
    with store.lock:
        rmap = store.maps.get(c.map)
        used = rmap.stats.bytes if rmap is not None else 0
        max_memory = store.max_memory
    now = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    listener = server.listener
    lines: list[tuple[str, object]] = [
        ("pid", os.getpid()),
        ("uptime", int(now - server.started)),
        ("time", int(now)),
        ("version", f"{VERSION}-grid-{__version__}"),
        ("pointer_size", 64),
        ("rusage_user", f"{usage.ru_utime:.6f}"),
        ("rusage_system", f"{usage.ru_stime:.6f}"),
        ("max_connections", 10000),
        ("curr_connections", len(listener.connections)),
        ("total_connections", listener.accepted),
        ("rejected_connections", listener.refused),
        ("cmd_get", s.cmd_get),
        ("cmd_set", s.cmd_set),
        ("cmd_flush", s.cmd_flush),
        ("cmd_touch", s.cmd_touch),
        ("get_hits", s.get_hits),
        ("get_misses", s.get_misses),
        ("delete_misses", s.delete_misses),
        ("delete_hits", s.delete_hits),
        ("incr_misses", s.incr_misses),
        ("incr_hits", s.incr_hits),
        ("decr_misses", s.decr_misses),
        ("decr_hits", s.decr_hits),
        ("cas_misses", s.cas_misses),
        ("cas_hits", s.cas_hits),
        ("cas_badval", s.cas_badval),
        ("touch_hits", s.touch_hits),
        ("touch_misses", s.touch_misses),
        ("limit_maxbytes", max_memory),
        ("threads", 1),
        ("bytes", used),
        ("curr_items", items),
        ("total_items", s.total_items),
    ]
    return _lines(lines)


def _lines(pairs: Sequence[tuple[str, object]]) -> bytes:
    return b"".join(b"STAT %s %s\r\n" % (k.encode(), str(v).encode()) for k, v in pairs) + R.END


def _settings(c: MemcachedConnection) -> list[tuple[str, object]]:
    """memcached's `stats settings` names, in its order, with what grid has for each;
    settings of memcached's own slab allocator, LRU threads and extstore have no grid
    counterpart and are not listed."""
    cfg = c.config
    host, _, port = c.server.address.rpartition(":")
    return [
        ("maxbytes", cfg.max_memory),
        ("maxconns", 10000),
        ("tcpport", port),
        ("udpport", 0),
        ("inter", host),
        ("verbosity", 0),
        ("evictions", "off" if cfg.eviction_policy == "noeviction" else "on"),
        ("domain_socket", "NULL"),
        ("cas_enabled", "yes"),
        ("tcp_backlog", 1024),
        ("binding_protocol", "ascii"),
        ("auth_enabled_sasl", "no"),
        ("auth_enabled_ascii", "yes" if cfg.credentials().required else "no"),
        ("item_size_max", c.max_item),
        ("flush_enabled", "yes"),
        ("dump_enabled", "no"),
        ("ssl_enabled", "yes" if cfg.tls_cert else "no"),
    ]


def _conns(c: MemcachedConnection) -> list[tuple[str, object]]:
    """One block per open connection, as memcached names them (its fd is our index)."""
    out: list[tuple[str, object]] = []
    listen = c.server.address
    out += [("0:addr", f"tcp:{listen}"), ("0:state", "conn_listening")]
    now = time.monotonic()
    for i, conn in enumerate(sorted(c.listener.connections, key=lambda x: x.peer), start=1):
        out += [
            (f"{i}:addr", f"tcp:{conn.peer}"),
            (f"{i}:listen_addr", f"tcp:{listen}"),
            (f"{i}:state", "conn_parse_cmd"),
            (f"{i}:secs_since_last_cmd", int(now - conn.last_active)),
        ]
    return out


def _classes(c: MemcachedConnection, sub: bytes, r: pb.Result) -> bytes:
    """`stats items` / `stats slabs` as one slab class holding every item: grid has no
    slab classes, but tools read the item count and memory from these."""
    if R.failed(r):
        return R.result_error(r)
    s = c.server.stats
    store = c.server.service.store
    with store.lock:
        rmap = store.maps.get(c.map)
        used = rmap.stats.bytes if rmap is not None else 0
    if sub == b"items":
        return _lines([("items:1:number", r.count), ("items:1:age", 0),
                       ("items:1:mem_requested", used), ("items:1:evicted", 0),
                       ("items:1:outofmemory", 0)])  # fmt: skip
    return _lines([
        ("1:chunk_size", c.max_item), ("1:used_chunks", r.count), ("1:get_hits", s.get_hits),
        ("1:cmd_set", s.cmd_set), ("1:delete_hits", s.delete_hits), ("1:incr_hits", s.incr_hits),
        ("1:decr_hits", s.decr_hits), ("1:cas_hits", s.cas_hits), ("1:cas_badval", s.cas_badval),
        ("1:touch_hits", s.touch_hits), ("active_slabs", 1), ("total_malloced", used),
    ])  # fmt: skip


COMMANDS = {
    b"delete": delete,
    b"touch": touch,
    b"flush_all": flush_all,
    b"version": version,
    b"verbosity": verbosity,
    b"quit": quit_,
    b"stats": stats,
}
