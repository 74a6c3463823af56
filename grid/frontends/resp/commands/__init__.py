"""The RESP command table, one module per family, and what grid answers it does not support.

A command grid does not implement but Redis has gets an -ERR that names it and
says why (NOT_SUPPORTED), so a user sees "grid does not support MULTI" rather
than Redis's "unknown command", which reads like a typo.
"""

from __future__ import annotations

from grid.frontends.resp.commands import (
    admin,
    connection,
    counters,
    expiry,
    keys,
    pubsub,
    scan,
    strings,
)
from grid.frontends.resp.table import Command

COMMANDS: dict[bytes, Command] = {
    cmd.name.encode(): cmd
    for module in (connection, strings, counters, keys, expiry, scan, admin, pubsub)
    for cmd in module.COMMANDS
}

_TYPES = {
    "list": "lpush rpush lpop rpop llen lrange lindex lset lrem ltrim linsert lpos lmove "
    "blpop brpop brpoplpush blmove rpoplpush lmpop blmpop lpushx rpushx",
    "hash": "hset hget hmset hmget hdel hgetall hkeys hvals hlen hexists hincrby "
    "hincrbyfloat hsetnx hstrlen hscan hrandfield",
    "set": "sadd srem smembers sismember smismember scard spop srandmember sinter "
    "sinterstore sunion sunionstore sdiff sdiffstore smove sscan sintercard",
    "sorted set": "zadd zrem zrange zrangebyscore zrevrange zrevrangebyscore zscore "
    "zincrby zcard zcount zrank zrevrank zscan zpopmin zpopmax bzpopmin bzpopmax "
    "zrangestore zunionstore zinterstore zdiffstore zunion zinter zdiff zmscore "
    "zrandmember zremrangebyscore zremrangebyrank zremrangebylex zrangebylex "
    "zrevrangebylex zlexcount zmpop bzmpop zintercard",
    "stream": "xadd xread xreadgroup xrange xrevrange xlen xdel xtrim xgroup xack "
    "xpending xclaim xautoclaim xinfo xsetid",
    "bitmap": "setbit getbit bitcount bitpos bitop bitfield bitfield_ro",
    "HyperLogLog": "pfadd pfcount pfmerge",
    "geo": "geoadd geodist geohash geopos georadius georadiusbymember geosearch geosearchstore",
}
NOT_SUPPORTED: dict[bytes, str] = {}
for _kind, _names in _TYPES.items():
    for _name in _names.split():
        NOT_SUPPORTED[_name.encode()] = (
            f"grid does not support {_name.upper()}: grid stores strings only, not the {_kind} type"
        )
for _names, _why in (
    ("multi exec discard watch unwatch", "transactions (MULTI/EXEC/WATCH) are not available; "
     "each command is atomic on its own"),
    ("eval evalsha eval_ro evalsha_ro script function fcall fcall_ro",
     "scripting (Lua scripts and functions) is not available"),
    ("ssubscribe sunsubscribe spublish", "sharded publish/subscribe is not available; "
     "SUBSCRIBE and PUBLISH reach every member"),
    ("move copy dump restore migrate object sort sort_ro wait waitaof swapdb",
     "this generic command is not available"),
    ("save bgsave bgrewriteaof lastsave shutdown slaveof replicaof sync psync failover "
     "debug monitor slowlog latency memory module acl cluster readonly readwrite lolwut",
     "this server command is not available (grid members are administered with `grid`)"),
    ("setbit lcs", "this string command is not available"),
):  # fmt: skip
    for _name in _names.split():
        NOT_SUPPORTED[_name.encode()] = f"grid does not support {_name.upper()}: {_why}"
