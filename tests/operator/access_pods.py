"""Playing the kubelet for the access pods of one FishChatCluster: each Pod runs as a real local
`fishchat serve access` process.

The stack's API server has no kubelet, so Pods never run by themselves. `AccessPods` watches (polls)
the cluster's access Pods and does for each what a kubelet does, with what the operator rendered:

- a new Pod: mount its ConfigMap (`<name>-access`, the TOML the operator rendered) and start
  `python -m fishchat serve access --config <file>` with the pod's environment (its instance id is
  the pod name, as the downward API gives it; listeners on loopback ports of its own instead of the
  pod's fixed ports); once it prints its ready line, Prometheus is told to scrape its metrics port
  with the labels `namespace` and `pod` (what a PodMonitor or the kubernetes-pods job attaches), and
  the Pod is marked Running and Ready through pods/status;
- a Pod being deleted: the preStop sleep of the Deployment's template, SIGTERM, up to the rest of
  `terminationGracePeriodSeconds` for the process to exit, then SIGKILL; then the scrape target goes.

The API server deletes an unscheduled Pod at once, so each Pod gets a finalizer of this harness when
its process starts, removed when the process has exited: like a real terminating pod, it stays
(with a deletionTimestamp) while it drains, which is what the autoscaler waits for between steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fishchat.client.records import Endpoint
from fishchat.stack.prometheus import add_scrape_target, remove_scrape_target
from fishchat_operator.constants import LABEL_COMPONENT, LABEL_INSTANCE
from fishchat_operator.kube import KubeClient, KubeError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
FINALIZER = "tests.fishchat.io/access-process"
POLL_SECONDS = 0.3
READY_TIMEOUT_SECONDS = 60.0


@dataclass
class AccessProcess:
    """The process behind one Pod."""

    pod: str
    process: asyncio.subprocess.Process
    log_path: Path
    ready: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    #: When the Pod's deletion was seen, when SIGTERM went out (after the preStop) and when the process
    #: had exited (monotonic).
    deleted_at: float | None = None
    terminated_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None

    @property
    def client(self) -> Endpoint:
        return Endpoint(HOST, int(self.ready["client"]))

    @property
    def drain_seconds(self) -> float | None:
        """From SIGTERM (the end of the preStop) to the exit, if it has ended."""
        if self.exited_at is None or self.terminated_at is None:
            return None
        return self.exited_at - self.terminated_at


class AccessPods:
    """Runs the access Pods of cluster `name` in `namespace` (see the module docstring)."""

    def __init__(
        self, kube: KubeClient, namespace: str, name: str, run_dir: Path, env: Mapping[str, str]
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.run_dir = run_dir
        self.env = dict(env)
        self.processes: dict[str, AccessProcess] = {}
        #: Pod names in the order their deletion was seen.
        self.deleted: list[str] = []
        self._starting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.errors: list[str] = []

    # --- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> AccessPods:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._loop_task = asyncio.create_task(self._run(), name="access-pods")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for proc in self.processes.values():
            if proc.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                async with asyncio.timeout(15):
                    await proc.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.kill()
                await proc.process.wait()
            remove_scrape_target(self._job(proc.pod))
        for pod in await self._pods():
            await self._release(pod["metadata"]["name"])

    def running(self) -> dict[str, AccessProcess]:
        """Pods whose process is up and ready, by pod name."""
        return {
            pod: proc
            for pod, proc in self.processes.items()
            if proc.ready and proc.deleted_at is None and proc.process.returncode is None
        }

    # --- the loop ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                for pod in await self._pods():
                    meta = pod["metadata"]
                    name = meta["name"]
                    if meta.get("deletionTimestamp"):
                        proc = self.processes.get(name)
                        if proc is not None and proc.deleted_at is None:
                            proc.deleted_at = time.monotonic()
                            self.deleted.append(name)
                            self._spawn(self._stop(pod, proc))
                        elif proc is None and FINALIZER in (meta.get("finalizers") or []):
                            await self._release(name)
                    elif name not in self.processes and name not in self._starting:
                        self._starting.add(name)
                        self._spawn(self._start(pod))
            except KubeError as error:
                log.warning("listing access pods failed: %s", error)
            await asyncio.sleep(POLL_SECONDS)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(repr(task.exception()))
            log.error("access pod task failed", exc_info=task.exception())

    async def _pods(self) -> list[dict[str, Any]]:
        selector = f"{LABEL_INSTANCE}={self.name},{LABEL_COMPONENT}=access"
        return await self.kube.list_objects("v1", "Pod", self.namespace, selector)

    # --- a pod starts -----------------------------------------------------------------------------

    async def _start(self, pod: Mapping[str, Any]) -> None:
        name = pod["metadata"]["name"]
        node = pod["spec"].get("nodeName")
        assert not node, f"{name} is scheduled on node {node}: a kubelet runs it, not this harness"
        # Keep the Pod object while its process drains (see the module docstring).
        await self.kube.merge_patch(
            "v1", "Pod", self.namespace, name, {"metadata": {"finalizers": [FINALIZER]}}
        )
        config_map = await self.kube.get("v1", "ConfigMap", self.namespace, f"{self.name}-access")
        assert config_map is not None, "the operator renders the access ConfigMap before the Deployment"
        pod_dir = self.run_dir / name
        pod_dir.mkdir(parents=True, exist_ok=True)
        config = pod_dir / "access.toml"
        config.write_text(config_map["data"]["access.toml"])
        env = {
            **self.env,
            # The downward API's values and loopback listeners of its own (pods would each have an IP).
            "FISHCHAT_SERVER_INSTANCE": name,
            "FISHCHAT_SERVER_ADVERTISE_HOST": HOST,
            "FISHCHAT_SERVER_CLIENT_LISTEN": f"{HOST}:0",
            "FISHCHAT_SERVER_GRPC_LISTEN": f"{HOST}:0",
            "FISHCHAT_SERVER_METRICS_LISTEN": f"{HOST}:0",
            "FISHCHAT_SERVER_WS_LISTEN": f"{HOST}:0",
        }
        out_path, log_path = pod_dir / "stdout", pod_dir / "stderr.log"
        with out_path.open("wb") as stdout, log_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fishchat",
                "serve",
                "access",
                "--config",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                start_new_session=True,
            )
        proc = AccessProcess(name, process, log_path)
        self.processes[name] = proc
        self._starting.discard(name)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not proc.ready:
            proc.ready = _ready_line(out_path)
            if proc.ready:
                break
            if process.returncode is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"access pod {name} did not start (exit {process.returncode}):\n{tail}")
            await asyncio.sleep(0.1)
        add_scrape_target(
            self._job(name),
            [f"{HOST}:{proc.ready['metrics']}"],
            {"namespace": self.namespace, "pod": name},
        )
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = [
            {"type": kind, "status": "True", "lastTransitionTime": now}
            for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        status = {"phase": "Running", "podIP": HOST, "startTime": now, "conditions": conditions}
        await self.kube.merge_patch("v1", "Pod", self.namespace, name, {"status": status}, "status")

    # --- a pod stops ------------------------------------------------------------------------------

    async def _stop(self, pod: Mapping[str, Any], proc: AccessProcess) -> None:
        spec = pod["spec"]
        (container,) = spec["containers"]
        pre_stop = (
            ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
        )
        grace = spec.get("terminationGracePeriodSeconds", 30)
        await asyncio.sleep(pre_stop)
        proc.terminated_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            proc.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(max(1.0, grace - pre_stop)):
                await proc.process.wait()
        except TimeoutError:
            log.warning("access pod %s outlived its grace period; killing it", proc.pod)
            with contextlib.suppress(ProcessLookupError):
                proc.process.kill()
            await proc.process.wait()
        proc.exited_at = time.monotonic()
        proc.exit_code = proc.process.returncode
        remove_scrape_target(self._job(proc.pod))
        await self._release(proc.pod)

    async def _release(self, name: str) -> None:
        try:
            await self.kube.request(
                "PATCH",
                f"/api/v1/namespaces/{self.namespace}/pods/{name}",
                body=[{"op": "remove", "path": "/metadata/finalizers"}],
                content_type="application/json-patch+json",
            )
        except KubeError as error:
            if not error.not_found and error.status != 422:  # gone, or no finalizers left
                raise

    def _job(self, pod: str) -> str:
        return f"fcc-{self.namespace}-{pod}"


def _ready_line(out_path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError):
        for line in out_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == "ready":
                    return event
    return {}


def child_env() -> dict[str, str]:
    """The environment of an access process: ours, without settings that would override its config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FISHCHAT_") or k == "FISHCHAT_CACHE"}
