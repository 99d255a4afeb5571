"""The `fishchat` command: help everywhere, clean errors, and chat/group send against a protocol server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fishchat.cli.chat import Target, format_message, parse_line
from fishchat.cli.common import UsageError
from fishchat.cli.main import build_parser, main
from fishchat.client import ChatMessage
from tests.unit.test_client_session import TinyChatServer, token_of, until

pytestmark = pytest.mark.timeout(120)

COMMANDS = [
    [],
    ["chat"],
    ["user"],
    ["user", "register"],
    ["user", "auth"],
    ["user", "logout"],
    ["group"],
    ["group", "create"],
    ["group", "join"],
    ["group", "quit"],
    ["group", "members"],
    ["group", "send"],
]


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "fishchat")
def test_every_command_has_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    assert done.value.code == 0
    assert "usage: fishchat" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["chat", "--uid", "0", "--token", "t"])
    assert done.value.code == 2
    assert main([]) == 2
    parser = build_parser()
    args = parser.parse_args(["group", "join", "--gid", "5", "--api", "http://127.0.0.1:1"])
    assert args.gid == 5 and args.api == "http://127.0.0.1:1"


def test_parse_line() -> None:
    default = Target(uid=2)
    assert parse_line("  hello  ", default) == (default, "hello")
    assert parse_line("@7 hi there", None) == (Target(uid=7), "hi there")
    assert parse_line("#9 all", default) == (Target(gid=9), "all")
    assert parse_line("   ", default) is None
    assert parse_line("@x not an id", default) == (default, "@x not an id")
    with pytest.raises(UsageError):
        parse_line("no target", None)
    with pytest.raises(UsageError):
        parse_line("@7   ", default)


def test_format_message() -> None:
    p2p = ChatMessage(3, source_uid=1, target_uid=2, group_id=0, msg_type="p2p", msg_id="m", body="hi")
    assert format_message(p2p, me=2) == "1 -> me: hi"
    group = ChatMessage(4, 2, 0, 9, "group", "n", "yo", timestamp_ms=0)
    assert format_message(group, me=2) == "#9 me: yo"


async def run_cli(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fishchat",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def server() -> AsyncIterator[TinyChatServer]:
    tiny = TinyChatServer()
    await tiny.start()
    yield tiny
    await tiny.stop()


async def test_unreachable_servers_fail_cleanly() -> None:
    code, out, err = await run_cli("chat", "--uid", "1", "--token", "t", "--gateway", "127.0.0.1:1")
    assert code == 3 and "cannot reach the gateway" in err and "Traceback" not in err and out == ""
    code, _, err = await run_cli(
        "user", "auth", "--uid", "1", "--password", "pw", "--api", "http://127.0.0.1:1"
    )
    assert code == 3 and "cannot reach the API" in err and "Traceback" not in err
    code, _, err = await run_cli("group", "members", "--gid", "1")
    assert code == 2 and "--token" in err


async def test_chat_pipes_lines_and_prints_json(server: TinyChatServer) -> None:
    gateway = f"127.0.0.1:{server.gateway_port}"
    listener = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fishchat",
        "chat",
        "--uid",
        "2",
        "--listen",
        "--json",
        "--gateway",
        gateway,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "FISHCHAT_TOKEN": token_of(2)},
    )
    try:
        await until(lambda: bool(server.online(2)), within=30)
        server.groups[5] = {1, 2}
        code, out, err = await run_cli(
            "chat",
            "--uid",
            "1",
            "--token",
            token_of(1),
            "--to",
            "2",
            "--json",
            "--gateway",
            gateway,
            stdin=b"hello bob\n\n#5 hello group\n@3 hi carol\n",
        )
        assert code == 0, err
        sent = [json.loads(line) for line in out.splitlines()]
        assert [(r["event"], r["to"], r["group"]) for r in sent] == [
            ("sent", 2, 0),
            ("sent", 0, 5),
            ("sent", 3, 0),
        ]
        assert listener.stdout is not None
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while len(received) < 2:
                received.append(json.loads(await listener.stdout.readline()))
        assert [(r["from"], r["to"], r["group"], r["body"]) for r in received] == [
            (1, 2, 0, "hello bob"),
            (1, 0, 5, "hello group"),
        ]
        assert [r["version"] for r in received] == [1, 2]
    finally:
        listener.terminate()
        code = await asyncio.wait_for(listener.wait(), 20)
    assert code == 0  # SIGTERM ends a listening session cleanly
    assert listener.stderr is not None
    assert "Traceback" not in (await listener.stderr.read()).decode()


async def test_chat_reports_refused_sends(server: TinyChatServer) -> None:
    code, out, err = await run_cli(
        "chat",
        "--uid",
        "1",
        "--token",
        token_of(1),
        "--access",
        f"127.0.0.1:{server.access_ports[0]}",
        stdin=b"no target here\n#8 not a member\n",
    )
    assert code == 1 and out == ""
    assert "no target" in err and "send to group 8 failed" in err and "Traceback" not in err


async def test_chat_bad_token(server: TinyChatServer) -> None:
    code, _, err = await run_cli(
        "chat", "--uid", "1", "--token", "wrong", "--gateway", f"127.0.0.1:{server.gateway_port}"
    )
    assert code == 1 and "token invalid" in err and "Traceback" not in err


async def test_group_send(server: TinyChatServer) -> None:
    server.groups[4] = {1, 2}
    gateway = f"127.0.0.1:{server.gateway_port}"
    code, out, err = await run_cli(
        "group", "send", "--uid", "1", "--token", token_of(1), "--gid", "4", "--gateway", gateway, "hi", "all"
    )
    assert code == 0, err
    assert out.startswith("sent ") and "to group 4 (version 1)" in out
    assert [e.msg for e in server.timelines[2]] == ["hi all"]
    code, out, err = await run_cli(
        "group", "send", "--uid", "1", "--token", token_of(1), "--gid", "4", "--gateway", gateway,
        "--json", stdin=b"one\ntwo\n",
    )  # fmt: skip
    assert code == 0, err
    assert [json.loads(line)["version"] for line in out.splitlines()] == [2, 3]
    code, _, err = await run_cli(
        "group", "send", "--uid", "3", "--token", token_of(3), "--gid", "4", "--gateway", gateway, "intruder"
    )
    assert code == 1 and "not a group member" in err
