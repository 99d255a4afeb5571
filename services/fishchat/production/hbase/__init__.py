"""Users' timelines on HBase through the Thrift v1 gateway (happybase in a thread pool)."""

from fishchat.production.hbase.store import (
    FAMILIES,
    HBaseError,
    HBaseMessageStore,
    HBaseSettings,
    ensure_table,
    ensure_table_blocking,
    row_key,
)

__all__ = [
    "FAMILIES",
    "HBaseError",
    "HBaseMessageStore",
    "HBaseSettings",
    "ensure_table",
    "ensure_table_blocking",
    "row_key",
]
