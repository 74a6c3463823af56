from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[Status]
    NOT_FOUND: _ClassVar[Status]
    CAS_FAILED: _ClassVar[Status]
    INVALID_ARGUMENT: _ClassVar[Status]
    TOO_LARGE: _ClassVar[Status]
    OUT_OF_MEMORY: _ClassVar[Status]
    NOT_OWNER: _ClassVar[Status]
    UNAVAILABLE: _ClassVar[Status]

class OpCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OP_UNSPECIFIED: _ClassVar[OpCode]
    GET: _ClassVar[OpCode]
    PUT: _ClassVar[OpCode]
    DELETE: _ClassVar[OpCode]
    EXPIRE: _ClassVar[OpCode]
    TTL: _ClassVar[OpCode]
    CONTAINS: _ClassVar[OpCode]
    INCR: _ClassVar[OpCode]
    SIZE: _ClassVar[OpCode]
    SCAN: _ClassVar[OpCode]
    CLEAR: _ClassVar[OpCode]
    TOUCH: _ClassVar[OpCode]

class Condition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALWAYS: _ClassVar[Condition]
    IF_ABSENT: _ClassVar[Condition]
    IF_PRESENT: _ClassVar[Condition]
    IF_VERSION: _ClassVar[Condition]

class WatchChunkKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATCH_EVENTS: _ClassVar[WatchChunkKind]
    WATCH_SYNCED: _ClassVar[WatchChunkKind]
    WATCH_RESET: _ClassVar[WatchChunkKind]
    WATCH_DROPPED: _ClassVar[WatchChunkKind]
    WATCH_NOT_PRIMARY: _ClassVar[WatchChunkKind]

class ChunkKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MUTATIONS: _ClassVar[ChunkKind]
    SNAPSHOT_BEGIN: _ClassVar[ChunkKind]
    SNAPSHOT: _ClassVar[ChunkKind]
    SNAPSHOT_END: _ClassVar[ChunkKind]
    HANDOFF: _ClassVar[ChunkKind]
    REFUSED: _ClassVar[ChunkKind]
OK: Status
NOT_FOUND: Status
CAS_FAILED: Status
INVALID_ARGUMENT: Status
TOO_LARGE: Status
OUT_OF_MEMORY: Status
NOT_OWNER: Status
UNAVAILABLE: Status
OP_UNSPECIFIED: OpCode
GET: OpCode
PUT: OpCode
DELETE: OpCode
EXPIRE: OpCode
TTL: OpCode
CONTAINS: OpCode
INCR: OpCode
SIZE: OpCode
SCAN: OpCode
CLEAR: OpCode
TOUCH: OpCode
ALWAYS: Condition
IF_ABSENT: Condition
IF_PRESENT: Condition
IF_VERSION: Condition
WATCH_EVENTS: WatchChunkKind
WATCH_SYNCED: WatchChunkKind
WATCH_RESET: WatchChunkKind
WATCH_DROPPED: WatchChunkKind
WATCH_NOT_PRIMARY: WatchChunkKind
MUTATIONS: ChunkKind
SNAPSHOT_BEGIN: ChunkKind
SNAPSHOT: ChunkKind
SNAPSHOT_END: ChunkKind
HANDOFF: ChunkKind
REFUSED: ChunkKind

