"""In-process `Notifier`: access servers in the same process attach a callback under their node id.

It stands in for the gRPC `SendNotify` call of production: a notice for a node without a callback
(the node stopped) is reported as not delivered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fishchat.domain.records import AccessNode, Notice

NoticeHandler = Callable[[Notice], Awaitable[None]]


class InProcessNotifier:
    def __init__(self) -> None:
        self._handlers: dict[str, NoticeHandler] = {}

    def attach(self, node_id: str, handler: NoticeHandler) -> None:
        """Route notices for `node_id` to `handler` (an access server calls this at start)."""
        if not node_id:
            raise ValueError("node_id must not be empty")
        self._handlers[node_id] = handler

    def detach(self, node_id: str) -> None:
        self._handlers.pop(node_id, None)

    async def notify(self, node: AccessNode, notice: Notice) -> bool:
        handler = self._handlers.get(node.node_id)
        if handler is None:
            return False
        await handler(notice)
        return True

    async def notify_many(self, node: AccessNode, notices: Sequence[Notice]) -> bool:
        handler = self._handlers.get(node.node_id)
        if handler is None:
            return False
        for notice in notices:
            await handler(notice)
        return True
