"""The member-to-member service (`grid.v1.Peer`): tables, follow streams, moves.

Handlers parse bytes themselves, like the client-facing service, so a
malformed message gets INVALID_ARGUMENT with a reason and the member goes on.
The logic lives elsewhere; this module only adapts the wire to it:
tables to grid/member/placement/routing.py, Follow to grid/member/replicas/replica.py, Fill to
grid/member/replicas/follower.py, Handoff to grid/member/replicas/replica.py, Leave to
grid/member/placement/coordinator.py, Compare and Repair to grid/member/replicas/antientropy.py,
ReadRepair to grid/member/replicas/read_repair.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
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


class BadRequest(ValueError):
    """A peer call's request cannot be served as sent: INVALID_ARGUMENT with this text."""


Call = Callable[[bytes], Awaitable[bytes]]


class PeerService:
    """The Peer methods, each `bytes -> bytes`, served twice: as gRPC (`handler`) and on
    the data plane's CALL frames (`calls`, grid/member/dataplane.py), which is what
    members use; gRPC stays for older members and for the Follow stream's fallback."""

    def __init__(self, runtime: ClusterRuntime) -> None:
        self.rt = runtime
        self.calls: dict[str, Call] = {
            "Publish": self.publish,
            "Fill": self.fill,
            "Handoff": self.handoff,
            "Leave": self.leave,
            "Compare": self.compare,
            "Repair": self.repair,
            "ReadRepair": self.read_repair,
            "PubSub": self.pubsub,
        }

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {
            name: grpc.unary_unary_rpc_method_handler(_grpc(call))
            for name, call in self.calls.items()
        }
        methods["Follow"] = grpc.stream_stream_rpc_method_handler(self.follow)
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    @staticmethod
    def _parse(cls: Any, data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError:
            raise BadRequest(f"malformed {cls.__name__} ({len(data)} bytes)") from None

    async def publish(self, data: bytes) -> bytes:
        msg = self._parse(pb.PartitionTable, data)
        try:
            self.rt.install_proto(msg)
        except ValueError as e:
            raise BadRequest(f"bad partition table: {e}") from None
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

    async def fill(self, data: bytes) -> bytes:
        msg = self._parse(pb.FillRequest, data)
        parts = [p for p in msg.partitions if 0 <= p < self.rt.store.partitions]
        ready, failed = await self.rt.followers.fill(
            parts, msg.source, msg.source_address, timeout=FILL_TIMEOUT_S
        )
        return pb.FillReply(ready=ready, failed=failed).SerializeToString()

    async def handoff(self, data: bytes) -> bytes:
        msg = self._parse(pb.HandoffRequest, data)
        parts = [p for p in msg.partitions if 0 <= p < self.rt.store.partitions]
        done, failed = await self.rt.replicator.handoff(parts, msg.to, msg.confirm_epoch)
        return pb.HandoffReply(done=done, failed=failed).SerializeToString()

    async def leave(self, data: bytes) -> bytes:
        msg = self._parse(pb.LeaveRequest, data)
        if not msg.member:
            raise BadRequest("Leave names no member")
        answer = await self.rt.coordinator.leave(msg.member, self.rt.config.leave_timeout_s)
        return pb.LeaveReply(
            done=answer.done,
            error=answer.error,
            coordinator=answer.coordinator,
            table_version=answer.version,
        ).SerializeToString()

    async def compare(self, data: bytes) -> bytes:
        msg = self._parse(pb.CompareRequest, data)
        try:
            reply = await self.rt.anti_entropy.on_compare(msg)
        except ValueError as e:
            raise BadRequest(f"Compare: {e}") from None
        return reply.SerializeToString()

    async def repair(self, data: bytes) -> bytes:
        msg = self._parse(pb.RepairRequest, data)
        try:
            reply = self.rt.anti_entropy.on_repair(msg)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            raise BadRequest(f"Repair: {e}") from None
        return reply.SerializeToString()

    async def pubsub(self, data: bytes) -> bytes:
        """A PUBLISH on another member, for this member's RESP subscribers."""
        try:
            delivered = self.rt.pubsub.received(data)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            raise BadRequest(f"PubSub: {e}") from None
        return msgpack.packb(delivered)

    async def read_repair(self, data: bytes) -> bytes:
        msg = self._parse(pb.ReadRepairRequest, data)
        try:
            reply = self.rt.read_repair.on_read_repair(msg)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            raise BadRequest(f"ReadRepair: {e}") from None
        return reply.SerializeToString()


def _grpc(call: Call) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
    async def handler(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return await call(data)
        except BadRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise  # abort raises; this line is for the type checker

    return handler
