"""The embedded profile's implementations of the chat-core interfaces: one SQLite file plus in-process
presence, registry, notifier and message log. `EmbeddedBackend.open(data_dir)` builds them all."""

from fishchat.embedded.backend import DataDirInUse, EmbeddedBackend
from fishchat.embedded.database import SchemaError, SqliteDatabase
from fishchat.embedded.notifier import InProcessNotifier

__all__ = ["DataDirInUse", "EmbeddedBackend", "InProcessNotifier", "SchemaError", "SqliteDatabase"]
