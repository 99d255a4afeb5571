"""register over gRPC: the servicer (`RegisterServicer`) and what other roles use of it.

register owns accounts and groups (MariaDB), tokens and presence routes (Redis). `RegisterCore`
composes the domain's `AccountService`, `GroupService` and `PresenceService` over those stores,
exactly as the embedded `ChatService` does, and is both the HTTP API's `ApiCore` and what
`RegisterServicer` answers with. Every request field is checked before any work (ids positive,
texts bounded and printable) and refused with its errCode; a refusal never crashes the servicer.

The client side, used by logic:

- `RemoteSessions`: login (token check and route), ping, logout / disconnect of a device's route;
- `RemoteUserDirectory` and `RemoteGroupDirectory`: the `UserDirectory` / `GroupDirectory` that
  `MessagingService` reads to check a send's target and a group's membership. Only names, ids and
  times cross the wire, never password hashes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fishchat.domain import validation
from fishchat.domain.accounts import AccountService
from fishchat.domain.clock import Clock
from fishchat.domain.errors import InvalidField, NoSuchGroup, NoSuchUser
from fishchat.domain.groups import GroupService
from fishchat.domain.ports import AccountStore, GroupStore, IdGenerator, TokenStore
from fishchat.domain.presence import PresenceService
from fishchat.domain.ratelimit import InProcessRateLimiter, RateLimits
from fishchat.domain.records import AccessNode, Group, Route, TokenInfo, User
from fishchat.domain.service import AccountsAndGroups, check_login
from fishchat.domain.settings import ChatSettings
from fishchat.proto.gen.rpc import register_pb2, register_pb2_grpc
from fishchat.rpc.client import BatchedCalls, RoleClient
from fishchat.rpc.server import RpcServer, answer_each

SERVICE = "fishchat.rpc.RegisterServerRPC"
ROLE = "register"
#: Access addresses (`host:port`) and node ids are short; longer values are refused.
MAX_ADDRESS_CHARS = 256
#: Issued tokens are 43 characters; the protocol allows 256.
MAX_TOKEN_CHARS = 256
#: Pings per PingMany (an access server's connections pinging at once), and how many of one call
#: refresh presence at a time (each is a round trip to the presence store).
MAX_PINGS = 1024
PING_CONCURRENCY = 32
#: PingMany calls one process has under way at once.
PINGS_IN_FLIGHT = 2


def check_text(value: str, field: str, max_chars: int, *, required: bool = True) -> str:
    """A printable text field of at most `max_chars` characters (empty only when not `required`)."""
    if not value:
        if required:
            raise InvalidField(f"{field} is required")
        return value
    if len(value) > max_chars or not value.isprintable():
        raise InvalidField(f"{field} must be at most {max_chars} printable characters")
    return value


def check_node(node_id: str, address: str) -> AccessNode:
    """The access node a session request names: its id and gRPC address, both required."""
    return AccessNode(
        node_id=check_text(node_id, "nodeID", MAX_ADDRESS_CHARS),
        address=check_text(address, "accessAddr", MAX_ADDRESS_CHARS),
    )


async def ping_each(
    pings: Sequence[Any], ping: Callable[[int, str, AccessNode], Awaitable[None]], concurrency: int
) -> list[tuple[int, str]]:
    """A PingMany (logic's and register's): each ping's (errCode, errStr), in order, at most
    `concurrency` at once; more than MAX_PINGS is refused whole, a bad node alone."""
    if len(pings) > MAX_PINGS:
        raise InvalidField(f"at most {MAX_PINGS} pings per request, got {len(pings)}")

    async def one(item: Any) -> None:
        await ping(item.UID, item.device, check_node(item.nodeID, item.accessAddr))

    return await answer_each(pings, one, concurrency)


@dataclass(frozen=True, slots=True)
class Login:
    """A login register accepted: the token's record and the route of another node it replaced."""

    uid: int
    device: str
    token: TokenInfo
    replaced: Route | None


