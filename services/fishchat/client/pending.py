"""Matching replies to the requests waiting for them on one connection.

The protocol has no request ids. A reply carries its request's `cmd`, and a send's ack echoes the
request's `msgID`, so:

- sends are matched by `(cmd, msgID)`, which stays right even if a server acks sends out of order;
- everything else (login, ping, sync, logout) is matched first-in first-out per cmd, which is right
  because a connection answers those in order;
- an ack with an empty msgID (an original server does not echo it) falls back to FIFO per cmd;
- the generic error frame `Error{cmd:90001}` names no command, so it fails the oldest request.

A request whose caller gave up (timed out) stays queued until its reply or the connection's end, so
a late reply is consumed by it and cannot be mistaken for the next request's. Keyed entries are the
exception: `forget` drops them, since a late ack still names its own msgID.

No I/O here: entries hold futures that the connection's reader resolves.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass

from google.protobuf.message import Message


@dataclass(slots=True)
class _Entry:
    seq: int
    cmd: int
    key: str | None
    future: asyncio.Future[Message]


class PendingRequests:
    """Outstanding requests of one connection, in the order they were sent."""

    def __init__(self) -> None:
        self._seq = itertools.count()
        self._all: dict[int, _Entry] = {}  # insertion order is send order
        self._by_cmd: dict[int, dict[int, _Entry]] = {}
        self._by_key: dict[tuple[int, str], deque[_Entry]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def add(self, cmd: int, key: str | None = None) -> asyncio.Future[Message]:
        """Register a request about to be sent; its future gets the reply (or an exception)."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        entry = _Entry(next(self._seq), cmd, key or None, future)
        self._all[entry.seq] = entry
        self._by_cmd.setdefault(cmd, {})[entry.seq] = entry
        if entry.key is not None:
            self._by_key.setdefault((cmd, entry.key), deque()).append(entry)
        return future

    def _remove(self, entry: _Entry) -> None:
        del self._all[entry.seq]
        same_cmd = self._by_cmd[entry.cmd]
        del same_cmd[entry.seq]
        if not same_cmd:
            del self._by_cmd[entry.cmd]
        if entry.key is not None:
            same_key = self._by_key[(entry.cmd, entry.key)]
            same_key.remove(entry)
            if not same_key:
                del self._by_key[(entry.cmd, entry.key)]

    def _find(self, cmd: int, key: str | None) -> _Entry | None:
        if key:
            same_key = self._by_key.get((cmd, key))
            return same_key[0] if same_key else None
        same_cmd = self._by_cmd.get(cmd)
        return next(iter(same_cmd.values())) if same_cmd else None

    def resolve(self, cmd: int, reply: Message, key: str | None = None) -> bool:
        """Hand `reply` to the request it answers; False if no request is waiting for it.

        `key` is the echoed msgID of a send ack (empty or None: match the oldest request of `cmd`).
        """
        entry = self._find(cmd, key)
        if entry is None:
            return False
        self._remove(entry)
        if not entry.future.done():
            entry.future.set_result(reply)
        return True

    def fail_oldest(self, error: BaseException) -> bool:
        """Fail the oldest outstanding request (for a reply that names no command); False if none."""
        if not self._all:
            return False
        entry = next(iter(self._all.values()))
        self._remove(entry)
        if not entry.future.done():
            entry.future.set_exception(error)
        return True

    def fail_all(self, error: BaseException) -> int:
        """Fail every outstanding request (the connection is gone); returns how many were waiting."""
        entries = list(self._all.values())
        self._all.clear()
        self._by_cmd.clear()
        self._by_key.clear()
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(error)
                # The caller may have given up already; don't warn about an unretrieved exception.
                entry.future.exception()
        return len(entries)

    def forget(self, future: asyncio.Future[Message]) -> bool:
        """Drop a keyed request whose caller gave up; FIFO-matched ones stay (see the module doc)."""
        for entry in self._all.values():
            if entry.future is future:
                if entry.key is None:
                    return False
                self._remove(entry)
                return True
        return False

    def waiting(self, cmd: int) -> int:
        """How many requests of `cmd` are outstanding."""
        return len(self._by_cmd.get(cmd, ()))
