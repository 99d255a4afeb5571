"""One idempotent reconcile of a FishChatCluster, and the reclaim that runs on its deletion.

Every trigger (create, update, resume, the periodic resync) runs the same pass: parse, render, apply
every child server-side, ensure the topics and the table, observe the Deployments, judge with the
pure `conditions()`, publish the status and post Events for what changed. Running it twice in a row
changes nothing the second time. Failures of a backend do not abort the pass: they become
observations (and so conditions), and the next resync retries.

Deployment status changes between resyncs refresh only the status (`refresh_status`), reusing the
backend observations of the last full pass, so Ready follows the pods promptly without hammering
Kafka and HBase on every pod event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fishchat_operator import hbase_table, kafka_topics, metrics
from fishchat_operator.conditions import conditions
from fishchat_operator.config import OperatorConfig
from fishchat_operator.constants import (
    API_VERSION,
    APP_NAME,
    KIND,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    OPERATOR_NAME,
    ROLES,
    ConditionType,
    Reason,
    ReclaimPolicy,
)
from fishchat_operator.kube import KubeClient, KubeError, describe
from fishchat_operator.model import Cluster, parse_cluster
from fishchat_operator.observations import (
    AutoscalingObservation,
    DeploymentObservation,
    HBaseObservation,
    KafkaObservation,
    Observation,
    Observed,
)
from fishchat_operator.render import hpa_name, render, wants_hpa
from fishchat_operator.schema import SpecError, json_key, parse, to_mapping
from fishchat_operator.status import ClusterStatus, Condition
from fishchat_operator.topics import TopicAction, wanted_topics

APPLY_CONCURRENCY = 8
MIN_RESYNC_PAUSE_SECONDS = 0.5


class EventSink(Protocol):
    def __call__(self, body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None: ...


#: The keys of status the operator owns: one it no longer reports is removed, not left stale.
STATUS_KEYS = frozenset(json_key(f) for f in dataclasses.fields(ClusterStatus))


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class BackendState:
    """What the last full pass saw of the things a status refresh cannot re-check cheaply."""

    apply_errors: tuple[str, ...]
    kafka: KafkaObservation | None
    hbase: HBaseObservation | None


class ReclaimError(Exception):
    """Deleting the topics or the table failed; the finalizer stays and the deletion is retried."""


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        config: OperatorConfig,
        post_event: EventSink,
        clock: Callable[[], str] = utc_now,
        autoscaling: Callable[[str], AutoscalingObservation | None] = lambda uid: None,
    ) -> None:
        self.kube = kube
        self.config = config
        self.post_event = post_event
        self.clock = clock
        #: The autoscaler's last observation of a cluster (by uid), for the status.
        self.autoscaling = autoscaling
        self._locks: dict[str, asyncio.Lock] = {}
        self._last_full: dict[str, float] = {}
        self._backends: dict[str, BackendState] = {}

    # --- entry points used by the kopf handlers ---------------------------------------------------

    async def reconcile(
        self, body: Mapping[str, Any], trigger: str, logger: logging.Logger | logging.LoggerAdapter[Any]
    ) -> ClusterStatus | None:
        """One full pass; None if the cluster is gone or being deleted."""
        meta = body["metadata"]
        uid = meta["uid"]
        async with self._lock(uid):
            # Work from the live object, not the event's copy: a pass that ran just before (another
            # trigger) may have written a status this copy does not show yet.
            live = await self.kube.get(API_VERSION, KIND, meta["namespace"], meta["name"])
            if (
                live is None
                or live["metadata"].get("uid") != uid
                or live["metadata"].get("deletionTimestamp")
            ):
                return None
            started = time.monotonic()
            try:
                status = await self._reconcile(live, logger)
            except Exception:
                metrics.RECONCILES.labels(trigger, "error").inc()
                raise
            finally:
                metrics.DURATION.labels(trigger).observe(time.monotonic() - started)
                self._last_full[uid] = time.monotonic()
            degraded = status.condition(ConditionType.DEGRADED.value)
            result = (
                "invalid"
                if status.roles is None
                else "degraded"
                if degraded and degraded.status == "True"
                else "ok"
            )
            metrics.RECONCILES.labels(trigger, result).inc()
            return status

    async def resync_if_due(
        self, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]
    ) -> None:
        """Run a full pass if the last one is older than the resync period and none is running."""
        uid = body["metadata"]["uid"]
        last = self._last_full.get(uid)
        if self._lock(uid).locked():
            return
        if last is not None and time.monotonic() - last < self.config.resync_seconds:
            return
        await self.reconcile(body, "resync", logger)

    async def refresh_status(
        self,
        namespace: str,
        name: str,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        *,
        wait: bool = False,
    ) -> None:
        """Recompute the status from the Deployments only (after one of them changed), with the last
        backend results and the autoscaler's last observation. Without `wait` it gives way to a pass
        that is running (which publishes a fresher status); with it, it runs after that pass."""
        body = await self.kube.get(API_VERSION, KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        uid = body["metadata"]["uid"]
        lock = self._lock(uid)
        if self._backends.get(uid) is None or (lock.locked() and not wait):
            return  # no full pass yet, or one is running and will publish a fresher status
        async with lock:
            backends = self._backends.get(uid)
            body = await self.kube.get(API_VERSION, KIND, namespace, name) if wait else body
            if backends is None or body is None or body["metadata"].get("uid") != uid:
                return
            try:
                cluster = parse_cluster(body)
            except SpecError:
                return
            observed = Observed(
                now=self.clock(),
                generation=cluster.generation,
                apply_errors=backends.apply_errors,
                deployments=await self._observe_deployments(cluster),
                kafka=backends.kafka,
                hbase=backends.hbase,
                previous=_previous_conditions(body),
                autoscaling=self.autoscaling(uid),
            )
            status = conditions(Observation(cluster, observed))
            await self._publish(body, status, logger)

    async def reclaim(
        self, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]
    ) -> None:
        """On deletion: keep or remove the topics and the table, per spec.reclaimPolicy."""
        uid = body["metadata"]["uid"]
        try:
            cluster = parse_cluster(body)
        except SpecError as error:
            # Without a valid spec we do not know what to delete; keep everything and say so.
            self._event(
                body,
                "Warning",
                Reason.RECLAIM_RETAINED,
                f"Spec invalid ({error}); topics and table are kept.",
            )
            self.forget(uid)
            return
        spec = cluster.spec
        names = [topic.name for _, topic in wanted_topics(spec.topics)]
        if spec.reclaim_policy is ReclaimPolicy.RETAIN:
            message = f"reclaimPolicy Retain: topics {', '.join(names)} and table {spec.table.name} are kept."
            logger.info(message)
            self._event(body, "Normal", Reason.RECLAIM_RETAINED, message)
            self.forget(uid)
            return
        timeout = self.config.backend_timeout_seconds
        hbase = spec.backends.hbase
        try:
            deleted_topics = await kafka_topics.delete_topics(
                spec.backends.kafka.bootstrap_servers, names, timeout
            )
            deleted_table = await hbase_table.delete_table(
                hbase.thrift_host, hbase.thrift_port, spec.table.name, timeout
            )
        except Exception as error:
            metrics.ERRORS.labels("reclaim").inc()
            message = (
                f"reclaimPolicy Delete: could not delete topics/table yet "
                f"({type(error).__name__}: {error}); retrying."
            )
            self._event(body, "Warning", Reason.RECLAIM_FAILED, message)
            raise ReclaimError(message) from error
        message = (
            f"reclaimPolicy Delete: deleted topics [{', '.join(deleted_topics) or 'none existed'}] and "
            f"table {spec.table.name if deleted_table else '(did not exist)'}."
        )
        logger.info(message)
        self._event(body, "Normal", Reason.RECLAIM_DELETED, message)
        self.forget(uid)

    def seconds_until_due(self, uid: str) -> float:
        """How long until the cluster's next periodic pass (at least a short pause between checks)."""
        last = self._last_full.get(uid)
        if last is None:
            return MIN_RESYNC_PAUSE_SECONDS
        return max(MIN_RESYNC_PAUSE_SECONDS, self.config.resync_seconds - (time.monotonic() - last))

    @property
    def managed_clusters(self) -> int:
        return len(self._backends)

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
        self._last_full.pop(uid, None)
        self._backends.pop(uid, None)
        metrics.CLUSTERS.set(len(self._backends))

    # --- the pass ---------------------------------------------------------------------------------

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    async def _reconcile(
        self, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]
    ) -> ClusterStatus:
        meta = body["metadata"]
        previous = _previous_conditions(body)
        try:
            cluster = parse_cluster(body)
        except SpecError as error:
            observed = Observed(
                now=self.clock(),
                generation=int(meta.get("generation", 0)),
                spec_error=str(error),
                previous=previous,
            )
            status = conditions(Observation(None, observed))
            await self._publish(body, status, logger)
            return status

        apply_errors, created = await self._apply_all(cluster, logger)
        if not wants_hpa(cluster):
            apply_errors += await self._remove_hpa(cluster)
        if created:
            kinds = Counter(kind for kind, _ in created)
            summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
            self._event(
                body, "Normal", Reason.CHILDREN_CREATED, f"Created {len(created)} objects: {summary}."
            )
        kafka_outcome, table_outcome = await asyncio.gather(
            self._ensure_topics(cluster), self._ensure_table(cluster)
        )
        for change in kafka_outcome.changes:
            if change.action is TopicAction.CREATE:
                self._event(
                    body,
                    "Normal",
                    Reason.TOPIC_CREATED,
                    f"Created Kafka topic {change.name} with {change.partitions} partitions, "
                    f"replication factor {change.replication_factor}.",
                )
            else:
                self._event(
                    body,
                    "Normal",
                    Reason.PARTITIONS_INCREASED,
                    f"Grew Kafka topic {change.name} to {change.partitions} partitions.",
                )
        if table_outcome.created:
            self._event(
                body,
                "Normal",
                Reason.TABLE_CREATED,
                f"Created HBase table {cluster.spec.table.name} (families user, msg).",
            )
        self._backends[cluster.uid] = BackendState(
            apply_errors, kafka_outcome.observation, table_outcome.observation
        )
        metrics.CLUSTERS.set(len(self._backends))

        observed = Observed(
            now=self.clock(),
            generation=cluster.generation,
            apply_errors=apply_errors,
            deployments=await self._observe_deployments(cluster),
            kafka=kafka_outcome.observation,
            hbase=table_outcome.observation,
            previous=previous,
            autoscaling=self.autoscaling(cluster.uid),
        )
        status = conditions(Observation(cluster, observed))
        await self._publish(body, status, logger)
        return status

    async def _apply_all(
        self, cluster: Cluster, logger: logging.Logger | logging.LoggerAdapter[Any]
    ) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
        """Apply every child; returns the failures (as messages) and the (kind, name)s created."""
        gate = asyncio.Semaphore(APPLY_CONCURRENCY)
        errors: list[str] = []
        created: list[tuple[str, str]] = []

        async def apply(manifest: dict[str, Any]) -> None:
            async with gate:
                try:
                    _, was_created = await self.kube.apply(manifest)
                except KubeError as error:
                    metrics.ERRORS.labels("apply").inc()
                    errors.append(f"{describe(manifest)} ({error})")
                    return
                if was_created:
                    created.append((manifest["kind"], manifest["metadata"]["name"]))

        await asyncio.gather(*(apply(m) for m in render(cluster)))
        if errors:
            logger.info("Could not apply %d children: %s", len(errors), "; ".join(errors))
        return tuple(sorted(errors)), sorted(created)

    async def _remove_hpa(self, cluster: Cluster) -> tuple[str, ...]:
        """Delete the access HPA this cluster had while autoscaling was delegated to one (another
        mode, or autoscaling off, must not leave it fighting over the replicas)."""
        name = hpa_name(cluster)
        try:
            hpa = await self.kube.get("autoscaling/v2", "HorizontalPodAutoscaler", cluster.namespace, name)
            owners = ((hpa or {}).get("metadata") or {}).get("ownerReferences") or []
            if hpa is not None and any(o.get("uid") == cluster.uid for o in owners):
                await self.kube.delete("autoscaling/v2", "HorizontalPodAutoscaler", cluster.namespace, name)
        except KubeError as error:
            metrics.ERRORS.labels("apply").inc()
            return (f"HorizontalPodAutoscaler {cluster.namespace}/{name} (could not remove it: {error})",)
        return ()

    async def _ensure_topics(self, cluster: Cluster) -> kafka_topics.TopicsOutcome:
        outcome = await kafka_topics.ensure_topics(
            cluster.spec.backends.kafka.bootstrap_servers,
            cluster.spec.topics,
            self.config.backend_timeout_seconds,
        )
        if outcome.observation.error or outcome.observation.failures:
            metrics.ERRORS.labels("kafka").inc()
        return outcome

    async def _ensure_table(self, cluster: Cluster) -> hbase_table.TableOutcome:
        hbase = cluster.spec.backends.hbase
        outcome = await hbase_table.ensure_table(
            hbase.thrift_host, hbase.thrift_port, cluster.spec.table.name, self.config.backend_timeout_seconds
        )
        if outcome.observation.error:
            metrics.ERRORS.labels("hbase").inc()
        return outcome

    async def _observe_deployments(self, cluster: Cluster) -> tuple[DeploymentObservation, ...]:
        selector = ",".join(
            f"{k}={v}"
            for k, v in {
                LABEL_NAME: APP_NAME,
                LABEL_INSTANCE: cluster.name,
                LABEL_MANAGED_BY: OPERATOR_NAME,
            }.items()
        )
        try:
            items = await self.kube.list_objects("apps/v1", "Deployment", cluster.namespace, selector)
        except KubeError:
            metrics.ERRORS.labels("observe").inc()
            return ()
        by_role = {role.value: role for role in ROLES}
        found: list[DeploymentObservation] = []
        for item in items:
            owners = item["metadata"].get("ownerReferences") or []
            role = by_role.get(item["metadata"].get("labels", {}).get(LABEL_COMPONENT, ""))
            if role is None or not any(o.get("uid") == cluster.uid for o in owners):
                continue
            found.append(DeploymentObservation.from_deployment(role, item))
        return tuple(sorted(found, key=lambda d: ROLES.index(d.role)))

    async def _publish(
        self,
        body: Mapping[str, Any],
        status: ClusterStatus,
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        meta = body["metadata"]
        # Exported before the unchanged check, so a restarted operator reports settled clusters too.
        _export_metrics(meta["namespace"], meta["name"], status)
        new = to_mapping(status)
        current = body.get("status") or {}
        gone = {key: None for key in current if key in STATUS_KEYS and key not in new}
        if not gone and all(current.get(key) == value for key, value in new.items()):
            return  # unchanged: no write, no event
        try:
            await self.kube.merge_patch(
                API_VERSION, KIND, meta["namespace"], meta["name"], {"status": {**new, **gone}}, "status"
            )
        except KubeError as error:
            if error.not_found:
                return  # deleted meanwhile
            metrics.ERRORS.labels("status").inc()
            raise
        self._transition_events(body, _previous_conditions(body), status)
        logger.info(
            "Status: %s",
            ", ".join(f"{c.type}={c.status} ({c.reason})" for c in status.conditions),
        )

    def _transition_events(
        self, body: Mapping[str, Any], before: tuple[Condition, ...], status: ClusterStatus
    ) -> None:
        old = {c.type: c for c in before}
        ready, degraded = (
            status.condition(ConditionType.READY.value),
            status.condition(ConditionType.DEGRADED.value),
        )
        old_ready, old_degraded = old.get(ConditionType.READY.value), old.get(ConditionType.DEGRADED.value)
        if ready and ready.status == "True" and (old_ready is None or old_ready.status != "True"):
            self._event(body, "Normal", Reason.CLUSTER_READY, ready.message)
        if degraded and degraded.status == "True":
            if (
                old_degraded is None
                or old_degraded.status != "True"
                or old_degraded.reason != degraded.reason
            ):
                self._event(body, "Warning", Reason(degraded.reason), degraded.message)
        elif degraded and old_degraded is not None and old_degraded.status == "True":
            self._event(body, "Normal", Reason.RECOVERED, f"Recovered from {old_degraded.reason}.")

    def _event(self, body: Mapping[str, Any], type_: str, reason: Reason, message: str) -> None:
        # Kubernetes truncates long event messages anyway; keep them within its 1 KiB limit.
        self.post_event(body, type=type_, reason=reason.value, message=message[:1024])


def _export_metrics(namespace: str, name: str, status: ClusterStatus) -> None:
    ready = status.condition(ConditionType.READY.value)
    metrics.READY.labels(namespace, name).set(1 if ready and ready.status == "True" else 0)
    for role in ROLES:
        counts = status.roles.of(role) if status.roles else None
        if counts is not None:
            metrics.ROLE_REPLICAS.labels(namespace, name, role.value, "desired").set(counts.desired)
            metrics.ROLE_REPLICAS.labels(namespace, name, role.value, "ready").set(counts.ready)


def _previous_conditions(body: Mapping[str, Any]) -> tuple[Condition, ...]:
    raw = (body.get("status") or {}).get("conditions") or []
    out: list[Condition] = []
    for item in raw:
        try:
            out.append(parse(Condition, item, "status.conditions[]"))
        except SpecError:
            continue  # someone else's malformed condition: recomputed from scratch
    return tuple(out)
