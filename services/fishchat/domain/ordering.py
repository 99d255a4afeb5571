"""Keeping the sends of one sender in order while they overlap.

A client pipelines its sends on one connection, and their order must survive into every timeline.
Handling them one at a time keeps the order but limits a connection to one send per commit; with
tickets they overlap (validation, lookups and the wait for the durable commit) and only the step that
fixes their place in the log is taken in order. A `SendSequence` hands out tickets in arrival order
and works like a reorder buffer: `place(submit)` calls `submit` (a synchronous call queueing the
send with whatever accepts it in order: an acceptor, a batch of a batch RPC) as soon as every earlier
ticket has placed or given up, possibly from inside another send's `place`, so a connection's queued
sends all enter the same batch instead of one per loop iteration.

A send that fails or is cancelled before it placed calls `release()` (idempotent; always call it),
so the next one is not held up; later sends still wait for every earlier one.

`OrderedBatches` is the same promise one level down, for work paid per batch (a batch RPC, one
round trip to each store): values of many senders run together, while each sender's values keep
their order across batches.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from fishchat.domain.errors import ServerError

T = TypeVar("T")

log = logging.getLogger(__name__)

_WAITING, _READY, _DONE = range(3)


class _Slot:
    __slots__ = ("result", "state", "submit")

    def __init__(self) -> None:
        self.state = _WAITING
        self.submit: Callable[[], Awaitable[Any]] | None = None
        self.result: asyncio.Future[Any] | None = None


class SendSequence:
    """The sends of one connection: tickets in the order `ticket()` is called."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: deque[_Slot] = deque()  # not yet finished, in ticket order

    @property
    def idle(self) -> bool:
        """Every ticket handed out has placed or given up."""
        return not self._slots

    def ticket(self) -> SendTicket:
        slot = _Slot()
        self._slots.append(slot)
        return SendTicket(self, slot)

    def _advance(self) -> None:
        """Submit ready sends from the head on."""
        slots = self._slots
        while slots:
            head = slots[0]
            if head.state == _DONE:
                slots.popleft()
            elif head.state == _READY:
                slots.popleft()
                head.state = _DONE
                _submit_into(head)
            else:
                return


def _submit_into(slot: _Slot) -> None:
    """Run a deferred submission and pass its outcome on to the future its sender awaits."""
    submit, result = slot.submit, slot.result
    slot.submit = None
    assert submit is not None and result is not None
    try:
        outcome = asyncio.ensure_future(submit())
    except Exception as exc:
        if not result.done():
            result.set_exception(exc)
        return

    def forward(done: asyncio.Future[Any]) -> None:
        if result.done():
            return
        if done.cancelled():
            result.cancel()
        elif done.exception() is not None:
            result.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            result.set_result(done.result())

    outcome.add_done_callback(forward)


