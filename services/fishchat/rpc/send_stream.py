"""The access side of LogicRPC.SendStream: an access server's sends to logic, in batches on streams.

Connections hand their sends over in their own order (`SendTicket.place`). A dispatcher takes what
is queued, as one batch per logic instance, and writes each batch on that instance's stream without
waiting for earlier batches to be answered: logic accepts each sender's sends in stream order, so a
connection's pipelined sends overlap all the way to the log. A sender is routed to one instance
(rendezvous hashing over the live instances: every access server sends a user's messages to the
same one while the set is stable); when the set changes, a sender with sends unanswered on another
stream waits for them before its next ones go to the new one, so its order holds across the move.

A batch not answered within `timeout_s` fails with `Unavailable` (the client retries; the msgID
makes that safe). So does every unanswered batch of a stream that breaks (logic stopped or died);
its instance is then avoided for COOLDOWN_S while the registry still lists it. A stream whose
instance left the registry is closed once its batches are answered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from fishchat.domain.errors import ServerError, Unavailable
from fishchat.proto.gen.rpc import logic_pb2
from fishchat.rpc.client import RoleClient, owner

log = logging.getLogger(__name__)

METHOD = "SendStream"
#: How long an instance whose stream broke is left out of the routing (if another one is live).
COOLDOWN_S = 2.0


@dataclass(slots=True)
class _Queued:
    source: int
    item: logic_pb2.SendItem
    outcome: asyncio.Future[logic_pb2.SendOutcome]


class SendStreams:
    """Sends of one access server to the logic instances (see the module doc)."""

    def __init__(self, client: RoleClient, *, timeout_s: float, max_batch: int) -> None:
        if timeout_s <= 0 or max_batch <= 0:
            raise ValueError("timeout_s and max_batch must be positive")
        self._client = client
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._queue: deque[_Queued] = deque()
        self._streams: dict[str, _Stream] = {}
        #: Senders with unanswered sends: the address of their stream and how many.
        self._busy: dict[int, tuple[str, int]] = {}
        self._cooling: dict[str, float] = {}
        self._dispatcher: asyncio.Task[None] | None = None

    def submit(self, source: int, item: logic_pb2.SendItem) -> asyncio.Future[logic_pb2.SendOutcome]:
        outcome: asyncio.Future[logic_pb2.SendOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(source, item, outcome))
        self._wake()
        return outcome

    def _wake(self) -> None:
        if self._queue and (self._dispatcher is None or self._dispatcher.done()):
            self._dispatcher = asyncio.create_task(self._dispatch(), name="fishchat-send-dispatch")

    async def _dispatch(self) -> None:
        await asyncio.sleep(0)  # the sends handed over in this turn of the loop go together
        while self._queue:
            try:
                addresses = await self._routable()
            except Exception as exc:
                queued, self._queue = self._queue, deque()
                for entry in queued:
                    if not entry.outcome.done():
                        entry.outcome.set_exception(exc)
                return
            batches = self._take(addresses)
            if not batches:
                return  # what is queued waits for answers on other streams, which wake us again
            for address, entries in batches:
                stream = self._streams.get(address)
                if stream is None:
                    stream = self._streams[address] = _Stream(self, address)
                stream.send(entries)
            for address, stream in list(self._streams.items()):
                if address not in addresses and not stream.pending:
                    stream.close()

    async def _routable(self) -> list[str]:
        addresses = await self._client.addresses()
        if not addresses:
            raise Unavailable("no live logic instance")
        now = time.monotonic()
        self._cooling = {a: until for a, until in self._cooling.items() if until > now}
        return [a for a in addresses if a not in self._cooling] or addresses

    def _take(self, addresses: list[str]) -> list[tuple[str, list[_Queued]]]:
        """The queue as batches per instance, in queue order; a sender still busy on another stream
        waits, with its later sends."""
        batches: list[tuple[str, list[_Queued]]] = []
        open_batch: dict[str, list[_Queued]] = {}
        waiting: deque[_Queued] = deque()
        blocked: set[int] = set()
        busy = self._busy
        for entry in self._queue:
            if entry.outcome.done():  # its connection gave up before it was sent
                continue
            target = owner(addresses, entry.source)
            held = busy.get(entry.source)
            if entry.source in blocked or (held is not None and held[0] != target):
                blocked.add(entry.source)
                waiting.append(entry)
                continue
            entries = open_batch.get(target)
            if entries is None or len(entries) >= self._max_batch:
                entries = open_batch[target] = []
                batches.append((target, entries))
            entries.append(entry)
            busy[entry.source] = (target, (held[1] if held is not None else 0) + 1)
        self._queue = waiting
        return batches

    def _settled(self, entries: list[_Queued]) -> None:
        busy = self._busy
        for entry in entries:
            address, count = busy[entry.source]
            if count > 1:
                busy[entry.source] = (address, count - 1)
            else:
                del busy[entry.source]
        self._wake()

    def _ended(self, stream: _Stream, broken: bool) -> None:
        if self._streams.get(stream.address) is stream:
            del self._streams[stream.address]
        if broken:
            self._cooling[stream.address] = time.monotonic() + COOLDOWN_S


class _Stream:
    """One SendStream to one logic instance: batches written in order, answers matched by batch id."""

    def __init__(self, owner: SendStreams, address: str) -> None:
        self._owner = owner
        self.address = address
        self._outbox: asyncio.Queue[logic_pb2.SendManyReq | None] = asyncio.Queue()
        #: Unanswered batches by id: their entries, when they were sent, and their deadline timer.
        self.pending: dict[int, tuple[list[_Queued], float, asyncio.TimerHandle]] = {}
        self._ids = itertools.count(1)
        self._call = owner._client.stream(METHOD, address, self._requests())
        self._reader = asyncio.create_task(self._read(), name=f"fishchat-send-stream-{address}")

    def send(self, entries: list[_Queued]) -> None:
        batch = next(self._ids)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self._owner._timeout_s, self._expire, batch)
        self.pending[batch] = (entries, time.perf_counter(), timer)
        self._outbox.put_nowait(logic_pb2.SendManyReq(sends=[e.item for e in entries], batch=batch))

    def close(self) -> None:
        """No more batches: the stream ends once logic has answered the ones it has."""
        self._outbox.put_nowait(None)

    async def _requests(self) -> AsyncIterator[logic_pb2.SendManyReq]:
        while (request := await self._outbox.get()) is not None:
            yield request

    async def _read(self) -> None:
        error: Exception | None = None
        try:
            async for response in self._call:
                self._answer(response)
        except grpc.aio.AioRpcError as exc:
            error = Unavailable(f"logic at {self.address}: {exc.code().name} {exc.details() or ''}".rstrip())
        except asyncio.CancelledError:
            error = Unavailable(f"the send stream to logic at {self.address} was cancelled")
            raise
        finally:
            if error is None and self.pending:
                error = Unavailable(f"logic at {self.address} ended the send stream with batches unanswered")
            for batch in list(self.pending):
                self._settle(batch, error or Unavailable("unreachable"))
            self._owner._ended(self, broken=error is not None)
            if error is not None:
                log.warning("send stream to logic at %s ended: %s", self.address, error)

    def _answer(self, response: logic_pb2.SendManyRes) -> None:
        if response.errCode:
            self._settle(response.batch, ServerError(f"logic refused a batch: {response.errStr}"), "refused")
        elif response.batch in self.pending and len(response.results) != len(self.pending[response.batch][0]):
            self._settle(
                response.batch, ServerError("logic answered a batch with the wrong number of results")
            )
        else:
            self._settle(response.batch, response)

    def _expire(self, batch: int) -> None:
        self._settle(
            batch, Unavailable(f"logic at {self.address} did not answer within {self._owner._timeout_s}s")
        )

    def _settle(
        self, batch: int, answer: logic_pb2.SendManyRes | Exception, outcome: str | None = None
    ) -> None:
        found = self.pending.pop(batch, None)
        if found is None:  # expired before its answer came
            return
        entries, sent_at, timer = found
        timer.cancel()
        if isinstance(answer, Exception):
            for entry in entries:
                if not entry.outcome.done():
                    entry.outcome.set_exception(answer)
        else:
            for entry, result in zip(entries, answer.results, strict=True):
                if not entry.outcome.done():
                    entry.outcome.set_result(result)
        self._owner._client.observe(
            METHOD,
            outcome or ("ok" if not isinstance(answer, Exception) else "unavailable"),
            time.perf_counter() - sent_at,
        )
        self._owner._settled(entries)
