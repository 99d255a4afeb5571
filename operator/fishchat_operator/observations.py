"""What one reconcile saw, as plain records: the input of the pure `conditions()`.

The I/O side (`reconcile.py`) fills these from the API server, Kafka and HBase; golden tests write
them by hand in YAML. Keeping observation separate from judgement means every status the operator can
report is reachable from a unit test, including the ones that need a broken Kafka to happen for real.
"""

# `spec_field` is a dataclasses.field() with schema metadata; ruff only knows the plain one.
# ruff: noqa: RUF009

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from fishchat_operator.constants import AutoscalingMode, Reason, Role
from fishchat_operator.model import Cluster, parse_cluster
from fishchat_operator.schema import Described, SpecError, parse, spec_field
from fishchat_operator.status import Condition


@dataclass(frozen=True)
class DeploymentObservation(Described):
    """The status of one role's Deployment as the API server reports it."""

    role: Role = spec_field("Which role.")
    exists: bool = spec_field("Whether the Deployment exists.", True)
    generation: int = spec_field("metadata.generation of the Deployment.", 1, minimum=0)
    observed_generation: int = spec_field("status.observedGeneration of the Deployment.", 0, minimum=0)
    desired: int = spec_field("spec.replicas of the Deployment.", 0, minimum=0)
    replicas: int = spec_field("status.replicas.", 0, minimum=0)
    ready: int = spec_field("status.readyReplicas.", 0, minimum=0)
    updated: int = spec_field("status.updatedReplicas.", 0, minimum=0)
    available: int = spec_field("status.availableReplicas.", 0, minimum=0)

    @staticmethod
    def from_deployment(role: Role, body: Mapping[str, Any]) -> DeploymentObservation:
        meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status") or {}
        return DeploymentObservation(
            role=role,
            exists=True,
            generation=int(meta.get("generation", 0)),
            observed_generation=int(status.get("observedGeneration", 0)),
            desired=int(spec.get("replicas", 1)),
            replicas=int(status.get("replicas", 0)),
            ready=int(status.get("readyReplicas", 0)),
            updated=int(status.get("updatedReplicas", 0)),
            available=int(status.get("availableReplicas", 0)),
        )

    @property
    def rolled_out(self) -> bool:
        """The Deployment controller has seen the latest template and every pod runs it."""
        return (
            self.exists
            and self.observed_generation >= self.generation
            and self.updated >= self.desired
            and self.replicas <= self.desired
        )

    @property
    def all_ready(self) -> bool:
        return self.exists and self.ready >= self.desired and self.available >= self.desired


@dataclass(frozen=True)
class TopicState(Described):
    """A topic as it exists in Kafka after this reconcile's actions."""

    key: str = spec_field("p2p or group.")
    name: str = spec_field("Topic name.")
    partitions: int = spec_field("Partitions it has.", minimum=0)
    replication_factor: int = spec_field("Replicas per partition it has.", minimum=0)


@dataclass(frozen=True)
class KafkaObservation(Described):
    error: str | None = spec_field("Why Kafka could not be reached or used, if it could not.", None)
    topics: tuple[TopicState, ...] = spec_field("The topics as they exist.", ())
    failures: tuple[str, ...] = spec_field("Per-topic errors (create or grow refused by Kafka).", ())


@dataclass(frozen=True)
class HBaseObservation(Described):
    error: str | None = spec_field("Why HBase Thrift could not be reached or used, if it could not.", None)
    table_exists: bool = spec_field("Whether the table exists.", False)
    families: tuple[str, ...] = spec_field("Column families of the table.", ())


@dataclass(frozen=True)
class AutoscalingObservation(Described):
    """What the autoscaler (`autoscaler.py`) last saw and did for one cluster."""

    mode: AutoscalingMode = spec_field("Who scales access.", AutoscalingMode.OPERATOR)
    connections: int | None = spec_field(
        "Logged-in connections over all access pods at the last good read.", None, minimum=0
    )
    desired_replicas: int | None = spec_field("Access replicas the last decision asked for.", None, minimum=0)
    last_scale_time: str | None = spec_field("When autoscaling last changed the replicas (RFC 3339).", None)
    decision: str = spec_field("The last decision in words.", "")
    metric_status: str = spec_field("Whether the metric could be read: True, False or Unknown.", "True")
    metric_reason: str = spec_field("Why, in one CamelCase word.", Reason.VALID_METRIC.value)
    metric_message: str = spec_field("Details for humans.", "")


@dataclass(frozen=True)
class Observed(Described):
    """Everything `conditions()` needs. `now` is passed in so the function stays pure."""

    now: str = spec_field("Current time, RFC 3339.")
    generation: int = spec_field("metadata.generation of the cluster that was reconciled.", minimum=0)
    spec_error: str | None = spec_field("Why the spec could not be used, if it could not.", None)
    apply_errors: tuple[str, ...] = spec_field("Children that could not be applied, with the reason.", ())
    deployments: tuple[DeploymentObservation, ...] = spec_field("One per role that was looked at.", ())
    kafka: KafkaObservation | None = spec_field("Kafka results; absent if not attempted.", None)
    hbase: HBaseObservation | None = spec_field("HBase results; absent if not attempted.", None)
    previous: tuple[Condition, ...] = spec_field(
        "Conditions currently in the status (their transition times are kept when unchanged).", ()
    )
    autoscaling: AutoscalingObservation | None = spec_field(
        "What access autoscaling last measured and decided; absent while it is disabled.", None
    )


@dataclass(frozen=True)
class Observation:
    """A cluster plus what was observed about it (the golden-test input format)."""

    cluster: Cluster | None
    observed: Observed


def parse_observation(data: Mapping[str, Any]) -> Observation:
    """Read the golden-test input format: `{cluster: <CR body>, observed: {...}}`."""
    if not isinstance(data, Mapping):
        raise SpecError("observation", "must be an object")
    observed = parse(Observed, data.get("observed", {}), "observed")
    body = data.get("cluster")
    if not isinstance(body, Mapping):
        raise SpecError("cluster", "must be a FishChatCluster body")
    try:
        return Observation(parse_cluster(body), observed)
    except SpecError as error:
        # An invalid spec is itself an observation, exactly as the reconcile records it.
        return Observation(None, replace(observed, spec_error=observed.spec_error or str(error)))
