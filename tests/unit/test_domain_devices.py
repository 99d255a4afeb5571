"""The device a login stands for when it names none (`fishchat.domain.devices`)."""

from __future__ import annotations

from fishchat.domain.devices import (
    CONNECTION_DEVICE_PREFIX,
    TOKEN_DEVICE_PREFIX,
    implicit_device,
    token_device,
)
from fishchat.domain.settings import ORIGINAL_LEGACY_SALT
from fishchat.domain.tokens import legacy_token, new_token, token_hash
from fishchat.protocol.frames import check_device


def test_an_issued_token_is_one_device_across_reconnects() -> None:
    phone, laptop = new_token(), new_token()
    assert implicit_device(7, phone, None) == implicit_device(7, phone, None) == token_device(phone)
    assert implicit_device(7, phone, None) != implicit_device(7, laptop, None)
    assert implicit_device(7, phone, ORIGINAL_LEGACY_SALT) == token_device(phone)  # legacy mode on


def test_the_device_name_is_valid_and_reveals_nothing_of_the_token() -> None:
    token = new_token()
    device = token_device(token)
    assert device.startswith(TOKEN_DEVICE_PREFIX) and len(device) == len(TOKEN_DEVICE_PREFIX) + 16
    assert check_device(device) == device
    assert device.removeprefix(TOKEN_DEVICE_PREFIX) not in token_hash(token)  # not the stored key


def test_a_legacy_token_is_shared_by_every_device_so_each_connection_is_its_own() -> None:
    shared = legacy_token(7, ORIGINAL_LEGACY_SALT)
    first, second = (implicit_device(7, shared, ORIGINAL_LEGACY_SALT) for _ in range(2))
    assert first.startswith(CONNECTION_DEVICE_PREFIX) and second.startswith(CONNECTION_DEVICE_PREFIX)
    assert first != second
    assert check_device(first) == first
    # Without legacy mode the same string is just an (unknown) token: the login will be refused anyway.
    assert implicit_device(7, shared, None) == token_device(shared)
