"""Member-to-member calls: one gRPC channel per peer address, reused by everything, and
one data-plane connection per peer for forwarded client batches.

Forwarded client batches (grid/member/forwarding.py) ride the data plane, as client
batches do (grid/member/dataplane.py: frames over TCP, no gRPC per-message cost). Follow streams
(grid/member/replicas/follower.py) and the coordinator's calls
(grid/member/placement/coordinator.py) all go through here, so a member keeps one HTTP/2 connection
per peer whatever it is doing with it.
"""

from __future__ import annotations

from typing import Any

import grpc

from grid.client.connection import AsyncConnection, ConnectionOptions
from grid.errors import Unavailable
from grid.member.replicas.link import FramePipe, open_follow
from grid.wire.endpoints import data_plane_address
from proto import grid_pb2 as pb

PEER = "/grid.v1.Peer/"
ENDPOINTS = "/grid.v1.Grid/Endpoints"
TABLE = "/grid.v1.Grid/Table"


class Peers:
    def __init__(self, max_message_bytes: int, cluster: str = "") -> None:
        self._max = max_message_bytes
        self._cluster = cluster
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._data: dict[str, AsyncConnection] = {}
        self._endpoints: dict[str, tuple[str, str]] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.max_receive_message_length", self._max),
                    ("grpc.max_send_message_length", self._max),
                    ("grpc.keepalive_time_ms", 10_000),
                    ("grpc.enable_retries", 0),
                ],
            )
        return ch

    async def _unary(self, address: str, method: str, request: bytes, timeout: float) -> bytes:
        return await self.channel(address).unary_unary(method)(request, timeout=timeout)

    async def unary(self, address: str, method: str, request: Any, timeout: float) -> bytes:
        """Any unary call: a message in, the reply's bytes out (the caller parses them)."""
        return await self._unary(address, method, request.SerializeToString(), timeout)

    async def execute(
        self, address: str, request: pb.BatchRequest, timeout: float
    ) -> pb.BatchReply:
        """A batch on the peer's data plane (Unavailable or DeadlineExceeded if it fails)."""
        conn = self._data.get(address)
        if conn is None or conn.closed:
            options = ConnectionOptions(max_message_bytes=self._max, cluster=self._cluster)
            conn = self._data[address] = AsyncConnection(address, options)
        return await conn.exchange(request, timeout)

    async def table(
        self, address: str, caller: str = "", timeout: float = 2.0
    ) -> pb.PartitionTable:
        """The member's table; `caller`: this member's name (a member asking, not a client)."""
        request = pb.TableRequest(caller=caller).SerializeToString()
        data = await self._unary(address, TABLE, request, timeout)
        return pb.PartitionTable.FromString(data)

    async def publish(
        self, address: str, table: pb.PartitionTable, timeout: float = 5.0
    ) -> pb.PublishReply:
        data = await self._unary(address, PEER + "Publish", table.SerializeToString(), timeout)
        return pb.PublishReply.FromString(data)

    async def fill(self, address: str, request: pb.FillRequest, timeout: float) -> pb.FillReply:
        data = await self._unary(address, PEER + "Fill", request.SerializeToString(), timeout)
        return pb.FillReply.FromString(data)

    async def handoff(
        self, address: str, request: pb.HandoffRequest, timeout: float
    ) -> pb.HandoffReply:
        data = await self._unary(address, PEER + "Handoff", request.SerializeToString(), timeout)
        return pb.HandoffReply.FromString(data)

    async def leave(self, address: str, member: str, timeout: float) -> pb.LeaveReply:
        request = pb.LeaveRequest(member=member).SerializeToString()
        data = await self._unary(address, PEER + "Leave", request, timeout)
        return pb.LeaveReply.FromString(data)

    async def endpoints(self, address: str, timeout: float = 5.0) -> tuple[str, str]:
        """A peer's data-plane address and cluster name (its Endpoints), asked once."""
        found = self._endpoints.get(address)
        if found is None:
            data = await self._unary(address, ENDPOINTS, b"", timeout)
            reply = pb.EndpointsReply.FromString(data)
            if not reply.data_address:
                raise Unavailable(f"{address} has no data plane")
            target = data_plane_address(address, reply.data_address, reply.data_advertised)
            found = self._endpoints[address] = (target, reply.cluster)
        return found

    async def follow(self, address: str, timeout: float = 5.0) -> FramePipe:
        """A follow stream to the primary at `address` (gRPC address) on its data plane."""
        try:
            data_address, cluster = await self.endpoints(address, timeout)
            return await open_follow(data_address, self._cluster or cluster, self._max, timeout)
        except grpc.aio.AioRpcError as e:
            self._endpoints.pop(address, None)
            raise Unavailable(f"{address}: {e.code().name}") from None
        except BaseException:
            self._endpoints.pop(address, None)  # it may listen elsewhere after a restart
            raise

    async def close(self) -> None:
        for conn in self._data.values():
            await conn.close()
        self._data.clear()
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
