"""Client of FishChat's HTTP API: accounts, tokens and groups (`/x/user/*`, `/x/group/*`).

The API keeps the original's shape: POST with form parameters, a JSON answer `{code, message, data}`
where `code` 0 is success. Calls that act as a user send the token as `Authorization: Bearer`. Any
non-zero code becomes `ApiError` carrying it; an answer that is not the JSON envelope (a proxy's error
page, a crash) becomes `ApiError` with the HTTP status; an unreachable server is `ApiUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp

from fishchat.client.errors import ApiError, ApiUnavailable, ProtocolViolation
from fishchat.protocol.commands import ErrCode

DEFAULT_API = "http://127.0.0.1:6001"


class ApiClient:
    """Calls the HTTP API at `base_url`. `token` authenticates the calls that act as a user.

    Use as `async with ApiClient(...) as api:`, or call `close()`; a given `session` is not closed.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_API,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the API address must start with http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def call(self, path: str, form: Mapping[str, str | int], *, authenticated: bool = False) -> Any:
        """POST `form` to `path`; returns the answer's `data` (None when absent)."""
        headers: dict[str, str] = {}
        if authenticated:
            if not self.token:
                raise ApiError(ErrCode.NO_TOKEN, "this call needs a token", status=0, path=path)
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.base_url + path
        try:
            async with self._http().post(
                url, data={key: str(value) for key, value in form.items()}, headers=headers
            ) as response:
                status = response.status
                text = await response.text()
        except TimeoutError:
            raise ApiUnavailable(f"{url}: no answer within {self._timeout.total:g}s") from None
        except aiohttp.ClientError as exc:
            raise ApiUnavailable(f"cannot reach the API at {self.base_url}: {exc}") from exc
        return _parse_envelope(path, status, text)

    # --- users ------------------------------------------------------------------------------------

    async def register(self, uid: int, name: str, password: str) -> Any:
        """Create the account `uid` with a unique `name`; returns the answer's data (if any)."""
        return await self.call("/x/user/register", {"uid": uid, "name": name, "pw": password})

    async def auth(self, uid: int, password: str) -> str:
        """Check the password and return a new token (also kept as this client's token)."""
        data = await self.call("/x/user/auth", {"uid": uid, "pw": password})
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise ProtocolViolation(f"/x/user/auth answered without a token: {data!r}")
        self.token = token
        return token

    async def logout(self) -> None:
        """Revoke this client's token."""
        await self.call("/x/user/logout", {}, authenticated=True)

    # --- groups -----------------------------------------------------------------------------------

    async def create_group(self, name: str) -> int:
        """Create a group (the caller becomes its first member); returns its gid."""
        data = await self.call("/x/group/create", {"name": name}, authenticated=True)
        gid = data.get("gid") if isinstance(data, dict) else None
        if isinstance(gid, str) and gid.isdigit():
            gid = int(gid)
        if not isinstance(gid, int) or isinstance(gid, bool) or gid <= 0:
            raise ProtocolViolation(f"/x/group/create answered without a gid: {data!r}")
        return gid

    async def join_group(self, gid: int) -> None:
        await self.call("/x/group/join", {"gid": gid}, authenticated=True)

    async def quit_group(self, gid: int) -> None:
        await self.call("/x/group/quit", {"gid": gid}, authenticated=True)

    async def group_members(self, gid: int) -> list[int]:
        """The uids of the group's members, ascending."""
        data = await self.call("/x/group/members", {"gid": gid}, authenticated=True)
        return _member_uids(data)


def _parse_envelope(path: str, status: int, text: str) -> Any:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("code"), int):
        snippet = " ".join(text.split())[:200] or "(empty)"
        raise ApiError(ErrCode.SERVER_ERR, f"not an API answer: {snippet}", status=status, path=path)
    code: int = body["code"]
    if code != ErrCode.OK:
        raise ApiError(code, str(body.get("message") or ""), status=status, path=path)
    return body.get("data")


def _member_uids(data: Any) -> list[int]:
    """Members as `[uid, ...]`, `{"members": [...]}` or a list of `{"uid": ...}` objects."""
    items = data.get("members", data.get("uids")) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ProtocolViolation(f"/x/group/members answered no member list: {data!r}")
    uids: list[int] = []
    for item in items:
        value = item.get("uid") if isinstance(item, dict) else item
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolViolation(f"/x/group/members answered a member that is not a uid: {item!r}")
        uids.append(value)
    return sorted(uids)


async def wait_until_ready(base_url: str = DEFAULT_API, *, within: float = 10.0) -> None:
    """Wait until the API accepts connections (any HTTP answer counts); ApiUnavailable after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        while True:
            try:
                async with session.get(base_url.rstrip("/") + "/openapi.json") as response:
                    await response.read()
                    return
            except (aiohttp.ClientError, TimeoutError) as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise ApiUnavailable(f"the API at {base_url} is not up after {within:g}s: {exc}") from exc
            await asyncio.sleep(0.1)
