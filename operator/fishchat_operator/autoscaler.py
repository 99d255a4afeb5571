"""Access autoscaling: per cluster, read the live connection count from Prometheus and move the access
replicas (the pure rules are in `autoscaling.py`).

One `tick` per cluster every `autoscale_seconds` (a kopf daemon in `handlers.py`):

- autoscaling disabled: nothing is read or written, so a `kubectl scale fcc/<name>` stays as set;
- mode Operator: list the access pods and their Deployment, run the cluster's query against its
  Prometheus (`spec.autoscaling.prometheus`, else the operator's default), `decide()`, and when the
  replicas change write them through the cluster's scale subresource (the same path `kubectl scale`
  and an HPA use; the reconcile then applies them to the Deployment), with an Event. Before a
  scale-down each access pod gets `controller.kubernetes.io/pod-deletion-cost` = its connection
  count, so the ReplicaSet controller removes the emptiest pods first;
- mode HPA: the rendered HorizontalPodAutoscaler scales; the tick only reads its status.

What the tick saw and did becomes an `AutoscalingObservation`, which the reconciler turns into
`status.autoscaling`, `status.connections` and the ScalingActive condition; the status is refreshed
whenever the observation changes. A count that cannot be read (Prometheus unreachable, a query it
refuses, no series) keeps the replicas and shows as ScalingActive False and Degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp

from fishchat_operator import metrics
from fishchat_operator.autoscaling import (
    Action,
    Decision,
    Measurement,
    Memory,
    decide,
    deletion_costs,
    measurement_from,
    render_query,
)
from fishchat_operator.config import OperatorConfig
from fishchat_operator.constants import (
    ANNOTATION_DELETION_COST,
    API_VERSION,
    KIND,
    AutoscalingMode,
    Reason,
    Role,
)
from fishchat_operator.kube import KubeClient, KubeError
from fishchat_operator.model import Cluster, parse_cluster
from fishchat_operator.observations import AutoscalingObservation
from fishchat_operator.prometheus import QueryError, instant_query
from fishchat_operator.reconcile import utc_now
from fishchat_operator.render import child_name, hpa_name, selector_string
from fishchat_operator.schema import SpecError

Logger = logging.Logger | logging.LoggerAdapter[Any]
Publish = Callable[[str, str, Logger], Awaitable[None]]
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


class EventSink(Protocol):
    def __call__(self, body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None: ...


class Autoscaler:
    def __init__(
        self,
        kube: KubeClient,
        config: OperatorConfig,
        post_event: EventSink,
        publish: Publish,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], str] = utc_now,
    ) -> None:
        self.kube = kube
        self.config = config
        self.post_event = post_event
        self.publish = publish
        self.clock = clock
        self.wall = wall
        self._memory: dict[str, Memory] = {}
        self._observations: dict[str, AutoscalingObservation] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def observation(self, uid: str) -> AutoscalingObservation | None:
        """The last observation of cluster `uid` (None while its autoscaling is disabled or unseen)."""
        return self._observations.get(uid)

    def forget(self, uid: str) -> None:
        self._memory.pop(uid, None)
        self._observations.pop(uid, None)

    async def close(self) -> None:
        """Closed stays closed (as `KubeClient.close`): a tick still under way opens no new session."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def tick(self, namespace: str, name: str, logger: Logger) -> None:
        """One look at cluster `namespace/name` (see the module docstring)."""
        body = await self.kube.get(API_VERSION, KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        try:
            cluster = parse_cluster(body)
        except SpecError:
            return  # the reconcile reports it; nothing to scale by
        previous = self._observations.get(cluster.uid)
        policy = cluster.spec.autoscaling
        if not policy.enabled:
            self.forget(cluster.uid)
            new = None
        elif policy.mode is AutoscalingMode.HPA:
            self._memory.pop(cluster.uid, None)
            new = await self._observe_hpa(cluster)
        else:
            new = await self._autoscale(cluster, body, previous, logger)
        if new is not None:
            self._observations[cluster.uid] = new
        if new is not None and new.connections is not None:
            metrics.ACCESS_CONNECTIONS.labels(namespace, name).set(new.connections)
        else:
            with contextlib.suppress(KeyError):  # no count: no sample rather than a stale one
                metrics.ACCESS_CONNECTIONS.remove(namespace, name)
        if new != previous:
            await self.publish(namespace, name, logger)

    # --- mode Operator ----------------------------------------------------------------------------

    async def _autoscale(
        self,
        cluster: Cluster,
        body: Mapping[str, Any],
        previous: AutoscalingObservation | None,
        logger: Logger,
    ) -> AutoscalingObservation:
        namespace = cluster.namespace
        pods = await self.kube.list_objects("v1", "Pod", namespace, selector_string(cluster, Role.ACCESS))
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        ready = [p["metadata"]["name"] for p in live if _ready(p)]
        deployment = await self.kube.get("apps/v1", "Deployment", namespace, child_name(cluster, Role.ACCESS))
        replicas = cluster.spec.roles.access.replicas
        settled = len(live) == len(pods) and _settled(deployment, replicas)

        measurement, metric = await self._measure(cluster, ready, [p["metadata"]["name"] for p in live])
        memory = self._memory.get(cluster.uid, Memory())
        decision = decide(
            cluster.spec.autoscaling,
            replicas,
            measurement,
            memory,
            self.clock(),
            settled=settled,
            missing=f"no connection count ({metric[1]})",
        )
        self._memory[cluster.uid] = decision.memory
        last_scale = (
            previous.last_scale_time
            if previous is not None
            else ((body.get("status") or {}).get("autoscaling") or {}).get("lastScaleTime")
        )
        summary = decision.reason
        if decision.action is not Action.HOLD:
            try:
                await self._scale(cluster, body, decision, measurement, live)
            except KubeError as error:
                logger.warning("Could not scale access to %d: %s", decision.replicas, error)
                self._memory[cluster.uid] = memory  # the scale did not happen: forget it happened
                summary = f"could not set {decision.replicas} replicas ({error}); {decision.reason}"
            else:
                last_scale = self.wall()
        return AutoscalingObservation(
            mode=AutoscalingMode.OPERATOR,
            connections=measurement.total if measurement is not None else None,
            desired_replicas=decision.replicas,
            last_scale_time=last_scale,
            decision=summary,
            metric_status=metric[0],
            metric_reason=metric[1],
            metric_message=metric[2],
        )

    async def _measure(
        self, cluster: Cluster, ready: list[str], live: list[str]
    ) -> tuple[Measurement | None, tuple[str, str, str]]:
        """The measurement (or None) and the ScalingActive (status, reason, message) it supports."""
        prometheus = cluster.spec.autoscaling.prometheus
        url = prometheus.url or self.config.prometheus_url
        try:
            query = render_query(prometheus.query, cluster)
        except ValueError as error:
            metrics.METRIC_ERRORS.labels(Reason.INVALID_QUERY.value).inc()
            return None, (FALSE, Reason.INVALID_QUERY.value, f"spec.autoscaling.prometheus.query: {error}")
        if self._session is None:
            if self._closed:
                raise KubeError(0, "Closed", "the autoscaler is closed (the operator is stopping)")
            self._session = aiohttp.ClientSession(headers={"User-Agent": "fishchat-operator"})
        try:
            samples = await instant_query(self._session, url, query, self.config.backend_timeout_seconds)
        except QueryError as error:
            metrics.METRIC_ERRORS.labels(error.reason.value).inc()
            return None, (FALSE, error.reason.value, error.message)
        measurement = measurement_from(samples, prometheus.pod_label, ready, live)
        if measurement is None:
            if not ready:
                return None, (
                    UNKNOWN,
                    Reason.NO_READY_PODS.value,
                    "No access pod is ready; nothing to measure yet.",
                )
            metrics.METRIC_ERRORS.labels(Reason.MISSING_METRICS.value).inc()
            return None, (
                FALSE,
                Reason.MISSING_METRICS.value,
                f"Prometheus at {url} has no samples of {query!r} for the {len(ready)} ready access pods; "
                "is it scraping their metrics port (9100, /metrics)?",
            )
        message = f"Connections are read from Prometheus at {url}."
        if measurement.unmeasured:
            message += f" No series yet for {', '.join(measurement.unmeasured)}, so no scale-down."
        return measurement, (TRUE, Reason.VALID_METRIC.value, message)

    async def _scale(
        self,
        cluster: Cluster,
        body: Mapping[str, Any],
        decision: Decision,
        measurement: Measurement | None,
        live: list[dict[str, Any]],
    ) -> None:
        replicas = cluster.spec.roles.access.replicas
        if decision.action is Action.SCALE_DOWN and measurement is not None and measurement.per_pod:
            await self._set_deletion_costs(cluster.namespace, live, deletion_costs(measurement.per_pod))
        await self.kube.merge_patch(
            API_VERSION,
            KIND,
            cluster.namespace,
            cluster.name,
            {"spec": {"replicas": decision.replicas}},
            "scale",
        )
        up = decision.action is Action.SCALE_UP
        metrics.SCALINGS.labels("up" if up else "down").inc()
        self.post_event(
            body,
            type="Normal",
            reason=(Reason.SCALED_UP if up else Reason.SCALED_DOWN).value,
            message=f"Access {replicas} -> {decision.replicas}: {decision.reason}."[:1024],
        )

    async def _set_deletion_costs(
        self, namespace: str, live: list[dict[str, Any]], costs: Mapping[str, int]
    ) -> None:
        async def mark(pod: Mapping[str, Any]) -> None:
            name = pod["metadata"]["name"]
            value = str(costs[name])
            if (pod["metadata"].get("annotations") or {}).get(ANNOTATION_DELETION_COST) == value:
                return
            patch = {"metadata": {"annotations": {ANNOTATION_DELETION_COST: value}}}
            try:
                await self.kube.merge_patch("v1", "Pod", namespace, name, patch)
            except KubeError as error:
                if not error.not_found:  # a pod that went meanwhile needs no cost
                    raise

        await asyncio.gather(*(mark(p) for p in live if p["metadata"]["name"] in costs))

    # --- mode HPA ---------------------------------------------------------------------------------

    async def _observe_hpa(self, cluster: Cluster) -> AutoscalingObservation:
        name = hpa_name(cluster)
        hpa = await self.kube.get("autoscaling/v2", "HorizontalPodAutoscaler", cluster.namespace, name)
        status = (hpa or {}).get("status") or {}
        active = next((c for c in status.get("conditions") or [] if c.get("type") == "ScalingActive"), None)
        if hpa is None or active is None:
            what = "is not created yet" if hpa is None else "has not evaluated its metric yet"
            metric = (UNKNOWN, Reason.HPA_PENDING.value, f"HorizontalPodAutoscaler {name} {what}.")
        else:
            metric = (
                str(active.get("status", UNKNOWN)),
                str(active.get("reason") or Reason.HPA_PENDING.value),
                f"HorizontalPodAutoscaler {name}: {active.get('message', '')}",
            )
        desired = status.get("desiredReplicas")
        return AutoscalingObservation(
            mode=AutoscalingMode.HPA,
            desired_replicas=desired if isinstance(desired, int) and desired >= 0 else None,
            last_scale_time=status.get("lastScaleTime"),
            decision=f"HorizontalPodAutoscaler {name} scales access; the operator does not write replicas.",
            metric_status=metric[0],
            metric_reason=metric[1],
            metric_message=metric[2],
        )


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _settled(deployment: Mapping[str, Any] | None, replicas: int) -> bool:
    """The access Deployment runs the wanted replicas and no more (a scale-down step has finished)."""
    if deployment is None:
        return False
    meta, spec, status = deployment["metadata"], deployment.get("spec") or {}, deployment.get("status") or {}
    return (
        spec.get("replicas") == replicas
        and status.get("observedGeneration", 0) >= meta.get("generation", 0)
        and status.get("replicas", 0) <= replicas
    )
