"""Restart durability of the embedded backend: everything acked survives closing and reopening the
data directory, versions are never reused, undelivered log records are delivered after the restart,
and the data directory is guarded against a second process and newer schemas."""

from __future__ import annotations

from pathlib import Path

import pytest

from fishchat.domain import AccessNode, ChatSettings, ManualClock
from fishchat.domain.passwords import ScryptParams
from fishchat.embedded import DataDirInUse, EmbeddedBackend, SchemaError
from fishchat.embedded.backend import DATABASE_FILE
from fishchat.embedded.migrations import SCHEMA_VERSION

SETTINGS = ChatSettings(scrypt=ScryptParams(log2_n=4))
ALICE, BOB, CAROL = 1, 2, 3
NODE = AccessNode("access-a", "127.0.0.1:20001")


async def open_backend(data_dir: Path, clock: ManualClock, *, run_delivery: bool = True) -> EmbeddedBackend:
    return await EmbeddedBackend.open(data_dir, settings=SETTINGS, clock=clock, run_delivery=run_delivery)


async def test_everything_acked_survives_a_restart(tmp_path: Path) -> None:
    clock = ManualClock()
    backend = await open_backend(tmp_path, clock)
    chat = backend.service
    for uid, name in [(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]:
        await chat.register(uid, name, "password-1")
    token = (await chat.auth(BOB, "password-1")).token
    group = await chat.create_group(ALICE, "g")
    await chat.join_group(BOB, group.gid)
    await chat.send_p2p(ALICE, BOB, "p1", "before restart")
    sent_group = await chat.send_group(ALICE, group.gid, "g1", "group before restart")
    assert await backend.drain(5)
    await backend.close()

    backend = await open_backend(tmp_path, clock)
    chat = backend.service
    try:
        assert (await chat.get_user(CAROL)).name == "carol"
        session = await chat.login(BOB, token, "phone", NODE)  # the token is still valid
        assert session.latest_version == 2
        assert [m.msg_id for m in (await chat.sync(BOB, 0)).messages] == ["p1", "g1"]
        assert await chat.members(group.gid) == (ALICE, BOB)
        retry = await chat.send_group(ALICE, group.gid, "g1", "group before restart")
        assert retry.duplicate and retry.version == sent_group.version
        after = await chat.send_p2p(CAROL, BOB, "p2", "after restart")
        assert after.version == 1
        assert await backend.drain(5)
        assert [m.version for m in (await chat.sync(BOB, 0)).messages] == [1, 2, 3]
        assert (await chat.create_group(CAROL, "new")).gid != group.gid
    finally:
        await backend.close()


async def test_versions_burned_before_a_restart_are_not_reused(tmp_path: Path) -> None:
    clock = ManualClock()
    backend = await open_backend(tmp_path, clock)
    issued = [await backend.ports.versions.next(BOB) for _ in range(3)]
    await backend.close()
    backend = await open_backend(tmp_path, clock)
    try:
        assert await backend.ports.versions.next(BOB) > max(issued)
    finally:
        await backend.close()


async def test_acked_but_undelivered_messages_are_delivered_after_a_restart(tmp_path: Path) -> None:
    clock = ManualClock()
    backend = await open_backend(tmp_path, clock, run_delivery=False)
    await backend.service.register(ALICE, "alice", "password-1")
    await backend.service.register(BOB, "bob", "password-1")
    acked = [await backend.service.send_p2p(ALICE, BOB, f"m{i}", f"text {i}") for i in range(3)]
    assert await backend.message_log.backlog() == 6  # bob's and alice's copies, not yet stored
    assert (await backend.service.sync(BOB, 0)).messages == ()
    await backend.close()  # "crash" before delivery

    backend = await open_backend(tmp_path, clock)
    try:
        assert await backend.drain(5)
        assert [m.msg_id for m in (await backend.service.sync(BOB, 0)).messages] == ["m0", "m1", "m2"]
        assert [m.version for m in (await backend.service.sync(ALICE, 0)).messages] == [
            a.version for a in acked
        ]
    finally:
        await backend.close()


async def test_a_data_directory_is_opened_by_one_process_at_a_time(tmp_path: Path) -> None:
    backend = await open_backend(tmp_path, ManualClock())
    try:
        with pytest.raises(DataDirInUse):
            await open_backend(tmp_path, ManualClock())
    finally:
        await backend.close()
    reopened = await open_backend(tmp_path, ManualClock())
    await reopened.close()


async def test_the_schema_is_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    backend = await open_backend(tmp_path, ManualClock())
    assert await backend.db.schema_version() == SCHEMA_VERSION
    await backend.db.transact(
        lambda conn: conn.execute(
            "INSERT INTO schema_version (version, applied_at_ms) VALUES (?, 0)", (SCHEMA_VERSION + 1,)
        )
    )
    await backend.close()
    with pytest.raises(SchemaError):
        await open_backend(tmp_path, ManualClock())
    assert (tmp_path / DATABASE_FILE).exists()
