"""`fishchat serve idgen`: per-user versions and snowflake ids for logic and register.

Versions come from `EtcdVersionAllocator` (segments reserved by etcd transactions, so a version is
never handed out twice, also across restarts: a restarted idgen skips the unused rest of its old
segments), snowflakes from `EtcdIdGenerator` (a machine id claimed on this process's etcd lease).
Both are served as IDGenServerRPC; idgen keeps nothing else.

Drain: gRPC health fails and the registry forgets the instance, the gRPC server gets the drain
timeout for the calls it has, then the allocator and the machine id claim are given up (a version
reserved but not handed out is skipped, which the allocator allows).
"""

from __future__ import annotations

import asyncio

from fishchat.domain.clock import SystemClock
from fishchat.production.etcd import EtcdIdGenerator, EtcdVersionAllocator
from fishchat.rpc.idgen import IdgenServicer
from fishchat.serve.runtime import RoleRuntime, reach


async def run(rt: RoleRuntime, stop: asyncio.Event) -> None:
    config = rt.config
    assert rt.rpc is not None and rt.etcd is not None and rt.session is not None, (
        "idgen serves gRPC, needs etcd"
    )
    session = rt.session
    versions = EtcdVersionAllocator(rt.etcd, config.versions)
    rt.on_close("versions", versions.close)
    ids = await reach(
        "etcd", config.etcd.endpoints, EtcdIdGenerator.open(session, config.snowflake.prefix, SystemClock())
    )
    rt.on_close("snowflake ids", ids.close)
    IdgenServicer(rt.rpc, versions, ids)

    async def etcd_lease() -> bool:
        # Without a confirmed lease no snowflake can be issued (and etcd is likely unreachable).
        return session.valid()

    await rt.start(readiness={"etcd": etcd_lease})
    await stop.wait()
    await rt.drain()
