"""The OpenAPI 3 description of the HTTP API, served at `GET /openapi.json`.

Written by hand, as a plain dict, so it says what the API means rather than what a framework can
infer; `tests/unit/test_server_http.py` checks it against `http_api.ROUTES` (paths, parameters,
which calls need a token) so the two cannot drift apart.
"""

from __future__ import annotations

import copy
from typing import Any

from fishchat import __version__
from fishchat.errcodes import ERR_STR

_INT64 = {"type": "integer", "format": "int64"}


def _codes_table() -> str:
    rows = "\n".join(f"| {int(code)} | {text} |" for code, text in sorted(ERR_STR.items()))
    return "| code | message |\n|---|---|\n" + rows


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {
        "required": bool(required),
        "content": {
            "application/x-www-form-urlencoded": {"schema": schema},
            "multipart/form-data": {"schema": schema},
        },
    }


def _answer(description: str, data: dict[str, Any] | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"$ref": "#/components/schemas/Envelope"}
    if data is not None:
        schema = {
            "allOf": [
                {"$ref": "#/components/schemas/Envelope"},
                {"type": "object", "properties": {"data": data}},
            ]
        }
    return {
        "200": {
            "description": description + " (code 0), or a refusal with its code (data absent).",
            "content": {"application/json": {"schema": schema}},
        },
        "405": {"$ref": "#/components/responses/MethodNotAllowed"},
        "413": {"$ref": "#/components/responses/TooLarge"},
        "500": {"$ref": "#/components/responses/ServerError"},
    }


