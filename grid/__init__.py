"""grid: a peer-to-peer in-memory data grid for Python.

client = grid.Client("127.0.0.1:5701")        # or grid.AsyncClient for asyncio
node = grid.Node(port=0)                       # or a member inside your process
"""

__version__ = "0.1.0"

from grid.client.aio import AsyncClient, AsyncMap, EntryView
from grid.client.codec import Codec, JsonCodec, MsgpackCodec, RawCodec
from grid.client.sync import Client, Map
from grid.config import Config, ConfigError
from grid.errors import (
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
from grid.localmap import AsyncLocalMap, LocalMap
from grid.node import Node
from replication.hlc import Version

__all__ = [
    "AsyncClient",
    "AsyncLocalMap",
    "AsyncMap",
    "CasFailed",
    "Client",
    "Codec",
    "CodecError",
    "Config",
    "ConfigError",
    "DeadlineExceeded",
    "EntryView",
    "GridError",
    "InvalidArgument",
    "JsonCodec",
    "LocalMap",
    "Map",
    "MsgpackCodec",
    "Node",
    "NotOwner",
    "OutOfMemory",
    "RawCodec",
    "Status",
    "TooLarge",
    "Unavailable",
    "Version",
    "__version__",
]