class RegisterCore(AccountsAndGroups):
    """Accounts, tokens, groups and presence: the domain services over register's own stores."""

    def __init__(
        self,
        accounts: AccountStore,
        tokens: TokenStore,
        groups: GroupStore,
        presence: PresenceService,
        ids: IdGenerator,
        settings: ChatSettings,
        clock: Clock,
        limits: RateLimits | None = None,
    ) -> None:
        """`limits`: the shared buckets of `/x/user/auth` (Redis); None keeps them in this process."""
        self.settings = settings
        self.limits = limits or RateLimits(InProcessRateLimiter(), settings.limits)
        self._users = accounts
        self.accounts = AccountService(accounts, tokens, settings, clock)
        self.groups = GroupService(groups, accounts, ids, settings, clock)
        self.presence = presence

    # Sessions (logic, for access)

    async def login(self, uid: int, token: str, device: str, node: AccessNode) -> Login:
        """The checks of `ChatService.login`, then the route; reports a route of another node it replaced
        (that node's connection of the device is stale from now on)."""
        uid, device, info = await check_login(self.accounts, self._users, self.settings, uid, token, device)
        previous = next((r for r in await self.presence.routes(uid) if r.device == device), None)
        await self.presence.connect(uid, device, node)
        replaced = previous if previous is not None and previous.node_id != node.node_id else None
        return Login(uid=uid, device=device, token=info, replaced=replaced)

    async def ping(self, uid: int, device: str, node: AccessNode) -> None:
        await self.presence.ping(uid, device, node)

    async def logout(self, uid: int, device: str, node_id: str, token: str | None = None) -> None:
        """As `ChatService.logout`: revoke the session's token (if it is the user's), drop the route."""
        uid = validation.check_id(uid, "UID")
        device = validation.check_device(device, self.settings.device_max_chars)
        if token:
            await self.accounts.revoke(token, uid)
        await self.presence.disconnect(uid, device, node_id)

    async def routes(self, uid: int) -> list[Route]:
        return await self.presence.routes(validation.check_id(uid, "UID"))

    async def is_online(self, uid: int) -> bool:
        return await self.presence.is_online(validation.check_id(uid, "UID"))


