"""ApiClient: the form fields and token it sends, and how it reads the `{code, message, data}` answers.

The server side is a tiny aiohttp app in the test that records each request and answers like the
HTTP API; the real API's behaviour is tested with the servers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from fishchat.client import ApiClient, ApiError, ApiUnavailable, ProtocolViolation
from fishchat.client.http import _member_uids, _parse_envelope

Seen = list[tuple[str, dict[str, str], str | None]]


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, Seen, dict[str, Any]]]:
    seen: Seen = []
    answers: dict[str, Any] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        form = {key: str(value) for key, value in (await request.post()).items()}
        seen.append((request.path, form, request.headers.get("Authorization")))
        answer = answers.get(request.path, {"code": 0, "message": "ok"})
        if isinstance(answer, str):
            return web.Response(status=502, text=answer)
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen, answers
    await runner.cleanup()


async def test_calls_send_form_fields_and_bearer_token(api: tuple[str, Seen, dict[str, Any]]) -> None:
    url, seen, answers = api
    answers["/x/user/auth"] = {"code": 0, "message": "ok", "data": {"token": "T0K"}}
    answers["/x/group/create"] = {"code": 0, "message": "ok", "data": {"gid": 77}}
    answers["/x/group/members"] = {"code": 0, "message": "ok", "data": {"members": [3, 1, 2]}}
    async with ApiClient(url) as client:
        await client.register(1, "alice", "secret-pw")
        assert await client.auth(1, "secret-pw") == "T0K"
        assert await client.create_group("friends") == 77
        await client.join_group(77)
        await client.quit_group(77)
        assert await client.group_members(77) == [1, 2, 3]
        await client.logout()
    assert seen == [
        ("/x/user/register", {"uid": "1", "name": "alice", "pw": "secret-pw"}, None),
        ("/x/user/auth", {"uid": "1", "pw": "secret-pw"}, None),
        ("/x/group/create", {"name": "friends"}, "Bearer T0K"),
        ("/x/group/join", {"gid": "77"}, "Bearer T0K"),
        ("/x/group/quit", {"gid": "77"}, "Bearer T0K"),
        ("/x/group/members", {"gid": "77"}, "Bearer T0K"),
        ("/x/user/logout", {}, "Bearer T0K"),
    ]


async def test_error_codes_and_broken_answers(api: tuple[str, Seen, dict[str, Any]]) -> None:
    url, _, answers = api
    answers["/x/user/auth"] = {"code": 93007, "message": "wrong password"}
    answers["/x/user/register"] = "<html>bad gateway</html>"
    answers["/x/group/create"] = {"code": 0, "message": "ok", "data": {}}
    async with ApiClient(url, token="t") as client:
        with pytest.raises(ApiError) as refused:
            await client.auth(1, "nope")
        assert refused.value.code == 93007 and refused.value.status == 200
        with pytest.raises(ApiError) as broken:
            await client.register(1, "a", "b")
        assert (
            broken.value.code == 90001 and broken.value.status == 502 and "bad gateway" in str(broken.value)
        )
        with pytest.raises(ProtocolViolation):
            await client.create_group("x")
    async with ApiClient(url) as anonymous:
        with pytest.raises(ApiError) as no_token:
            await anonymous.join_group(1)
        assert no_token.value.code == 93001


async def test_unreachable_api() -> None:
    async with ApiClient("http://127.0.0.1:1", timeout=2) as client:
        with pytest.raises(ApiUnavailable):
            await client.auth(1, "pw")
    with pytest.raises(ValueError):
        ApiClient("127.0.0.1:6001")


def test_envelope_and_member_shapes() -> None:
    assert _parse_envelope("/p", 200, '{"code":0,"message":"ok","data":[1]}') == [1]
    assert _parse_envelope("/p", 200, '{"code":0,"message":"ok"}') is None
    with pytest.raises(ApiError):
        _parse_envelope("/p", 200, '{"message":"no code"}')
    assert _member_uids([2, 1]) == [1, 2]
    assert _member_uids({"uids": ["5"]}) == [5]
    assert _member_uids([{"uid": 4}, {"uid": 3}]) == [3, 4]
    for bad in ({"members": "x"}, [True], [{"name": "a"}], None):
        with pytest.raises(ProtocolViolation):
            _member_uids(bad)
