"""The client's sync cursor: which messages it already has, which are new, and whether to sync again.

A FishChat timeline is a per-user sequence of versions; the server returns versions greater than the
cursor the client sends (exclusive), ascending, a page at a time with `more` set while more follow.
This class applies pages to the cursor and hands back exactly the entries not seen before, so a page
that repeats entries (an original server re-sends the boundary message; a retried sync after a lost
reply) never delivers a message twice, and a page that goes backwards is refused.

It also remembers the newest version a notify announced. A page can legitimately stop short of it
(the server holds back at a young version gap while a send is still in flight), so `behind` tells the
client to try again a little later.

Entries with version 0 come from an original server, which has no per-entry versions; they are passed
through and the page's `currentID` becomes the cursor, as the original client did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fishchat.client.errors import ProtocolViolation
from fishchat.proto.gen.external import access_pb2


@dataclass(frozen=True, slots=True)
class AppliedPage:
    """What one sync reply changed: the entries to deliver and whether to ask for the next page."""

    new: tuple[access_pb2.offsetMsg, ...]
    duplicates: int
    more: bool


class SyncCursor:
    """The version up to which this client has received its timeline."""

    def __init__(self, version: int = 0) -> None:
        if version < 0:
            raise ValueError(f"a cursor cannot be negative, not {version}")
        self.version = version
        self.latest_known = version

    @property
    def behind(self) -> bool:
        """A notify announced a version this cursor has not reached."""
        return self.latest_known > self.version

    def note_notify(self, newest: int) -> None:
        """A notify said the timeline now reaches `newest` (FishChat servers send the newest version)."""
        self.latest_known = max(self.latest_known, newest)

    def apply(self, entries: Sequence[access_pb2.offsetMsg], current_id: int, more: bool) -> AppliedPage:
        """Advance over one sync reply and return the entries that are new to this client.

        Entries at or below the cursor are duplicates and are dropped; an entry at or below one
        already taken from the same page means the server broke the ordering (ProtocolViolation).
        """
        new: list[access_pb2.offsetMsg] = []
        duplicates = 0
        start = cursor = self.version
        unversioned = False
        for entry in entries:
            if entry.version == 0:
                unversioned = True
                new.append(entry)
            elif entry.version <= start:
                duplicates += 1
            elif entry.version <= cursor:
                raise ProtocolViolation(f"sync page goes backwards: version {entry.version} after {cursor}")
            else:
                new.append(entry)
                cursor = entry.version
        if unversioned:
            # An original server: its page cursor is the only position there is.
            cursor = max(current_id, 0)
        elif not entries and more and current_id > start:
            # A page of entries this client did not ask for (receipts): the server moved past them.
            cursor = current_id
        elif not entries and not more and current_id >= 0:
            # An empty final page states where the timeline ends. Below the cursor, the server healed
            # a cursor past its newest version (its data was reset): follow it, or new messages would
            # be taken for duplicates. Above it, an original server reports its total.
            cursor = current_id
            if current_id < start:
                self.latest_known = current_id
        self.version = cursor
        self.latest_known = max(self.latest_known, cursor)
        return AppliedPage(new=tuple(new), duplicates=duplicates, more=more)
