"""The HTTP API role: accounts, tokens and groups, on the original's paths and parameters.

Compatible with FishChatServer2's user-api and group-api (`common/net/xhttp`): every call is a POST
with form parameters taken from the query string or an urlencoded (or multipart) body, the body
winning when both name one; any other method gets 405; the answer is JSON `{code, message, data}`
with code 0 for success and a bad or missing integer parameter giving `10001 "request err"` (with
the reason in an extra `detail` field). What FishChat decides on top:

- `/x/user/auth` checks the password (the original issued a token for any uid) and returns a random
  token with its expiry; `/x/user/logout` revokes it (`all=1`: every token of the user).
- Group calls and logout need the caller's token, as `Authorization: Bearer <token>` or a `token`
  form field; they act as the token's user only. A `uid` parameter (the original's way to say who
  acts) is still accepted but must name that same user, else 93004.
- `/x/group/create` returns the new gid and makes the creator a member; join and quit are
  idempotent; `/x/group/members` (new) answers members only.
- Domain refusals answer HTTP 200 with their code, as the original; a server fault answers 500
  (code 90001) and an unavailable dependency 503 (90002), so that monitoring sees them; a body over
  `max_body_bytes` gets 413 before it is read.
- `GET /openapi.json` describes all of it (`fishchat.server.openapi`).
"""

from __future__ import annotations

import logging
import math
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fishchat import web as web_client
from fishchat.domain.errors import (
    ChatError,
    NotGroupMember,
    NoToken,
    UidMismatch,
    Unavailable,
    code_of,
    message_of,
)
from fishchat.domain.ratelimit import RateLimited
from fishchat.errcodes import ErrCode, err_str
from fishchat.server.config import HttpConfig
from fishchat.server.metrics import ServerMetrics
from fishchat.server.openapi import openapi_document
from fishchat.server.ports import ApiCore, GatewayCore

log = logging.getLogger(__name__)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT_RE = re.compile(r"[+-]?[0-9]{1,19}")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

Form = Mapping[str, str]
Data = dict[str, Any] | None


class BadParam(Exception):
    """A parameter is missing or not of its type: code 10001 "request err" as in the original."""


@dataclass(frozen=True)
class Route:
    """One API call: its path, form parameters (name -> type) and whether it needs a token."""

    path: str
    params: Mapping[str, str]
    optional: frozenset[str] = frozenset()
    authenticated: bool = False


#: Every call of the API; `openapi.py` describes exactly these (a unit test holds them together).
ROUTES: tuple[Route, ...] = (
    Route("/x/user/register", {"uid": "int", "name": "str", "pw": "str"}),
    Route("/x/user/auth", {"uid": "int", "pw": "str"}),
    Route("/x/user/logout", {"uid": "int", "all": "bool"}, frozenset({"uid", "all"}), authenticated=True),
    Route(
        "/x/user/password",
        {"uid": "int", "pw": "str", "newpw": "str"},
        frozenset({"uid"}),
        authenticated=True,
    ),
    Route("/x/group/create", {"uid": "int", "name": "str"}, frozenset({"uid"}), authenticated=True),
    Route("/x/group/join", {"uid": "int", "gid": "int"}, frozenset({"uid"}), authenticated=True),
    Route("/x/group/quit", {"uid": "int", "gid": "int"}, frozenset({"uid"}), authenticated=True),
    Route("/x/group/members", {"uid": "int", "gid": "int"}, frozenset({"uid"}), authenticated=True),
    Route("/x/access/server", {}),
)


def int_param(form: Form, name: str) -> int:
    """An int64 parameter; BadParam when missing, not a decimal integer, or out of range."""
    raw = form.get(name)
    if raw is None or not raw.strip():
        raise BadParam(f"{name} is required")
    text = raw.strip()
    if not _INT_RE.fullmatch(text):
        raise BadParam(f"{name} must be an integer, not {text[:32]!r}")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise BadParam(f"{name} is out of the 64-bit range")
    return value


def str_param(form: Form, name: str) -> str:
    value = form.get(name)
    if value is None:
        raise BadParam(f"{name} is required")
    return value


def bool_param(form: Form, name: str) -> bool:
    raw = form.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise BadParam(f"{name} must be 1 or 0")


