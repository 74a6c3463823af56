"""Server commands: COMMAND, INFO, CONFIG, DBSIZE, FLUSHDB, FLUSHALL, TIME.

DBSIZE and FLUSHDB/FLUSHALL act on the whole cluster's RESP map (grid's SIZE and
CLEAR run on every member); there is one database, so FLUSHALL is FLUSHDB. INFO
describes this member: its clients, its memory, and the hits, misses and keys of
the partitions it serves. CONFIG GET answers the Redis names of the settings grid
has; CONFIG SET changes only maxmemory (on this member, until it restarts), as the
rest of grid's configuration is fixed when a member starts.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from grid import __version__
from grid.frontends.ops import Plan, Reply
from grid.frontends.resp.commands.connection import REDIS_VERSION
from grid.frontends.resp.common import SYNTAX, failed, result_error
from grid.frontends.resp.glob import match
from grid.frontends.resp.keyspace import CLEAR, SIZE
from grid.frontends.resp.replies import OK, bulk, error, integer, simple
from grid.frontends.resp.table import NO_KEYS, Command, command
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.resp.server import RespConnection

POLICIES = {
    "lru": "allkeys-lru",
    "lfu": "allkeys-lfu",
    "random": "allkeys-random",
    "volatile-ttl": "volatile-ttl",
    "noeviction": "noeviction",
}


# ---- COMMAND --------------------------------------------------------------------------------
def _all() -> dict[bytes, Command]:
    from grid.frontends.resp.commands import COMMANDS

    return COMMANDS


def _info(c: RespConnection, cmd: Command) -> bytes:
    enc = c.enc
    subs = [_info(c, s) for s in cmd.subcommands.values()]
    return enc.array(
        [
            bulk(cmd.name.encode()),
            integer(cmd.arity),
            enc.set([simple(f) for f in cmd.flags]),
            integer(cmd.first_key),
            integer(cmd.last_key),
            integer(cmd.step),
            enc.set([]),
            enc.array([]),
            enc.array([]),
            enc.array(subs),
        ]
    )


def command_all(c: RespConnection, args: list[bytes]) -> Reply:
    return c.enc.array([_info(c, cmd) for cmd in _all().values()])


def command_count(c: RespConnection, args: list[bytes]) -> Reply:
    return integer(len(_all()))


def command_list(c: RespConnection, args: list[bytes]) -> Reply:
    return c.enc.array([bulk(name) for name in _all()])


def command_info(c: RespConnection, args: list[bytes]) -> Reply:
    table = _all()
    names = args[2:] or list(table)
    out = []
    for name in names:
        cmd = table.get(name.lower())
        out.append(c.enc.null_array if cmd is None else _info(c, cmd))
    return c.enc.array(out)


def command_docs(c: RespConnection, args: list[bytes]) -> Reply:
    table = _all()
    names = [n.lower() for n in args[2:]] or list(table)
    pairs = []
    for name in names:
        cmd = table.get(name)
        if cmd is None:
            continue
        doc = c.enc.map(
            [
                (bulk(b"summary"), bulk(f"{cmd.name.upper()} (served by grid)".encode())),
                (bulk(b"since"), bulk(b"1.0.0")),
                (bulk(b"group"), bulk(cmd.group.encode())),
            ]
        )
        pairs.append((bulk(cmd.name.encode()), doc))
    return c.enc.map(pairs)


def command_(c: RespConnection, args: list[bytes]) -> Reply:
    if len(args) == 1:
        return command_all(c, args)
    raise AssertionError("dispatched to a subcommand")


# ---- INFO -----------------------------------------------------------------------------------
def _human(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n}B"


def info_text(c: RespConnection, sections: Sequence[str]) -> str:
    server = c.server
    service = server.service
    store = service.store
    config = c.config
    with store.lock:
        rmap = store.maps.get(c.map)
        stats = rmap.stats if rmap is not None else None
        keys = store.size(rmap) if rmap is not None else 0
        expires = len(store.volatile.keys) if rmap is not None else 0
        used = store.used
        max_memory = store.max_memory
    uptime = int(time.time() - server.started)
    port = server.address.rsplit(":", 1)[-1]
    listener = server.listener
    out = {
        "server": [
            f"redis_version:{REDIS_VERSION}",
            "redis_mode:standalone",
            f"os:{os.uname().sysname} {os.uname().release} {os.uname().machine}",
            "arch_bits:64",
            f"process_id:{os.getpid()}",
            f"tcp_port:{port}",
            f"uptime_in_seconds:{uptime}",
            f"uptime_in_days:{uptime // 86400}",
            f"executable:{sys.executable}",
            f"grid_version:{__version__}",
            f"grid_member:{service.name}",
        ],
        "clients": [
            f"connected_clients:{len(listener.connections)}",
            "blocked_clients:0",
            "maxclients:10000",
        ],
        "memory": [
            f"used_memory:{used}",
            f"used_memory_human:{_human(used)}",
            f"maxmemory:{max_memory}",
            f"maxmemory_human:{_human(max_memory)}",
            f"maxmemory_policy:{POLICIES.get(config.eviction_policy, config.eviction_policy)}",
        ],
        "persistence": [
            "loading:0",
            f"aof_enabled:{int(bool(config.data_dir))}",
        ],
        "stats": [
            f"total_connections_received:{listener.accepted}",
            f"total_commands_processed:{listener.commands}",
            f"rejected_connections:{listener.refused}",
            f"expired_keys:{stats.expirations if stats else 0}",
            f"evicted_keys:{stats.evictions if stats else 0}",
            f"keyspace_hits:{stats.hits if stats else 0}",
            f"keyspace_misses:{stats.misses if stats else 0}",
        ],
        "replication": ["role:master", "connected_slaves:0"],
        "keyspace": [f"db0:keys={keys},expires={expires},avg_ttl=0"] if keys else [],
    }
    wanted = [s.lower() for s in sections] or ["default"]
    if any(s in ("all", "everything", "default") for s in wanted):
        wanted = list(out)
    parts = []
    for name in out:
        if name in wanted:
            parts.append(f"# {name.capitalize()}\r\n" + "".join(f"{x}\r\n" for x in out[name]))
    return "\r\n".join(parts)


def info(c: RespConnection, args: list[bytes]) -> Reply:
    text = info_text(c, [a.decode(errors="replace") for a in args[1:]])
    return c.enc.verbatim(text.encode())


# ---- CONFIG ---------------------------------------------------------------------------------
def _settings(c: RespConnection) -> dict[str, str]:
    config = c.config
    store = c.server.service.store
    return {
        "maxmemory": str(store.max_memory),
        "maxmemory-policy": POLICIES.get(config.eviction_policy, config.eviction_policy),
        "maxmemory-samples": str(config.eviction_samples),
        "lfu-log-factor": str(config.lfu_log_factor),
        "lfu-decay-time": str(config.lfu_decay_minutes),
        "hz": str(max(1, 1000 // config.expiry_sweep_interval_ms)),
        "databases": "1",
        "port": c.server.address.rsplit(":", 1)[-1],
        "bind": config.host,
        "timeout": "0",
        "save": "",
        "appendonly": "yes" if config.data_dir else "no",
        "appendfsync": {"always": "always", "interval": "everysec"}.get(config.fsync, "no"),
        "dir": config.data_dir,
        "proto-max-bulk-len": str(config.max_value_bytes),
        "cluster-enabled": "no",
    }


def config_get(c: RespConnection, args: list[bytes]) -> Reply:
    settings = _settings(c)
    pairs = []
    seen = set()
    for pattern in args[2:]:
        for name, value in settings.items():
            if name not in seen and match(pattern.lower(), name.encode()):
                seen.add(name)
                pairs.append((bulk(name.encode()), bulk(value.encode())))
    return c.enc.map(pairs)


def config_set(c: RespConnection, args: list[bytes]) -> Reply:
    if len(args) % 2:
        return error("ERR wrong number of arguments for 'config|set' command")
    settings = _settings(c)
    changes = {}
    for i in range(2, len(args), 2):
        name = args[i].lower().decode(errors="replace")
        if name not in settings:
            return error(f"ERR Unknown option or number of arguments for CONFIG SET - '{name}'")
        if name != "maxmemory":
            return error(
                f"ERR CONFIG SET failed (possibly related to argument '{name}') - "
                "can't set immutable config"
            )
        from grid.config import ConfigError, parse_size

        try:
            changes[name] = parse_size(args[i + 1].decode(errors="replace"))
        except ConfigError:
            return error(
                f"ERR CONFIG SET failed (possibly related to argument '{name}') - "
                "argument must be a memory value"
            )
    if "maxmemory" in changes:
        store = c.server.service.store
        with store.lock:
            store.max_memory = changes["maxmemory"]
    return OK


def config_resetstat(c: RespConnection, args: list[bytes]) -> Reply:
    return OK


def config(c: RespConnection, args: list[bytes]) -> Reply:
    raise AssertionError("dispatched to a subcommand")


# ---- whole map ------------------------------------------------------------------------------
def dbsize(c: RespConnection, args: list[bytes]) -> Reply:
    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        return integer(r.count) if not failed(r) else result_error(r)

    return Plan([pb.Op(code=SIZE, map=c.map)], finish)


def flush(c: RespConnection, args: list[bytes]) -> Reply:
    if len(args) > 2 or (len(args) == 2 and args[1].lower() not in (b"sync", b"async")):
        return SYNTAX

    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        return OK if not failed(r) else result_error(r)

    return Plan([pb.Op(code=CLEAR, map=c.map)], finish)


def time_(c: RespConnection, args: list[bytes]) -> Reply:
    ns = time.time_ns()
    return c.enc.array(
        [bulk(b"%d" % (ns // 1_000_000_000)), bulk(b"%d" % (ns // 1000 % 1_000_000))]
    )


_ADMIN = "admin noscript loading stale"
COMMAND_SUBCOMMANDS = [
    command("command|count", 2, "loading stale", NO_KEYS, "server", command_count),
    command("command|docs", -2, "loading stale", NO_KEYS, "server", command_docs),
    command("command|info", -2, "loading stale", NO_KEYS, "server", command_info),
    command("command|list", -2, "loading stale", NO_KEYS, "server", command_list),
]
CONFIG_SUBCOMMANDS = [
    command("config|get", -3, _ADMIN, NO_KEYS, "server", config_get),
    command("config|set", -4, _ADMIN, NO_KEYS, "server", config_set),
    command("config|resetstat", 2, _ADMIN, NO_KEYS, "server", config_resetstat),
]
COMMANDS = [
    command("command", -1, "loading stale", NO_KEYS, "server", command_, COMMAND_SUBCOMMANDS),
    command("info", -1, "loading stale", NO_KEYS, "server", info),
    command("config", -2, "", NO_KEYS, "server", config, CONFIG_SUBCOMMANDS),
    command("dbsize", 1, "readonly fast", NO_KEYS, "server", dbsize),
    command("flushdb", -1, "write", NO_KEYS, "server", flush),
    command("flushall", -1, "write", NO_KEYS, "server", flush),
    command("time", 1, "loading stale fast", NO_KEYS, "server", time_),
]
