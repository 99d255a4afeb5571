"""Benchmark: access autoscaling's reaction to rising connections, and the drain of an access server.

Both on the stack's real servers, with every role its own `fishchat serve` process
(`fishchat.cluster.Cluster`: two plain access servers, in a namespace of its own):

- **Drain.** `--connections` clients are logged in on one access server, 20 more on each carry
  steady counted traffic (`tests/traffic.py`: every acked message must arrive once, in order). That
  server gets SIGTERM, as a scale-down's kubelet sends it: figures are the time from SIGTERM until
  every one of its clients is logged in elsewhere (through the gateway), and the longest wait for an
  ack during the drain. Baselines, same run: logging the same clients in fresh (what the move
  costs at least), and the longest ack wait of the same traffic before the drain.
- **Scale-up.** The operator (in this process, kopf) manages a FishChatCluster whose access Pods run
  as local `fishchat serve access` processes (`tests/operator/access_pods.py` plays the kubelet; the
  stack's API server and kube-controller-manager make the Pods) scraped by the stack's Prometheus
  (every 2 s), and reads the connection count every `--autoscale-seconds`. Clients log in on the
  access pod until `targetConnectionsPerPod` is exceeded: the figure is the time from the last login
  to the access Deployment asking for one pod more (twice: 1 -> 2, 2 -> 3 pods). Baseline, same run:
  `kubectl scale fcc` (a write of the scale subresource) reaching the Deployment, the operator's own
  part of that path.

Figures, not pass/fail. Target (issue 10): scale-up within 30 s; 0 lost, duplicated or reordered.

    .venv/bin/python bench/run.py autoscale
    .venv/bin/python bench/autoscale_bench.py --connections 200 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import kopf
from figures import Baseline, Figure, write

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' harnesses

from fishchat.client import Backoff, ChatClient, Endpoint
from fishchat.cluster import Cluster, ClusterError, Namespace
from fishchat.stack import Stack
from fishchat.stack.base import stack_dir
from fishchat_operator.config import OperatorConfig
from fishchat_operator.constants import API_VERSION, CRD_NAME, KIND
from fishchat_operator.crd import crd
from fishchat_operator.kube import KubeClient, KubeError
from tests.integration.harness import register
from tests.operator.access_pods import AccessPods, child_env
from tests.traffic import Ledger, SteadyTraffic

T = TypeVar("T")

SCALE_UP_TARGET_S = 30.0
TRAFFIC_CLIENTS = 20  # counted senders, half on the draining server
TRAFFIC_RATE = 100.0  # messages/s over all of them
#: Cheap password hashing and no rate limits (the benchmark logs hundreds of users in from one address).
CLUSTER_SETTINGS: dict[str, Any] = {
    "log_level": "warning",
    "chat": {"scrypt": {"log2_n": 10}, "limits": {"enabled": False}},
    "access": {"drain_timeout_s": 20.0},
}
STACK = ("redis", "mariadb", "etcd", "kafka", "hbase", "prometheus", "kube")


class BenchError(Exception):
    """The benchmark cannot go on."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


async def until(probe: Callable[[], Awaitable[T | None]], what: str, within: float, every: float = 0.05) -> T:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(every)
    raise BenchError(f"timed out after {within:g}s waiting for {what}")


def client(cluster: Cluster, uid: int, token: str, access: Endpoint | None, **options: Any) -> ChatClient:
    return ChatClient(
        uid,
        token,
        gateway=cluster.gateway,
        access=access,
        request_timeout=30.0,
        connect_timeout=30.0,
        backoff=Backoff(max_attempts=10),
        **options,
    )


async def users(cluster: Cluster, count: int, parallel: int = 8) -> list[tuple[int, str]]:
    gate = asyncio.Semaphore(parallel)

    async def one() -> tuple[int, str]:
        async with gate:
            return await register(cluster.api_url)

    return list(await asyncio.gather(*(one() for _ in range(count))))


# --- the drain ------------------------------------------------------------------------------------