def bearer_token(authorization: str | None, form: Form) -> str:
    """The caller's token: `Authorization: Bearer <token>` first, else the `token` form field."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    token = form.get("token", "").strip()
    if not token:
        raise NoToken("no token: send Authorization: Bearer <token> or a token form field")
    return token


def http_status(code: int) -> int:
    """The HTTP status of an answer with `code`: 200 for results and refusals, 429 over a rate limit
    (with Retry-After), 5xx for server faults."""
    if code == ErrCode.RATE_LIMITED:
        return 429
    if code == ErrCode.SERVER_ERR:
        return 500
    if code == ErrCode.SERVICE_UNAVAILABLE:
        return 503
    return 200


def envelope(
    code: int, message: str | None = None, data: Data = None, detail: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": int(code), "message": message if message is not None else err_str(code)}
    if data is not None:
        body["data"] = data
    if detail:
        body["detail"] = detail
    return body


async def read_form(request: web.Request) -> dict[str, str]:
    """Query string parameters, then form body parameters over them (first value of each name)."""
    values: dict[str, str] = {}
    for key in request.query:
        values.setdefault(key, request.query[key])
    if request.can_read_body and request.content_type in _FORM_TYPES:
        body = await request.post()
        seen: set[str] = set()
        for key, value in body.items():
            if key not in seen and isinstance(value, str):
                values[key] = value
                seen.add(key)
    return values


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it: its parameters and, for authenticated calls, who makes it."""

    form: Form
    uid: int = 0
    token: str = ""
    #: The client's address (password checks are rate limited per address too).
    address: str = ""


Handler = Callable[[Call], Awaitable[Data]]
WebSocketHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Where the HTTP API takes WebSocket clients when it serves them itself (`websocket` given).
WEBSOCKET_PATH = "/ws"


