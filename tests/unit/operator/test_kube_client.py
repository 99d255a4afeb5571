"""`KubeClient` once closed: a call still under way at shutdown fails and leaves no session behind."""

from __future__ import annotations

import pytest

from fishchat_operator.kube import KubeClient, KubeError


async def test_a_closed_client_refuses_calls_without_logging_in_again() -> None:
    logins: list[None] = []

    def login() -> None:
        logins.append(None)
        return None

    client = KubeClient(login)
    await client.close()
    with pytest.raises(KubeError) as refused:
        await client.request("GET", "/api")
    assert refused.value.reason == "Closed"
    assert logins == []
    await client.close()  # closing twice is fine
