"""Topics: publish/subscribe on a map and its entry listeners.

A topic `news` is the map `grid.topic.news`. `publish(message)` puts one entry, keyed
`{<publisher id>}:<n>` with the publisher's next number n and kept for `retention`
seconds; a subscriber is an entry listener of the map that hears only "added" events,
with their values. What this gives, and why:

- **Order per publisher.** A publisher's keys share one routing key (the braces), so
  all its messages land in one partition and reach a subscriber in that partition's
  order: the order they were published in. Messages of different publishers have no
  order between them, as with Hazelcast's topics (without global ordering) and Redis
  pub/sub across connections.
- **No duplicates in a subscription.** A listener delivers at least once (a resume
  after a lost connection may repeat events); the subscriber keeps the last number it
  handed over per publisher and drops anything not above it.
- **From the moment `subscribe` returns**, as Redis SUBSCRIBE: nothing published
  before reaches a new subscriber. Messages published while a subscriber's stream was
  broken are delivered when it resumes, as long as the partition's primary still keeps
  them (its last 256 changes); past that, the listener's gap callback (`on_gap`) says
  so and those messages are lost to that subscriber.
- **Across a failover**: with `sync_backups` >= 1 on the topic's map (`map_sync_backups
  = "grid.topic.news=1"`), a message whose publish returned is on a backup, and a
  subscriber resumes from the backup once it is promoted (docs/patterns.md, "Entry
  listeners"): nothing published is lost. With async backups, the last moment's
  messages before a crash can be lost, with a gap reported.
- `retention` bounds the memory: messages expire on their own; a subscriber never
  needs them after delivery.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from grid.client.listeners import EntryEvent

TOPIC_PREFIX = "grid.topic."
RETENTION_S = 60.0


def _publisher_id() -> str:
    return os.urandom(6).hex()


class _Numbering:
    """A publisher's id and message numbers (threads may publish through one topic)."""

    def __init__(self) -> None:
        self.id = _publisher_id()
        self.n = 0
        self.lock = threading.Lock()

    def next_key(self) -> str:
        with self.lock:
            self.n += 1
            return f"{{{self.id}}}:{self.n:016d}"


class _Dedup:
    """The last number handed over per publisher: later duplicates and replays dropped."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def accept(self, event: EntryEvent) -> bool:
        key = event.key
        if not isinstance(key, str) or not key.startswith("{"):
            return False
        publisher, _, n = key[1:].partition("}:")
        try:
            number = int(n)
        except ValueError:
            return False
        if number <= self.last.get(publisher, 0):
            return False
        self.last[publisher] = number
        return True


class Topic:
    """`client.topic("news")`: publish and subscribe through a (blocking) Client."""

    def __init__(self, client: Any, name: str, retention: float = RETENTION_S) -> None:
        self.name = name
        self.map = client.map(TOPIC_PREFIX + name)
        self.retention = retention
        self._numbering = _Numbering()

    def publish(self, message: Any) -> None:
        """Returns once the member took it (with sync backups on the topic's map, once a
        backup did too)."""
        self.map.put(self._numbering.next_key(), message, ttl=self.retention)

    def subscribe(
        self, callback: Callable[[Any], Any], *, on_gap: Callable[[int, str], Any] | None = None
    ) -> Any:
        """Call `callback(message)` for every message published from now on, in order per
        publisher, once each; returns the listener (`.close()`, or `with`)."""
        dedup = _Dedup()

        def on_event(event: EntryEvent) -> None:
            if dedup.accept(event):
                callback(event.value)

        return self.map.add_listener(on_event, kinds=["added"], include_values=True,
                                     on_gap=on_gap)  # fmt: skip


class AsyncTopic:
    """`client.topic("news")` of an AsyncClient; `callback` may be async."""

    def __init__(self, client: Any, name: str, retention: float = RETENTION_S) -> None:
        self.name = name
        self.map = client.map(TOPIC_PREFIX + name)
        self.retention = retention
        self._numbering = _Numbering()

    async def publish(self, message: Any) -> None:
        await self.map.put(self._numbering.next_key(), message, ttl=self.retention)

    async def subscribe(
        self, callback: Callable[[Any], Any], *, on_gap: Callable[[int, str], Any] | None = None
    ) -> Any:
        dedup = _Dedup()

        def on_event(event: EntryEvent) -> Any:
            if dedup.accept(event):
                return callback(event.value)
            return None

        return await self.map.add_listener(on_event, kinds=["added"], include_values=True,
                                           on_gap=on_gap)  # fmt: skip
