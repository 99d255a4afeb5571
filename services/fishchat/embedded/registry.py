"""In-process `Registry`: the embedded profile runs every role in one process, so a dict is the registry.

Instances live until deregistered (or the process ends, which ends them all); etcd leases play that
part in production.
"""

from __future__ import annotations

from dataclasses import replace

from fishchat.domain.records import ServiceInstance


class InMemoryRegistry:
    def __init__(self) -> None:
        self._instances: dict[tuple[str, str], ServiceInstance] = {}

    async def register(self, instance: ServiceInstance) -> None:
        if not instance.role or not instance.instance_id:
            raise ValueError("a service instance needs a role and an instance id")
        self._instances[(instance.role, instance.instance_id)] = instance

    async def set_load(self, role: str, instance_id: str, load: int) -> None:
        key = (role, instance_id)
        if key in self._instances:
            self._instances[key] = replace(self._instances[key], load=load)

    async def deregister(self, role: str, instance_id: str) -> None:
        self._instances.pop((role, instance_id), None)

    async def instances(self, role: str) -> list[ServiceInstance]:
        return sorted((i for (r, _), i in self._instances.items() if r == role), key=lambda i: i.instance_id)