_OPTIONAL_UID = {
    **_INT64,
    "description": "The original's way to say who acts. Optional; when given it must be the token's user "
    "(else 93004).",
}
_TOKEN_FIELD = {
    "type": "string",
    "description": "The caller's token, when not sent as `Authorization: Bearer`.",
}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"tokenField": []}]


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "FishChat HTTP API",
        "version": __version__,
        "description": (
            "Accounts, tokens and groups of FishChat, on the paths and form parameters of "
            "FishChatServer2's user-api and group-api. Every call is a POST; parameters may be sent in "
            "the query string or as an urlencoded or multipart body (the body wins when both name one). "
            "Every answer is JSON `{code, message, data}`; code 0 is success. A missing or non-integer "
            "parameter gives code 10001 `request err`. `message` is always the code's text (the original's "
            "texts verbatim) and `detail`, when present, the reason for this refusal. Refusals answer "
            "HTTP 200 with their code, as the original did; server faults answer 500 (90001) or 503 "
            "(90002).\n\nCalls marked with a security requirement act as the user of the caller's token "
            "(from `/x/user/auth`).\n\nResult codes:\n\n" + _codes_table()
        ),
    },
    "paths": {
        "/x/user/register": {
            "post": {
                "operationId": "register",
                "summary": "Create an account",
                "description": "The password is stored as a salted scrypt hash. The uid and the name "
                "(compared case-insensitively after NFKC normalisation) must be unused, else 94001.",
                "requestBody": _form(
                    {
                        "uid": {**_INT64, "minimum": 1, "description": "The new user's id."},
                        "name": {"type": "string", "description": "Display name, unique, 1..64 characters."},
                        "pw": {"type": "string", "format": "password", "description": "8..128 characters."},
                    },
                    ["uid", "name", "pw"],
                ),
                "responses": _answer(
                    "The account was created",
                    {
                        "type": "object",
                        "properties": {"uid": _INT64, "name": {"type": "string"}},
                        "required": ["uid", "name"],
                    },
                ),
            }
        },
        "/x/user/auth": {
            "post": {
                "operationId": "auth",
                "summary": "Check the password and issue a login token",
                "description": "A wrong password gives 93007, an unknown uid 94002. Each call issues a new "
                "random token (several may be live, e.g. one per device); it expires at `expiresAtMs` "
                "and is revoked by logout.",
                "requestBody": _form(
                    {
                        "uid": {**_INT64, "minimum": 1},
                        "pw": {"type": "string", "format": "password"},
                    },
                    ["uid", "pw"],
                ),
                "responses": _answer(
                    "A new token",
                    {
                        "type": "object",
                        "properties": {
                            "token": {"type": "string", "description": "Send it in ReqLogin.token."},
                            "uid": _INT64,
                            "expiresAtMs": {**_INT64, "description": "Expiry, unix milliseconds."},
                        },
                        "required": ["token", "uid", "expiresAtMs"],
                    },
                ),
            }
        },
        "/x/user/logout": {
            "post": {
                "operationId": "logout",
                "summary": "Revoke the caller's token (or all of the caller's tokens)",
                "description": "New logins with a revoked token are refused (93005), and the client "
                "connections (TCP and WebSocket) logged in with it are ended with ResReconnect "
                '"revoked".',
                "security": _SECURED,
                "requestBody": _form(
                    {
                        "uid": _OPTIONAL_UID,
                        "all": {
                            "type": "string",
                            "enum": ["0", "1", "true", "false"],
                            "description": "1 revokes every token of the user.",
                        },
                        "token": _TOKEN_FIELD,
                    },
                    [],
                ),
                "responses": _answer(
                    "The token(s) were revoked",
                    {
                        "type": "object",
                        "properties": {
                            "uid": _INT64,
                            "revoked": {"type": "integer", "description": "How many tokens were revoked."},
                        },
                        "required": ["uid", "revoked"],
                    },
                ),
            }
        },
        "/x/user/password": {
            "post": {
                "operationId": "changePassword",
                "summary": "Change the caller's password; every token and session of the user ends",
                "description": "Checks the current password (93007 if wrong; rate limited like "
                "/x/user/auth), stores the new one (8-128 characters), revokes every token of the user, "
                'ends every client connection of the user (ResReconnect "revoked") and answers a new '
                "token for the caller.",
                "security": _SECURED,
                "requestBody": _form(
                    {
                        "uid": _OPTIONAL_UID,
                        "pw": {"type": "string", "description": "The current password."},
                        "newpw": {"type": "string", "minLength": 8, "maxLength": 128},
                        "token": _TOKEN_FIELD,
                    },
                    ["pw", "newpw"],
                ),
                "responses": _answer(
                    "The password was changed; a new token",
                    {
                        "type": "object",
                        "properties": {"token": {"type": "string"}, "uid": _INT64, "expiresAtMs": _INT64},
                        "required": ["token", "uid", "expiresAtMs"],
                    },
                ),
            }
        },
        "/x/group/create": {
            "post": {
                "operationId": "createGroup",
                "summary": "Create a group; the caller becomes its owner and first member",
                "security": _SECURED,
                "requestBody": _form(
                    {
                        "uid": _OPTIONAL_UID,
                        "name": {"type": "string", "description": "1..64 characters."},
                        "token": _TOKEN_FIELD,
                    },
                    ["name"],
                ),
                "responses": _answer(
                    "The new group",
                    {
                        "type": "object",
                        "properties": {
                            "gid": {
                                **_INT64,
                                "description": "Snowflake id; above 2^53, so JavaScript "
                                "clients should parse it as a big integer.",
                            },
                            "name": {"type": "string"},
                            "owner": _INT64,
                        },
                        "required": ["gid", "name", "owner"],
                    },
                ),
            }
        },
        "/x/group/join": {
            "post": {
                "operationId": "joinGroup",
                "summary": "Join a group as the caller (idempotent)",
                "description": "An unknown gid gives 95001.",
                "security": _SECURED,
                "requestBody": _form(
                    {"uid": _OPTIONAL_UID, "gid": {**_INT64, "minimum": 1}, "token": _TOKEN_FIELD}, ["gid"]
                ),
                "responses": _answer(
                    "The caller is a member",
                    {
                        "type": "object",
                        "properties": {
                            "gid": _INT64,
                            "joined": {"type": "boolean", "description": "False if already a member."},
                        },
                        "required": ["gid", "joined"],
                    },
                ),
            }
        },
        "/x/group/quit": {
            "post": {
                "operationId": "quitGroup",
                "summary": "Leave a group as the caller (idempotent)",
                "description": "An unknown gid gives 95001. The group stays even when it becomes empty.",
                "security": _SECURED,
                "requestBody": _form(
                    {"uid": _OPTIONAL_UID, "gid": {**_INT64, "minimum": 1}, "token": _TOKEN_FIELD}, ["gid"]
                ),
                "responses": _answer(
                    "The caller is no longer a member",
                    {
                        "type": "object",
                        "properties": {
                            "gid": _INT64,
                            "left": {"type": "boolean", "description": "False if not a member before."},
                        },
                        "required": ["gid", "left"],
                    },
                ),
            }
        },
        "/x/group/members": {
            "post": {
                "operationId": "groupMembers",
                "summary": "The members of a group the caller belongs to",
                "description": "Non-members get 95002, an unknown gid 95001.",
                "security": _SECURED,
                "requestBody": _form(
                    {"uid": _OPTIONAL_UID, "gid": {**_INT64, "minimum": 1}, "token": _TOKEN_FIELD}, ["gid"]
                ),
                "responses": _answer(
                    "The member uids, ascending",
                    {
                        "type": "object",
                        "properties": {"gid": _INT64, "uids": {"type": "array", "items": _INT64}},
                        "required": ["gid", "uids"],
                    },
                ),
            }
        },
        "/x/access/server": {
            "post": {
                "operationId": "accessServer",
                "summary": "Where a client connects: an access server's TCP address and WebSocket URL",
                "description": "The least-loaded live access server, as the gateway answers TCP clients "
                "(92001 when none is live). `wsURL` is `ws://` or `wss://` with path `/ws`, or the path "
                "`/ws` alone when this HTTP API serves WebSocket clients itself (resolve it against the "
                "page's address). A WebSocket carries one frame of the client protocol per binary message.",
                "requestBody": _form({}, []),
                "responses": _answer(
                    "An access server",
                    {
                        "type": "object",
                        "properties": {
                            "addr": {"type": "string", "description": "host:port for TCP clients"},
                            "wsURL": {"type": "string", "description": "WebSocket URL (or path)"},
                        },
                        "required": ["addr", "wsURL"],
                    },
                ),
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This description",
                "responses": {
                    "200": {"description": "OpenAPI 3 document", "content": {"application/json": {}}}
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "A token from /x/user/auth."},
            "tokenField": {
                "type": "apiKey",
                "in": "query",
                "name": "token",
                "description": "The same token as a `token` parameter (query string or form body).",
            },
        },
        "schemas": {
            "Envelope": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer", "description": "0 for success, else a result code."},
                    "message": {"type": "string", "description": "The code's text (see the table)."},
                    "data": {"description": "The call's result (success only)."},
                    "detail": {"type": "string", "description": "Why this request was refused, when known."},
                },
                "required": ["code", "message"],
            }
        },
        "responses": {
            "MethodNotAllowed": {
                "description": "Not a POST (code 10001, header Allow: POST).",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
            },
            "TooLarge": {
                "description": "The request body is over the configured limit (code 10001).",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
            },
            "ServerError": {
                "description": "The server failed (code 90001); the request may be retried.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """A copy of the description (callers may not change the shared one)."""
    return copy.deepcopy(_DOCUMENT)