class RegisterServicer(register_pb2_grpc.RegisterServerRPCServicer):
    """RegisterServerRPC over a `RegisterCore`; registers itself on `rpc`. Refusals are answered as
    errCodes by `RpcServer.answer`."""

    def __init__(self, rpc: RpcServer, core: RegisterCore) -> None:
        self._rpc = rpc
        self._core = core
        rpc.add(register_pb2_grpc.add_RegisterServerRPCServicer_to_server, self, SERVICE)

    def _device(self, device: str, *, required: bool = True) -> str:
        if not device and not required:
            return device
        return validation.check_device(device, self._core.settings.device_max_chars)

    async def Register(self, request: register_pb2.RGRegisterReq, context: Any) -> register_pb2.RGRegisterRes:
        async def work() -> register_pb2.RGRegisterRes:
            # UID 0 would ask for a server-chosen uid; FishChat's accounts are created with the uid the
            # client names (as the HTTP API does), so it is refused like any other invalid id.
            user = await self._core.register(request.UID, request.name, request.password)
            return register_pb2.RGRegisterRes(UID=user.uid)

        return await self._rpc.answer("Register", register_pb2.RGRegisterRes, work)

    async def Auth(self, request: register_pb2.RGAuthReq, context: Any) -> register_pb2.RGAuthRes:
        async def work() -> register_pb2.RGAuthRes:
            # Tokens are the user's, not a device's: a device, if named, must only be well formed.
            self._device(request.device, required=False)
            issued = await self._core.auth(request.UID, request.password)
            return register_pb2.RGAuthRes(token=issued.token, expiresAt=issued.expires_at_ms)

        return await self._rpc.answer("Auth", register_pb2.RGAuthRes, work)

    async def VerifyToken(
        self, request: register_pb2.RGVerifyTokenReq, context: Any
    ) -> register_pb2.RGVerifyTokenRes:
        async def work() -> register_pb2.RGVerifyTokenRes:
            uid = validation.check_id(request.UID, "UID")
            self._device(request.device, required=False)
            token = check_text(request.token, "token", MAX_TOKEN_CHARS, required=False)
            info = await self._core.verify_token(token, uid)
            return register_pb2.RGVerifyTokenRes(expiresAt=info.expires_at_ms)

        return await self._rpc.answer("VerifyToken", register_pb2.RGVerifyTokenRes, work)

    async def Login(self, request: register_pb2.RGLoginReq, context: Any) -> register_pb2.RGLoginRes:
        async def work() -> register_pb2.RGLoginRes:
            node = check_node(request.nodeID, request.accessAddr)
            token = check_text(request.token, "token", MAX_TOKEN_CHARS, required=False)
            login = await self._core.login(request.UID, token, request.device, node)
            response = register_pb2.RGLoginRes(expiresAt=login.token.expires_at_ms)
            if login.replaced is not None:
                response.replacedAccessAddr = login.replaced.address
                response.replacedNodeID = login.replaced.node_id
            return response

        return await self._rpc.answer("Login", register_pb2.RGLoginRes, work)

    async def Ping(self, request: register_pb2.RGPingReq, context: Any) -> register_pb2.RGPingRes:
        async def work() -> register_pb2.RGPingRes:
            node = check_node(request.nodeID, request.accessAddr)
            await self._core.ping(request.UID, request.device, node)
            return register_pb2.RGPingRes()

        return await self._rpc.answer("Ping", register_pb2.RGPingRes, work)

    async def PingMany(self, request: register_pb2.RGPingManyReq, context: Any) -> register_pb2.RGPingManyRes:
        async def work() -> register_pb2.RGPingManyRes:
            answers = await ping_each(request.pings, self._core.ping, PING_CONCURRENCY)
            return register_pb2.RGPingManyRes(
                results=[register_pb2.RGPingRes(errCode=code, errStr=text) for code, text in answers]
            )

        return await self._rpc.answer("PingMany", register_pb2.RGPingManyRes, work)

    async def Logout(self, request: register_pb2.RGLogoutReq, context: Any) -> register_pb2.RGLogoutRes:
        async def work() -> register_pb2.RGLogoutRes:
            node_id = check_text(request.nodeID, "nodeID", MAX_ADDRESS_CHARS)
            token = check_text(request.token, "token", MAX_TOKEN_CHARS, required=False)
            revoke = token if request.revokeToken else None
            await self._core.logout(request.UID, request.device, node_id, revoke)
            return register_pb2.RGLogoutRes()

        return await self._rpc.answer("Logout", register_pb2.RGLogoutRes, work)

    async def Online(self, request: register_pb2.RGOnlineReq, context: Any) -> register_pb2.RGOnlineRes:
        async def work() -> register_pb2.RGOnlineRes:
            return register_pb2.RGOnlineRes(online=await self._core.is_online(request.UID))

        return await self._rpc.answer("Online", register_pb2.RGOnlineRes, work)

    async def Routes(self, request: register_pb2.RGRoutesReq, context: Any) -> register_pb2.RGRoutesRes:
        async def work() -> register_pb2.RGRoutesRes:
            routes = await self._core.routes(request.UID)
            return register_pb2.RGRoutesRes(
                routes=[
                    register_pb2.Route(device=r.device, accessAddr=r.address, nodeID=r.node_id)
                    for r in sorted(routes, key=lambda r: r.device)
                ]
            )

        return await self._rpc.answer("Routes", register_pb2.RGRoutesRes, work)

    async def GetUser(self, request: register_pb2.RGGetUserReq, context: Any) -> register_pb2.RGGetUserRes:
        async def work() -> register_pb2.RGGetUserRes:
            user = await self._core.get_user(request.UID)
            return register_pb2.RGGetUserRes(UID=user.uid, name=user.name, createdAt=user.created_at_ms)

        return await self._rpc.answer("GetUser", register_pb2.RGGetUserRes, work)

    async def CreateGroup(
        self, request: register_pb2.RGCreateGroupReq, context: Any
    ) -> register_pb2.RGCreateGroupRes:
        async def work() -> register_pb2.RGCreateGroupRes:
            group = await self._core.create_group(request.uid, request.groupName)
            return register_pb2.RGCreateGroupRes(gid=group.gid)

        return await self._rpc.answer("CreateGroup", register_pb2.RGCreateGroupRes, work)

    async def JoinGroup(
        self, request: register_pb2.RGJoinGroupReq, context: Any
    ) -> register_pb2.RGJoinGroupRes:
        async def work() -> register_pb2.RGJoinGroupRes:
            await self._core.join_group(request.uid, request.gid)
            return register_pb2.RGJoinGroupRes()

        return await self._rpc.answer("JoinGroup", register_pb2.RGJoinGroupRes, work)

    async def QuitGroup(
        self, request: register_pb2.RGQuitGroupReq, context: Any
    ) -> register_pb2.RGQuitGroupRes:
        async def work() -> register_pb2.RGQuitGroupRes:
            await self._core.quit_group(request.uid, request.gid)
            return register_pb2.RGQuitGroupRes()

        return await self._rpc.answer("QuitGroup", register_pb2.RGQuitGroupRes, work)

    async def Members(self, request: register_pb2.RGMembersReq, context: Any) -> register_pb2.RGMembersRes:
        async def work() -> register_pb2.RGMembersRes:
            uids = await self._core.members(request.gid)
            return register_pb2.RGMembersRes(uids=uids)

        return await self._rpc.answer("Members", register_pb2.RGMembersRes, work)

    async def GetGroup(self, request: register_pb2.RGGetGroupReq, context: Any) -> register_pb2.RGGetGroupRes:
        async def work() -> register_pb2.RGGetGroupRes:
            group = await self._core.get_group(request.gid)
            return register_pb2.RGGetGroupRes(
                gid=group.gid, name=group.name, owner=group.owner_uid, createdAt=group.created_at_ms
            )

        return await self._rpc.answer("GetGroup", register_pb2.RGGetGroupRes, work)


