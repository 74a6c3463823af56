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

class Op(_message.Message):
    __slots__ = ("code", "map", "key", "value", "ttl_ms", "max_idle_ms", "condition", "expected_ts", "expected_member", "delta", "cursor", "limit")
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
    def __init__(self, code: _Optional[_Union[OpCode, str]] = ..., map: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., ttl_ms: _Optional[int] = ..., max_idle_ms: _Optional[int] = ..., condition: _Optional[_Union[Condition, str]] = ..., expected_ts: _Optional[int] = ..., expected_member: _Optional[int] = ..., delta: _Optional[int] = ..., cursor: _Optional[bytes] = ..., limit: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("status", "value", "count", "version_ts", "version_member", "ttl_ms", "keys", "cursor", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSION_TS_FIELD_NUMBER: _ClassVar[int]
    VERSION_MEMBER_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: Status
    value: bytes
    count: int
    version_ts: int
    version_member: int
    ttl_ms: int
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    cursor: bytes
    error: str
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., value: _Optional[bytes] = ..., count: _Optional[int] = ..., version_ts: _Optional[int] = ..., version_member: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., keys: _Optional[_Iterable[bytes]] = ..., cursor: _Optional[bytes] = ..., error: _Optional[str] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("id", "ops")
    ID_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    id: int
    ops: _containers.RepeatedCompositeFieldContainer[Op]
    def __init__(self, id: _Optional[int] = ..., ops: _Optional[_Iterable[_Union[Op, _Mapping]]] = ...) -> None: ...

class BatchReply(_message.Message):
    __slots__ = ("id", "results", "status", "error", "max_batch_ops")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_OPS_FIELD_NUMBER: _ClassVar[int]
    id: int
    results: _containers.RepeatedCompositeFieldContainer[Result]
    status: Status
    error: str
    max_batch_ops: int
    def __init__(self, id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ..., status: _Optional[_Union[Status, str]] = ..., error: _Optional[str] = ..., max_batch_ops: _Optional[int] = ...) -> None: ...

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

class StatsReply(_message.Message):
    __slots__ = ("member", "address", "version", "partitions", "uptime_s", "max_memory", "eviction_policy", "total", "maps", "requests", "operations", "rejected", "persistence")
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
    def __init__(self, member: _Optional[str] = ..., address: _Optional[str] = ..., version: _Optional[str] = ..., partitions: _Optional[int] = ..., uptime_s: _Optional[float] = ..., max_memory: _Optional[int] = ..., eviction_policy: _Optional[str] = ..., total: _Optional[_Union[MapStats, _Mapping]] = ..., maps: _Optional[_Iterable[_Union[MapStats, _Mapping]]] = ..., requests: _Optional[int] = ..., operations: _Optional[int] = ..., rejected: _Optional[int] = ..., persistence: _Optional[_Union[PersistenceStats, _Mapping]] = ...) -> None: ...

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
