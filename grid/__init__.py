"""grid: a peer-to-peer in-memory data grid for Python.

client = grid.Client("127.0.0.1:5701")        # or grid.AsyncClient for asyncio
node = grid.Node(port=0)                       # or a member inside your process

The public names are imported on first use (PEP 562's module `__getattr__`), not here:
every module of the package runs this file first, and importing `grid.logs` or
`grid.store` must not load the client, the member runtime and gRPC with them.
`grid.Client` and the others work as before; type checkers see the imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from grid.client.aio import AsyncClient, AsyncMap, EntryView
    from grid.client.codec import Codec, JsonCodec, MsgpackCodec, RawCodec
    from grid.client.listeners import EntryEvent
    from grid.client.nearcache import NearCache
    from grid.client.stores import (
        AsyncStoredMap,
        MapStore,
        StoredMap,
        StoreUnavailable,
        Write,
    )
    from grid.client.sync import Client, Map
    from grid.client.tags import AsyncTaggedMap, TaggedMap
    from grid.config import Config, ConfigError
    from grid.embedded.localmap import AsyncLocalMap, LocalMap
    from grid.embedded.node import Node
    from grid.errors import (
        AuthenticationFailed,
        CasFailed,
        CodecError,
        DeadlineExceeded,
        GridError,
        InvalidArgument,
        NotOwner,
        OutOfMemory,
        Status,
        TooLarge,
        Unavailable,
    )
    from replication.hlc import Version

_HOME = {
    "AsyncClient": "grid.client.aio",
    "AsyncMap": "grid.client.aio",
    "EntryView": "grid.client.aio",
    "Codec": "grid.client.codec",
    "JsonCodec": "grid.client.codec",
    "MsgpackCodec": "grid.client.codec",
    "RawCodec": "grid.client.codec",
    "AsyncStoredMap": "grid.client.stores",
    "MapStore": "grid.client.stores",
    "StoredMap": "grid.client.stores",
    "StoreUnavailable": "grid.client.stores",
    "Write": "grid.client.stores",
    "EntryEvent": "grid.client.listeners",
    "NearCache": "grid.client.nearcache",
    "AsyncTaggedMap": "grid.client.tags",
    "TaggedMap": "grid.client.tags",
    "Client": "grid.client.sync",
    "Map": "grid.client.sync",
    "Config": "grid.config",
    "ConfigError": "grid.config",
    "AuthenticationFailed": "grid.errors",
    "CasFailed": "grid.errors",
    "CodecError": "grid.errors",
    "DeadlineExceeded": "grid.errors",
    "GridError": "grid.errors",
    "InvalidArgument": "grid.errors",
    "NotOwner": "grid.errors",
    "OutOfMemory": "grid.errors",
    "Status": "grid.errors",
    "TooLarge": "grid.errors",
    "Unavailable": "grid.errors",
    "AsyncLocalMap": "grid.embedded.localmap",
    "LocalMap": "grid.embedded.localmap",
    "Node": "grid.embedded.node",
    "Version": "replication.hlc",
}
"""Public name -> the module that defines it (tests/test_lazy_import.py keeps this,
`__all__` and the TYPE_CHECKING imports in step)."""

__all__ = [
    "AsyncClient",
    "AsyncLocalMap",
    "AsyncMap",
    "AsyncStoredMap",
    "AsyncTaggedMap",
    "AuthenticationFailed",
    "CasFailed",
    "Client",
    "Codec",
    "CodecError",
    "Config",
    "ConfigError",
    "DeadlineExceeded",
    "EntryEvent",
    "EntryView",
    "GridError",
    "InvalidArgument",
    "JsonCodec",
    "LocalMap",
    "Map",
    "MapStore",
    "MsgpackCodec",
    "NearCache",
    "Node",
    "NotOwner",
    "OutOfMemory",
    "RawCodec",
    "Status",
    "StoreUnavailable",
    "StoredMap",
    "TaggedMap",
    "TooLarge",
    "Unavailable",
    "Version",
    "Write",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, and keep the name here after it."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'grid' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
