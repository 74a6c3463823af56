"""The member-to-member gRPC service (`grid.v1.Peer`): tables, follow streams, moves.

Handlers parse bytes themselves, like the client-facing service, so a
malformed message gets INVALID_ARGUMENT with a reason and the member goes on.
The logic lives elsewhere; this module only adapts the wire to it:
tables to grid/member/placement/routing.py, Follow to grid/member/replicas/replica.py, Fill to
grid/member/replicas/follower.py, Handoff to grid/member/replicas/replica.py, Leave to
grid/member/placement/coordinator.py, Compare and Repair to grid/member/replicas/antientropy.py,
ReadRepair to grid/member/replicas/read_repair.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import msgpack
from google.protobuf.message import DecodeError

from grid import logs
from grid.member.placement.coordinator import FILL_TIMEOUT_S
from grid.member.replicas.link import GrpcPipe
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.member.runtime import ClusterRuntime

log = logs.get("grid.member.peer")
SERVICE = "grid.v1.Peer"


class PeerService:
    def __init__(self, runtime: ClusterRuntime) -> None:
        self.rt = runtime

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Publish": grpc.unary_unary_rpc_method_handler(self.publish),
                "Follow": grpc.stream_stream_rpc_method_handler(self.follow),
                "Fill": grpc.unary_unary_rpc_method_handler(self.fill),
                "Handoff": grpc.unary_unary_rpc_method_handler(self.handoff),
                "Leave": grpc.unary_unary_rpc_method_handler(self.leave),
                "Compare": grpc.unary_unary_rpc_method_handler(self.compare),
                "Repair": grpc.unary_unary_rpc_method_handler(self.repair),
                "ReadRepair": grpc.unary_unary_rpc_method_handler(self.read_repair),
            },
        )

    @staticmethod
    async def _parse(cls: Any, data: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"malformed {cls.__name__} ({len(data)} bytes)"
            )

    async def publish(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        msg = await self._parse(pb.PartitionTable, data, context)
        try:
            self.rt.install_proto(msg)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad partition table: {e}")
        routing = self.rt.routing
        return pb.PublishReply(
            version=routing.version, unsettled=routing.unsettled(), lacking=sorted(routing.lacking)
        ).SerializeToString()

    async def follow(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        try:
            await self.rt.replicator.serve_follow(GrpcPipe(context))
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed FollowMessage")

    async def fill(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        msg = await self._parse(pb.FillRequest, data, context)
        parts = [p for p in msg.partitions if 0 <= p < self.rt.store.partitions]
        ready, failed = await self.rt.followers.fill(
            parts, msg.source, msg.source_address, timeout=FILL_TIMEOUT_S
        )
        return pb.FillReply(ready=ready, failed=failed).SerializeToString()

    async def handoff(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        msg = await self._parse(pb.HandoffRequest, data, context)
        parts = [p for p in msg.partitions if 0 <= p < self.rt.store.partitions]
        done, failed = await self.rt.replicator.handoff(parts, msg.to, msg.confirm_epoch)
        return pb.HandoffReply(done=done, failed=failed).SerializeToString()

    async def leave(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        msg = await self._parse(pb.LeaveRequest, data, context)
        if not msg.member:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Leave names no member")
        done, error, coordinator = await self.rt.coordinator.leave(
            msg.member, self.rt.config.leave_timeout_s
        )
        return pb.LeaveReply(done=done, error=error, coordinator=coordinator).SerializeToString()

    async def compare(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        msg = await self._parse(pb.CompareRequest, data, context)
        try:
            reply = await self.rt.anti_entropy.on_compare(msg)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Compare: {e}")
        return reply.SerializeToString()

    async def repair(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        msg = await self._parse(pb.RepairRequest, data, context)
        try:
            reply = self.rt.anti_entropy.on_repair(msg)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Repair: {e}")
        return reply.SerializeToString()

    async def read_repair(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        msg = await self._parse(pb.ReadRepairRequest, data, context)
        try:
            reply = self.rt.read_repair.on_read_repair(msg)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"ReadRepair: {e}")
        return reply.SerializeToString()