class HttpApi:
    """The aiohttp application of the API and its listener."""

    def __init__(
        self,
        core: ApiCore,
        config: HttpConfig,
        host: str,
        metrics: ServerMetrics,
        *,
        gateway: GatewayCore | None = None,
        websocket: WebSocketHandler | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`gateway` answers `/x/access/server`; `websocket`, when given, serves WebSocket clients at
        `/ws` of this port (the embedded profile: the page and its WebSocket share one origin)."""
        self.core = core
        self.ssl_context = ssl_context
        self.gateway = gateway
        self.websocket = websocket
        self.config = config
        self.host = host
        self.port = config.port
        self.metrics = metrics
        self._runner: web.AppRunner | None = None
        self._handlers: dict[str, Handler] = {
            "/x/user/register": self._register,
            "/x/user/auth": self._auth,
            "/x/user/logout": self._logout,
            "/x/user/password": self._password,
            "/x/group/create": self._create_group,
            "/x/group/join": self._join_group,
            "/x/group/quit": self._quit_group,
            "/x/group/members": self._members,
            "/x/access/server": self._access_server,
        }

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._errors])
        for route in ROUTES:
            app.router.add_route("*", route.path, self._endpoint(route))
        app.router.add_route("*", "/openapi.json", self._openapi)
        if self.websocket is not None:
            app.router.add_get(WEBSOCKET_PATH, self.websocket, allow_head=False)
        app.router.add_get("/", self._home)
        app.router.add_get("/app/", self._web_asset)
        app.router.add_get("/app/{name}", self._web_asset)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("http api listening", extra={"role": "http", "host": self.host, "port": self.port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- plumbing ---------------------------------------------------------------------------------

    def _answer(self, path: str, code: int, body: dict[str, Any], status: int | None = None) -> web.Response:
        self.metrics.http_requests.labels(path, str(int(code))).inc()
        response = web.json_response(body, status=status if status is not None else http_status(code))
        return response

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return self._too_large("other")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # Unknown paths and the like answer in the API's own envelope too.
            detail = f"{request.method} {request.path}: {exc.reason}"
            return self._answer(
                "other", ErrCode.REQUEST_ERR, envelope(ErrCode.REQUEST_ERR, detail=detail), exc.status
            )

    def _too_large(self, path: str) -> web.Response:
        detail = f"the request body is larger than {self.config.max_body_bytes} bytes"
        return self._answer(path, ErrCode.REQUEST_ERR, envelope(ErrCode.REQUEST_ERR, detail=detail), 413)

    def _endpoint(self, route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        handler = self._handlers[route.path]

        async def endpoint(request: web.Request) -> web.Response:
            if request.method != "POST":
                body = envelope(
                    ErrCode.REQUEST_ERR, detail=f"method not allowed: {route.path} takes POST only"
                )
                response = self._answer(route.path, ErrCode.REQUEST_ERR, body, 405)
                response.headers["Allow"] = "POST"
                return response
            length = request.content_length
            if length is not None and length > self.config.max_body_bytes:
                return self._too_large(route.path)
            try:
                form = await read_form(request)
            except web.HTTPRequestEntityTooLarge:
                return self._too_large(route.path)
            try:
                address = request.remote or ""
                call = (
                    await self._authenticate(request, form, address)
                    if route.authenticated
                    else Call(form, address=address)
                )
                data = await handler(call)
            except BadParam as exc:
                return self._answer(
                    route.path, ErrCode.REQUEST_ERR, envelope(ErrCode.REQUEST_ERR, detail=str(exc))
                )
            except Exception as exc:
                if not isinstance(exc, ChatError):
                    log.exception("%s failed", route.path)
                code = code_of(exc)
                reason = message_of(exc)
                # message: the code's text (the original's, verbatim); detail: this refusal's reason.
                body = envelope(code, detail=reason if reason != err_str(code) else None)
                response = self._answer(route.path, code, body)
                if isinstance(exc, RateLimited):
                    response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
                return response
            return self._answer(route.path, ErrCode.OK, envelope(ErrCode.OK, data=data))

        return endpoint

    async def _home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/app/")

    async def _web_asset(self, request: web.Request) -> web.StreamResponse:
        """The browser client (`fishchat.web`): the page, its script and style, all from this server."""
        name = request.match_info.get("name", "index.html")
        found = web_client.asset(name)
        if found is None:
            if not web_client.is_built():
                return web.Response(
                    status=503,
                    text="The web client is not built: run `make web` (python -m fishchat.web.build).\n",
                )
            raise web.HTTPNotFound()
        path, content_type = found
        self.metrics.http_requests.labels("/app/", "0").inc()
        return web.FileResponse(
            path,
            headers={
                "Content-Type": content_type,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                # Everything comes from this server; the WebSocket may be on another port (production).
                "Content-Security-Policy": (
                    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
                ),
            },
        )

    async def _openapi(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            response = self._answer(
                "/openapi.json",
                ErrCode.REQUEST_ERR,
                envelope(ErrCode.REQUEST_ERR, detail="method not allowed: GET only"),
                405,
            )
            response.headers["Allow"] = "GET, HEAD"
            return response
        self.metrics.http_requests.labels("/openapi.json", "0").inc()
        return web.json_response(openapi_document())

    async def _authenticate(self, request: web.Request, form: Form, address: str) -> Call:
        """The caller is the user of the token; a `uid` parameter must name the same user."""
        token = bearer_token(request.headers.get("Authorization"), form)
        info = await self.core.verify_token(token)
        if "uid" in form:
            claimed = int_param(form, "uid")
            if claimed != info.uid:
                raise UidMismatch(f"the token belongs to uid {info.uid}, not {claimed}")
        return Call(form, info.uid, token, address)

    # --- calls ------------------------------------------------------------------------------------

    async def _register(self, call: Call) -> Data:
        form = call.form
        user = await self.core.register(
            int_param(form, "uid"), str_param(form, "name"), str_param(form, "pw")
        )
        return {"uid": user.uid, "name": user.name}

    async def _auth(self, call: Call) -> Data:
        issued = await self.core.auth(
            int_param(call.form, "uid"), str_param(call.form, "pw"), address=call.address
        )
        return {"token": issued.token, "uid": issued.uid, "expiresAtMs": issued.expires_at_ms}

    async def _logout(self, call: Call) -> Data:
        revoked = await self.core.sign_out(call.uid, call.token, everywhere=bool_param(call.form, "all"))
        return {"uid": call.uid, "revoked": revoked}

    async def _password(self, call: Call) -> Data:
        issued = await self.core.change_password(
            call.uid, str_param(call.form, "pw"), str_param(call.form, "newpw")
        )
        return {"token": issued.token, "uid": issued.uid, "expiresAtMs": issued.expires_at_ms}

    async def _create_group(self, call: Call) -> Data:
        group = await self.core.create_group(call.uid, str_param(call.form, "name"))
        return {"gid": group.gid, "name": group.name, "owner": group.owner_uid}

    async def _join_group(self, call: Call) -> Data:
        gid = int_param(call.form, "gid")
        joined = await self.core.join_group(call.uid, gid)
        return {"gid": gid, "joined": joined}

    async def _quit_group(self, call: Call) -> Data:
        gid = int_param(call.form, "gid")
        left = await self.core.quit_group(call.uid, gid)
        return {"gid": gid, "left": left}

    async def _access_server(self, call: Call) -> Data:
        """Where a client connects: an access server's TCP address and WebSocket URL (what the gateway
        answers TCP clients), or `/ws` of this port when it serves WebSocket clients itself."""
        if self.gateway is None:
            if self.websocket is None:
                raise Unavailable("this HTTP API does not know the access servers")
            return {"addr": "", "wsURL": WEBSOCKET_PATH}
        instance = await self.gateway.pick_access_server()
        ws_url = WEBSOCKET_PATH if self.websocket is not None else instance.ws_url
        return {"addr": instance.client_address, "wsURL": ws_url}

    async def _members(self, call: Call) -> Data:
        gid = int_param(call.form, "gid")
        uids = await self.core.members(gid)
        if call.uid not in uids:
            raise NotGroupMember(f"uid {call.uid} is not a member of group {gid}")
        return {"gid": gid, "uids": list(uids)}
