"""Groups over the embedded backend: create returns the gid with the owner as member, idempotent
join and quit, and clear errors for unknown groups and users."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fishchat.domain import ChatService, ChatSettings, ManualClock
from fishchat.domain.errors import InvalidField, NoSuchGroup, NoSuchUser
from fishchat.domain.passwords import ScryptParams
from fishchat.domain.snowflake import split_id
from fishchat.embedded import EmbeddedBackend

ALICE, BOB, CAROL = 1, 2, 3


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[ChatService]:
    settings = ChatSettings(scrypt=ScryptParams(log2_n=4))
    async with await EmbeddedBackend.open(tmp_path, settings=settings, clock=ManualClock()) as opened:
        for uid, name in [(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]:
            await opened.service.register(uid, name, "password-1")
        yield opened.service


async def test_create_returns_a_snowflake_gid_and_the_owner_is_a_member(chat: ChatService) -> None:
    group = await chat.create_group(ALICE, "  book club ")
    assert (group.name, group.owner_uid) == ("book club", ALICE)
    assert split_id(group.gid).timestamp_ms == chat.clock.now_ms()
    assert await chat.get_group(group.gid) == group
    assert await chat.members(group.gid) == (ALICE,)
    other = await chat.create_group(ALICE, "book club")  # names need not be unique
    assert other.gid != group.gid


async def test_join_and_quit_are_idempotent(chat: ChatService) -> None:
    group = await chat.create_group(ALICE, "g")
    assert await chat.join_group(CAROL, group.gid) is True
    assert await chat.join_group(BOB, group.gid) is True
    assert await chat.join_group(BOB, group.gid) is False
    assert await chat.members(group.gid) == (ALICE, BOB, CAROL)
    assert await chat.quit_group(BOB, group.gid) is True
    assert await chat.quit_group(BOB, group.gid) is False
    assert await chat.members(group.gid) == (ALICE, CAROL)
    assert await chat.quit_group(ALICE, group.gid) is True  # the owner may leave; the group stays
    assert await chat.members(group.gid) == (CAROL,)


async def test_unknown_groups_and_users(chat: ChatService) -> None:
    group = await chat.create_group(ALICE, "g")
    for call in (
        chat.join_group(BOB, 12345),
        chat.quit_group(BOB, 12345),
        chat.members(12345),
        chat.get_group(12345),
    ):
        with pytest.raises(NoSuchGroup):
            await call
    with pytest.raises(NoSuchUser):
        await chat.join_group(999, group.gid)
    with pytest.raises(NoSuchUser):
        await chat.create_group(999, "ghost's group")


@pytest.mark.parametrize(
    ("owner", "name"), [(ALICE, ""), (ALICE, "n" * 65), (0, "ok"), (ALICE, "bad\x07name")]
)
async def test_invalid_groups_are_refused(chat: ChatService, owner: int, name: str) -> None:
    with pytest.raises(InvalidField):
        await chat.create_group(owner, name)