async def drain_bench(cluster: Cluster, connections: int) -> tuple[list[Figure], dict[str, Any]]:
    stay, leave = cluster.access_endpoints
    log(f"drain: registering {connections + 2 * TRAFFIC_CLIENTS} users")
    idle_users = await users(cluster, connections)
    traffic_users = await users(cluster, 2 * TRAFFIC_CLIENTS)
    opened: list[ChatClient] = []
    try:
        # The baseline: the same clients logging in fresh, all at once, on the server they will leave.
        idle = [client(cluster, uid, token, leave, auto_sync=False) for uid, token in idle_users]
        began = time.monotonic()
        await asyncio.gather(*(c.connect() for c in idle))
        fresh_s = time.monotonic() - began
        opened += idle
        log(f"drain: {connections} fresh logins took {fresh_s:.2f}s")

        # Counted traffic before the drain (its own clients and ledger: message ids restart at 0).
        phases: list[SteadyTraffic] = []
        for half in (traffic_users[:TRAFFIC_CLIENTS], traffic_users[TRAFFIC_CLIENTS:]):
            ledger = Ledger()
            group = [
                client(
                    cluster,
                    uid,
                    token,
                    leave if n < len(half) // 2 else stay,
                    on_message=ledger.handler_for(uid),
                )
                for n, (uid, token) in enumerate(half)
            ]
            for c in group:
                await c.connect()
            opened += group
            phases.append(SteadyTraffic(group, ledger, TRAFFIC_RATE / 2))
        before, during = phases
        before.start()
        await asyncio.sleep(10.0)
        await before.stop_and_settle()
        before_report = before.report("before the drain")
        before.verify(before_report)
        log(before_report)

        moving = [*idle, *during.clients[: TRAFFIC_CLIENTS // 2]]
        during.start()
        await asyncio.sleep(3.0)
        log(f"drain: SIGTERM to the access server holding {len(moving)} clients; {load()}")
        loop = asyncio.get_running_loop()
        exited = loop.run_in_executor(None, cluster.terminate, "access", 1, 60.0)
        sigterm = time.monotonic()

        async def moved() -> bool:
            return all(c.access_endpoint == stay for c in moving)

        await until(moved, f"{len(moving)} clients to log in elsewhere", within=120.0)
        move_s = time.monotonic() - sigterm
        code = await exited
        drain_s = time.monotonic() - sigterm
        await asyncio.sleep(3.0)
        await during.stop_and_settle()
        during_report = during.report("during the drain")
        during.verify(during_report)
        log(during_report)
    finally:
        await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)
    longest_before = max(s.longest_s for s in before.senders)
    longest_during = max(s.longest_s for s in during.senders)
    messages = sum(len(s.acked) for s in during.senders)
    figures = [
        Figure(
            key="autoscale.drain_move",
            what=f"drain: {len(moving)} connections moved off a draining access server (SIGTERM to all "
            "logged in elsewhere, through the gateway)",
            value=move_s,
            unit="s",
            baseline=Baseline(f"the same {connections} clients logging in fresh at once", fresh_s, "s"),
            detail=f"clients spread their reconnects over 2 s (ResReconnect retryAfterMs); the server "
            f"exited {drain_s:.1f}s after SIGTERM with status {code}",
        ),
        Figure(
            key="autoscale.drain_ack",
            what=f"drain: longest wait for an ack, {TRAFFIC_CLIENTS} senders at {TRAFFIC_RATE / 2:g} msg/s "
            "(half on the draining server)",
            value=longest_during,
            unit="s",
            baseline=Baseline("the same traffic before the drain", longest_before, "s"),
            target="0 lost, 0 duplicated, 0 reordered",
            met=True,  # verify() raised otherwise
            detail=f"{messages} messages during the drain: 0 lost, 0 duplicated, 0 reordered; "
            f"retried by the application: {sum(s.retried_sends for s in during.senders)}",
        ),
    ]
    details = {"before": before_report, "during": during_report, "fresh_login_s": fresh_s, "move_s": move_s}
    return figures, details


# --- the scale-up ---------------------------------------------------------------------------------


class OperatorThread:
    """The operator, in a thread with its own loop (as the operator tests run it), on the admin
    kubeconfig, managing namespaces `fcc-bench-*`."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fishchat-operator", daemon=True)

    def _run(self) -> None:
        import fishchat_operator.handlers  # noqa: F401  (registers the handlers)

        try:
            asyncio.run(
                kopf.operator(
                    settings=kopf.OperatorSettings(),
                    memo=kopf.Memo(config=self.config),
                    namespaces=["fcc-bench-*"],
                    standalone=True,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                )
            )
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> OperatorThread:
        self._thread.start()
        if not self.ready_flag.wait(60):
            raise BenchError(f"the operator did not start: {self.error!r}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_flag.set()
        self._thread.join(60)


def cluster_body(namespace: str, cluster: Cluster, env: dict[str, str], target: int) -> dict[str, Any]:
    suffix = namespace.rsplit("-", 1)[-1]
    etcd = cluster.serve_config().etcd.endpoints.split(",")[0]
    host, _, port = env["FISHCHAT_HBASE_THRIFT"].rpartition(":")
    roles: dict[str, Any] = {
        role: {"replicas": 0}
        for role in ("gateway", "logic", "notify", "register", "manager", "idgen", "msgJob")
    }
    # More CPU than any node has: no scheduler takes the access Pods; their containers are our processes.
    roles["access"] = {
        "replicas": 1,
        "terminationGracePeriodSeconds": 15,
        "preStopSleepSeconds": 1,
        "resources": {"requests": {"cpu": "1000"}},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "bench", "namespace": namespace},
        "spec": {
            "backends": {
                "kafka": {"bootstrapServers": [env["FISHCHAT_KAFKA_BOOTSTRAP"]]},
                "hbase": {"thriftHost": host, "thriftPort": int(port)},
                "redis": {"url": env["FISHCHAT_REDIS_URL"].split("?")[0]},
                "mariadb": {"host": "127.0.0.1", "credentialsSecret": {"name": "fishchat-db"}},
                "etcd": {"endpoints": [f"http://{etcd}"], "prefix": cluster.namespace.etcd_root},
            },
            "topics": {
                "p2p": {"name": f"bench_{suffix}_p2p", "partitions": 1, "replicationFactor": 1},
                "group": {"name": f"bench_{suffix}_group", "partitions": 1, "replicationFactor": 1},
            },
            "table": {"name": f"bench_{suffix}_im"},
            "roles": roles,
            "autoscaling": {
                "enabled": False,
                "minReplicas": 1,
                "maxReplicas": 4,
                "targetConnectionsPerPod": target,
                "scaleDownWindowSeconds": 600,
                "prometheus": {"url": env["FISHCHAT_PROMETHEUS_URL"]},
            },
            "reclaimPolicy": "Delete",
        },
    }


async def scale_up_bench(
    cluster: Cluster, env: dict[str, str], autoscale_s: float, target: int, workdir: Path
) -> tuple[list[Figure], dict[str, Any]]:
    kube = KubeClient(lambda: kopf.login_with_kubeconfig(settings=kopf.OperatorSettings()))
    namespace = f"fcc-bench-{secrets.token_hex(4)}"
    config = OperatorConfig(
        autoscale_seconds=autoscale_s, metrics_port=0, prometheus_url=env["FISHCHAT_PROMETHEUS_URL"]
    )
    opened: list[ChatClient] = []
    try:
        await kube.apply(crd())

        async def established() -> bool:
            obj = await kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, CRD_NAME)
            return any(
                c["type"] == "Established" and c["status"] == "True"
                for c in ((obj or {}).get("status") or {}).get("conditions") or []
            )

        await until(established, "the CRD", within=60.0, every=0.5)
        await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        with OperatorThread(config):
            await kube.create(cluster_body(namespace, cluster, env, target))
            async with AccessPods(kube, namespace, "bench", workdir / "pods", child_env()) as pods:

                async def deployment_replicas(wanted: int) -> bool:
                    found = await kube.get("apps/v1", "Deployment", namespace, "bench-access")
                    return bool(found and found["spec"].get("replicas") == wanted)

                async def running(count: int) -> bool:
                    return len(pods.running()) == count

                await until(partial(deployment_replicas, 1), "the access Deployment", within=120.0)
                await until(partial(running, 1), "the first access pod", within=120.0)

                # Baseline: a manual scale reaching the Deployment (autoscaling is still off).
                manual: list[float] = []
                for wanted in (2, 1):
                    began = time.monotonic()
                    await kube.merge_patch(
                        API_VERSION, KIND, namespace, "bench", {"spec": {"replicas": wanted}}, "scale"
                    )
                    await until(partial(deployment_replicas, wanted), f"the Deployment at {wanted}", 60.0)
                    manual.append(time.monotonic() - began)
                    await until(partial(running, wanted), f"{wanted} running access pods", 120.0)
                await kube.merge_patch(
                    API_VERSION, KIND, namespace, "bench", {"spec": {"autoscaling": {"enabled": True}}}
                )
                await asyncio.sleep(2 * autoscale_s)
                (first,) = pods.running().values()
                reactions: list[float] = []
                for replicas in (2, 3):
                    accounts = await users(cluster, target * (replicas - 1) + 1 - len(opened))
                    batch = [
                        client(cluster, uid, token, first.client, auto_sync=False) for uid, token in accounts
                    ]
                    await asyncio.gather(*(c.connect() for c in batch))
                    opened += batch
                    logged_in = time.monotonic()
                    await until(partial(deployment_replicas, replicas), f"{replicas} access replicas", 120.0)
                    reactions.append(time.monotonic() - logged_in)
                    log(
                        f"scale-up: {len(opened)} connections, {replicas} replicas after {reactions[-1]:.1f}s"
                    )
                    await until(partial(running, replicas), f"{replicas} running access pods", 120.0)
            await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)
            await kube.delete(API_VERSION, KIND, namespace, "bench")

            async def gone() -> bool:
                return await kube.get(API_VERSION, KIND, namespace, "bench") is None

            await until(gone, "the cluster's deletion (topics and table dropped)", within=120.0, every=0.5)
    finally:
        await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)
        with contextlib.suppress(KubeError):
            await kube.delete("v1", "Namespace", None, namespace)
        await kube.close()
    worst = max(reactions)
    figures = [
        Figure(
            key="autoscale.scale_up",
            what=f"scale-up: connections over {target} per pod to one more access replica in the Deployment "
            f"(worst of 1->2 and 2->3; Prometheus scrape 2 s, operator tick {autoscale_s:g} s)",
            value=worst,
            unit="s",
            baseline=Baseline(
                "`kubectl scale fcc` reaching the Deployment (the operator's apply)", max(manual), "s"
            ),
            target=f"<= {SCALE_UP_TARGET_S:g} s",
            met=worst <= SCALE_UP_TARGET_S,
            detail="reactions " + ", ".join(f"{r:.1f} s" for r in reactions),
        )
    ]
    return figures, {"reactions_s": reactions, "manual_scale_s": manual}


# --- main -----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    log(f"stack: {', '.join(STACK)}")
    Stack(STACK).up(progress=log)
    env = Stack(STACK).env()
    os.environ.update(env)
    workdir = stack_dir() / "bench" / f"autoscale-{int(time.time())}"
    cluster = Cluster(
        workdir,
        access=2,
        settings=CLUSTER_SETTINGS,
        namespace=Namespace.fresh(),
        fresh_database=True,
        ready_timeout_s=120.0,
    )
    try:
        cluster.start()
    except ClusterError as exc:
        cluster.destroy()
        raise BenchError(f"the cluster did not start: {exc}") from exc
    figures: list[Figure] = []
    details: dict[str, Any] = {"load_average_start": os.getloadavg()}
    try:
        log(f"drain, {load()}")
        found, more = await drain_bench(cluster, args.connections)
        figures += found
        details["drain"] = more | {"load_average": os.getloadavg()}
        log(f"scale-up, {load()}")
        found, more = await scale_up_bench(cluster, env, args.autoscale_seconds, args.target, workdir)
        figures += found
        details["scale_up"] = more | {"load_average": os.getloadavg()}
    finally:
        try:
            cluster.stop()
        finally:
            cluster.destroy()
    return figures, details


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=500, help="idle clients on the drained server")
    parser.add_argument("--target", type=int, default=20, help="targetConnectionsPerPod of the scale-up")
    parser.add_argument(
        "--autoscale-seconds", type=float, default=5.0, help="the operator's tick (its production default: 5)"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    try:
        figures, details = asyncio.run(run(args))
    except BenchError as exc:
        print(f"autoscale bench: {exc}", file=sys.stderr)
        return 1
    print("autoscale benchmark (loopback; figures, not pass/fail)")
    for figure in figures:
        ratio = f" = {figure.ratio:.2f} x baseline" if figure.ratio is not None else ""
        base = figure.baseline
        print(f"  {figure.what}: {figure.value:.2f} {figure.unit}{ratio}")
        if base is not None:
            print(f"    baseline: {base.what}: {base.value:.2f} {base.unit}")
        if figure.target:
            print(f"    target {figure.target}: {'met' if figure.met else 'NOT met'}")
        if figure.detail:
            print(f"    {figure.detail}")
    print(f"  {load()} (1, 5, 15 min) at the end")
    if args.json:
        write(
            args.json,
            figures,
            details | {"settings": {k: str(v) for k, v in vars(args).items() if k != "json"}},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
