"""Member-to-member calls: one data-plane connection per peer for everything that moves
data, one gRPC channel per peer for finding it.

Forwarded client batches (grid/member/forwarding.py) and the Peer methods (Publish,
Fill, Handoff, Leave, Compare, Repair, ReadRepair: CALL frames) share one data-plane
connection per peer (grid/member/dataplane.py: frames over TCP, no gRPC per-message
cost); each follow stream (grid/member/replicas/follower.py) has a connection of its
own, so a snapshot in flight never queues a coordinator's call behind it. gRPC is
left with Table and Endpoints, which is how a member finds a peer's data plane.
"""

from __future__ import annotations

from typing import Any

import grpc

from grid.client.connection import AsyncConnection, ConnectionOptions
from grid.errors import DeadlineExceeded, Unavailable
from grid.member.replicas.link import FramePipe, open_follow
from grid.wire import frames
from grid.wire.endpoints import data_plane_address
from grid.wire.security import Security
from proto import grid_pb2 as pb

PEER = "/grid.v1.Peer/"
_STATUS = {code.value[0]: code for code in grpc.StatusCode}


class PeerCallError(grpc.aio.AioRpcError):
    """A Peer call on the data plane that failed: the same error type a gRPC call raises,
    with the status the peer (or the connection) gave, so callers catch one kind."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


ENDPOINTS = "/grid.v1.Grid/Endpoints"
TABLE = "/grid.v1.Grid/Table"
STATS = "/grid.v1.Grid/Stats"


class Peers:
    def __init__(
        self, max_message_bytes: int, cluster: str = "", security: Security | None = None
    ) -> None:
        self._max = max_message_bytes
        self._cluster = cluster
        self.security = security or Security()
        self._tls = self.security.client_context()  # one context for every follow stream
        self._metadata = self.security.grpc_metadata()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._data: dict[str, AsyncConnection] = {}
        self._endpoints: dict[str, tuple[str, str]] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            options = [
                ("grpc.max_receive_message_length", self._max),
                ("grpc.max_send_message_length", self._max),
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.enable_retries", 0),
            ]
            if self.security.client_tls:
                credentials = self.security.grpc_channel_credentials()
                ch = grpc.aio.secure_channel(address, credentials, options=options)
            else:
                ch = grpc.aio.insecure_channel(address, options=options)
            self._channels[address] = ch
        return ch

    async def _unary(self, address: str, method: str, request: bytes, timeout: float) -> bytes:
        """Peer methods go on the peer's data plane (CALL frames); the rest (Table,
        Endpoints: what finds the data plane) over gRPC. Failures are AioRpcErrors either
        way, so callers handle one kind."""
        if not method.startswith(PEER):
            return await self.channel(address).unary_unary(method)(
                request, timeout=timeout, metadata=self._metadata
            )
        try:
            status, payload = await self._connection(address).call_peer(
                method[len(PEER) :], request, timeout
            )
        except DeadlineExceeded as e:
            raise PeerCallError(grpc.StatusCode.DEADLINE_EXCEEDED, str(e)) from None
        except Unavailable as e:
            self._endpoints.pop(address, None)
            raise PeerCallError(grpc.StatusCode.UNAVAILABLE, str(e)) from None
        if status != frames.OK:
            raise PeerCallError(
                _STATUS.get(status, grpc.StatusCode.UNKNOWN), payload.decode(errors="replace")
            )
        return payload

    def _connection(self, address: str) -> AsyncConnection:
        conn = self._data.get(address)
        if conn is None or conn.closed:
            options = ConnectionOptions(
                max_message_bytes=self._max, cluster=self._cluster, security=self.security
            )
            conn = self._data[address] = AsyncConnection(address, options)
        return conn

    async def unary(self, address: str, method: str, request: Any, timeout: float) -> bytes:
        """Any unary call: a message in, the reply's bytes out (the caller parses them)."""
        return await self._unary(address, method, request.SerializeToString(), timeout)

    async def execute(
        self, address: str, request: pb.BatchRequest, timeout: float
    ) -> pb.BatchReply:
        """A batch on the peer's data plane (Unavailable or DeadlineExceeded if it fails)."""
        return await self._connection(address).exchange(request, timeout)

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

    async def stats(self, address: str, timeout: float) -> pb.StatsReply:
        """A peer's statistics (gRPC Stats, with this member's credentials): the dashboard."""
        data = await self._unary(address, STATS, b"", timeout)
        return pb.StatsReply.FromString(data)

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
            return await open_follow(
                data_address, self._cluster or cluster, self._max, timeout,
                tls=self._tls, token=self.security.token,
            )  # fmt: skip
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
