"""Session-wide test setup: tier markers from folders, and the real-server stack once per session.

A test's tier is the folder it lives in (tests/unit, tests/contract, tests/stack and tests/integration,
tests/operator, e2e/), so `pytest -m unit` selects without any per-test decoration. It sits at the
root so that both tests/ and e2e/ share the one session stack.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fishchat.stack import Stack

ROOT = Path(__file__).resolve().parent
TIER_OF_FOLDER: dict[tuple[str, ...], str] = {
    ("tests", "unit"): "unit",
    ("tests", "contract"): "contract",
    ("tests", "stack"): "integration",
    ("tests", "integration"): "integration",
    ("tests", "operator"): "operator",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.resolve().relative_to(ROOT).parts
        tier = TIER_OF_FOLDER.get(parts[:2]) or {"e2e": "e2e", "bench": "bench"}.get(parts[0])
        if tier is not None:
            item.add_marker(tier)


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """Every real server up (installed and started if needed) and the variables that point at them.

    Servers this session started are stopped at its end; ones already running (a developer's
    `make stack-up`) are left running. FISHCHAT_KEEP_STACK=1 keeps everything up, and
    FISHCHAT_STACK_COMPONENTS=redis,kafka limits the stack to some servers (for a quick local run).
    """
    only = os.environ.get("FISHCHAT_STACK_COMPONENTS")
    stack = Stack(only.split(",") if only else None)
    started = stack.up()
    env = stack.env()
    os.environ.update(env)
    yield env
    if started and os.environ.get("FISHCHAT_KEEP_STACK") != "1":
        stack.down(started)