class Op(_message.Message):
    __slots__ = ("code", "map", "key", "value", "ttl_ms", "max_idle_ms", "condition", "expected_ts", "expected_member", "delta", "cursor", "limit", "decimal", "expire_at_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_IDLE_MS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_TS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_MEMBER_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    DECIMAL_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    code: OpCode
    map: str
    key: bytes
    value: bytes
    ttl_ms: int
    max_idle_ms: int
    condition: Condition
    expected_ts: int
    expected_member: int
    delta: int
    cursor: bytes
    limit: int
    decimal: bool
    expire_at_ms: int
    def __init__(self, code: _Optional[_Union[OpCode, str]] = ..., map: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., ttl_ms: _Optional[int] = ..., max_idle_ms: _Optional[int] = ..., condition: _Optional[_Union[Condition, str]] = ..., expected_ts: _Optional[int] = ..., expected_member: _Optional[int] = ..., delta: _Optional[int] = ..., cursor: _Optional[bytes] = ..., limit: _Optional[int] = ..., decimal: _Optional[bool] = ..., expire_at_ms: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("status", "value", "count", "version_ts", "version_member", "ttl_ms", "keys", "cursor", "error", "expire_at_ms")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSION_TS_FIELD_NUMBER: _ClassVar[int]
    VERSION_MEMBER_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    status: Status
    value: bytes
    count: int
    version_ts: int
    version_member: int
    ttl_ms: int
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    cursor: bytes
    error: str
    expire_at_ms: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., value: _Optional[bytes] = ..., count: _Optional[int] = ..., version_ts: _Optional[int] = ..., version_member: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., keys: _Optional[_Iterable[bytes]] = ..., cursor: _Optional[bytes] = ..., error: _Optional[str] = ..., expire_at_ms: _Optional[int] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("id", "ops", "hops", "read_from_backup")
    ID_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    READ_FROM_BACKUP_FIELD_NUMBER: _ClassVar[int]
    id: int
    ops: _containers.RepeatedCompositeFieldContainer[Op]
    hops: int
    read_from_backup: bool
    def __init__(self, id: _Optional[int] = ..., ops: _Optional[_Iterable[_Union[Op, _Mapping]]] = ..., hops: _Optional[int] = ..., read_from_backup: _Optional[bool] = ...) -> None: ...

class BatchReply(_message.Message):
    __slots__ = ("id", "results", "status", "error", "max_batch_ops", "table_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_OPS_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: int
    results: _containers.RepeatedCompositeFieldContainer[Result]
    status: Status
    error: str
    max_batch_ops: int
    table_version: int
    def __init__(self, id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ..., status: _Optional[_Union[Status, str]] = ..., error: _Optional[str] = ..., max_batch_ops: _Optional[int] = ..., table_version: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MapStats(_message.Message):
    __slots__ = ("name", "entries", "bytes", "hits", "misses", "puts", "deletes", "evictions", "expirations")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    PUTS_FIELD_NUMBER: _ClassVar[int]
    DELETES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRATIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    entries: int
    bytes: int
    hits: int
    misses: int
    puts: int
    deletes: int
    evictions: int
    expirations: int
    def __init__(self, name: _Optional[str] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., puts: _Optional[int] = ..., deletes: _Optional[int] = ..., evictions: _Optional[int] = ..., expirations: _Optional[int] = ...) -> None: ...

class PersistenceStats(_message.Message):
    __slots__ = ("enabled", "data_dir", "fsync", "partitions_recovered", "records_loaded", "records_skipped", "records_dropped", "bytes_truncated", "recovery_s", "entries_recovered", "log_bytes", "snapshots", "fsyncs", "disk_full", "last_error")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    FSYNC_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_RECOVERED_FIELD_NUMBER: _ClassVar[int]
    RECORDS_LOADED_FIELD_NUMBER: _ClassVar[int]
    RECORDS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    RECORDS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    BYTES_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_S_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_RECOVERED_FIELD_NUMBER: _ClassVar[int]
    LOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    FSYNCS_FIELD_NUMBER: _ClassVar[int]
    DISK_FULL_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    data_dir: str
    fsync: str
    partitions_recovered: int
    records_loaded: int
    records_skipped: int
    records_dropped: int
    bytes_truncated: int
    recovery_s: float
    entries_recovered: int
    log_bytes: int
    snapshots: int
    fsyncs: int
    disk_full: bool
    last_error: str
    def __init__(self, enabled: _Optional[bool] = ..., data_dir: _Optional[str] = ..., fsync: _Optional[str] = ..., partitions_recovered: _Optional[int] = ..., records_loaded: _Optional[int] = ..., records_skipped: _Optional[int] = ..., records_dropped: _Optional[int] = ..., bytes_truncated: _Optional[int] = ..., recovery_s: _Optional[float] = ..., entries_recovered: _Optional[int] = ..., log_bytes: _Optional[int] = ..., snapshots: _Optional[int] = ..., fsyncs: _Optional[int] = ..., disk_full: _Optional[bool] = ..., last_error: _Optional[str] = ...) -> None: ...

class MigrationStats(_message.Message):
    __slots__ = ("table_version", "primaries", "backups", "in_flight", "fills_done", "handoffs", "bytes_received", "bytes_sent", "forwarded", "not_owner", "coordinator", "pending", "lag_changes_max", "lag_changes_total", "lag_seconds_max", "sync_timeouts", "caught_up_from_log", "snapshots_sent", "positions_loaded", "resumed_from_log", "lagging", "watch_subscriptions", "watch_events", "watch_dropped", "watch_resets")
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRIMARIES_FIELD_NUMBER: _ClassVar[int]
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    FILLS_DONE_FIELD_NUMBER: _ClassVar[int]
    HANDOFFS_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    NOT_OWNER_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    LAG_CHANGES_MAX_FIELD_NUMBER: _ClassVar[int]
    LAG_CHANGES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_MAX_FIELD_NUMBER: _ClassVar[int]
    SYNC_TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FROM_LOG_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_SENT_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_LOADED_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_LOG_FIELD_NUMBER: _ClassVar[int]
    LAGGING_FIELD_NUMBER: _ClassVar[int]
    WATCH_SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    WATCH_EVENTS_FIELD_NUMBER: _ClassVar[int]
    WATCH_DROPPED_FIELD_NUMBER: _ClassVar[int]
    WATCH_RESETS_FIELD_NUMBER: _ClassVar[int]
    table_version: int
    primaries: int
    backups: int
    in_flight: int
    fills_done: int
    handoffs: int
    bytes_received: int
    bytes_sent: int
    forwarded: int
    not_owner: int
    coordinator: bool
    pending: int
    lag_changes_max: int
    lag_changes_total: int
    lag_seconds_max: float
    sync_timeouts: int
    caught_up_from_log: int
    snapshots_sent: int
    positions_loaded: int
    resumed_from_log: int
    lagging: _containers.RepeatedCompositeFieldContainer[PartitionLag]
    watch_subscriptions: int
    watch_events: int
    watch_dropped: int
    watch_resets: int
    def __init__(self, table_version: _Optional[int] = ..., primaries: _Optional[int] = ..., backups: _Optional[int] = ..., in_flight: _Optional[int] = ..., fills_done: _Optional[int] = ..., handoffs: _Optional[int] = ..., bytes_received: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., forwarded: _Optional[int] = ..., not_owner: _Optional[int] = ..., coordinator: _Optional[bool] = ..., pending: _Optional[int] = ..., lag_changes_max: _Optional[int] = ..., lag_changes_total: _Optional[int] = ..., lag_seconds_max: _Optional[float] = ..., sync_timeouts: _Optional[int] = ..., caught_up_from_log: _Optional[int] = ..., snapshots_sent: _Optional[int] = ..., positions_loaded: _Optional[int] = ..., resumed_from_log: _Optional[int] = ..., lagging: _Optional[_Iterable[_Union[PartitionLag, _Mapping]]] = ..., watch_subscriptions: _Optional[int] = ..., watch_events: _Optional[int] = ..., watch_dropped: _Optional[int] = ..., watch_resets: _Optional[int] = ...) -> None: ...

class PartitionLag(_message.Message):
    __slots__ = ("partition", "backup", "changes", "seconds")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    backup: str
    changes: int
    seconds: float
    def __init__(self, partition: _Optional[int] = ..., backup: _Optional[str] = ..., changes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("member", "address", "version", "partitions", "uptime_s", "max_memory", "eviction_policy", "total", "maps", "requests", "operations", "rejected", "persistence", "migration", "anti_entropy", "latency", "latency_bounds_s", "warnings")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_FIELD_NUMBER: _ClassVar[int]
    EVICTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    PERSISTENCE_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    ANTI_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BOUNDS_S_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    member: str
    address: str
    version: str
    partitions: int
    uptime_s: float
    max_memory: int
    eviction_policy: str
    total: MapStats
    maps: _containers.RepeatedCompositeFieldContainer[MapStats]
    requests: int
    operations: int
    rejected: int
    persistence: PersistenceStats
    migration: MigrationStats
    anti_entropy: AntiEntropyStats
    latency: _containers.RepeatedCompositeFieldContainer[BatchLatency]
    latency_bounds_s: _containers.RepeatedScalarFieldContainer[float]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, member: _Optional[str] = ..., address: _Optional[str] = ..., version: _Optional[str] = ..., partitions: _Optional[int] = ..., uptime_s: _Optional[float] = ..., max_memory: _Optional[int] = ..., eviction_policy: _Optional[str] = ..., total: _Optional[_Union[MapStats, _Mapping]] = ..., maps: _Optional[_Iterable[_Union[MapStats, _Mapping]]] = ..., requests: _Optional[int] = ..., operations: _Optional[int] = ..., rejected: _Optional[int] = ..., persistence: _Optional[_Union[PersistenceStats, _Mapping]] = ..., migration: _Optional[_Union[MigrationStats, _Mapping]] = ..., anti_entropy: _Optional[_Union[AntiEntropyStats, _Mapping]] = ..., latency: _Optional[_Iterable[_Union[BatchLatency, _Mapping]]] = ..., latency_bounds_s: _Optional[_Iterable[float]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchLatency(_message.Message):
    __slots__ = ("op", "map", "counts", "sum_s")
    OP_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUM_S_FIELD_NUMBER: _ClassVar[int]
    op: str
    map: str
    counts: _containers.RepeatedScalarFieldContainer[int]
    sum_s: float
    def __init__(self, op: _Optional[str] = ..., map: _Optional[str] = ..., counts: _Optional[_Iterable[int]] = ..., sum_s: _Optional[float] = ...) -> None: ...

class AntiEntropyStats(_message.Message):
    __slots__ = ("rounds", "partitions_compared", "partitions_differing", "keys_repaired", "keys_sent", "last_round_s", "tombstones", "tombstones_collected", "backup_reads", "read_repair_checked", "read_repair_fixed")
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_COMPARED_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_DIFFERING_FIELD_NUMBER: _ClassVar[int]
    KEYS_REPAIRED_FIELD_NUMBER: _ClassVar[int]
    KEYS_SENT_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_S_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONES_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONES_COLLECTED_FIELD_NUMBER: _ClassVar[int]
    BACKUP_READS_FIELD_NUMBER: _ClassVar[int]
    READ_REPAIR_CHECKED_FIELD_NUMBER: _ClassVar[int]
    READ_REPAIR_FIXED_FIELD_NUMBER: _ClassVar[int]
    rounds: int
    partitions_compared: int
    partitions_differing: int
    keys_repaired: int
    keys_sent: int
    last_round_s: float
    tombstones: int
    tombstones_collected: int
    backup_reads: int
    read_repair_checked: int
    read_repair_fixed: int
    def __init__(self, rounds: _Optional[int] = ..., partitions_compared: _Optional[int] = ..., partitions_differing: _Optional[int] = ..., keys_repaired: _Optional[int] = ..., keys_sent: _Optional[int] = ..., last_round_s: _Optional[float] = ..., tombstones: _Optional[int] = ..., tombstones_collected: _Optional[int] = ..., backup_reads: _Optional[int] = ..., read_repair_checked: _Optional[int] = ..., read_repair_fixed: _Optional[int] = ...) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("name", "address", "gossip_address", "state", "incarnation", "age_s", "zone", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GOSSIP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    gossip_address: str
    state: str
    incarnation: int
    age_s: float
    zone: str
    version: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., gossip_address: _Optional[str] = ..., state: _Optional[str] = ..., incarnation: _Optional[int] = ..., age_s: _Optional[float] = ..., zone: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MembersReply(_message.Message):
    __slots__ = ("self", "members")
    SELF_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    self: str
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    def __init__(self_, self: _Optional[str] = ..., members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ...) -> None: ...

class BackupRequest(_message.Message):
    __slots__ = ("dir",)
    DIR_FIELD_NUMBER: _ClassVar[int]
    dir: str
    def __init__(self, dir: _Optional[str] = ...) -> None: ...

class BackupReply(_message.Message):
    __slots__ = ("manifest", "files", "bytes")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    manifest: str
    files: int
    bytes: int
    def __init__(self, manifest: _Optional[str] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotReply(_message.Message):
    __slots__ = ("partitions", "records", "seconds")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    partitions: int
    records: int
    seconds: float
    def __init__(self, partitions: _Optional[int] = ..., records: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class TableRequest(_message.Message):
    __slots__ = ("known_version", "caller")
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    known_version: int
    caller: str
    def __init__(self, known_version: _Optional[int] = ..., caller: _Optional[str] = ...) -> None: ...

class TableMember(_message.Message):
    __slots__ = ("name", "address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class Replicas(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, members: _Optional[_Iterable[int]] = ...) -> None: ...

class PartitionTable(_message.Message):
    __slots__ = ("version", "partition_count", "backups", "members", "replicas")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARTITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    version: int
    partition_count: int
    backups: int
    members: _containers.RepeatedCompositeFieldContainer[TableMember]
    replicas: _containers.RepeatedCompositeFieldContainer[Replicas]
    def __init__(self, version: _Optional[int] = ..., partition_count: _Optional[int] = ..., backups: _Optional[int] = ..., members: _Optional[_Iterable[_Union[TableMember, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[Replicas, _Mapping]]] = ...) -> None: ...

class LocalKeysRequest(_message.Message):
    __slots__ = ("map", "keys")
    MAP_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    map: str
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, map: _Optional[str] = ..., keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DigestsRequest(_message.Message):
    __slots__ = ("partitions", "maps")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    maps: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partitions: _Optional[_Iterable[int]] = ..., maps: _Optional[_Iterable[str]] = ...) -> None: ...

class PartitionDigest(_message.Message):
    __slots__ = ("partition", "root", "role", "seq")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    partition: int
    root: int
    role: int
    seq: int
    def __init__(self, partition: _Optional[int] = ..., root: _Optional[int] = ..., role: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class DigestsReply(_message.Message):
    __slots__ = ("digests",)
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    digests: _containers.RepeatedCompositeFieldContainer[PartitionDigest]
    def __init__(self, digests: _Optional[_Iterable[_Union[PartitionDigest, _Mapping]]] = ...) -> None: ...

class LocalKeysReply(_message.Message):
    __slots__ = ("roles",)
    ROLES_FIELD_NUMBER: _ClassVar[int]
    roles: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, roles: _Optional[_Iterable[int]] = ...) -> None: ...

class EndpointsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EndpointsReply(_message.Message):
    __slots__ = ("name", "data_address", "protocol", "cluster", "data_advertised")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    DATA_ADVERTISED_FIELD_NUMBER: _ClassVar[int]
    name: str
    data_address: str
    protocol: int
    cluster: str
    data_advertised: bool
    def __init__(self, name: _Optional[str] = ..., data_address: _Optional[str] = ..., protocol: _Optional[int] = ..., cluster: _Optional[str] = ..., data_advertised: _Optional[bool] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol", "cluster", "client", "auth", "user")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    protocol: int
    cluster: str
    client: str
    auth: bytes
    user: str
    def __init__(self, protocol: _Optional[int] = ..., cluster: _Optional[str] = ..., client: _Optional[str] = ..., auth: _Optional[bytes] = ..., user: _Optional[str] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("protocol", "member", "max_frame", "max_batch_ops", "error")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_OPS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    protocol: int
    member: str
    max_frame: int
    max_batch_ops: int
    error: str
    def __init__(self, protocol: _Optional[int] = ..., member: _Optional[str] = ..., max_frame: _Optional[int] = ..., max_batch_ops: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class WatchFrom(_message.Message):
    __slots__ = ("partition", "term", "seq")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    partition: int
    term: int
    seq: int
    def __init__(self, partition: _Optional[int] = ..., term: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("map", "prefix", "kinds", "values", "subscribe", "unsubscribe", "probe", "close")
    MAP_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    map: str
    prefix: bytes
    kinds: int
    values: bool
    subscribe: _containers.RepeatedCompositeFieldContainer[WatchFrom]
    unsubscribe: _containers.RepeatedScalarFieldContainer[int]
    probe: bool
    close: bool
    def __init__(self, map: _Optional[str] = ..., prefix: _Optional[bytes] = ..., kinds: _Optional[int] = ..., values: _Optional[bool] = ..., subscribe: _Optional[_Iterable[_Union[WatchFrom, _Mapping]]] = ..., unsubscribe: _Optional[_Iterable[int]] = ..., probe: _Optional[bool] = ..., close: _Optional[bool] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("kind", "key", "value", "seq", "version_ts", "version_member", "expire_at_ms")
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VERSION_TS_FIELD_NUMBER: _ClassVar[int]
    VERSION_MEMBER_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    kind: int
    key: bytes
    value: bytes
    seq: int
    version_ts: int
    version_member: int
    expire_at_ms: int
    def __init__(self, kind: _Optional[int] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., seq: _Optional[int] = ..., version_ts: _Optional[int] = ..., version_member: _Optional[int] = ..., expire_at_ms: _Optional[int] = ...) -> None: ...

class WatchChunk(_message.Message):
    __slots__ = ("partition", "kind", "term", "prev", "seq", "events", "forked")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    PREV_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    FORKED_FIELD_NUMBER: _ClassVar[int]
    partition: int
    kind: WatchChunkKind
    term: int
    prev: int
    seq: int
    events: _containers.RepeatedCompositeFieldContainer[WatchEvent]
    forked: bool
    def __init__(self, partition: _Optional[int] = ..., kind: _Optional[_Union[WatchChunkKind, str]] = ..., term: _Optional[int] = ..., prev: _Optional[int] = ..., seq: _Optional[int] = ..., events: _Optional[_Iterable[_Union[WatchEvent, _Mapping]]] = ..., forked: _Optional[bool] = ...) -> None: ...

class WatchEvents(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[WatchChunk]
    def __init__(self, chunks: _Optional[_Iterable[_Union[WatchChunk, _Mapping]]] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("partition", "kind", "seq", "records", "count", "error", "term", "epoch")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    partition: int
    kind: ChunkKind
    seq: int
    records: bytes
    count: int
    error: str
    term: int
    epoch: int
    def __init__(self, partition: _Optional[int] = ..., kind: _Optional[_Union[ChunkKind, str]] = ..., seq: _Optional[int] = ..., records: _Optional[bytes] = ..., count: _Optional[int] = ..., error: _Optional[str] = ..., term: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class ReplicaBatch(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    def __init__(self, chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("partition", "have_seq", "have_term", "all_maps")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    HAVE_SEQ_FIELD_NUMBER: _ClassVar[int]
    HAVE_TERM_FIELD_NUMBER: _ClassVar[int]
    ALL_MAPS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    have_seq: int
    have_term: int
    all_maps: bool
    def __init__(self, partition: _Optional[int] = ..., have_seq: _Optional[int] = ..., have_term: _Optional[int] = ..., all_maps: _Optional[bool] = ...) -> None: ...

class FollowMessage(_message.Message):
    __slots__ = ("follower", "subscribe", "unsubscribe", "ack_partitions", "ack_seqs", "taken_over")
    FOLLOWER_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    ACK_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    ACK_SEQS_FIELD_NUMBER: _ClassVar[int]
    TAKEN_OVER_FIELD_NUMBER: _ClassVar[int]
    follower: str
    subscribe: _containers.RepeatedCompositeFieldContainer[Subscribe]
    unsubscribe: _containers.RepeatedScalarFieldContainer[int]
    ack_partitions: _containers.RepeatedScalarFieldContainer[int]
    ack_seqs: _containers.RepeatedScalarFieldContainer[int]
    taken_over: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, follower: _Optional[str] = ..., subscribe: _Optional[_Iterable[_Union[Subscribe, _Mapping]]] = ..., unsubscribe: _Optional[_Iterable[int]] = ..., ack_partitions: _Optional[_Iterable[int]] = ..., ack_seqs: _Optional[_Iterable[int]] = ..., taken_over: _Optional[_Iterable[int]] = ...) -> None: ...

class PublishReply(_message.Message):
    __slots__ = ("version", "unsettled", "lacking")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNSETTLED_FIELD_NUMBER: _ClassVar[int]
    LACKING_FIELD_NUMBER: _ClassVar[int]
    version: int
    unsettled: int
    lacking: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, version: _Optional[int] = ..., unsettled: _Optional[int] = ..., lacking: _Optional[_Iterable[int]] = ...) -> None: ...

class FillRequest(_message.Message):
    __slots__ = ("partitions", "source", "source_address")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    source: str
    source_address: str
    def __init__(self, partitions: _Optional[_Iterable[int]] = ..., source: _Optional[str] = ..., source_address: _Optional[str] = ...) -> None: ...

class FillReply(_message.Message):
    __slots__ = ("ready", "failed", "error")
    READY_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ready: _containers.RepeatedScalarFieldContainer[int]
    failed: _containers.RepeatedScalarFieldContainer[int]
    error: str
    def __init__(self, ready: _Optional[_Iterable[int]] = ..., failed: _Optional[_Iterable[int]] = ..., error: _Optional[str] = ...) -> None: ...

class HandoffRequest(_message.Message):
    __slots__ = ("partitions", "to", "confirm_epoch")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_EPOCH_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    to: str
    confirm_epoch: int
    def __init__(self, partitions: _Optional[_Iterable[int]] = ..., to: _Optional[str] = ..., confirm_epoch: _Optional[int] = ...) -> None: ...

class HandoffReply(_message.Message):
    __slots__ = ("done", "failed", "error")
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    done: _containers.RepeatedScalarFieldContainer[int]
    failed: _containers.RepeatedScalarFieldContainer[int]
    error: str
    def __init__(self, done: _Optional[_Iterable[int]] = ..., failed: _Optional[_Iterable[int]] = ..., error: _Optional[str] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("member",)
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    member: str
    def __init__(self, member: _Optional[str] = ...) -> None: ...

class LeaveReply(_message.Message):
    __slots__ = ("done", "error", "coordinator", "table_version")
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    done: bool
    error: str
    coordinator: str
    table_version: int
    def __init__(self, done: _Optional[bool] = ..., error: _Optional[str] = ..., coordinator: _Optional[str] = ..., table_version: _Optional[int] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("primary", "cut", "partitions", "rank")
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    primary: str
    cut: int
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionDigest]
    rank: int
    def __init__(self, primary: _Optional[str] = ..., cut: _Optional[int] = ..., partitions: _Optional[_Iterable[_Union[PartitionDigest, _Mapping]]] = ..., rank: _Optional[int] = ...) -> None: ...

class BucketDigests(_message.Message):
    __slots__ = ("partition", "buckets")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    buckets: bytes
    def __init__(self, partition: _Optional[int] = ..., buckets: _Optional[bytes] = ...) -> None: ...

class CompareReply(_message.Message):
    __slots__ = ("differing", "refused")
    DIFFERING_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    differing: _containers.RepeatedCompositeFieldContainer[BucketDigests]
    refused: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, differing: _Optional[_Iterable[_Union[BucketDigests, _Mapping]]] = ..., refused: _Optional[_Iterable[int]] = ...) -> None: ...

class RepairRequest(_message.Message):
    __slots__ = ("primary", "cut", "partition", "buckets", "records", "count", "rank")
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    primary: str
    cut: int
    partition: int
    buckets: _containers.RepeatedScalarFieldContainer[int]
    records: bytes
    count: int
    rank: int
    def __init__(self, primary: _Optional[str] = ..., cut: _Optional[int] = ..., partition: _Optional[int] = ..., buckets: _Optional[_Iterable[int]] = ..., records: _Optional[bytes] = ..., count: _Optional[int] = ..., rank: _Optional[int] = ...) -> None: ...

class ReadRepairPartition(_message.Message):
    __slots__ = ("partition", "probes", "probe_count", "records", "count")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    PROBE_COUNT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    partition: int
    probes: bytes
    probe_count: int
    records: bytes
    count: int
    def __init__(self, partition: _Optional[int] = ..., probes: _Optional[bytes] = ..., probe_count: _Optional[int] = ..., records: _Optional[bytes] = ..., count: _Optional[int] = ...) -> None: ...

class ReadRepairRequest(_message.Message):
    __slots__ = ("backup", "partitions")
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    backup: str
    partitions: _containers.RepeatedCompositeFieldContainer[ReadRepairPartition]
    def __init__(self, backup: _Optional[str] = ..., partitions: _Optional[_Iterable[_Union[ReadRepairPartition, _Mapping]]] = ...) -> None: ...

class ReadRepairReply(_message.Message):
    __slots__ = ("partitions", "refused", "applied")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[ReadRepairPartition]
    refused: _containers.RepeatedScalarFieldContainer[int]
    applied: int
    def __init__(self, partitions: _Optional[_Iterable[_Union[ReadRepairPartition, _Mapping]]] = ..., refused: _Optional[_Iterable[int]] = ..., applied: _Optional[int] = ...) -> None: ...

class RepairReply(_message.Message):
    __slots__ = ("records", "count", "applied", "refused")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    records: bytes
    count: int
    applied: int
    refused: bool
    def __init__(self, records: _Optional[bytes] = ..., count: _Optional[int] = ..., applied: _Optional[int] = ..., refused: _Optional[bool] = ...) -> None: ...
