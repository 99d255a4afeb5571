"""Snowflake ids whose 10-bit machine id is claimed in etcd, exclusively and only while the process lives.

At start the generator advances the counter `<prefix>counter` by one transaction (the original's
`/seqs/snowflake-uuid` counter) and tries machine ids from that value on (mod 1024), claiming the
first free one by creating `<prefix>machines/<id>` on the process's lease (`EtcdSession`) with a
transaction that succeeds only if the key does not exist. So two live processes never share a machine
id (the lease holds the claim), and a restarted process takes a different id than its previous life
even if the clock stepped back in between (the counter rotates), which is what keeps its ids unique.

The claim is only as good as the lease: if the lease can no longer be confirmed alive, another
process may have taken the id, so `next_id` refuses (`IdGeneratorUnavailable`) until the session has
a lease again and the generator has claimed a fresh id under it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

import aetcd

from fishchat.domain.clock import Clock, SystemClock
from fishchat.domain.snowflake import MAX_MACHINE_ID, SnowflakeSequence
from fishchat.production.etcd.client import EtcdSession

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/fishchat/snowflake/"
MACHINE_IDS = MAX_MACHINE_ID + 1
MAX_COUNTER_ROUNDS = 50


class IdGeneratorUnavailable(RuntimeError):
    """The machine id claim is not (or no longer) known to be held; ids cannot be issued safely."""


class EtcdIdGenerator:
    def __init__(
        self, session: EtcdSession, prefix: str = DEFAULT_PREFIX, clock: Clock | None = None
    ) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"the snowflake prefix must end with '/', got {prefix!r}")
        self._session = session
        self._client: aetcd.Client = session.client
        self._prefix = prefix.encode()
        self._clock = clock or SystemClock()
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}".encode()
        self._sequence: SnowflakeSequence | None = None
        self._claim_lease = 0

    @classmethod
    async def open(
        cls, session: EtcdSession, prefix: str = DEFAULT_PREFIX, clock: Clock | None = None
    ) -> EtcdIdGenerator:
        generator = cls(session, prefix, clock)
        await generator._claim()
        session.add_listener(generator._on_new_lease)
        return generator

    @property
    def machine_id(self) -> int:
        if self._sequence is None:
            raise IdGeneratorUnavailable("no machine id is claimed")
        return self._sequence.machine_id

    async def next_id(self) -> int:
        sequence = self._sequence
        if sequence is None or self._claim_lease != self._session.lease_id or not self._session.valid():
            raise IdGeneratorUnavailable("the snowflake machine id lease is not confirmed alive")
        return sequence.next_id(self._clock.now_ms())

    async def close(self) -> None:
        """Give the machine id back (only if the claim is still ours)."""
        self._session.remove_listener(self._on_new_lease)
        sequence, self._sequence = self._sequence, None
        if sequence is None:
            return
        tx = self._client.transactions
        key = self._machine_key(sequence.machine_id)
        try:
            await self._client.transaction([tx.value(key) == self._owner], [tx.delete(key)], [])
        except aetcd.ClientError as exc:
            log.warning("could not release snowflake machine id %d: %s", sequence.machine_id, exc)

    def _machine_key(self, machine_id: int) -> bytes:
        return self._prefix + b"machines/" + str(machine_id).encode()

    async def _on_new_lease(self, lease_id: int) -> None:
        self._sequence = None
        await self._claim()

    async def _claim(self) -> None:
        start = await self._advance_counter() % MACHINE_IDS
        taken = {kv.key for kv in await self._client.get_prefix(self._prefix + b"machines/", keys_only=True)}
        tx = self._client.transactions
        lease_id = self._session.lease_id
        for offset in range(MACHINE_IDS):
            machine_id = (start + offset) % MACHINE_IDS
            key = self._machine_key(machine_id)
            if key in taken:
                continue
            claimed, _ = await self._client.transaction(
                [tx.create(key) == 0], [tx.put(key, self._owner, lease=lease_id)], []
            )
            if claimed:
                self._sequence = SnowflakeSequence(machine_id)
                self._claim_lease = lease_id
                log.info("claimed snowflake machine id %d", machine_id)
                return
        raise IdGeneratorUnavailable(f"all {MACHINE_IDS} snowflake machine ids are held by live processes")

    async def _advance_counter(self) -> int:
        """Add one to the start counter atomically and return the new value."""
        key = self._prefix + b"counter"
        tx = self._client.transactions
        current = await self._client.get(key)
        for _ in range(MAX_COUNTER_ROUNDS):
            value = int(current.value) if current is not None else 0
            guard = tx.value(key) == current.value if current is not None else tx.version(key) == 0
            done, responses = await self._client.transaction(
                [guard], [tx.put(key, str(value + 1).encode())], [tx.get(key)]
            )
            if done:
                return value + 1
            current = responses[0][0][1] if responses and responses[0] else None
        raise IdGeneratorUnavailable("could not advance the snowflake counter (contention)")
