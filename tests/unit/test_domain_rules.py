"""Pure rules of the chat core: frame-size accounting, paging, snowflake ids, passwords, tokens,
field validation, error codes, settings and access-server choice. No backend involved."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fishchat.domain import passwords, tokens, validation
from fishchat.domain.discovery import least_loaded
from fishchat.domain.errors import (
    ERR_STR,
    BadToken,
    ChatError,
    ErrCode,
    InvalidField,
    NoAccessServer,
    NotLoggedIn,
    ServerError,
    UidMismatch,
    code_of,
    message_of,
)
from fishchat.domain.messaging import completion_for, send_fingerprint
from fishchat.domain.paging import cut_page, max_sync_entry_size, sync_entry_size
from fishchat.domain.passwords import ScryptParams
from fishchat.domain.records import MsgType, SendResult, ServiceInstance, StoredMessage
from fishchat.domain.service import bound_uid
from fishchat.domain.settings import MAX_FRAME_PAYLOAD, ChatSettings
from fishchat.domain.snowflake import MAX_MACHINE_ID, SnowflakeSequence, split_id
from fishchat.proto.gen.external import access_pb2

# --- protobuf size accounting, checked against the real protobuf runtime ---------------------------


# The generated wire messages themselves, so every field of offsetMsg (1-9) is counted.
RES_SYNC_MSG = access_pb2.ResSyncMsg


def _encoded_entries_size(messages: list[StoredMessage]) -> int:
    def reply(with_messages: bool) -> Any:
        message = RES_SYNC_MSG(cmd=20006, errCode=0, errStr="ok", currentID=123456789)
        if with_messages:
            for m in messages:
                message.Msgs.add(
                    sourceUID=m.source_uid,
                    targetUID=m.target_uid,
                    groupID=m.group_id,
                    msgType=m.msg_type.value,
                    msgID=m.msg_id,
                    msg=m.body,
                    version=m.version,
                    timestamp=m.timestamp_ms,
                    serverMsgID=m.server_msg_id,
                )
        return message

    return int(reply(True).ByteSize() - reply(False).ByteSize())


def _message(version: int = 1, body: str = "hello", **fields: Any) -> StoredMessage:
    values: dict[str, Any] = {
        "uid": 2,
        "version": version,
        "source_uid": 1,
        "target_uid": 2,
        "group_id": 0,
        "msg_type": MsgType.P2P,
        "msg_id": f"m{version}",
        "body": body,
        "timestamp_ms": 1_000_000,
    }
    values.update(fields)
    return StoredMessage(**values)


ids64 = st.integers(min_value=0, max_value=2**63 - 1)


@given(
    source=ids64,
    target=ids64,
    group=ids64,
    msg_type=st.sampled_from(list(MsgType)),
    msg_id=st.text(max_size=40),
    body=st.text(max_size=3000),
    version=ids64,
    timestamp=ids64,
    server_msg_id=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_entry_size_matches_protobuf_encoding(
    source: int,
    target: int,
    group: int,
    msg_type: MsgType,
    msg_id: str,
    body: str,
    version: int,
    timestamp: int,
    server_msg_id: int,
) -> None:
    message = _message(
        version,
        source_uid=source,
        target_uid=target,
        group_id=group,
        msg_type=msg_type,
        msg_id=msg_id,
        body=body,
        timestamp_ms=timestamp,
        server_msg_id=server_msg_id,
    )
    assert sync_entry_size(message) == _encoded_entries_size([message])


def test_entry_sizes_add_up_in_a_reply() -> None:
    messages = [
        _message(v, body="x" * (v * 37), timestamp_ms=1_750_000_000_000 + v, server_msg_id=(1 << 60) + v)
        for v in range(1, 40)
    ]
    assert sum(map(sync_entry_size, messages)) == _encoded_entries_size(messages)


def test_max_entry_size_bounds_every_message_within_limits() -> None:
    limit = max_sync_entry_size(msg_id_max_bytes=128, body_max_bytes=1000)
    widest = _message(
        source_uid=2**63 - 1,
        target_uid=2**63 - 1,
        group_id=2**63 - 1,
        msg_type=MsgType.GROUP,
        msg_id="i" * 128,
        body="b" * 1000,
        version=2**63 - 1,
        timestamp_ms=2**63 - 1,
        server_msg_id=2**64 - 1,
    )
    assert sync_entry_size(widest) == limit == _encoded_entries_size([widest])


# --- paging --------------------------------------------------------------------------------------


def _cut(rows: list[StoredMessage], cursor: int = 0, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "max_count": 100,
        "byte_budget": 60_000,
        "now_ms": 1_000_000,
        "gap_grace_ms": 5000,
    }
    options.update(kwargs)
    return cut_page(rows, cursor, **options)


def test_page_takes_everything_that_fits() -> None:
    rows = [_message(v) for v in range(1, 6)]
    cut = _cut(rows)
    assert (cut.messages, cut.cursor, cut.more) == (tuple(rows), 5, False)


def test_page_stops_at_the_count_limit_and_says_more() -> None:
    rows = [_message(v) for v in range(1, 5)]
    cut = _cut(rows, max_count=3)
    assert ([m.version for m in cut.messages], cut.cursor, cut.more) == ([1, 2, 3], 3, True)
    exact = _cut(rows[:3], max_count=3)
    assert (exact.cursor, exact.more) == (3, False)


def test_page_stops_at_the_byte_budget() -> None:
    rows = [_message(v, body="x" * 1000) for v in range(1, 11)]
    size = sync_entry_size(rows[0])
    cut = _cut(rows, byte_budget=3 * size + size // 2)
    assert ([m.version for m in cut.messages], cut.more) == ([1, 2, 3], True)
    assert sum(map(sync_entry_size, cut.messages)) <= 3 * size + size // 2


def test_a_single_entry_over_budget_is_a_server_error() -> None:
    with pytest.raises(ServerError):
        _cut([_message(1, body="x" * 500)], byte_budget=100)


def test_page_waits_at_a_young_gap_and_passes_an_old_one() -> None:
    rows = [_message(1, timestamp_ms=0), _message(3, timestamp_ms=999_000), _message(4, timestamp_ms=999_000)]
    young = _cut(rows, now_ms=1_000_000, gap_grace_ms=5000)
    assert ([m.version for m in young.messages], young.cursor, young.more, young.blocked_by_gap) == (
        [1],
        1,
        False,
        True,
    )
    old = _cut(rows, now_ms=1_010_000, gap_grace_ms=5000)
    assert ([m.version for m in old.messages], old.blocked_by_gap) == ([1, 3, 4], False)
    first_row_gap = _cut(rows[1:], cursor=1, now_ms=1_000_000)
    assert (first_row_gap.messages, first_row_gap.cursor) == ((), 1)


def test_page_refuses_rows_out_of_order() -> None:
    with pytest.raises(ServerError):
        _cut([_message(2), _message(2)], cursor=1)
    with pytest.raises(ServerError):
        _cut([_message(3)], cursor=3)


# --- snowflake ids -------------------------------------------------------------------------------


def test_snowflake_layout_round_trips() -> None:
    sequence = SnowflakeSequence(machine_id=513)
    now = 1_800_000_000_123
    parts = split_id(sequence.next_id(now))
    assert (parts.timestamp_ms, parts.machine_id, parts.sequence) == (now, 513, 0)
    assert split_id(sequence.next_id(now)).sequence == 1


def test_snowflake_ids_increase_through_sequence_overflow_and_clock_steps_back() -> None:
    sequence = SnowflakeSequence(machine_id=MAX_MACHINE_ID)
    now = 1_800_000_000_000
    ids = [sequence.next_id(now) for _ in range(5000)]  # more than 4096 in one millisecond
    ids += [sequence.next_id(now - 10_000) for _ in range(10)]  # clock stepped back
    ids += [sequence.next_id(now + 60_000)]
    assert all(b > a for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**63 for i in ids)


def test_snowflake_refuses_bad_machine_ids_and_times() -> None:
    with pytest.raises(ValueError):
        SnowflakeSequence(machine_id=MAX_MACHINE_ID + 1)
    with pytest.raises(ValueError):
        SnowflakeSequence(machine_id=1).next_id(0)


# --- passwords and tokens ------------------------------------------------------------------------

FAST_SCRYPT = ScryptParams(log2_n=6)


def test_password_hash_is_salted_and_self_describing() -> None:
    first = passwords.hash_password("correct horse", FAST_SCRYPT)
    second = passwords.hash_password("correct horse", FAST_SCRYPT)
    assert first != second
    assert first.startswith("$scrypt$ln=6,r=8,p=1$")
    assert "correct horse" not in first
    assert passwords.verify_password("correct horse", first)
    assert not passwords.verify_password("correct horsf", first)


def test_old_parameters_still_verify_and_ask_for_a_rehash() -> None:
    stored = passwords.hash_password("pw-12345", ScryptParams(log2_n=5))
    assert passwords.verify_password("pw-12345", stored)
    assert passwords.needs_rehash(stored, FAST_SCRYPT)
    assert not passwords.needs_rehash(passwords.hash_password("pw-12345", FAST_SCRYPT), FAST_SCRYPT)


@pytest.mark.parametrize(
    "stored", ["", "plaintext", "$scrypt$ln=x,r=8,p=1$AA$AA", "$scrypt$ln=40,r=8,p=1$AA$AA", "$bcrypt$x$y$z"]
)
def test_unreadable_hashes_never_match(stored: str) -> None:
    assert not passwords.verify_password("anything", stored)
    assert passwords.needs_rehash(stored, FAST_SCRYPT)


def test_tokens_are_random_and_stored_as_sha256() -> None:
    issued = {tokens.new_token() for _ in range(100)}
    assert len(issued) == 100
    token = issued.pop()
    assert len(token) >= 43
    assert tokens.token_hash(token) != token
    assert len(tokens.token_hash(token)) == 64


def test_legacy_token_is_the_originals() -> None:
    # hex(md5("123" + "!0h#?123(ABM")), as the original demo client computes it.
    import hashlib

    expected = hashlib.md5(b"123!0h#?123(ABM", usedforsecurity=False).hexdigest()
    assert tokens.legacy_token(123, "!0h#?123(ABM") == expected
    assert tokens.is_legacy_token(123, expected.upper(), "!0h#?123(ABM")
    assert not tokens.is_legacy_token(124, expected, "!0h#?123(ABM")


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 2**63, True, "5", 1.5])
def test_bad_ids_are_invalid_fields(value: Any) -> None:
    with pytest.raises(InvalidField):
        validation.check_id(value, "uid")


def test_names_are_trimmed_and_bounded() -> None:
    assert validation.check_display_name("  Alice  ", "name", 10) == "Alice"
    for bad in ["", "   ", "x" * 11, "a\nb", "tab\there"]:
        with pytest.raises(InvalidField):
            validation.check_display_name(bad, "name", 10)


def test_name_key_folds_case_and_width() -> None:
    assert validation.name_key("ALICE") == validation.name_key("alice") == validation.name_key("\uff21lice")
    assert validation.name_key("Straße") == validation.name_key("STRASSE")


def test_body_and_msg_id_limits_are_in_utf8_bytes() -> None:
    assert validation.check_body("é" * 5, 10) == "é" * 5
    with pytest.raises(InvalidField):
        validation.check_body("é" * 6, 10)
    with pytest.raises(InvalidField):
        validation.check_body("\ud800", 10)
    assert validation.check_msg_id("", 8) == ""
    with pytest.raises(InvalidField):
        validation.check_msg_id("123456789", 8)
    with pytest.raises(InvalidField):
        validation.check_msg_id("a\x00b", 8)


def test_cursor_must_be_non_negative() -> None:
    assert validation.check_cursor(0) == 0
    with pytest.raises(InvalidField):
        validation.check_cursor(-1)


# --- error codes ---------------------------------------------------------------------------------


def test_domain_errors_use_the_shared_code_table() -> None:
    raised = {cls.code for cls in ChatError.__subclasses__()}
    assert raised <= set(ERR_STR)
    assert {ErrCode.OK, ErrCode.REQUEST_ERR, ErrCode.SERVER_ERR, ErrCode.NO_ACCESS_SERVER} <= set(ERR_STR)
    assert (int(ErrCode.SERVER_ERR), int(ErrCode.NO_TOKEN), int(ErrCode.USER_ALREADY_EXISTS)) == (
        90001,
        93001,
        94001,
    )


def test_every_exception_maps_to_a_wire_code() -> None:
    assert code_of(BadToken()) == ErrCode.TOKEN_INVALID and message_of(BadToken()) == "token invalid"
    assert code_of(InvalidField("msg too long")) == ErrCode.INVALID_FIELD
    assert message_of(InvalidField("msg too long")) == "msg too long"
    internal = RuntimeError("password=hunter2 at db")
    assert code_of(internal) == ErrCode.SERVER_ERR
    assert message_of(internal) == "server error"
    assert all(issubclass(type(e), ChatError) for e in (NoAccessServer(), NotLoggedIn()))


def test_bound_uid_refuses_other_uids() -> None:
    assert bound_uid(7, 7) == 7
    assert bound_uid(7, 0) == 7
    with pytest.raises(UidMismatch):
        bound_uid(7, 8)
    with pytest.raises(NotLoggedIn):
        bound_uid(None, 7)


# --- settings, fingerprints, discovery -----------------------------------------------------------


def test_default_settings_are_valid_and_fit_a_frame() -> None:
    settings = ChatSettings()
    settings.validate()
    assert (
        max_sync_entry_size(settings.msg_id_max_bytes, settings.body_max_bytes) <= settings.sync_byte_budget
    )
    assert settings.sync_byte_budget < MAX_FRAME_PAYLOAD
    assert settings.legacy_token_salt is None


@pytest.mark.parametrize(
    "bad",
    [
        ChatSettings(body_max_bytes=70_000),
        ChatSettings(token_ttl_s=0),
        ChatSettings(password_min_chars=10, password_max_chars=5),
        ChatSettings(sync_byte_budget=70_000),
        ChatSettings(legacy_token_salt=""),
        ChatSettings(scrypt=ScryptParams(log2_n=30)),
    ],
)
def test_unworkable_settings_are_refused(bad: ChatSettings) -> None:
    with pytest.raises(ValueError):
        bad.validate()


def test_the_delivery_side_recomputes_the_senders_fingerprint() -> None:
    p2p_copy = _message(5, uid=1, source_uid=1, target_uid=2, msg_id="abc", body="hi")
    completion = completion_for(p2p_copy)
    assert completion is not None
    assert completion.fingerprint == send_fingerprint(MsgType.P2P, 2, "hi")
    assert completion.result == SendResult(version=5, msg_id="abc", timestamp_ms=1_000_000)
    group_copy = _message(
        3, uid=1, source_uid=1, target_uid=1, group_id=99, msg_type=MsgType.GROUP, msg_id="g"
    )
    group_completion = completion_for(group_copy)
    assert group_completion is not None
    assert group_completion.fingerprint == send_fingerprint(MsgType.GROUP, 99, "hello")
    assert completion_for(_message(5, uid=2, source_uid=1)) is None  # the recipient's copy
    assert completion_for(_message(5, uid=1, source_uid=1, msg_id="")) is None


def test_least_loaded_access_server() -> None:
    instances = [
        ServiceInstance("access", "a", "10.0.0.1:20000", "10.0.0.1:11000", load=5),
        ServiceInstance("access", "b", "10.0.0.2:20000", "10.0.0.2:11000", load=2),
        ServiceInstance("access", "c", "10.0.0.3:20000", "10.0.0.3:11000", load=2),
    ]
    chosen = {least_loaded(instances, random.Random(seed)).instance_id for seed in range(50)}
    assert chosen == {"b", "c"}
    with pytest.raises(NoAccessServer):
        least_loaded([])
