"""Member configuration: every option, its default and why, in one place.

Precedence, lowest to highest: the defaults below < a TOML file (`--config`
or `GRID_CONFIG`) < `GRID_<OPTION>` environment variables < command-line
flags < keyword arguments given to `grid.Node(...)` in code. This is the usual
twelve-factor order: the file describes the deployment, the environment the
instance, the flags the one run.

docs/configuration.md is generated from the `help` texts here
(`grid config --reference > docs/configuration.md`), and a test keeps it in step.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from grid.wire.security import Credentials, Security, trust_fingerprint, valid_password_hash
from partitioning.config import DEFAULT_VIRTUAL_NODES, MAX_BACKUPS
from partitioning.keys import DEFAULT_PARTITION_COUNT

EVICTION_POLICIES = ("lru", "lfu", "random", "volatile-ttl", "noeviction")
FSYNC_POLICIES = ("always", "interval", "never")
LOG_FORMATS = ("auto", "console", "json")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


class ConfigError(ValueError):
    """An option has a value the member cannot run with; the message names it."""


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as "512MiB", "2gb", "1024"."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if not m:
        raise ConfigError(f"not a size: {value!r} (use e.g. 1024, 64KiB, 512MB, 2GiB)")
    unit = (m.group(2) or "").lower()
    if unit not in _UNITS:
        raise ConfigError(f"unknown size unit in {value!r}")
    return int(float(m.group(1)) * _UNITS[unit])


def _parse_bool(value: bool | str | int) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"not a boolean: {value!r} (use true or false)")


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    """All member options. See the module docstring for where values come from."""

    # --- identity and network ------------------------------------------------------------
    name: str = _opt(
        "",
        "Member name, unique in the cluster. Empty: `<hostname>-<port>`, stable across "
        "restarts of the same member so its identity (and version tie-breaker) is too.",
    )
    host: str = _opt(
        "127.0.0.1",
        "Address the gRPC server binds. Loopback by default so a member started by hand "
        "is never exposed by accident; set 0.0.0.0 (or an interface) to serve a network.",
    )
    port: int = _opt(
        5701,
        "gRPC port for clients and members. 5701 is Hazelcast's, familiar to operators. "
        "0 picks a free port (tests, `grid cluster up`).",
    )
    advertise: str = _opt(
        "",
        "host:port other members and clients should use to reach this one. Empty: "
        "host:port (the bound port when port is 0).",
    )
    data_port: int = _opt(
        0,
        "Port of the data plane (client batches in frames over TCP, docs/api.md). 0: the gRPC "
        "port + 2000 (7701 by default), as gossip takes + 1000, so one setting places all "
        "three; any free port when the gRPC port is 0 too. Clients learn it from the gRPC "
        "port (Endpoints), so they are only ever given the gRPC address.",
    )
    data_advertise: str = _opt(
        "",
        "host:port clients should use to reach the data plane. Empty: the host of "
        "`advertise` (or `host`) with the data port.",
    )
    data_handshake_timeout_s: float = _opt(
        10.0,
        "A data-plane connection must send its Hello within this; a socket opened and left "
        "silent is closed instead of held forever.",
    )
    event_loop: str = _opt(
        "auto",
        "The member's event loop: uvloop (libuv; measured faster on the data plane, "
        "docs/benchmarks.md), asyncio (the standard library's), or auto: uvloop when it is "
        "installed (`pip install grid[fast]`), else asyncio. Embedded nodes use the caller's "
        "loop choice.",
        choices=("auto", "uvloop", "asyncio"),
    )
    data_frame_timeout_s: float = _opt(
        30.0,
        "A frame begun must be finished within this (a half-sent request held open is "
        "closed); 30 s carries a max_message_bytes frame over a slow link.",
    )
    resp_port: int = _opt(
        0,
        "Port of the member's RESP front end (Redis clients and tools: redis-py, redis-cli, "
        "redis-benchmark; docs/resp.md), on `host`. 0 = off: a member opens no port the "
        "operator did not ask for. Any member serves any key.",
    )
    frontend_map: str = _opt(
        "kv",
        "The map the RESP front end keeps its keys in, as raw bytes: an SDK reads and "
        "writes the same keys with `client.map(name, codec='raw')`. The memcached front "
        "end has its own (memcached_map), since its items carry client flags; set that "
        "one to this name to share the keys.",
    )
    memcached_port: int = _opt(
        0,
        "Port of the member's memcached front end (the text and meta protocols: pymemcache, "
        "python-memcached, libmemcached's tools; docs/memcached.md), on `host`. 0 = off, as "
        "resp_port. Any member serves any key.",
    )
    memcached_map: str = _opt(
        "memcached",
        "The map the memcached front end keeps its items in. Its own map, not frontend_map: "
        "an item carries memcached's 32-bit client flags in a 5-byte header of the stored "
        "value whenever they are not 0 (docs/memcached.md), which a Redis client would read "
        "as part of the value. Set it to frontend_map to share the keys of flag-less items.",
    )
    memcached_max_item_bytes: int = _opt(
        1024 * 1024,
        'Largest value the memcached front end stores (larger: "SERVER_ERROR object too '
        "large for cache\", the data read and dropped). 1 MiB is memcached's own default "
        "(-I). Capped at max_value_bytes less the 5-byte flags header, so a smaller "
        "max_value_bytes lowers it rather than refuse to start.",
        parse=parse_size,
    )
    # --- data layout -----------------------------------------------------------------------
    partitions: int = _opt(
        DEFAULT_PARTITION_COUNT,
        "Number of partitions, fixed for the life of a cluster. 271 (Hazelcast's default) "
        "is prime and moves data in small pieces when members change.",
    )
    # --- memory and eviction ---------------------------------------------------------------
    max_memory: int = _opt(
        0,
        "Member-wide memory bound for stored entries, in bytes (accepts 512MiB, 2GB, ...). "
        "0 = unbounded. Counted with the store's estimate of keys, values and per-entry "
        "overhead, which tests hold within 20% of the real process growth.",
        parse=parse_size,
    )
    eviction_policy: str = _opt(
        "lru",
        "What to evict when max_memory is reached: lru, lfu, random, volatile-ttl (entries "
        "with a TTL, soonest expiry first), noeviction (writes fail with OUT_OF_MEMORY). "
        "lru by default because a bounded cache that refuses writes surprises more users "
        "than one that forgets cold entries (Redis defaults to noeviction as a database).",
        choices=EVICTION_POLICIES,
    )
    eviction_samples: int = _opt(
        5,
        "Keys sampled per eviction (Redis's maxmemory-samples). 5 approximates true LRU "
        "closely at a fraction of its cost; 10 is closer and slower.",
    )
    lfu_log_factor: int = _opt(
        10,
        "LFU counter logarithm factor (Redis's lfu-log-factor): higher means a counter needs "
        "more hits to grow; 10 saturates the 8-bit counter at about a million hits.",
    )
    lfu_decay_minutes: int = _opt(
        1,
        "LFU counter decrements by one per this many idle minutes (Redis's "
        "lfu-decay-time), so keys that were hot long ago stop looking hot.",
    )
    # --- expiry -----------------------------------------------------------------------------
    expiry_sweep_interval_ms: int = _opt(
        100,
        "How often the active expiry cycle runs (Redis's hz 10). Expired entries are also "
        "removed lazily on access; the sweep reclaims memory of keys nobody reads.",
    )
    expiry_sweep_budget_ms: int = _opt(
        5,
        "Most time one expiry cycle may take, so a burst of expiries never stalls requests "
        "(Redis uses 25% of a cycle; 5 ms of 100 ms here).",
    )
    # --- limits (every decoder is bounded) ---------------------------------------------------
    max_key_bytes: int = _opt(1024, "Largest key accepted (TOO_LARGE beyond).", parse=parse_size)
    max_value_bytes: int = _opt(
        16 * 1024 * 1024,
        "Largest value accepted (TOO_LARGE beyond). 16 MiB: big enough for documents and "
        "rendered pages, small enough that one value cannot stall a member.",
        parse=parse_size,
    )
    max_batch_ops: int = _opt(
        10_000,
        "Most operations in one request; larger batches are refused whole with TOO_LARGE so "
        "one client cannot monopolise the member's loop.",
    )
    max_message_bytes: int = _opt(
        64 * 1024 * 1024,
        "Largest gRPC message accepted or sent: a few max-size values plus framing.",
        parse=parse_size,
    )
    scan_page: int = _opt(100, "Keys per scan page when the client does not say (Redis's COUNT).")
    # --- membership (issue 3) -----------------------------------------------------------------
    cluster_name: str = _opt(
        "grid",
        "Members only admit members with the same cluster name (and partition count), so two "
        "clusters on one network never merge by accident.",
    )
    seeds: str = _opt(
        "",
        "Comma-separated host:port gossip addresses of members to join through. Empty: start a "
        "new cluster (or wait to be joined).",
    )
    discovery_dns: str = _opt(
        "",
        "A DNS name resolving to the members' addresses (a Kubernetes headless service), "
        "re-resolved while this member has no peers. Combined with seeds.",
    )
    gossip_host: str = _opt(
        "",
        "Address the membership transport (UDP + TCP) binds. Empty: the same as host.",
    )
    gossip_port: int = _opt(
        0,
        "Port of the membership transport (UDP and TCP). 0: the gRPC port + 1000 (6701 by "
        "default), so a member needs one setting for its ports; any free port when the gRPC "
        "port is 0 too.",
    )
    zone: str = _opt("", "Failure zone (rack, availability zone) announced to other members.")
    secret: str = _opt(
        "",
        "Shared secret authenticating every membership message (HMAC). Members with another "
        "secret are never admitted. Empty: messages are not authenticated (loopback/dev only).",
    )
    encryption_keys: str = _opt(
        "",
        "Comma-separated base64 AES-GCM keys (16, 24 or 32 bytes). The first encrypts; all "
        "decrypt, so keys rotate without downtime: add the new key second everywhere, then "
        "make it first, then remove the old. Empty: no encryption.",
    )
    tls_cert: str = _opt(
        "",
        "PEM certificate chain this member serves on every port (gRPC, the data plane, RESP, "
        "memcached, metrics, the dashboard), and presents to peers that ask for one. Empty: "
        "no TLS (loopback and trusted networks only). Reloaded without a restart when the "
        "file changes (checked every 10 s).",
    )
    tls_key: str = _opt("", "PEM private key of tls_cert.")
    tls_ca: str = _opt(
        "",
        "PEM bundle of the certificate authorities this member trusts. Set: mutual TLS, every "
        "client and peer must present a certificate one of them signed, and peers' "
        "certificates are verified against it. Needs tls_cert.",
    )
    auth_token: str = _opt(
        "",
        "The cluster's shared token. Set: every client and peer must send it (the data "
        "plane's Hello, gRPC `authorization: Bearer` metadata) or is refused; health checks "
        "stay open for probes. Without a `secret`, membership messages are authenticated "
        "with a key derived from it, so a member without the token is never admitted. Prefer "
        "GRID_AUTH_TOKEN or the config file to a flag, which other users can read in the "
        "process list.",
    )
    users: str = _opt(
        "",
        "Named logins for applications, each with its own password (revoked alone, unlike the "
        "one token): in TOML a `[users]` table of name = hash, in GRID_USERS or a flag "
        "`name=hash,name=hash`. A hash is what `grid passwd NAME` prints (sha256:, for long "
        "random passwords: docs/operations.md says why). Users log in on the data plane, "
        "gRPC (HTTP Basic), RESP (AUTH name password) and memcached; members use auth_token "
        "among themselves, so users need it set.",
        parse=lambda v: _users_text(v),
    )
    # --- persistence (issue 4) ----------------------------------------------------------------
    data_dir: str = _opt(
        "",
        "Directory for the member's journal and its partitions' snapshots. Empty: memory "
        "only; a restart starts empty. A data dir of the per-partition layout of earlier "
        "builds is converted on the first start (docs/persistence.md).",
    )
    fsync: str = _opt(
        "interval",
        "always (group commit; a write is acknowledged after fsync), interval (fsync every "
        "second: a crash loses at most the last second), never (leave it to the OS).",
        choices=FSYNC_POLICIES,
    )
    snapshot_ratio: float = _opt(
        2.0,
        "Snapshot a partition when its records in the journal exceed this multiple of its "
        "live data, so recovery replays at most about that much and the disk holds about "
        "that much.",
    )
    journal_segment_mb: int = _opt(
        64,
        "Size at which the journal starts a new segment file. The journal is reclaimed a "
        "whole segment at a time and holds up to keep_snapshots (2) x snapshot_ratio x the "
        "live data + two segments, so smaller segments free disk sooner; 64 MiB keeps "
        "file creations (and their directory fsyncs) rare at 100+ MB/s of writes.",
    )
    # --- partitioning and migration (issue 5) --------------------------------------------------
    backups: int = _opt(
        1,
        "Backup copies of every partition on other members (0..6). Writes reach them "
        "asynchronously; a crashed primary's first backup takes over.",
    )
    map_backups: str = _opt(
        "",
        "Per-map backups, overriding `backups`: 'sessions=0,orders=2' (0..6). The "
        "partition table gets as many backups as the widest map needs and each map is "
        "copied to its first N of them (as Hazelcast's per-map backup-count). Must be the "
        "same on every member.",
    )
    sync_backups: int = _opt(
        0,
        "Backups that must have applied a write before the primary answers it (0 = all "
        "backups asynchronous). Capped by the backups a partition has. With 1, a write "
        "acknowledged to a client survives the loss of any one member. A member that sees "
        "no majority of the members it knows (the smaller side of a split, or the last of "
        "three) confirms none: UNAVAILABLE at sync_backup_timeout_s (docs/replication.md).",
    )
    map_sync_backups: str = _opt(
        "",
        "Per-map sync_backups, overriding the default: 'orders=1,sessions=0'.",
    )
    sync_backup_timeout_s: float = _opt(
        5.0,
        "How long a write waits for its sync backups. Past it the write is answered "
        "UNAVAILABLE ('applied on the primary, not confirmed by its backups'): it is in "
        "memory on the primary but may not survive the primary's loss.",
    )
    min_cluster_size: int = _opt(
        0,
        "Refuse writes (UNAVAILABLE) while this member sees fewer live members than this, "
        "itself included; reads of the partitions it serves go on. Its coordinator fails "
        "nothing over meanwhile (reads of partitions owned out of sight fail), and once it "
        "sees enough members again it serves nothing until it has their newest table "
        '(docs/replication.md, "Split brain"). Set it to a majority (2 of 3, 3 of 5) so '
        "that after a network split only the larger side takes writes and its writes "
        "survive the heal. 0 = always accept (AP).",
    )
    replication_linger_ms: float = _opt(
        25.0,
        "How long a primary lets changes gather before sending them to a backup (as "
        "Kafka's linger.ms). One stream message costs about as much CPU as a client "
        "request, so one per write would make every write cost three; gathered, a burst "
        "of writes costs one message. It delays async backups by up to this much (what a "
        "primary's crash can lose with async backups); a write waiting for sync backups, "
        "a snapshot or a hand-off is sent at once. Measured on 2 cores (docs/benchmarks.md): "
        "single puts with backups=1 async at 0.64x of backups=0 with 10 ms and 0.68x "
        "with 25 ms, side by side. 0 = always send at once.",
    )
    replication_log_changes: int = _opt(
        256,
        "Changes a primary keeps in memory per partition, so that a backup that fell "
        "behind (a broken stream, a restart with its data dir) is sent just what it lacks "
        "instead of a snapshot of the partition (as Redis's repl-backlog-size). They hold "
        "references to values outside max_memory's accounting: 271 x 256 changes of 100 B "
        "values is about 17 MB. A restart of a few seconds under 10k writes/s needs about "
        "40 per partition a second.",
    )
    anti_entropy_interval_s: float = _opt(
        10.0,
        "How often a primary compares digests of its partitions with each backup and "
        "merges what differs (last writer wins). This is what repairs replicas after a "
        "healed split or a member's return; in-order streaming keeps them equal otherwise, "
        "so a round that finds nothing costs a digest per partition. 0 = off.",
    )
    anti_entropy_settle_s: float = _opt(
        2.0,
        "Changes younger than this are left out of a comparison: they may still be on "
        "their way down the stream, and would show as differences that are not.",
    )
    tombstone_grace_s: float = _opt(
        3600.0,
        "How long a delete is remembered (a tombstone) so that a replica that missed it "
        "cannot give the key back at a merge. A replica away for longer than this may "
        "resurrect keys deleted meanwhile (as in Cassandra's gc_grace_seconds).",
    )
    read_from_backup: bool = _opt(
        False,
        "Embedded maps (grid.Node) read a key from this member's backup copy of its "
        "partition instead of asking the primary (as Hazelcast's read-backup-data): no "
        "network hop, but the value may be older than the primary's by the replication lag "
        "(no read-your-writes for a write made elsewhere). Clients opt in on their own "
        "(Client(read_from_backup=True)); a member answers such reads from a copy only "
        "once the copy has caught up with its primary.",
        parse=_parse_bool,
    )
    read_repair_chance: float = _opt(
        0.1,
        "Share of reads answered from a backup copy whose key is then checked against the "
        "primary, in the background (as Cassandra's read_repair_chance): if the copies "
        "differ, each takes the other's newer record (last writer wins). Repairs keys that "
        "are read before anti-entropy gets to them. 0 = off, 1 = every such read.",
    )
    virtual_nodes: int = _opt(
        DEFAULT_VIRTUAL_NODES,
        "Points per member on the consistent-hash ring. More spread partitions more evenly "
        "and cost a little more to compute; every member and client must agree.",
    )
    max_forward_hops: int = _opt(
        2,
        "How many times a batch may be forwarded between members before an operation for "
        "another member's partition is answered NOT_OWNER (smart clients then refresh their "
        "table and retry). Bounds ping-pong while two members disagree about a table.",
    )
    migration_max_parallel: int = _opt(
        2,
        "Partitions copied at once when members join or leave (one wave). Measured with 1M "
        "keys (docs/benchmarks.md): client p99 during a join grows with it (2: about 3.5-4x "
        "the p99 before, 8: about 7x) while the move gets faster (7 s vs 4 s).",
    )
    migration_max_bytes_per_s: int = _opt(
        16 * 1024 * 1024,
        "Snapshot bytes a member sends per second to members filling partitions (0 = no "
        "limit). Live changes are never throttled. A second bound on how much a join may "
        "take from client traffic; raise both to move data faster.",
        parse=parse_size,
    )
    restart_wait_s: float = _opt(
        30.0,
        "After a restart with a saved partition table, how long to wait for the members it "
        "names before their partitions are given to others (a whole-cluster restart must "
        "not hand out partitions whose only copies are on members still starting).",
    )
    leave_timeout_s: float = _opt(
        120.0,
        "On a graceful stop, how long the member may spend handing its partitions to others "
        "before it leaves anyway.",
    )
    # --- observability -------------------------------------------------------------------------
    metrics_port: int = _opt(
        0,
        "Port of the Prometheus endpoint (`GET /metrics`, on `host`). 0: off, as Redis and "
        "Hazelcast expose nothing extra by default; 9121 is redis_exporter's, a common choice. "
        "docs/operations.md lists the metrics.",
    )
    dashboard_port: int = _opt(
        0,
        "Port of the web dashboard (members, partitions, maps' hit ratios, throughput and "
        "latency over the last 10 minutes, events), on `host`. 0: off; while on, the member "
        "asks every peer for its stats every 2 s. With auth_token set the page asks for it "
        "as the password (HTTP Basic).",
    )
    slow_log_ms: float = _opt(
        100.0,
        "A batch that takes longer than this (arrival to reply, fsync and sync backups "
        "included) is logged as `slow batch` with its first op, map, key hash and duration, "
        "at most 10 a second, as Redis's SLOWLOG keeps commands over its threshold. 100 ms is "
        "ten times a loaded fsync here; 0 turns it off.",
    )
    # --- runtime -------------------------------------------------------------------------------
    shutdown_grace_s: float = _opt(
        5.0,
        "On SIGTERM/SIGINT, how long in-flight requests may take to finish before the member "
        "exits anyway.",
    )
    parent_pid: int = _opt(
        0,
        "Stop gracefully, as on SIGTERM, once the process with this id is no longer the "
        "member's parent (it exited). For harnesses and supervisors that start members "
        "and may die without stopping them (a test killed mid-run); 0: never. The "
        "harness (grid/harness/cluster.py) passes its own.",
    )
    log_level: str = _opt("info", "debug, info, warning or error.")
    log_format: str = _opt(
        "auto",
        "console (coloured, for a terminal), json (one object a line, for log shippers) or "
        "auto (console when stderr is a terminal, else json).",
        choices=LOG_FORMATS,
    )

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the first option that cannot work."""
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(
                    f"{f.name} must be one of {', '.join(choices)}, not {getattr(self, f.name)!r}"
                )
        if not 1 <= self.partitions <= 65_536:
            raise ConfigError("partitions must be between 1 and 65536")
        if not 0 <= self.port <= 65_535:
            raise ConfigError(f"port {self.port} is not a TCP port")
        if not 0 <= self.resp_port <= 65_535:
            raise ConfigError(f"resp_port {self.resp_port} is not a TCP port")
        if not self.frontend_map or len(self.frontend_map.encode()) > 255:
            raise ConfigError("frontend_map must be a map name of 1 to 255 bytes")
        if not 0 <= self.memcached_port <= 65_535:
            raise ConfigError(f"memcached_port {self.memcached_port} is not a TCP port")
        if not self.memcached_map or len(self.memcached_map.encode()) > 255:
            raise ConfigError("memcached_map must be a map name of 1 to 255 bytes")
        if not 0 <= self.data_port <= 65_535:
            raise ConfigError(f"data_port {self.data_port} is not a TCP port")
        users = self.credentials().users
        if users and not self.auth_token:
            raise ConfigError(
                "users need auth_token: members log in to each other with the cluster token, "
                "and a cluster with users but no token would let any peer in"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together: set both or neither")
        if self.tls_ca and not self.tls_cert:
            raise ConfigError("tls_ca (mutual TLS) needs tls_cert and tls_key: the member's own")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ConfigError(f"{name} {path!r} is not a file")
        if not 0 <= self.dashboard_port <= 65_535:
            raise ConfigError(f"dashboard_port {self.dashboard_port} is not a TCP port")
        if not 0 <= self.metrics_port <= 65_535:
            raise ConfigError(f"metrics_port {self.metrics_port} is not a TCP port")
        if self.slow_log_ms < 0:
            raise ConfigError("slow_log_ms must be 0 (off) or positive")
        if not 1 <= self.journal_segment_mb <= 1024 * 1024:
            raise ConfigError("journal_segment_mb must be between 1 and 1048576 (1 TiB)")
        if self.data_handshake_timeout_s <= 0 or self.data_frame_timeout_s <= 0:
            raise ConfigError("data_handshake_timeout_s and data_frame_timeout_s must be positive")
        for name in (
            "max_key_bytes",
            "max_value_bytes",
            "max_batch_ops",
            "max_message_bytes",
            "eviction_samples",
            "scan_page",
            "expiry_sweep_interval_ms",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if not 0 <= self.sync_backups <= MAX_BACKUPS:
            raise ConfigError(f"sync_backups must be between 0 and {MAX_BACKUPS}")
        self.sync_backups_by_map()  # raises on a malformed map_sync_backups
        self.backups_by_map()
        if self.min_cluster_size < 0:
            raise ConfigError("min_cluster_size must be >= 0")
        if not 0 <= self.backups <= MAX_BACKUPS:
            raise ConfigError(f"backups must be between 0 and {MAX_BACKUPS}")
        for name in (
            "virtual_nodes",
            "migration_max_parallel",
            "max_forward_hops",
            "replication_log_changes",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in (
            "anti_entropy_interval_s",
            "anti_entropy_settle_s",
            "tombstone_grace_s",
            "replication_linger_ms",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if not 0.0 <= self.read_repair_chance <= 1.0:
            raise ConfigError("read_repair_chance must be between 0 and 1")
        if self.migration_max_bytes_per_s < 0:
            raise ConfigError("migration_max_bytes_per_s must be >= 0 (0 = no limit)")
        if self.max_memory < 0:
            raise ConfigError("max_memory must be >= 0 (0 = unbounded)")
        if self.memcached_max_item_bytes <= 0:
            raise ConfigError("memcached_max_item_bytes must be positive")
        if self.max_message_bytes < self.max_value_bytes + self.max_key_bytes + 1024:
            raise ConfigError("max_message_bytes must exceed max_value_bytes + max_key_bytes")

    def data_bind_port(self, grpc_port: int) -> int:
        """The data plane's port: `data_port`, else the gRPC port + 2000 (0 when both are 0:
        any free port)."""
        if self.data_port:
            return self.data_port
        if not self.port:
            return 0
        port = self.port + 2000
        if port > 65_535:
            raise ConfigError(f"data port {port} (gRPC port + 2000) is not a port; set data_port")
        return port

    def sync_backups_by_map(self) -> dict[str, int]:
        """map_sync_backups parsed: {map name: sync backups}."""
        return _per_map("map_sync_backups", self.map_sync_backups)

    def backups_by_map(self) -> dict[str, int]:
        """map_backups parsed: {map name: backups}."""
        return _per_map("map_backups", self.map_backups)

    @property
    def table_backups(self) -> int:
        """Backups per partition in the table: what the widest map needs."""
        return max([self.backups, *self.backups_by_map().values()])

    def gossip_secret(self) -> str:
        """What authenticates membership messages: `secret`, or when only `auth_token` is
        set, a key derived from it, so one token keeps out of the membership, not only out
        of the data, a member that lacks it (it is never admitted, never given partitions
        it could not be sent). With `tls_ca` the key is derived from the CA bundle's
        certificates too: a member trusting other authorities (another cluster's
        certificate, the same token) could not exchange data with this cluster, so it is
        not let into its membership either."""
        if self.secret or not self.auth_token:
            return self.secret
        context = b"grid gossip secret"
        if self.tls_ca:
            context += b" trusting " + trust_fingerprint(self.tls_ca).encode()
        return hmac.new(self.auth_token.encode(), context, "sha256").hexdigest()

    def credentials(self) -> Credentials:
        """Who may connect: the token and the users (parsed once; Config is not changed
        in place after validation)."""
        key = (self.auth_token, self.users)
        cached = self.__dict__.get("_credentials")
        if cached is None or cached[0] != key:
            cached = (key, Credentials(self.auth_token, parse_users(self.users)))
            self.__dict__["_credentials"] = cached
        return cached[1]

    def peer_security(self) -> Security:
        """How this member dials its peers: TLS when it serves TLS (its own certificate
        presented, the peers' verified against tls_ca or the system's store), the token."""
        return Security(
            cert=self.tls_cert, key=self.tls_key, ca=self.tls_ca, token=self.auth_token,
            tls=bool(self.tls_cert),
        )  # fmt: skip

    @property
    def member_name(self) -> str:
        return self.name or f"{socket.gethostname()}-{self.port}"

    def with_overrides(self, **overrides: Any) -> Config:
        """A copy with some options replaced (values parsed and validated)."""
        return dataclasses.replace(self, **_coerce(overrides))

    # ------------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        flags: Mapping[str, Any] | None = None,
    ) -> Config:
        """Defaults < TOML file < GRID_* environment < flags (None values are ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = file or env.get("GRID_CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    data = tomllib.load(fh)
            except OSError as e:
                raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
            data = data.get("member", data)  # accept a [member] table or top-level keys
            unknown = set(data) - {f.name for f in fields(cls)}
            if unknown:
                raise ConfigError(f"unknown option(s) in {path}: {', '.join(sorted(unknown))}")
            values.update(data)
        for f in fields(cls):
            key = "GRID_" + f.name.upper()
            if key in env:
                values[f.name] = env[key]
        for k, v in (flags or {}).items():
            if v is not None:
                values[k] = v
        return cls(**_coerce(values))


def _coerce(values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn strings from env/TOML/flags into each option's type."""
    by_name = {f.name: f for f in fields(Config)}
    out: dict[str, Any] = {}
    for k, v in values.items():
        f = by_name.get(k)
        if f is None:
            raise ConfigError(f"unknown option {k!r}")
        parse = f.metadata.get("parse")
        try:
            if parse is not None:
                v = parse(v)
            elif f.type in ("int", int) and not isinstance(v, int):
                v = int(v)
            elif f.type in ("float", float) and not isinstance(v, float):
                v = float(v)
            elif f.type in ("str", str):
                v = str(v)
        except ConfigError as e:
            raise ConfigError(f"{k}: {e}") from e
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{k}: cannot use {v!r} ({e})") from e
        out[k] = v
    return out


def reference_markdown() -> str:
    """The option table for docs/configuration.md."""
    lines = [
        "# Configuration",
        "",
        "Generated from `grid/config.py` by `grid config --reference > docs/configuration.md`; "
        "`grid config` prints the configuration a member would run with.",
        "",
        "Precedence, lowest to highest: defaults < TOML file (`--config FILE` or "
        "`GRID_CONFIG`, keys at top level or under `[member]`) < `GRID_<OPTION>` environment "
        "variables < command-line flags (`--max-memory 256MiB`) < keyword arguments to "
        "`grid.Node(...)`.",
        "",
        "| option | env | default | what and why |",
        "|---|---|---|---|",
    ]
    for f in fields(Config):
        default = f.default if f.default != "" else '""'
        help_text = " ".join(str(f.metadata["help"]).split())
        lines.append(f"| `{f.name}` | `GRID_{f.name.upper()}` | `{default}` | {help_text} |")
    return "\n".join(lines) + "\n"


_USER_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def _users_text(value: Mapping[str, str] | str) -> str:
    """A TOML `[users]` table or the `name=hash,...` text, checked, as the text."""
    pairs = value.items() if isinstance(value, Mapping) else _user_pairs(str(value))
    return ",".join(f"{name}={digest}" for name, digest in parse_users(dict(pairs)).items())


def _user_pairs(text: str) -> list[tuple[str, str]]:
    out = []
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, sep, digest = item.partition("=")
        if not sep:
            raise ConfigError(f"{item!r} is not name=hash")
        out.append((name.strip(), digest.strip()))
    return out


def parse_users(value: Mapping[str, str] | str) -> dict[str, str]:
    pairs = value.items() if isinstance(value, Mapping) else _user_pairs(value)
    users: dict[str, str] = {}
    for name, digest in pairs:
        if not _USER_NAME.match(name) or name == "default":
            raise ConfigError(
                f"user name {name!r}: 1-64 of letters, digits, _ . @ -, and not `default` "
                "(the token's user on the RESP and memcached ports)"
            )
        if not isinstance(digest, str) or not valid_password_hash(digest):
            raise ConfigError(
                f"user {name!r}: the password must be given as `grid passwd` prints it "
                "(sha256: and 64 hex digits), never in clear"
            )
        users[name] = digest
    return users


def _per_map(option: str, text: str) -> dict[str, int]:
    """'a=1,b=2' -> {'a': 1, 'b': 2}, each 0..MAX_BACKUPS."""
    out: dict[str, int] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, sep, n = item.rpartition("=")
        if not sep or not name.strip() or not n.strip().isdigit():
            raise ConfigError(f"{option}: {item!r} is not map=N")
        if int(n) > MAX_BACKUPS:
            raise ConfigError(f"{option}: {item!r} is over {MAX_BACKUPS}")
        out[name.strip()] = int(n)
    return out
