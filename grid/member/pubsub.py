"""Redis-style publish/subscribe across members: a PUBLISH reaches every member's RESP
subscribers, as Redis Cluster forwards a PUBLISH over its bus to every node.

Fire and forget, as Redis pub/sub is: a message goes to the subscribers connected when
it arrives, nothing is stored, and a member that is down or unreachable misses it.
What this keeps is Redis's one ordering promise: messages one connection publishes
reach each subscriber in the order they were published. So each peer has one queue
and one sender draining it in order (the `PubSub` peer call, a CALL frame on the data
plane); a queue past MAX_QUEUED drops its oldest messages, as Redis drops a subscriber
that falls too far behind (client-output-buffer-limit pubsub).

The SDK's topics (grid/client/topics.py) are another thing: stored in a map, at least
once, ordered per publisher across failovers. This is RESP's PUBLISH/SUBSCRIBE only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack

from grid import logs

log = logs.get("grid.member.pubsub")

METHOD = "/grid.v1.Peer/PubSub"
MAX_QUEUED = 10_000
SEND_TIMEOUT_S = 2.0


class PubSubRelay:
    def __init__(
        self,
        name: str,
        send: Callable[[str, str, bytes, float], Any],
        members: Callable[[], list[Any]],
    ) -> None:
        self.name = name
        self.send = send  # Peers._unary: (address, method, body, timeout) -> reply bytes
        self.members = members
        self.deliver: Callable[[bytes, bytes], int] | None = None
        """This member's local delivery (the RESP front end's), when it has one."""
        self.queues: dict[str, deque[bytes]] = {}
        self.senders: dict[str, asyncio.Task[None]] = {}
        self.dropped = 0

    def publish(self, channel: bytes, message: bytes) -> int:
        """Deliver here, queue for every other live member; how many subscribers here got
        it (what PUBLISH answers, as in Redis Cluster: the node's own subscribers)."""
        body = msgpack.packb([channel, message])
        for m in self.members():
            if m.name == self.name or m.state != "alive" or not m.address:
                continue
            queue = self.queues.setdefault(m.address, deque())
            if len(queue) >= MAX_QUEUED:
                queue.popleft()
                self.dropped += 1
            queue.append(body)
            sender = self.senders.get(m.address)
            if sender is None or sender.done():
                self.senders[m.address] = asyncio.get_running_loop().create_task(
                    self._drain(m.address), name=f"grid-pubsub-{m.address}"
                )
        return self.local(channel, message)

    def local(self, channel: bytes, message: bytes) -> int:
        return self.deliver(channel, message) if self.deliver is not None else 0

    async def _drain(self, address: str) -> None:
        queue = self.queues[address]
        while queue:
            body = queue.popleft()
            try:
                await self.send(address, METHOD, body, SEND_TIMEOUT_S)
            except Exception as e:  # down or unreachable: it misses what was sent to it
                self.dropped += 1 + len(queue)
                queue.clear()
                log.debug("pub/sub message not relayed", to=address, error=str(e))

    def received(self, body: bytes) -> int:
        """A peer's PUBLISH: deliver here."""
        channel, message = msgpack.unpackb(body)
        if not isinstance(channel, bytes) or not isinstance(message, bytes):
            raise ValueError("PubSub wants [channel, message] as bytes")
        return self.local(channel, message)

    async def close(self) -> None:
        for task in self.senders.values():
            task.cancel()
        self.senders.clear()
