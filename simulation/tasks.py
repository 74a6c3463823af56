"""Tasks in virtual time: the simulator's asyncio.

grid/member/placement/coordinator.py carries out the rebalancer's decisions as asyncio code
(await an RPC, gather several, sleep). The simulated member does the same
with generators that yield `Future`s: `spawn` steps a generator each time the
future it waits on resolves, so the shell reads in the order it runs, like
grid's. Everything runs on the world's virtual loop: a future resolves inside
some event (a message delivered, a timer), and the task goes on in that same
event, so nothing here reorders anything and a run stays a function of its
seed. A task of a member that crashed stops at its next step (`alive`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Task = Generator["Future[Any]", Any, T]


class Future(Generic[T]):
    """A value that comes later; callbacks run when it does, in the order added."""

    __slots__ = ("_callbacks", "done", "value")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self._callbacks: list[Callable[[T], None]] = []

    def resolve(self, value: T) -> None:
        """The first value wins; later ones are ignored (a reply after its timeout)."""
        if self.done:
            return
        self.done = True
        self.value = value
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(value)

    def then(self, fn: Callable[[T], None]) -> None:
        if self.done:
            fn(self.value)
        else:
            self._callbacks.append(fn)


def resolved(value: T) -> Future[T]:
    fut: Future[T] = Future()
    fut.resolve(value)
    return fut


def gather(futures: Iterable[Future[Any]]) -> Future[list[Any]]:
    """Resolves with every value, in order, once all have resolved."""
    futs = list(futures)
    out: Future[list[Any]] = Future()
    left = [len(futs)]
    if not futs:
        out.resolve([])
        return out

    def one(_: Any) -> None:
        left[0] -= 1
        if left[0] == 0:
            out.resolve([f.value for f in futs])

    for f in futs:
        f.then(one)
    return out


def spawn(task: Task[T], alive: Callable[[], bool]) -> Future[T]:
    """Run `task` until it returns (its value resolves the future returned) or until
    `alive()` is false at one of its steps (it is closed; the future never resolves)."""
    result: Future[T] = Future()

    def step(value: Any) -> None:
        while True:
            if not alive():
                task.close()
                return
            try:
                fut = task.send(value)
            except StopIteration as stop:
                result.resolve(stop.value)
                return
            if not fut.done:
                fut.then(step)
                return
            value = fut.value  # already resolved: go on without recursing

    step(None)
    return result
