"""MariaDB from Debian's `mariadb-server` package: its own data directory, port and socket.

The server is initialised once with `mariadb-install-db`, then a `fishchat` user and database are
created over the local socket. Tests may create further databases (the user has every privilege on
this throwaway server) to isolate themselves.
"""

from __future__ import annotations

import getpass

from fishchat.stack.base import (
    HOST,
    Component,
    Ports,
    Process,
    apt_install,
    run,
    system_binary,
    tcp_exchange,
    wait_until,
)

USER = "fishchat"
PASSWORD = "fishchat"  # a throwaway server on loopback; production credentials come from a Secret
DATABASE = "fishchat"


class MariaDB(Component):
    name = "mariadb"

    @property
    def port(self) -> int:
        return Ports.of(Ports.MARIADB)

    @property
    def process(self) -> Process:
        return Process(self.name, "mariadbd", self.workdir)

    @property
    def socket(self) -> str:
        return str(self.workdir / "mariadbd.sock")

    def install(self) -> None:
        apt_install(self.name, ["mariadb-server", "mariadb-client"], self.install_log)

    def start(self) -> None:
        if self.running():
            return
        datadir = self.workdir / "data"
        user = getpass.getuser()
        fresh = not (datadir / "mysql").is_dir()
        if fresh:
            datadir.mkdir(parents=True, exist_ok=True)
            run(
                self.name,
                [
                    system_binary(self.name, "mariadb-install-db", self.install_log),
                    "--no-defaults",
                    f"--datadir={datadir}",
                    f"--user={user}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                self.install_log,
                timeout=300,
            )
        process = self.process
        process.start(
            [
                system_binary(self.name, "mariadbd", self.install_log),
                "--no-defaults",
                f"--datadir={datadir}",
                f"--user={user}",
                f"--bind-address={HOST}",
                f"--port={self.port}",
                f"--socket={self.socket}",
                f"--pid-file={self.workdir / 'mariadbd.pidfile'}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=128M",
                "--max-connections=500",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
            ]
        )
        # The server greets with a handshake packet once it accepts connections.
        wait_until(self.name, lambda: len(tcp_exchange(self.port, b"")) > 4, 60, process.log, process.alive)
        if fresh:
            self._sql(
                f"CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4;"
                f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
                f"CREATE USER IF NOT EXISTS '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}';"
                f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1' WITH GRANT OPTION;"
                f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'localhost' WITH GRANT OPTION;"
                "FLUSH PRIVILEGES;"
            )

    def _sql(self, statements: str) -> None:
        client = system_binary(self.name, "mariadb", self.install_log)
        run(self.name, [client, f"--socket={self.socket}", "-uroot", "-e", statements], self.process.log)

    def stop(self) -> None:
        self.process.stop(timeout=60)

    def running(self) -> bool:
        return self.process.alive()

    def env(self) -> dict[str, str]:
        return {"FISHCHAT_MYSQL_URL": f"mysql://{USER}:{PASSWORD}@{HOST}:{self.port}/{DATABASE}"}
