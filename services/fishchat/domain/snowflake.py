"""Snowflake ids: 41 bits of milliseconds, 10 bits of machine id, 12 bits of sequence.

The layout is the original idgen's (`GetUUID`), counted from a FishChat epoch (2024-01-01 UTC)
rather than the Unix epoch, so the 41-bit time field lasts until about 2093 and every id is a
positive int64. The generator never waits: if the clock steps back, or 4096 ids are taken within one
millisecond, it keeps counting on its own last millisecond, so ids from one generator are strictly
increasing and unique. Uniqueness across processes comes from distinct machine ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from fishchat.domain.clock import Clock

FISHCHAT_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
TIMESTAMP_BITS = 41
MACHINE_BITS = 10
SEQUENCE_BITS = 12
MAX_MACHINE_ID = (1 << MACHINE_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_TIMESTAMP = (1 << TIMESTAMP_BITS) - 1


@dataclass(frozen=True, slots=True)
class SnowflakeParts:
    timestamp_ms: int  # Unix milliseconds
    machine_id: int
    sequence: int


class SnowflakeSequence:
    """Id generator state for one machine id; `next_id(now_ms)` is pure apart from this state."""

    def __init__(self, machine_id: int, epoch_ms: int = FISHCHAT_EPOCH_MS) -> None:
        if not 0 <= machine_id <= MAX_MACHINE_ID:
            raise ValueError(f"machine id must be in 0..{MAX_MACHINE_ID}, got {machine_id}")
        self.machine_id = machine_id
        self._epoch_ms = epoch_ms
        self._last_ms = -1
        self._sequence = 0

    def next_id(self, now_ms: int) -> int:
        elapsed = now_ms - self._epoch_ms
        if elapsed < 0:
            raise ValueError(f"clock {now_ms} is before the snowflake epoch {self._epoch_ms}")
        if elapsed > self._last_ms:
            self._last_ms, self._sequence = elapsed, 0
        elif self._sequence < MAX_SEQUENCE:
            self._sequence += 1
        else:
            # Sequence exhausted (or the clock went back): borrow the next millisecond.
            self._last_ms, self._sequence = self._last_ms + 1, 0
        if self._last_ms > MAX_TIMESTAMP:
            raise ValueError("snowflake time field exhausted")
        timestamp = self._last_ms << (MACHINE_BITS + SEQUENCE_BITS)
        return timestamp | (self.machine_id << SEQUENCE_BITS) | self._sequence


def split_id(snowflake_id: int, epoch_ms: int = FISHCHAT_EPOCH_MS) -> SnowflakeParts:
    return SnowflakeParts(
        timestamp_ms=(snowflake_id >> (MACHINE_BITS + SEQUENCE_BITS)) + epoch_ms,
        machine_id=(snowflake_id >> SEQUENCE_BITS) & MAX_MACHINE_ID,
        sequence=snowflake_id & MAX_SEQUENCE,
    )


class SnowflakeIdGenerator:
    """An `IdGenerator` for one process: a `SnowflakeSequence` driven by a clock.

    The machine id must be unique among live processes (the embedded backend takes a fresh one from a
    persistent counter at every start; production leases one from etcd).
    """

    def __init__(self, machine_id: int, clock: Clock, epoch_ms: int = FISHCHAT_EPOCH_MS) -> None:
        self._sequence = SnowflakeSequence(machine_id, epoch_ms)
        self._clock = clock

    @property
    def machine_id(self) -> int:
        return self._sequence.machine_id

    async def next_id(self) -> int:
        return self._sequence.next_id(self._clock.now_ms())
