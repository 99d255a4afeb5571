"""The client's pure parts: request/ack matching, the sync cursor, reconnect rules, endpoints."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fishchat.client import Backoff, Endpoint, PendingRequests, ProtocolViolation, RequestRefused, SyncCursor
from fishchat.client.reconnect import (
    ClientState,
    check_transition,
    login_failure_is_fatal,
    plan_for_loss,
    plan_for_notice,
)
from fishchat.proto.gen.external import access_pb2, error_pb2
from fishchat.protocol.commands import Cmd, ErrCode


def ack(msg_id: str, version: int = 1) -> access_pb2.ResSendP2PMsg:
    return access_pb2.ResSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, msgID=msg_id, version=version)


# --- PendingRequests ------------------------------------------------------------------------------


async def test_sends_matched_by_msg_id_in_any_order() -> None:
    pending = PendingRequests()
    first = pending.add(Cmd.SEND_P2P_MSG, "a")
    second = pending.add(Cmd.SEND_P2P_MSG, "b")
    assert pending.resolve(Cmd.SEND_P2P_MSG, ack("b", 2), "b")
    assert pending.resolve(Cmd.SEND_P2P_MSG, ack("a", 1), "a")
    assert (await first).version == 1  # type: ignore[attr-defined]
    assert (await second).version == 2  # type: ignore[attr-defined]
    assert len(pending) == 0


async def test_fifo_per_command_and_unknown_replies() -> None:
    pending = PendingRequests()
    ping1 = pending.add(Cmd.PING)
    sync = pending.add(Cmd.SYNC_MSG)
    ping2 = pending.add(Cmd.PING)
    reply1 = error_pb2.Error(cmd=Cmd.PING, errStr="first")
    reply2 = error_pb2.Error(cmd=Cmd.PING, errStr="second")
    assert pending.resolve(Cmd.PING, reply1)
    assert pending.resolve(Cmd.PING, reply2)
    assert await ping1 is reply1 and await ping2 is reply2
    assert not pending.resolve(Cmd.PING, reply1)  # nothing waits any more
    assert not pending.resolve(Cmd.SEND_P2P_MSG, ack("zzz"), "zzz")
    assert pending.waiting(Cmd.SYNC_MSG) == 1 and not sync.done()


async def test_empty_echo_falls_back_to_oldest_send() -> None:
    pending = PendingRequests()
    first = pending.add(Cmd.SEND_P2P_MSG, "a")
    pending.add(Cmd.SEND_P2P_MSG, "b")
    assert pending.resolve(Cmd.SEND_P2P_MSG, ack(""), "")  # an original server echoes nothing
    assert first.done() and pending.waiting(Cmd.SEND_P2P_MSG) == 1


async def test_generic_error_fails_the_oldest_request() -> None:
    pending = PendingRequests()
    oldest = pending.add(Cmd.SYNC_MSG)
    newer = pending.add(Cmd.SEND_P2P_MSG, "x")
    assert pending.fail_oldest(RequestRefused(ErrCode.SERVER_ERR, cmd=Cmd.ERR_SERVER))
    with pytest.raises(RequestRefused):
        await oldest
    assert not newer.done()
    assert pending.fail_all(ConnectionError("gone")) == 1
    with pytest.raises(ConnectionError):
        await newer
    assert not pending.fail_oldest(RuntimeError())


async def test_same_msg_id_twice_resolves_in_order() -> None:
    pending = PendingRequests()
    first = pending.add(Cmd.SEND_GROUP_MSG, "dup")
    second = pending.add(Cmd.SEND_GROUP_MSG, "dup")
    pending.resolve(Cmd.SEND_GROUP_MSG, ack("dup", 1), "dup")
    assert first.done() and not second.done()


async def test_forget_keyed_only_and_late_replies_stay_aligned() -> None:
    pending = PendingRequests()
    send = pending.add(Cmd.SEND_P2P_MSG, "k")
    timed_out_ping = pending.add(Cmd.PING)
    assert pending.forget(send)
    assert not pending.forget(timed_out_ping)  # FIFO entries stay to absorb their late reply
    timed_out_ping.cancel()
    next_ping = pending.add(Cmd.PING)
    late, fresh = error_pb2.Error(cmd=Cmd.PING, errStr="late"), error_pb2.Error(cmd=Cmd.PING, errStr="fresh")
    pending.resolve(Cmd.PING, late)
    pending.resolve(Cmd.PING, fresh)
    assert await next_ping is fresh


@given(st.permutations(list(range(20))))
def test_any_ack_order_reaches_the_right_request(order: list[int]) -> None:
    async def scenario() -> None:
        pending = PendingRequests()
        futures = [pending.add(Cmd.SEND_P2P_MSG, f"m{n}") for n in range(20)]
        for n in order:
            assert pending.resolve(Cmd.SEND_P2P_MSG, ack(f"m{n}", n), f"m{n}")
        assert [(await f).version for f in futures] == list(range(20))  # type: ignore[attr-defined]

    asyncio.run(scenario())


# --- SyncCursor -----------------------------------------------------------------------------------


def entries(*versions: int) -> list[access_pb2.offsetMsg]:
    return [access_pb2.offsetMsg(version=v, msg=f"v{v}") for v in versions]


def test_cursor_advances_and_drops_duplicates() -> None:
    cursor = SyncCursor(2)
    page = cursor.apply(entries(1, 2, 3, 4), 4, more=True)
    assert [e.version for e in page.new] == [3, 4] and page.duplicates == 2 and page.more
    assert cursor.version == 4
    page = cursor.apply(entries(4, 5), 5, more=False)
    assert [e.version for e in page.new] == [5] and cursor.version == 5


def test_cursor_refuses_a_page_going_backwards() -> None:
    cursor = SyncCursor(0)
    with pytest.raises(ProtocolViolation):
        cursor.apply(entries(3, 2), 3, more=False)


def test_cursor_gaps_are_allowed_and_notify_sets_behind() -> None:
    cursor = SyncCursor(0)
    cursor.note_notify(6)
    assert cursor.behind
    cursor.apply(entries(1, 2, 4), 4, more=False)  # 3 was burned, or is still in flight
    assert cursor.version == 4 and cursor.behind
    cursor.apply(entries(5, 6), 6, more=False)
    assert not cursor.behind
    cursor.note_notify(3)  # an older notify never moves anything back
    assert cursor.latest_known == 6


def test_empty_page_heals_a_cursor_past_the_end() -> None:
    cursor = SyncCursor(50)
    cursor.note_notify(60)
    page = cursor.apply([], 3, more=False)
    assert not page.new and cursor.version == 3 and not cursor.behind
    # An empty page at the cursor (a young gap held back) keeps what the notify said.
    cursor.note_notify(5)
    cursor.apply([], 3, more=False)
    assert cursor.version == 3 and cursor.behind


def test_unversioned_pages_use_the_server_cursor() -> None:
    cursor = SyncCursor(0)
    page = cursor.apply(entries(0, 0), 9, more=False)
    assert len(page.new) == 2 and cursor.version == 9


def test_negative_cursor_refused() -> None:
    with pytest.raises(ValueError):
        SyncCursor(-1)


@given(st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=60), st.integers(1, 7))
def test_paging_any_timeline_delivers_each_version_once(versions: list[int], page: int) -> None:
    timeline = sorted(set(versions))
    cursor = SyncCursor(0)
    delivered: list[int] = []
    for _ in range(100):
        rest = [v for v in timeline if v > cursor.version]
        chunk = rest[:page]
        # A retried page: the server may repeat the last delivered entry (original semantics).
        repeat = [cursor.version] if cursor.version and delivered else []
        result = cursor.apply(
            entries(*repeat, *chunk), chunk[-1] if chunk else cursor.version, len(rest) > page
        )
        delivered += [e.version for e in result.new]
        if not result.more:
            break
    assert delivered == timeline


# --- reconnect rules ------------------------------------------------------------------------------


def test_backoff_grows_to_its_cap_and_jitters_within() -> None:
    backoff = Backoff(base=0.1, factor=2, cap=1.0, max_attempts=3)
    assert [backoff.ceiling(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.ceiling(10_000) == 1.0
    rng = random.Random(1)
    assert all(0 <= backoff.delay(n, rng) <= backoff.ceiling(n) for n in range(50))
    assert not backoff.exhausted(2) and backoff.exhausted(3)
    assert not Backoff(max_attempts=None).exhausted(10**6)
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(max_attempts=0)


def test_reconnect_notice_plans() -> None:
    rng = random.Random(0)
    plan = plan_for_notice("draining", "127.0.0.1:11001", 2000, rng)
    assert plan is not None and plan.endpoint == Endpoint("127.0.0.1", 11001) and 0 <= plan.delay <= 2.0
    plan = plan_for_notice("draining", "not an address", 0, rng)
    assert plan is not None and plan.endpoint is None and plan.delay == 0
    plan = plan_for_notice("something-new", "", 0, rng)
    assert plan is not None and plan.reason == "something-new"
    assert plan_for_notice("replaced", "", 0, rng) is None
    assert plan_for_notice("revoked", "127.0.0.1:1", 0, rng) is None
    loss = plan_for_loss(3, Backoff(base=0.1, cap=5), rng)
    assert loss.endpoint is None and 0 <= loss.delay <= 0.8


def test_login_failures_worth_retrying() -> None:
    for code in (
        ErrCode.SERVER_ERR,
        ErrCode.SERVICE_UNAVAILABLE,
        ErrCode.RATE_LIMITED,
        ErrCode.TOO_MANY_DEVICES,
    ):
        assert not login_failure_is_fatal(code)
    for code in (ErrCode.TOKEN_INVALID, ErrCode.TOKEN_EXPIRED, ErrCode.NO_TOKEN, ErrCode.CALC_TOKEN_FAILED):
        assert login_failure_is_fatal(code)


def test_state_transitions() -> None:
    check_transition(ClientState.NEW, ClientState.CONNECTING)
    check_transition(ClientState.ONLINE, ClientState.RECONNECTING)
    check_transition(ClientState.RECONNECTING, ClientState.ONLINE)
    for bad in [(ClientState.CLOSED, ClientState.ONLINE), (ClientState.NEW, ClientState.ONLINE)]:
        with pytest.raises(RuntimeError):
            check_transition(*bad)


# --- endpoints ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:10000", Endpoint("127.0.0.1", 10000)),
        (" localhost:1 ", Endpoint("localhost", 1)),
        ("[::1]:6001", Endpoint("::1", 6001)),
    ],
)
def test_endpoint_parse(text: str, expected: Endpoint) -> None:
    assert Endpoint.parse(text) == expected
    assert Endpoint.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "host", ":80", "host:", "host:x", "host:0", "host:70000", "::1:80"])
def test_endpoint_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        Endpoint.parse(text)
