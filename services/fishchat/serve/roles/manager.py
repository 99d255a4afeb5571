"""`fishchat serve manager`: sync over users' timelines in HBase, for logic.

manager serves ManagerServerRPC with the domain's `SyncService` over `HBaseMessageStore` (one range
scan per page, row key uid + version). It keeps no state, so any number of replicas can run; the
table is created at start if missing (idempotent; the operator normally has done it).

Readiness fails while HBase (its Thrift gateway) does not answer a one-row scan, so a manager that
cannot sync takes no calls. Drain: gRPC health fails and the registry forgets the instance, the gRPC
server gets the drain timeout for the scans it has, then the HBase connections are closed.
"""

from __future__ import annotations

import asyncio

from fishchat.domain.clock import SystemClock
from fishchat.domain.sync import SyncService
from fishchat.production.hbase import HBaseMessageStore, ensure_table
from fishchat.rpc.manager import ManagerServicer
from fishchat.serve.runtime import RoleRuntime, reach

#: The uid whose newest version the readiness check asks for: any uid works, it is one short scan.
PROBE_UID = 1


async def run(rt: RoleRuntime, stop: asyncio.Event) -> None:
    config = rt.config
    assert rt.rpc is not None, "manager serves gRPC"
    if config.server.provision:
        await reach("HBase", config.hbase.thrift, ensure_table(config.hbase))
    store = HBaseMessageStore(config.hbase)
    rt.on_close("HBase", store.close)
    ManagerServicer(rt.rpc, SyncService(store, config.chat, SystemClock()))

    async def hbase() -> bool:
        await store.latest_version(PROBE_UID)
        return True

    await rt.start(readiness={"hbase": hbase})
    await stop.wait()
    await rt.drain()
