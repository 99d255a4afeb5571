"""Redis from Debian's `redis-server` package, started by hand on the stack's own port."""

from __future__ import annotations

from fishchat.stack.base import (
    HOST,
    Component,
    Ports,
    Process,
    apt_install,
    system_binary,
    tcp_exchange,
    wait_until,
)


class RedisServer(Component):
    name = "redis"

    @property
    def port(self) -> int:
        return Ports.of(Ports.REDIS)

    @property
    def process(self) -> Process:
        return Process(self.name, "redis-server", self.workdir)

    def install(self) -> None:
        apt_install(self.name, ["redis-server"], self.install_log)

    def start(self) -> None:
        if self.running():
            return
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        conf = self.workdir / "redis.conf"
        conf.write_text(
            f"bind {HOST}\nport {self.port}\nprotected-mode yes\ndaemonize no\n"
            f'dir "{data}"\nappendonly yes\nappendfsync everysec\nsave ""\nlogfile ""\n'
            "maxmemory 256mb\n"
        )
        process = self.process
        process.start([system_binary(self.name, "redis-server", self.install_log), conf])
        wait_until(self.name, self._pong, 30, process.log, process.alive)

    def _pong(self) -> bool:
        return tcp_exchange(self.port, b"PING\r\n").startswith(b"+PONG")

    def stop(self) -> None:
        self.process.stop()

    def running(self) -> bool:
        return self.process.alive()

    def env(self) -> dict[str, str]:
        return {"FISHCHAT_REDIS_URL": f"redis://{HOST}:{self.port}/0"}
