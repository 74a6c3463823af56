"""Member-to-member calls: one gRPC channel per peer address, reused by everything.

Forwarded client batches (grid/member/forwarding.py), follow streams
(grid/member/replicas/follower.py) and the coordinator's calls
(grid/member/placement/coordinator.py) all go through here, so a member keeps one HTTP/2 connection
per peer whatever it is doing with it.
"""

from __future__ import annotations

from typing import Any

import grpc

from proto import grid_pb2 as pb

PEER = "/grid.v1.Peer/"
EXECUTE = "/grid.v1.Grid/Execute"
TABLE = "/grid.v1.Grid/Table"


class Peers:
    def __init__(self, max_message_bytes: int) -> None:
        self._max = max_message_bytes
        self._channels: dict[str, grpc.aio.Channel] = {}

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
        data = await self._unary(address, EXECUTE, request.SerializeToString(), timeout)
        return pb.BatchReply.FromString(data)

    async def table(self, address: str, timeout: float = 2.0) -> pb.PartitionTable:
        data = await self._unary(address, TABLE, pb.TableRequest().SerializeToString(), timeout)
        return pb.PartitionTable.FromString(data)

    async def publish(self, address: str, table: pb.PartitionTable, timeout: float = 5.0) -> int:
        data = await self._unary(address, PEER + "Publish", table.SerializeToString(), timeout)
        return pb.PublishReply.FromString(data).version

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

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
