"""Presence: which access node holds which device of a user, and fanning a notice out to those nodes.

A user may be connected from several devices at once (the original kept one session per uid and
let the last login win). Each device has its own route with a TTL that pings refresh. A stale
connection whose device has logged in on another node is told so at its next ping (`NotLoggedIn`),
so the access server can close it instead of stealing the route back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from fishchat.domain import validation
from fishchat.domain.errors import NotLoggedIn, TooManyDevices
from fishchat.domain.ports import Notifier, Presence
from fishchat.domain.records import AccessNode, Notice, Route
from fishchat.domain.settings import ChatSettings

log = logging.getLogger(__name__)


class PresenceService:
    def __init__(self, presence: Presence, notifier: Notifier, settings: ChatSettings) -> None:
        self._presence = presence
        self._notifier = notifier
        self._settings = settings

    @property
    def _ttl_ms(self) -> int:
        return self._settings.route_ttl_s * 1000

    def _check(self, uid: int, device: str, node: AccessNode) -> Route:
        uid = validation.check_id(uid, "UID")
        device = validation.check_device(device, self._settings.device_max_chars)
        if not node.node_id or not node.address:
            raise ValueError("an access node needs an id and an address")
        return Route(uid=uid, device=device, node_id=node.node_id, address=node.address)

    async def connect(self, uid: int, device: str, node: AccessNode) -> Route:
        """Route the device to `node` (replacing a route to another node: the newest login of a device
        wins). `TooManyDevices` when the user has `max_devices` other devices online."""
        route = self._check(uid, device, node)
        limit = self._settings.max_devices
        if not await self._presence.set_route(route, self._ttl_ms, limit):
            raise TooManyDevices(
                f"too many devices: uid {route.uid} has {limit} logged in, the most allowed: log one out "
                f"(or wait until a lost one times out, {self._settings.route_ttl_s} s) and retry"
            )
        return route

    async def ping(self, uid: int, device: str, node: AccessNode) -> None:
        """Refresh the route; re-create it if presence lost it (e.g. a Redis restart)."""
        route = self._check(uid, device, node)
        current = await self._presence.refresh(route.uid, route.device, route.node_id, self._ttl_ms)
        if current is None:
            # The session was admitted at login; presence lost its route (a restart): no limit here.
            await self._presence.set_route(route, self._ttl_ms)
        elif current.node_id != route.node_id:
            raise NotLoggedIn(f"device {route.device!r} is now logged in on another access server")

    async def disconnect(self, uid: int, device: str, node_id: str) -> bool:
        """Drop the route if it still points at `node_id` (a newer login elsewhere is kept)."""
        return await self._presence.remove_route(uid, device, node_id)

    async def routes(self, uid: int) -> list[Route]:
        return await self._presence.routes(uid)

    async def is_online(self, uid: int) -> bool:
        return bool(await self._presence.routes(uid))

    async def notify_many(self, notices: Sequence[Notice]) -> int:
        """Tell every access node holding a device of each notice's user: one presence read for all
        the users, then one call per node with all of that node's notices. Returns how many
        (user, node) pairs were reached.

        Best effort: a node that is gone or fails is logged and skipped, because the messages are
        already stored and the client finds them at its next sync. A failure to read presence itself
        is raised.
        """
        if not notices:
            return 0
        routes = await self._presence.routes_many([notice.uid for notice in notices])
        nodes: dict[str, AccessNode] = {}
        by_node: dict[str, list[Notice]] = {}
        for notice in notices:
            for node_id in dict.fromkeys(route.node_id for route in routes.get(notice.uid, ())):
                by_node.setdefault(node_id, []).append(notice)
            nodes.update((route.node_id, route.node) for route in routes.get(notice.uid, ()))
        if not by_node:
            return 0
        outcomes = await asyncio.gather(
            *(self._notifier.notify_many(nodes[node_id], told) for node_id, told in by_node.items()),
            return_exceptions=True,
        )
        delivered = 0
        for (node_id, told), outcome in zip(by_node.items(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                log.warning("notifying %d users at node %s failed: %r", len(told), node_id, outcome)
            elif outcome:
                delivered += len(told)
        return delivered

    async def notify(self, notice: Notice) -> int:
        """`notify_many` for one notice: how many access nodes took it."""
        return await self.notify_many([notice])
