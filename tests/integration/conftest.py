"""Fixtures of the end-to-end tests: `fishchat up` running in a subprocess on free ports.

`chat_server` is one server for the whole module (started once, SIGTERMed at the end); the tests
register their own users, so they do not depend on each other. `server_factory` makes extra servers
with their own settings and data directories (idle timeouts, restarts, drain), stopped at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import TEST_CONFIG, ChatServer


@pytest.fixture(scope="module")
def transport() -> str:
    """How the module's tests reach the access server (`ChatServer.transport`); "tcp" unless a module
    overrides it (the WebSocket e2e module reruns the cases over WebSocket)."""
    return "tcp"


@pytest.fixture(scope="module")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, transport: str
) -> Iterator[Callable[[str], ChatServer]]:
    servers: list[ChatServer] = []

    def make(config: str = TEST_CONFIG) -> ChatServer:
        server = ChatServer(Path(tmp_path_factory.mktemp("fishchat-up")), config, transport)
        servers.append(server)
        return server

    yield make
    for server in servers:
        try:
            server.stop()
        finally:
            server.kill()


@pytest.fixture(scope="module")
def chat_server(server_factory: Callable[[str], ChatServer]) -> ChatServer:
    server = server_factory(TEST_CONFIG)
    server.start()
    return server
