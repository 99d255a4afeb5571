"""The etcd `Registry`: instances announced on the process's lease, listed from a watched cache.

Each instance is one key `<prefix><role>/<instance_id>` whose value is the instance as JSON
(`role`, `instance_id`, `address`, `client_address`, `load`, `ws_url`), put on the process's single lease
(`EtcdSession`), so every announcement of a process disappears when it dies. `instances(role)` never
goes to etcd: the registry loads the whole prefix once and then follows it with a watch that, when
its stream breaks, resumes from the revision after the last one applied (a full reload only if etcd
has compacted that revision away). The original watched without an initial read and could not see
deletions; here both work.

The process's own writes are applied to the cache as soon as etcd acknowledges them, so a register
is visible to the next `instances` call of the same process; every key remembers the revision of
the last change applied to it (deletions too, until the watch has passed them), so an event that
arrives late never undoes a newer change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import replace
from typing import Any

import aetcd

from fishchat.domain.records import ServiceInstance
from fishchat.production.etcd.client import EtcdSession, stop_task

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/fishchat/services/"
RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 5.0


def encode_instance(instance: ServiceInstance) -> bytes:
    return json.dumps(
        {
            "role": instance.role,
            "instance_id": instance.instance_id,
            "address": instance.address,
            "client_address": instance.client_address,
            "load": instance.load,
            "ws_url": instance.ws_url,
        },
        separators=(",", ":"),
    ).encode()


def decode_instance(raw: bytes) -> ServiceInstance:
    """The instance in a registry value; ValueError if it is not one."""
    data: Any = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a registry value must be a JSON object")
    role, instance_id = data.get("role"), data.get("instance_id")
    address, client_address = data.get("address", ""), data.get("client_address", "")
    load, ws_url = data.get("load", 0), data.get("ws_url", "")
    if not isinstance(role, str) or not isinstance(instance_id, str):
        raise ValueError("a registry value needs string role and instance_id")
    if not isinstance(address, str) or not isinstance(client_address, str) or not isinstance(ws_url, str):
        raise ValueError("registry addresses must be strings")
    if not isinstance(load, int) or isinstance(load, bool):
        raise ValueError("registry load must be an integer")
    return ServiceInstance(role, instance_id, address, client_address, load, ws_url)


class EtcdRegistry:
    def __init__(self, session: EtcdSession, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"the registry prefix must end with '/', got {prefix!r}")
        self._session = session
        self._client: aetcd.Client = session.client
        self._prefix = prefix.encode()
        self._cache: dict[bytes, ServiceInstance] = {}
        self._revisions: dict[bytes, int] = {}  # key -> revision of the last change applied
        self._deleted: set[bytes] = set()  # keys whose last applied change is a deletion
        self._watched_revision = 0  # every change up to this revision has been applied
        self._mine: dict[bytes, ServiceInstance] = {}
        self._watch_task: asyncio.Task[None] | None = None
        self._watch: aetcd.Watch | None = None
        self._closing = False

    @classmethod
    async def open(cls, session: EtcdSession, prefix: str = DEFAULT_PREFIX) -> EtcdRegistry:
        registry = cls(session, prefix)
        await registry._load()
        registry._watch_task = asyncio.create_task(registry._follow(), name="registry-watch")
        return registry

    def key(self, role: str, instance_id: str) -> bytes:
        return self._prefix + f"{role}/{instance_id}".encode()

    async def register(self, instance: ServiceInstance) -> None:
        if not instance.role or not instance.instance_id:
            raise ValueError("a service instance needs a role and an instance id")
        if "/" in instance.role:
            raise ValueError(f"a role must not contain '/', got {instance.role!r}")
        key = self.key(instance.role, instance.instance_id)
        self._mine[key] = instance
        revision = await self._session.put_owned(key, encode_instance(instance))
        self._apply(key, instance, revision)

    async def set_load(self, role: str, instance_id: str, load: int) -> None:
        """Announce a new load for an instance this process registered; others are ignored (only
        the owning process may write under its lease)."""
        key = self.key(role, instance_id)
        current = self._mine.get(key)
        if current is None or current.load == load:
            return
        updated = replace(current, load=load)
        self._mine[key] = updated
        revision = await self._session.put_owned(key, encode_instance(updated))
        self._apply(key, updated, revision)

    async def deregister(self, role: str, instance_id: str) -> None:
        key = self.key(role, instance_id)
        self._mine.pop(key, None)
        revision = await self._session.delete_owned(key)
        if revision:
            self._apply(key, None, revision)

    async def instances(self, role: str) -> list[ServiceInstance]:
        found = [i for i in self._cache.values() if i.role == role]
        return sorted(found, key=lambda i: i.instance_id)

    async def close(self) -> None:
        """Stop watching. The announcements stay until deregistered or the session's lease ends."""
        self._closing = True
        watch, self._watch = self._watch, None
        if watch is not None:
            # Ends the event iterator; the watch task then sees `_closing` and returns.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.cancel(), RETRY_DELAY_S * 2)
        task, self._watch_task = self._watch_task, None
        await stop_task(task)

    async def _load(self) -> None:
        """Read the whole prefix and replace the cache with it (at start, and after a compaction)."""
        snapshot = await self._client.get_prefix(self._prefix)
        revision = int(snapshot.header.revision)
        seen: set[bytes] = set()
        for kv in snapshot:
            seen.add(kv.key)
            self._apply(kv.key, self._decode(kv.key, kv.value), kv.mod_revision)
        for key in list(self._cache):
            if key not in seen and self._revisions.get(key, 0) <= revision:
                self._apply(key, None, revision)
        self._watched_revision = max(self._watched_revision, revision)
        self._prune()

    def _decode(self, key: bytes, raw: bytes) -> ServiceInstance | None:
        try:
            return decode_instance(raw)
        except ValueError as exc:
            log.warning("ignoring malformed registry entry %r: %s", key, exc)
            return None

    def _apply(self, key: bytes, instance: ServiceInstance | None, revision: int) -> None:
        if revision <= self._revisions.get(key, 0):
            return  # a newer change of this key is already applied
        self._revisions[key] = revision
        if instance is None:
            self._cache.pop(key, None)
            self._deleted.add(key)
        else:
            self._cache[key] = instance
            self._deleted.discard(key)

    def _prune(self) -> None:
        """Drop deletion markers the watch has passed: no older event can arrive for them any more."""
        for key in [k for k in self._deleted if self._revisions[k] <= self._watched_revision]:
            self._deleted.discard(key)
            del self._revisions[key]

    async def _follow(self) -> None:
        delay = RETRY_DELAY_S
        while not self._closing:
            try:
                self._watch = await self._client.watch_prefix(
                    self._prefix, start_revision=self._watched_revision + 1
                )
                if self._closing:
                    break
                async for event in self._watch:
                    delay = RETRY_DELAY_S
                    kv = event.kv
                    if event.kind == aetcd.EventKind.PUT:
                        self._apply(kv.key, self._decode(kv.key, kv.value), kv.mod_revision)
                    else:
                        self._apply(kv.key, None, kv.mod_revision)
                    self._watched_revision = max(self._watched_revision, kv.mod_revision)
                    self._prune()
                if self._closing:
                    break
                log.warning("registry watch ended; resuming after revision %d", self._watched_revision)
            except asyncio.CancelledError:
                raise
            except aetcd.RevisionCompactedError as exc:
                log.warning("registry watch fell behind a compaction (%s); reloading", exc)
                await self._reload_with_retry()
                continue
            except Exception as exc:
                log.warning(
                    "registry watch broke (%s); resuming after revision %d", exc, self._watched_revision
                )
            await asyncio.sleep(delay)
            delay = min(MAX_RETRY_DELAY_S, delay * 2)

    async def _reload_with_retry(self) -> None:
        delay = RETRY_DELAY_S
        while True:
            try:
                await self._load()
                return
            except aetcd.ClientError as exc:
                log.warning("registry reload failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(MAX_RETRY_DELAY_S, delay * 2)
