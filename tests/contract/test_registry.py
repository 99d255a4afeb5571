"""Contract of `Registry`: announce, load updates, withdrawal and listing by role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fishchat.domain.ports import Registry
from fishchat.domain.records import ServiceInstance
from fishchat.embedded.registry import InMemoryRegistry
from fishchat.production.etcd import EtcdRegistry, EtcdSession, EtcdSettings, connect_etcd
from tests.contract.harness import (
    Closer,
    Harness,
    HarnessFactory,
    ServerHarness,
    etcd_test_prefix,
    in_process,
    stack_setting,
)


def _etcd(request: pytest.FixtureRequest, tmp_path: Path) -> Harness[Registry]:
    endpoints = stack_setting(request, "FISHCHAT_ETCD_ENDPOINTS")
    prefix = etcd_test_prefix(request, endpoints, "registry")

    async def build() -> tuple[Registry, Closer]:
        settings = EtcdSettings(endpoints=endpoints, lease_ttl_s=5)
        client = connect_etcd(settings)
        session = await EtcdSession.open(client, settings.lease_ttl_s)
        registry = await EtcdRegistry.open(session, prefix)

        async def close() -> None:
            await registry.close()
            await session.close()
            await client.close()

        return registry, close

    return ServerHarness(build)


IMPLEMENTATIONS: list[object] = [
    pytest.param(in_process(InMemoryRegistry), id="embedded-memory"),
    pytest.param(_etcd, id="etcd"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness[Registry]]:
    factory: HarnessFactory[Registry] = request.param
    opened = factory(request, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def registry(harness: Harness[Registry]) -> Registry:
    return await harness.open()


@pytest.fixture
def role(request: pytest.FixtureRequest) -> str:
    """A role name private to the test, so a shared etcd prefix holds nothing else under it."""
    return f"contract-{request.node.name}".replace("[", "-").replace("]", "")


def _access(role: str, name: str, load: int = 0) -> ServiceInstance:
    return ServiceInstance(
        role=role,
        instance_id=name,
        address=f"127.0.0.1:2{len(name)}000",
        client_address="127.0.0.1:11000",
        load=load,
    )


async def test_registered_instances_are_listed_by_role(registry: Registry, role: str) -> None:
    b, a = _access(role, "access-b"), _access(role, "access-a")
    await registry.register(b)
    await registry.register(a)
    await registry.register(_access(f"{role}-other", "x"))
    assert await registry.instances(role) == [a, b]
    assert await registry.instances(f"{role}-none") == []


async def test_load_updates_are_visible(registry: Registry, role: str) -> None:
    await registry.register(_access(role, "access-a", load=0))
    await registry.set_load(role, "access-a", 17)
    await registry.set_load(role, "never-registered", 5)
    assert await registry.instances(role) == [_access(role, "access-a", load=17)]


async def test_register_again_replaces(registry: Registry, role: str) -> None:
    await registry.register(_access(role, "access-a", load=3))
    moved = ServiceInstance(role=role, instance_id="access-a", address="127.0.0.1:29999", load=0)
    await registry.register(moved)
    assert await registry.instances(role) == [moved]


async def test_deregistered_instances_disappear(registry: Registry, role: str) -> None:
    await registry.register(_access(role, "access-a"))
    await registry.register(_access(role, "access-b"))
    await registry.deregister(role, "access-a")
    await registry.deregister(role, "access-a")
    assert await registry.instances(role) == [_access(role, "access-b")]
