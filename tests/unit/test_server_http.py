"""The HTTP API's pure parts: parameter parsing as the original, tokens, statuses, and an accurate OpenAPI."""

from __future__ import annotations

import json

import pytest

from fishchat.domain.errors import NoToken
from fishchat.errcodes import ErrCode
from fishchat.server.http_api import (
    ROUTES,
    BadParam,
    bearer_token,
    bool_param,
    envelope,
    http_status,
    int_param,
    str_param,
)
from fishchat.server.openapi import openapi_document


@pytest.mark.parametrize(
    ("raw", "value"),
    [("7", 7), (" 42 ", 42), ("-3", -3), ("+5", 5), ("9223372036854775807", 2**63 - 1)],
)
def test_int_params(raw: str, value: int) -> None:
    assert int_param({"uid": raw}, "uid") == value


@pytest.mark.parametrize("raw", ["", "  ", "abc", "1.5", "1e3", "0x10", "9223372036854775808", "9" * 30])
def test_bad_int_params_are_request_errors(raw: str) -> None:
    with pytest.raises(BadParam, match="uid"):
        int_param({"uid": raw}, "uid")


def test_missing_params() -> None:
    with pytest.raises(BadParam, match="uid is required"):
        int_param({}, "uid")
    with pytest.raises(BadParam, match="name is required"):
        str_param({}, "name")
    assert str_param({"name": ""}, "name") == ""  # present but empty: the domain says why it is wrong


def test_bool_params() -> None:
    assert bool_param({"all": "1"}, "all") and bool_param({"all": "TRUE"}, "all")
    assert not bool_param({}, "all") and not bool_param({"all": "0"}, "all")
    with pytest.raises(BadParam):
        bool_param({"all": "maybe"}, "all")


def test_token_from_header_first_then_form() -> None:
    assert bearer_token("Bearer abc", {"token": "form"}) == "abc"
    assert bearer_token("bearer   abc ", {}) == "abc"
    assert bearer_token("Basic dXNlcjpwdw==", {"token": "form"}) == "form"
    assert bearer_token(None, {"token": " t "}) == "t"
    with pytest.raises(NoToken):
        bearer_token("Bearer ", {})


def test_envelope_and_status() -> None:
    assert envelope(0, data={"gid": 1}) == {"code": 0, "message": "ok", "data": {"gid": 1}}
    assert envelope(ErrCode.REQUEST_ERR, detail="uid is required") == {
        "code": 10001,
        "message": "request err",
        "detail": "uid is required",
    }
    assert http_status(ErrCode.OK) == 200 and http_status(ErrCode.WRONG_PASSWORD) == 200
    assert http_status(ErrCode.SERVER_ERR) == 500 and http_status(ErrCode.SERVICE_UNAVAILABLE) == 503


def test_openapi_describes_exactly_the_routes() -> None:
    document = openapi_document()
    json.dumps(document)  # serialisable as served
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    assert set(paths) == {route.path for route in ROUTES} | {"/openapi.json"}
    for route in ROUTES:
        operation = paths[route.path]["post"]
        assert set(paths[route.path]) == {"post"}
        schema = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
        described = set(schema["properties"])
        expected = set(route.params) | ({"token"} if route.authenticated else set())
        assert described == expected, route.path
        required = set(schema.get("required", []))
        assert required == set(route.params) - route.optional, route.path
        assert ("security" in operation) == route.authenticated, route.path
        for status in ("200", "405", "413", "500"):
            assert status in operation["responses"], (route.path, status)


def test_openapi_lists_every_result_code() -> None:
    description = openapi_document()["info"]["description"]
    for code in ErrCode:
        assert f"| {int(code)} |" in description


def test_openapi_references_resolve() -> None:
    document = openapi_document()

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(document):
        node: object = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, ref
            node = node[part]
