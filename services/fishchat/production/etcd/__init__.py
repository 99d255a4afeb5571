"""etcd-backed interfaces: per-user versions, snowflake machine ids and the service registry.

All three share one `aetcd.Client` per process (`connect_etcd`), and the registry and the id
generator share the process's single lease (`EtcdSession`).
"""

from fishchat.production.etcd.client import EtcdSession, EtcdSettings, connect_etcd
from fishchat.production.etcd.ids import EtcdIdGenerator, IdGeneratorUnavailable
from fishchat.production.etcd.registry import EtcdRegistry
from fishchat.production.etcd.versions import EtcdVersionAllocator, VersionAllocationError, VersionSettings

__all__ = [
    "EtcdIdGenerator",
    "EtcdRegistry",
    "EtcdSession",
    "EtcdSettings",
    "EtcdVersionAllocator",
    "IdGeneratorUnavailable",
    "VersionAllocationError",
    "VersionSettings",
    "connect_etcd",
]
