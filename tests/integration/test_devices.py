"""Several devices of one user on the embedded profile (`fishchat up`): original logins without a device
field and named devices, p2p and group, a device going offline and catching up, a device logging in
again, and the per-user device limit. The same scenarios run on the production profile
(`test_production_profile.py`) and across two access servers (`test_cluster.py`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration import device_scenarios as scenarios
from tests.integration.harness import TEST_CONFIG, ChatServer

MAX_DEVICES = 3


@pytest.fixture(scope="module")
def deployment(server_factory: Callable[[str], ChatServer]) -> scenarios.Deployment:
    server = server_factory(TEST_CONFIG + f"\n[chat]\nmax_devices = {MAX_DEVICES}\n")
    server.start()
    return scenarios.Deployment(server.api, server.gateway, [server.access])


@pytest.mark.parametrize("named", [False, True], ids=["original", "named"])
@pytest.mark.parametrize("count", [2, 3])
async def test_every_device_receives_p2p_and_group(
    deployment: scenarios.Deployment, count: int, named: bool
) -> None:
    await scenarios.every_device_receives_p2p_and_group(deployment, count, named=named)


@pytest.mark.parametrize("named", [False, True], ids=["original", "named"])
async def test_an_offline_device_catches_up(deployment: scenarios.Deployment, named: bool) -> None:
    await scenarios.an_offline_device_catches_up(deployment, named=named)


@pytest.mark.parametrize("named", [False, True], ids=["original", "named"])
async def test_a_device_logging_in_again_replaces_only_itself(
    deployment: scenarios.Deployment, named: bool
) -> None:
    await scenarios.a_device_logging_in_again_replaces_only_itself(deployment, named=named)


async def test_one_device_too_many_is_refused(deployment: scenarios.Deployment) -> None:
    await scenarios.one_device_too_many_is_refused(deployment, MAX_DEVICES)
