"""What each server role needs from the chat core, as small async interfaces.

In the embedded profile one `ChatService` (plus the in-process notifier and registry) satisfies all
of them; in the production profile the access server would get gRPC clients of logic, register and
manager behind `AccessCore`, the gateway an etcd-backed `GatewayCore`, and so on. The roles import
nothing else from the core than these interfaces and the domain's records and errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from fishchat.domain.ordering import UNORDERED, SendTicket
from fishchat.domain.records import (
    AccessNode,
    Group,
    IssuedToken,
    MsgType,
    Notice,
    SendResult,
    ServiceInstance,
    Session,
    SyncPage,
    TokenInfo,
    User,
)

NoticeHandler = Callable[[Notice], Awaitable[None]]


class AccessCore(Protocol):
    """Sessions, sends and sync: what an access server asks of logic, register and manager."""

    async def login(self, uid: int, token: str, device: str, node: AccessNode) -> Session: ...

    async def ping(self, uid: int, device: str, node: AccessNode) -> None: ...

    async def disconnect(self, uid: int, device: str, node_id: str) -> None: ...

    async def logout(self, uid: int, device: str, node_id: str, token: str | None = None) -> None: ...

    async def send_p2p(
        self, source_uid: int, target_uid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        """Accept a send durably. Sends of one connection overlap; their tickets (one `SendSequence`
        per connection, taken in arrival order) keep them in that order in every timeline: an
        implementation queues the send with `ticket.place(...)` with whatever accepts sends in the
        order they were queued, and calls `ticket.release()` if it fails before that."""
        ...

    async def send_group(
        self, source_uid: int, gid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult: ...

    async def sync(
        self, uid: int, cursor: int, *, max_count: int | None = None, byte_budget: int | None = None
    ) -> SyncPage: ...

    async def mark(
        self,
        uid: int,
        kind: MsgType,
        peer_uid: int,
        gid: int,
        version: int,
        *,
        ticket: SendTicket = UNORDERED,
    ) -> SendResult:
        """A receipt (`MessagingService.mark`): `uid` has received / read a conversation up to `version`."""
        ...


class NoticeSource(Protocol):
    """Where "user has messages up to v" notices for one access node come from (notify -> access).

    Embedded: `InProcessNotifier`; production: the access server's gRPC `SendNotify` endpoint.
    """

    def attach(self, node_id: str, handler: NoticeHandler) -> None: ...

    def detach(self, node_id: str) -> None: ...


class Announcer(Protocol):
    """The registry as an access server uses it: announce itself with its client address and load."""

    async def register(self, instance: ServiceInstance) -> None: ...

    async def set_load(self, role: str, instance_id: str, load: int) -> None: ...

    async def deregister(self, role: str, instance_id: str) -> None: ...


class GatewayCore(Protocol):
    """The gateway's one question: which access server should a new client use?"""

    async def pick_access_server(self) -> ServiceInstance: ...


class ApiCore(Protocol):
    """Accounts, tokens and groups: what the HTTP API asks of register."""

    async def register(self, uid: int, name: str, password: str) -> User: ...

    async def auth(self, uid: int, password: str, address: str = "") -> IssuedToken: ...

    async def verify_token(self, token: str, uid: int | None = None) -> TokenInfo: ...

    async def sign_out(self, uid: int, token: str, *, everywhere: bool = False) -> int: ...

    async def change_password(self, uid: int, password: str, new_password: str) -> IssuedToken: ...

    async def create_group(self, owner_uid: int, name: str) -> Group: ...

    async def join_group(self, uid: int, gid: int) -> bool: ...

    async def quit_group(self, uid: int, gid: int) -> bool: ...

    async def members(self, gid: int) -> tuple[int, ...]: ...
