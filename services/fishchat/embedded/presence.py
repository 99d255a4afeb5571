"""In-process `Presence`: routes held in memory with expiry times, as Redis keys with a TTL would be.

Presence is soft state in every profile: losing it (a restart) only means devices re-register at
their next ping or login. Expired routes are dropped when read and swept now and then.
"""

from __future__ import annotations

from collections.abc import Sequence

from fishchat.domain.clock import Clock
from fishchat.domain.records import Route
from fishchat.embedded.sweeper import Sweeper


class InMemoryPresence:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._routes: dict[int, dict[str, tuple[Route, int]]] = {}
        self._sweeper = Sweeper(clock)

    def _live(self, uid: int) -> dict[str, tuple[Route, int]]:
        devices = self._routes.get(uid)
        if devices is None:
            return {}
        now = self._clock.now_ms()
        for device in [d for d, (_, expires) in devices.items() if expires <= now]:
            del devices[device]
        if not devices:
            del self._routes[uid]
        return devices

    def _sweep(self) -> None:
        if self._sweeper.due():
            for uid in list(self._routes):
                self._live(uid)

    async def set_route(self, route: Route, ttl_ms: int, max_devices: int = 0) -> bool:
        self._sweep()
        devices = self._live(route.uid)
        if 0 < max_devices <= len(devices) and route.device not in devices:
            return False
        self._routes[route.uid] = devices
        devices[route.device] = (route, self._clock.now_ms() + ttl_ms)
        return True

    async def refresh(self, uid: int, device: str, node_id: str, ttl_ms: int) -> Route | None:
        entry = self._live(uid).get(device)
        if entry is None:
            return None
        route = entry[0]
        if route.node_id == node_id:
            self._routes[uid][device] = (route, self._clock.now_ms() + ttl_ms)
        return route

    async def remove_route(self, uid: int, device: str, node_id: str) -> bool:
        devices = self._live(uid)
        entry = devices.get(device)
        if entry is None or entry[0].node_id != node_id:
            return False
        del devices[device]
        if not devices:
            del self._routes[uid]
        return True

    async def routes(self, uid: int) -> list[Route]:
        return [route for route, _ in self._live(uid).values()]

    async def routes_many(self, uids: Sequence[int]) -> dict[int, list[Route]]:
        return {uid: [route for route, _ in self._live(uid).values()] for uid in uids}
