"""Accounts over the embedded backend: registration, password checks, tokens (expiry, revocation,
hashing, legacy mode) and re-hashing when the scrypt cost changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fishchat.domain import ChatService, ChatSettings, ManualClock
from fishchat.domain.errors import (
    BadToken,
    InvalidField,
    NoSuchUser,
    NoToken,
    TokenExpired,
    UserExists,
    WrongPassword,
)
from fishchat.domain.passwords import ScryptParams
from fishchat.domain.settings import ORIGINAL_LEGACY_SALT
from fishchat.domain.tokens import legacy_token, token_hash
from fishchat.embedded import EmbeddedBackend
from fishchat.errcodes import ErrCode

SETTINGS = ChatSettings(scrypt=ScryptParams(log2_n=8))
DAY_MS = 24 * 3600 * 1000


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[EmbeddedBackend]:
    async with await EmbeddedBackend.open(tmp_path, settings=SETTINGS, clock=ManualClock()) as opened:
        yield opened


@pytest.fixture
def chat(backend: EmbeddedBackend) -> ChatService:
    return backend.service


@pytest.fixture
def clock(backend: EmbeddedBackend) -> ManualClock:
    assert isinstance(backend.service.clock, ManualClock)
    return backend.service.clock


async def test_register_creates_a_user_with_a_hashed_password(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    user = await chat.register(1001, "  Alice  ", "correct horse")
    assert (user.uid, user.name) == (1001, "Alice")
    assert await chat.get_user(1001) == user
    stored = await backend.ports.accounts.get(1001)
    assert stored is not None
    assert stored.password_hash.startswith("$scrypt$") and "correct horse" not in stored.password_hash


async def test_same_password_gets_a_different_salt(chat: ChatService, backend: EmbeddedBackend) -> None:
    await chat.register(1, "one", "same password")
    await chat.register(2, "two", "same password")
    first, second = await backend.ports.accounts.get(1), await backend.ports.accounts.get(2)
    assert first is not None and second is not None
    assert first.password_hash != second.password_hash


async def test_uid_and_name_are_unique(chat: ChatService) -> None:
    await chat.register(1, "alice", "password-1")
    with pytest.raises(UserExists) as taken_uid:
        await chat.register(1, "someone else", "password-1")
    assert taken_uid.value.code == ErrCode.USER_ALREADY_EXISTS
    with pytest.raises(UserExists):
        await chat.register(2, "ALICE", "password-1")


@pytest.mark.parametrize(
    ("uid", "name", "password"),
    [
        (0, "name", "password-1"),
        (-5, "name", "password-1"),
        (1, "", "password-1"),
        (1, "x" * 65, "password-1"),
        (1, "name", "short"),
        (1, "name", "p" * 129),
    ],
)
async def test_invalid_registrations_are_refused(
    chat: ChatService, uid: int, name: str, password: str
) -> None:
    with pytest.raises(InvalidField) as refused:
        await chat.register(uid, name, password)
    assert refused.value.code == ErrCode.INVALID_FIELD


async def test_auth_checks_the_password(chat: ChatService) -> None:
    await chat.register(7, "seven", "right password")
    with pytest.raises(WrongPassword) as wrong:
        await chat.auth(7, "wrong password")
    assert wrong.value.code == ErrCode.WRONG_PASSWORD
    with pytest.raises(NoSuchUser):
        await chat.auth(8, "right password")
    issued = await chat.auth(7, "right password")
    assert issued.uid == 7
    assert (await chat.verify_token(issued.token, 7)).uid == 7
    assert (await chat.verify_token(issued.token)).uid == 7


async def test_tokens_are_random_and_stored_only_as_hashes(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    await chat.register(7, "seven", "right password")
    first, second = await chat.auth(7, "right password"), await chat.auth(7, "right password")
    assert first.token != second.token
    assert await backend.ports.tokens.get(first.token) is None
    stored = await backend.ports.tokens.get(token_hash(first.token))
    assert stored is not None and stored.uid == 7
    rows = await backend.db.read_all("SELECT token_hash FROM tokens")
    assert {row[0] for row in rows} == {token_hash(first.token), token_hash(second.token)}


async def test_tokens_expire_after_the_configured_lifetime(chat: ChatService, clock: ManualClock) -> None:
    await chat.register(7, "seven", "right password")
    issued = await chat.auth(7, "right password")
    assert issued.expires_at_ms == clock.now_ms() + 7 * DAY_MS
    clock.advance(7 * DAY_MS - 1)
    await chat.verify_token(issued.token, 7)
    clock.advance(1)
    with pytest.raises(TokenExpired) as expired:
        await chat.verify_token(issued.token, 7)
    assert expired.value.code == ErrCode.TOKEN_EXPIRED
    with pytest.raises(BadToken):  # expired tokens are deleted when found
        await chat.verify_token(issued.token, 7)


async def test_bad_tokens(chat: ChatService) -> None:
    await chat.register(7, "seven", "right password")
    await chat.register(8, "eight", "right password")
    issued = await chat.auth(7, "right password")
    with pytest.raises(NoToken) as empty:
        await chat.verify_token("", 7)
    assert empty.value.code == 93001
    with pytest.raises(BadToken) as foreign:
        await chat.verify_token(issued.token, 8)
    assert foreign.value.code == ErrCode.TOKEN_INVALID
    for bogus in ["nonsense", "x" * 10_000, legacy_token(7, ORIGINAL_LEGACY_SALT)]:
        with pytest.raises(BadToken):
            await chat.verify_token(bogus, 7)


async def test_revoking_a_token(chat: ChatService) -> None:
    await chat.register(7, "seven", "right password")
    kept, revoked = await chat.auth(7, "right password"), await chat.auth(7, "right password")
    assert await chat.accounts.revoke(revoked.token, uid=8) is False  # not the user's token
    assert await chat.accounts.revoke(revoked.token) is True
    with pytest.raises(BadToken):
        await chat.verify_token(revoked.token, 7)
    await chat.verify_token(kept.token, 7)
    assert await chat.accounts.revoke_all(7) == 1
    with pytest.raises(BadToken):
        await chat.verify_token(kept.token, 7)


async def test_hash_is_upgraded_when_the_cost_changes(backend: EmbeddedBackend) -> None:
    await backend.service.register(7, "seven", "right password")
    stronger = ChatService(backend.ports, ChatSettings(scrypt=ScryptParams(log2_n=9)), backend.service.clock)
    await stronger.auth(7, "right password")
    stored = await backend.ports.accounts.get(7)
    assert stored is not None and stored.password_hash.startswith("$scrypt$ln=9,")
    await stronger.auth(7, "right password")
    await backend.service.auth(7, "right password")  # the old service still verifies the new hash


async def test_legacy_tokens_only_when_enabled(backend: EmbeddedBackend) -> None:
    legacy = ChatService(
        backend.ports,
        ChatSettings(scrypt=SETTINGS.scrypt, legacy_token_salt=ORIGINAL_LEGACY_SALT),
        backend.service.clock,
    )
    await legacy.register(123, "legacy user", "right password")
    token = legacy_token(123, ORIGINAL_LEGACY_SALT)
    info = await legacy.verify_token(token, 123)
    assert info.legacy and info.uid == 123
    with pytest.raises(BadToken):
        await legacy.verify_token(token, 124)
    with pytest.raises(BadToken):
        await backend.service.verify_token(token, 123)  # default settings: legacy mode off
