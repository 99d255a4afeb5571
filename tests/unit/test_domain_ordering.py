"""Overlapping sends of one connection keep their order: the `SendSequence` reorder buffer on its own,
and through `ChatService` over the embedded backend, with the one-step acceptor and with the
`BatchAcceptor` the production profile takes."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fishchat.domain import ChatService, ChatSettings, ManualClock
from fishchat.domain.errors import NoSuchUser, ServerError
from fishchat.domain.ordering import UNORDERED, Batch, OrderedBatches, SendSequence, SendTicket
from fishchat.domain.passwords import ScryptParams
from fishchat.embedded import EmbeddedBackend

SETTINGS = ChatSettings(scrypt=ScryptParams(log2_n=4))
ALICE, BOB = 1, 2


def _submitter(log: list[int], n: int) -> Callable[[], Awaitable[int]]:
    def submit() -> Awaitable[int]:
        log.append(n)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_result(n)
        return done

    return submit


async def test_place_submits_at_once_when_nothing_earlier_is_pending() -> None:
    sequence, submitted = SendSequence(), list[int]()
    first, second = sequence.ticket(), sequence.ticket()
    assert await first.place(_submitter(submitted, 1)) == 1
    assert await second.place(_submitter(submitted, 2)) == 2
    assert submitted == [1, 2]


async def test_a_later_send_waits_for_the_earlier_ones_and_they_all_go_in_one_call() -> None:
    sequence, submitted = SendSequence(), list[int]()
    tickets = [sequence.ticket() for _ in range(4)]
    later = [tickets[n].place(_submitter(submitted, n)) for n in (3, 1, 2)]
    assert submitted == []  # the first one has not placed yet
    first = tickets[0].place(_submitter(submitted, 0))
    assert submitted == [0, 1, 2, 3]  # submitted in ticket order, within the first one's call
    assert [await first, *[await outcome for outcome in later]] == [0, 3, 1, 2]


async def test_an_earlier_send_that_gives_up_lets_the_later_ones_go() -> None:
    sequence, submitted = SendSequence(), list[int]()
    failed, ok = sequence.ticket(), sequence.ticket()
    outcome = ok.place(_submitter(submitted, 2))
    assert submitted == []
    failed.release()  # e.g. its target does not exist
    assert submitted == [2] and await outcome == 2
    failed.release()  # idempotent


async def test_a_submit_that_fails_reaches_its_sender_only() -> None:
    sequence, submitted = SendSequence(), list[int]()
    first, broken, last = sequence.ticket(), sequence.ticket(), sequence.ticket()

    def explode() -> Awaitable[int]:
        raise RuntimeError("queue refused")

    broken_outcome = broken.place(explode)
    last_outcome = last.place(_submitter(submitted, 3))
    await first.place(_submitter(submitted, 1))
    with pytest.raises(RuntimeError, match="queue refused"):
        await broken_outcome
    assert await last_outcome == 3 and submitted == [1, 3]


async def test_without_a_sequence_everything_goes_at_once() -> None:
    submitted: list[int] = []
    assert await UNORDERED.place(_submitter(submitted, 7)) == 7
    UNORDERED.release()
    assert submitted == [7]


# --- through the chat service ---------------------------------------------------------------------


@pytest.fixture(params=["one-step", "batches"])
async def chat(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ChatService]:
    async with await EmbeddedBackend.open(tmp_path, settings=SETTINGS, clock=ManualClock()) as backend:
        service = backend.service
        if request.param == "batches":  # what the production profile does (BatchAcceptor)
            service = ChatService(dataclasses.replace(backend.ports, acceptor=None), SETTINGS, service.clock)
        await service.register(ALICE, "alice", "password-1")
        await service.register(BOB, "bob", "password-1")
        yield service


async def test_overlapping_sends_of_one_sequence_are_stored_in_ticket_order(chat: ChatService) -> None:
    sequence = SendSequence()
    tickets = [sequence.ticket() for _ in range(40)]
    started = list(range(40))
    random.Random(7).shuffle(started)  # the sends start in another order than they arrived

    async def send(n: int, ticket: SendTicket) -> int:
        await asyncio.sleep(0.001 * (n % 3))
        return (await chat.send_p2p(ALICE, BOB, f"m{n}", f"text {n}", ticket=ticket)).version

    versions = await asyncio.gather(*(send(n, tickets[n]) for n in started))
    by_ticket = dict(zip(started, versions, strict=True))
    assert [by_ticket[n] for n in range(40)] == list(range(1, 41))


async def test_a_refused_send_does_not_hold_up_the_rest_of_its_sequence(chat: ChatService) -> None:
    sequence = SendSequence()
    refused, accepted = sequence.ticket(), sequence.ticket()
    later = asyncio.ensure_future(chat.send_p2p(ALICE, BOB, "after", "x", ticket=accepted))
    with pytest.raises(NoSuchUser):
        await chat.send_p2p(ALICE, 999, "to nobody", "x", ticket=refused)
    assert (await later).version == 1


async def test_a_batch_is_answered_in_order_by_one_call_or_failed_whole() -> None:
    """`Batch.answer_with`: the submitters queued in one turn get the answers of one call, in order;
    a failed call, or one answering the wrong number of items, fails each of them."""
    calls: list[list[int]] = []
    mode = ["ok"]  # what the next call does

    async def work(batch: Batch[int, str]) -> None:
        values = [entry.value for entry in batch.entries]
        calls.append(values)

        async def answers() -> list[str]:
            if mode[0] == "fail":
                raise ConnectionError("down")
            return [f"#{v}" for v in values] + (["extra"] if mode[0] == "extra" else [])

        await batch.answer_with(answers())

    batches: OrderedBatches[int, str] = OrderedBatches(
        work, max_items=10, max_weight=10, max_in_flight=1, name="test"
    )
    assert await asyncio.gather(*(batches.submit(n, n) for n in range(3))) == ["#0", "#1", "#2"]
    assert calls == [[0, 1, 2]]
    for mode[0], error in (("fail", ConnectionError), ("extra", ServerError)):
        outcomes = await asyncio.gather(*(batches.submit(n, n) for n in range(2)), return_exceptions=True)
        assert [type(o) for o in outcomes] == [error, error]
