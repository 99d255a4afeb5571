"""Keeping the sends of one sender in order while they overlap.

A client pipelines its sends on one connection, and their order must survive into every timeline.
Handling them one at a time keeps the order but limits a connection to one send per commit; with
tickets they overlap (validation, lookups and the wait for the durable commit) and only the step that
fixes their place in the log is taken in order. A `SendSequence` hands out tickets in arrival order
and works like a reorder buffer:

- `place(submit)`, for a step that is a synchronous call queueing the send (the embedded acceptor):
  `submit` is called as soon as every earlier ticket has placed or given up, possibly from inside
  another send's `place`, so a connection's queued sends all enter the same batch instead of one per
  loop iteration;
- `turn()` ... `release()`, for a step that takes several awaits (claim, allocate, append in separate
  systems): `turn()` waits until every earlier ticket is finished, `release()` ends the step.

A send that fails or is cancelled before its step calls `release()` (idempotent; always call it), so
the next one is not held up; later sends still wait for every earlier one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_WAITING, _READY, _DONE = range(3)


class _Slot:
    __slots__ = ("result", "state", "submit", "waiter")

    def __init__(self) -> None:
        self.state = _WAITING
        self.submit: Callable[[], Awaitable[Any]] | None = None
        self.result: asyncio.Future[Any] | None = None
        self.waiter: asyncio.Future[None] | None = None


class SendSequence:
    """The sends of one connection: tickets in the order `ticket()` is called."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: deque[_Slot] = deque()  # not yet finished, in ticket order

    def ticket(self) -> SendTicket:
        slot = _Slot()
        self._slots.append(slot)
        return SendTicket(self, slot)

    def _advance(self) -> None:
        """Submit ready sends from the head on; wake the head if it waits for its turn."""
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
                if head.waiter is not None and not head.waiter.done():
                    head.waiter.set_result(None)
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

    async def turn(self) -> None:
        """Wait until every earlier send of the sequence has finished its step (or given up)."""
        sequence, slot = self._sequence, self._slot
        if sequence is None or slot is None or slot.state != _WAITING:
            return
        if sequence._slots and sequence._slots[0] is slot:
            return
        if slot.waiter is None:
            slot.waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(slot.waiter)

    def release(self) -> None:
        """This send's step is over, or it will not take it: later sends may go on."""
        sequence, slot = self._sequence, self._slot
        if sequence is None or slot is None:
            return
        self._slot = None
        if slot.state == _WAITING:
            slot.state = _DONE
            sequence._advance()


#: For callers without a sequence: the turn is always now.
UNORDERED = SendTicket(None, None)
