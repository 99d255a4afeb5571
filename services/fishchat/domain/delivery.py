"""Delivery (the msg-job): from the message log into users' timelines, then notify, then commit.

The order is the fix for the original's "notify before persist" race: a notice is sent only for rows
that exist, so a sync it triggers always finds them, and offline users find everything at their next
sync. The log position is committed last, so a crash anywhere replays the batch; storing is
idempotent by (uid, version), so a replay changes nothing but may repeat a notice, which is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from fishchat.domain.messaging import completion_for
from fishchat.domain.ports import IdempotencyStore, MessageLogConsumer, MessageStore
from fishchat.domain.records import Completion, Notice
from fishchat.domain.settings import ChatSettings

log = logging.getLogger(__name__)


class NoticeSink(Protocol):
    """Where delivery sends "users have messages up to v": `PresenceService` in one process, notify
    over gRPC (`fishchat.rpc.notify.RemoteNotices`, one call per batch) in msg-job. Best effort: it
    returns how many access nodes took the notices."""

    async def notify_many(self, notices: Sequence[Notice]) -> int: ...


class MessageDelivery:
    def __init__(
        self,
        consumer: MessageLogConsumer,
        messages: MessageStore,
        idempotency: IdempotencyStore,
        presence: NoticeSink,
        settings: ChatSettings,
        *,
        batch_size: int = 500,
        poll_timeout_ms: int = 500,
        max_backoff_s: float = 5.0,
    ) -> None:
        if batch_size <= 0 or poll_timeout_ms < 0:
            raise ValueError("batch_size must be positive and poll_timeout_ms non-negative")
        self._consumer = consumer
        self._messages = messages
        self._idempotency = idempotency
        self._presence = presence
        self._settings = settings
        self._batch_size = batch_size
        self._poll_timeout_ms = poll_timeout_ms
        self._max_backoff_s = max_backoff_s

    async def deliver_once(self, timeout_ms: int | None = None) -> int:
        """Fetch one batch, store it, complete idempotency keys, notify, commit; returns the batch size.

        On an error nothing is committed and the exception propagates; the caller rewinds and retries.
        """
        records = await self._consumer.fetch(
            self._batch_size, self._poll_timeout_ms if timeout_ms is None else timeout_ms
        )
        if not records:
            return 0
        completions: list[Completion] = [c for c in map(completion_for, records) if c is not None]
        if completions:
            # Both at once (one round trip, or one shared commit embedded): the records are durable in
            # the log, so a key marked done before its row is stored is as safe as the sender marking
            # it right after the append, and a failure of either replays the batch.
            await asyncio.gather(
                self._messages.put(records),
                self._idempotency.complete(completions, self._settings.idempotency_ttl_s * 1000),
            )
        else:
            await self._messages.put(records)
        newest: dict[int, int] = {}
        for record in records:
            newest[record.uid] = max(record.version, newest.get(record.uid, 0))
        try:
            await self._presence.notify_many([Notice(uid, version) for uid, version in newest.items()])
        except Exception as exc:
            # Notices are best effort (the rows are stored; clients also sync on a timer), so a
            # presence or notify outage must not hold back the log.
            log.warning("notifying %d users failed: %r", len(newest), exc)
        await self._consumer.commit()
        return len(records)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Deliver until cancelled or `stop` is set, backing off (and replaying from the last commit)
        after failures. Once `stop` is set the batch under way finishes (stored, notified, committed)
        and `run` returns; cancelling instead leaves that batch uncommitted, to be delivered again."""
        backoff = 0.05
        while stop is None or not stop.is_set():
            try:
                await self.deliver_once()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery failed; replaying from the last commit in %.2fs", backoff)
                try:
                    await self._consumer.rewind()
                except Exception:
                    log.exception("rewinding the message log failed")
                if stop is None:
                    await asyncio.sleep(backoff)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
