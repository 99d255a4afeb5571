"""MariaDB (or MySQL) for accounts, groups and group members: the production `AccountStore` and
`GroupStore`, over one aiomysql pool per process with the project's own schema migrations."""

from fishchat.production.mysql.accounts import MySQLAccountStore
from fishchat.production.mysql.database import (
    DatabaseTimeout,
    MySQLDatabase,
    MySQLSettings,
    MySQLTarget,
    mysql_server_execute,
    parse_mysql_url,
)
from fishchat.production.mysql.groups import MySQLGroupStore
from fishchat.production.mysql.migrations import MIGRATIONS, SCHEMA_VERSION, SchemaError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "DatabaseTimeout",
    "MySQLAccountStore",
    "MySQLDatabase",
    "MySQLGroupStore",
    "MySQLSettings",
    "MySQLTarget",
    "SchemaError",
    "mysql_server_execute",
    "parse_mysql_url",
]
