"""Fixtures shared by the contract suites (see `harness.py` for how implementations are plugged in)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.contract.harness import unique_id_stream


@pytest.fixture
def unique_ids() -> Callable[[], int]:
    """A function returning a fresh positive id (uid, gid) on each call."""
    stream: Iterator[int] = unique_id_stream()
    return lambda: next(stream)
