"""Which components make up the stack, and bringing several up or down together.

Components are imported lazily by dotted path so that `fishchat-stack up redis` does not import
the code of every other server.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from fishchat.stack.base import Component, StackError, reserve_stack_ports
from fishchat.stack.progress import HEARTBEAT_S, Heartbeat, activity

COMPONENTS: dict[str, str] = {
    "redis": "fishchat.stack.redis_server:RedisServer",
    "mariadb": "fishchat.stack.mariadb:MariaDB",
    "etcd": "fishchat.stack.etcd:Etcd",
    "kafka": "fishchat.stack.kafka:Kafka",
    "hbase": "fishchat.stack.hbase:HBase",
    "prometheus": "fishchat.stack.prometheus:Prometheus",
    "kube": "fishchat.stack.kube:KubeAPIServer",
    "node": "fishchat.stack.node:Node",
}


def load(name: str) -> Component:
    try:
        target = COMPONENTS[name]
    except KeyError:
        raise StackError(name, f"unknown component; choose from {', '.join(COMPONENTS)}") from None
    module, _, cls = target.partition(":")
    component: Component = getattr(importlib.import_module(module), cls)()
    return component


class Stack:
    """A set of components brought up and down together (in parallel: they are independent)."""

    def __init__(self, names: Iterable[str] | None = None) -> None:
        self.components = [load(n) for n in (names or COMPONENTS)]
        self._lock = threading.Lock()

    def up(
        self, progress: Callable[[str], None] | None = None, heartbeat_s: float = HEARTBEAT_S
    ) -> list[str]:
        """Install and start every component not yet running; return the names this call started.

        `progress` gets one line per step and, every `heartbeat_s` seconds, one line per component
        still busy saying what it does and for how long, so a cold install (minutes of Go and
        Maven) is visibly alive.
        """
        started: list[str] = []
        say = progress or (lambda _: None)
        reserve_stack_ports()
        done = {c.name: threading.Event() for c in self.components}
        failed: set[str] = set()

        def bring_up(component: Component) -> None:
            try:
                bring_up_after_requirements(component)
            except BaseException:
                failed.add(component.name)
                raise
            finally:
                done[component.name].set()

        def bring_up_after_requirements(component: Component) -> None:
            if component.running():
                return
            began = time.monotonic()
            say(f"[{component.name}] installing if missing (log: {component.install_log})")
            with activity(component.name, "installing"):
                component.install()
            for required in component.requires:
                if required in done:
                    done[required].wait()
                    if required in failed:
                        raise StackError(component.name, f"not started: {required} failed")
            installed = time.monotonic()
            with activity(component.name, "starting"):
                component.start()
            say(
                f"[{component.name}] up: install {installed - began:.1f}s, "
                f"start {time.monotonic() - installed:.1f}s"
            )
            with self._lock:
                started.append(component.name)

        with Heartbeat(progress, heartbeat_s):
            self._all(bring_up)
        return started

    def down(self, names: Iterable[str] | None = None) -> None:
        wanted = set(names) if names is not None else None
        self._all(lambda c: c.stop() if wanted is None or c.name in wanted else None)

    def status(self) -> dict[str, bool]:
        return {c.name: c.running() for c in self.components}

    def env(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for component in self.components:
            merged.update(component.env())
        return merged

    def _all(self, action: Callable[[Component], None]) -> None:
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=len(self.components) or 1) as pool:
            for future in [pool.submit(action, c) for c in self.components]:
                exc = future.exception()
                if exc is not None:
                    errors.append(exc)
        if errors:
            raise StackError(
                ", ".join(getattr(e, "component", "?") for e in errors),
                "\n  " + "\n  ".join(str(e) for e in errors),
            )