class SendTicket:
    """One send's place in its sequence."""

    __slots__ = ("_sequence", "_slot")

    def __init__(self, sequence: SendSequence | None, slot: _Slot | None) -> None:
        self._sequence = sequence
        self._slot = slot

    def place(self, submit: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        """Call `submit` (which queues the send, synchronously) once every earlier send has placed or
        given up, and return what it returns (now, or a future of it when deferred)."""
        sequence, slot = self._sequence, self._slot
        if sequence is None or slot is None or slot.state == _DONE:
            return submit()
        if sequence._slots and sequence._slots[0] is slot:  # our turn already: no deferral needed
            sequence._slots.popleft()
            slot.state = _DONE
            try:
                return submit()
            finally:
                sequence._advance()
        slot.result = asyncio.get_running_loop().create_future()
        slot.submit = submit
        slot.state = _READY
        return slot.result

    def release(self) -> None:
        """This send will not place (or has): later sends may go on."""
        sequence, slot = self._sequence, self._slot
        if sequence is None or slot is None:
            return
        self._slot = None
        if slot.state == _WAITING:
            slot.state = _DONE
            sequence._advance()


#: For callers without a sequence: placed at once.
UNORDERED = SendTicket(None, None)


# --- batches that keep each key's order ---------------------------------------------------------

V = TypeVar("V")
R = TypeVar("R")


class Entry(Generic[V, R]):
    """One queued item of `OrderedBatches`: its value, its order key, its weight, and the outcome its
    submitter awaits (the batch's work settles it)."""

    __slots__ = ("key", "outcome", "value", "weight")

    def __init__(self, key: int, value: V, weight: int, outcome: asyncio.Future[R]) -> None:
        self.key = key
        self.value = value
        self.weight = weight
        self.outcome = outcome


class Batch(Generic[V, R]):
    """The entries one run of the work handles, in queue order. `release()` lets their keys' later
    entries into the next batches (called when the work is done with the step that fixes the order,
    and in any case when it ends)."""

    __slots__ = ("_owner", "entries")

    def __init__(self, owner: OrderedBatches[V, R], entries: list[Entry[V, R]]) -> None:
        self._owner: OrderedBatches[V, R] | None = owner
        self.entries = entries

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._release(self.entries)

    async def answer_with(self, answers: Awaitable[Sequence[R]]) -> None:
        """Settle each entry with its answer (one per entry, in order) from one call for the whole
        batch, or every entry with that call's failure (a count that does not match is one)."""
        try:
            found = await answers
            if len(found) != len(self.entries):
                raise ServerError(f"{len(found)} answers for a batch of {len(self.entries)}")
        except Exception as exc:
            for entry in self.entries:
                if not entry.outcome.done():
                    entry.outcome.set_exception(exc)
            return
        for entry, answer in zip(self.entries, found, strict=True):
            if not entry.outcome.done():
                entry.outcome.set_result(answer)


class OrderedBatches(Generic[V, R]):
    """Submitted values run in batches by `work`, at most `max_in_flight` batches at once, while each
    key's values keep their submission order: a batch holds its entries in queue order, and a value
    whose key has an entry in a batch under way waits (with every later value of that key) for a
    later batch. Values submitted in one turn of the event loop go together: a batch starts on the
    next turn, or as soon as a slot is free. A batch is cut before it holds `max_items` entries or
    `max_weight` in weight (a single heavier value still goes alone).

    `work(batch)` must settle every entry's outcome; an entry it leaves unsettled is cancelled when it
    returns. A value whose submitter gave up (its outcome cancelled) before its batch started is dropped.
    """

    def __init__(
        self,
        work: Callable[[Batch[V, R]], Awaitable[None]],
        *,
        max_items: int,
        max_weight: int,
        max_in_flight: int,
        name: str,
    ) -> None:
        if min(max_items, max_weight, max_in_flight) <= 0:
            raise ValueError("max_items, max_weight and max_in_flight must be positive")
        self._work = work
        self._max_items = max_items
        self._max_weight = max_weight
        self._max_in_flight = max_in_flight
        self._name = name
        self._queue: deque[Entry[V, R]] = deque()
        self._busy: dict[int, int] = {}  # key -> entries in batches under way
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False

    def submit(self, key: int, value: V, weight: int = 1) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[R] = loop.create_future()
        self._queue.append(Entry(key, value, weight, outcome))
        self._schedule(loop)
        return outcome

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._queue:
            self._scheduled = True
            loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._queue and len(self._running) < self._max_in_flight:
            entries = self._take()
            if not entries:
                return
            batch = Batch(self, entries)
            task = loop.create_task(self._run(batch), name=self._name)
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _take(self) -> list[Entry[V, R]]:
        entries: list[Entry[V, R]] = []
        weight = 0
        waiting: deque[Entry[V, R]] = deque()
        blocked: set[int] = set()
        busy = self._busy
        while self._queue:
            entry = self._queue.popleft()
            if entry.outcome.done():  # its submitter gave up before the batch started
                continue
            full = bool(entries) and (
                len(entries) >= self._max_items or weight + entry.weight > self._max_weight
            )
            if full or entry.key in blocked or entry.key in busy:
                waiting.append(entry)
                blocked.add(entry.key)
                continue
            entries.append(entry)
            weight += entry.weight
        self._queue = waiting
        for entry in entries:
            busy[entry.key] = busy.get(entry.key, 0) + 1
        return entries

    def _release(self, entries: list[Entry[V, R]]) -> None:
        busy = self._busy
        for entry in entries:
            left = busy[entry.key] - 1
            if left:
                busy[entry.key] = left
            else:
                del busy[entry.key]
        self._schedule(asyncio.get_running_loop())

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._schedule(asyncio.get_running_loop())

    async def _run(self, batch: Batch[V, R]) -> None:
        try:
            await self._work(batch)
        except Exception:
            log.exception("%s: a batch of %d failed", self._name, len(batch.entries))
        finally:
            for entry in batch.entries:
                if not entry.outcome.done():
                    entry.outcome.cancel()
            batch.release()


class CallBatches(Generic[V, R]):
    """One call for many askers: the values asked while earlier calls are under way go together in
    one `call(values)` (at most `max_in_flight` at once, `max_items` values each), which answers
    each value in order; each asker gets its own answer, or that call's failure. No order is kept
    among the values."""

    def __init__(
        self,
        call: Callable[[list[V]], Awaitable[Sequence[R]]],
        *,
        max_items: int,
        max_in_flight: int,
        name: str,
    ) -> None:
        self._call = call
        self._turns = itertools.count()
        self._batches: OrderedBatches[V, R] = OrderedBatches(
            self._run, max_items=max_items, max_weight=max_items, max_in_flight=max_in_flight, name=name
        )

    def ask(self, value: V) -> asyncio.Future[R]:
        return self._batches.submit(next(self._turns), value)  # a key of its own: no order kept

    async def _run(self, batch: Batch[V, R]) -> None:
        await batch.answer_with(self._call([entry.value for entry in batch.entries]))