# --- the calling side (logic) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteLogin:
    """What register answered to a login: the token's expiry and the route of another node it replaced."""

    expires_at_ms: int
    replaced: Route | None


class RemoteSessions:
    """Sessions as logic asks register for them: login, ping, logout (with or without revoking).
    Pings asked while earlier ones are under way go together in one PingMany."""

    def __init__(self, client: RoleClient) -> None:
        self._client = client
        self._pings: BatchedCalls[register_pb2.RGPingReq, register_pb2.RGPingRes] = BatchedCalls(
            client,
            "PingMany",
            lambda pings: register_pb2.RGPingManyReq(pings=pings),
            lambda response: response.results,
            max_items=MAX_PINGS,
            max_in_flight=PINGS_IN_FLIGHT,
        )

    async def login(self, uid: int, token: str, device: str, node: AccessNode) -> RemoteLogin:
        response = await self._client.call(
            "Login",
            register_pb2.RGLoginReq(
                UID=uid, token=token, device=device, accessAddr=node.address, nodeID=node.node_id
            ),
        )
        replaced = None
        if response.replacedNodeID:
            replaced = Route(
                uid=uid, device=device, node_id=response.replacedNodeID, address=response.replacedAccessAddr
            )
        return RemoteLogin(expires_at_ms=int(response.expiresAt), replaced=replaced)

    async def ping(self, uid: int, device: str, node: AccessNode) -> None:
        await self._pings.ask(
            register_pb2.RGPingReq(UID=uid, device=device, accessAddr=node.address, nodeID=node.node_id)
        )

    async def logout(self, uid: int, device: str, node_id: str, token: str | None = None) -> None:
        """Drop the device's route if `node_id` still holds it; with `token`, revoke that token too."""
        await self._client.call(
            "Logout",
            register_pb2.RGLogoutReq(
                UID=uid, device=device, nodeID=node_id, revokeToken=bool(token), token=token or ""
            ),
        )


class RemoteUserDirectory:
    """`UserDirectory` over register's GetUser: the user (never its password hash) or None. (The
    users found are remembered by `MessagingService`.)"""

    def __init__(self, client: RoleClient) -> None:
        self._client = client

    async def get(self, uid: int) -> User | None:
        try:
            response = await self._client.call("GetUser", register_pb2.RGGetUserReq(UID=uid))
        except NoSuchUser:
            return None
        return User(uid=int(response.UID), name=response.name, created_at_ms=int(response.createdAt))


class RemoteGroupDirectory:
    """`GroupDirectory` over register's GetGroup and Members."""

    def __init__(self, client: RoleClient) -> None:
        self._client = client

    async def get(self, gid: int) -> Group | None:
        try:
            response = await self._client.call("GetGroup", register_pb2.RGGetGroupReq(gid=gid))
        except NoSuchGroup:
            return None
        return Group(
            gid=int(response.gid),
            name=response.name,
            owner_uid=int(response.owner),
            created_at_ms=int(response.createdAt),
        )

    async def members(self, gid: int) -> list[int]:
        try:
            response = await self._client.call("Members", register_pb2.RGMembersReq(gid=gid))
        except NoSuchGroup:
            return []
        return sorted(int(uid) for uid in response.uids)
