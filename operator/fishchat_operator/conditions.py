"""`conditions(observation) -> status`: judge what one reconcile saw, without doing anything.

Three conditions, as Kubernetes users expect them:

- Ready: every role's pods are ready on the current template, and the topics and table are usable.
- Progressing: a rollout is under way (some Deployment has not caught up with its template or count).
- Degraded: something the operator cannot fix by itself. The reason names the first problem by
  severity (an invalid spec, children that could not be applied, Kafka or HBase unreachable, a topic
  or table Kafka/HBase refused, then the requests the operator refuses: shrinking partitions or
  changing a replication factor); the message lists every problem and what to do.

A condition keeps its lastTransitionTime while its status stays the same, so `kubectl describe`
shows how long the cluster has been in its state, not how long since the last resync.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fishchat_operator.constants import (
    ROLES,
    TABLE_FAMILIES,
    AutoscalingMode,
    ConditionType,
    Reason,
    Role,
)
from fishchat_operator.model import Cluster, TopicSpec
from fishchat_operator.observations import (
    AutoscalingObservation,
    DeploymentObservation,
    Observation,
    Observed,
    TopicState,
)
from fishchat_operator.render import selector_string
from fishchat_operator.status import (
    AutoscalingStatus,
    ClusterStatus,
    Condition,
    RolesStatus,
    RoleStatus,
    TableStatus,
    TopicsStatus,
    TopicStatus,
)

TRUE = "True"
FALSE = "False"


@dataclass(frozen=True)
class Problem:
    reason: Reason
    message: str
    blocks_ready: bool  # a refused request (e.g. partition shrink) leaves a working cluster


# Most severe first: the Degraded reason is the first problem's.
SEVERITY = (
    Reason.INVALID_SPEC,
    Reason.APPLY_FAILED,
    Reason.KAFKA_UNAVAILABLE,
    Reason.HBASE_UNAVAILABLE,
    Reason.TOPIC_FAILED,
    Reason.TABLE_FAMILIES_MISMATCH,
    Reason.PARTITION_SHRINK_REFUSED,
    Reason.REPLICATION_FACTOR_CHANGE_REFUSED,
    Reason.PROMETHEUS_UNAVAILABLE,
    Reason.INVALID_QUERY,
    Reason.MISSING_METRICS,
)
# Reasons of a False ScalingActive that the operator's own autoscaling cannot fix by itself.
METRIC_PROBLEMS = frozenset({Reason.PROMETHEUS_UNAVAILABLE, Reason.INVALID_QUERY, Reason.MISSING_METRICS})


def conditions(observation: Observation) -> ClusterStatus:
    """The status to publish for what `observation` saw."""
    cluster, observed = observation.cluster, observation.observed
    if cluster is None or observed.spec_error is not None:
        message = (
            f"The spec cannot be used: {observed.spec_error or 'no spec'}. Fix the spec; nothing was changed."
        )
        return ClusterStatus(
            observed_generation=observed.generation,
            conditions=_finish(
                observed,
                [
                    (ConditionType.READY, FALSE, Reason.INVALID_SPEC, message),
                    (ConditionType.PROGRESSING, FALSE, Reason.INVALID_SPEC, message),
                    (ConditionType.DEGRADED, TRUE, Reason.INVALID_SPEC, message),
                ],
            ),
        )

    deployments = {d.role: d for d in observed.deployments}
    roles = {role: _role_status(cluster, role, deployments.get(role)) for role in ROLES}
    problems = sorted(problems_of(cluster, observed), key=lambda p: SEVERITY.index(p.reason))
    blocking = [p for p in problems if p.blocks_ready]

    not_ready = [role for role in ROLES if not _role_ready(cluster, role, deployments.get(role))]
    rolling = [role for role in ROLES if not _rolled_out(cluster, role, deployments.get(role))]

    if blocking:
        ready = (ConditionType.READY, FALSE, blocking[0].reason, _join(blocking))
    elif not_ready:
        counts = ", ".join(_waiting_for(r, roles[r]) for r in not_ready)
        ready = (ConditionType.READY, FALSE, Reason.ROLES_NOT_READY, f"Waiting for {counts}.")
    else:
        ready = (
            ConditionType.READY,
            TRUE,
            Reason.ALL_ROLES_READY,
            f"All {len(ROLES)} roles are ready; topics and table are provisioned.",
        )

    if observed.apply_errors:
        progressing = (
            ConditionType.PROGRESSING,
            FALSE,
            Reason.APPLY_FAILED,
            "The rollout is stalled: some children could not be applied (see Degraded).",
        )
    elif rolling or not_ready:
        detail = ", ".join(
            f"{r.value} ({roles[r].updated}/{roles[r].desired} updated, "
            f"{roles[r].ready}/{roles[r].desired} ready)"
            for r in ROLES
            if r in rolling or r in not_ready
        )
        progressing = (ConditionType.PROGRESSING, TRUE, Reason.ROLLING_OUT, f"Rolling out: {detail}.")
    else:
        progressing = (
            ConditionType.PROGRESSING,
            FALSE,
            Reason.RECONCILED,
            f"Every role runs the template of generation {observed.generation}.",
        )

    if problems:
        degraded = (ConditionType.DEGRADED, TRUE, problems[0].reason, _join(problems))
    else:
        degraded = (ConditionType.DEGRADED, FALSE, Reason.AS_EXPECTED, "No problems found.")

    wanted: list[tuple[ConditionType, str, Reason | str, str]] = [ready, progressing, degraded]
    autoscaling = _autoscaling(cluster, observed)
    if autoscaling is not None:
        wanted.append(
            (
                ConditionType.SCALING_ACTIVE,
                autoscaling.metric_status,
                autoscaling.metric_reason,
                autoscaling.metric_message,
            )
        )
    access = roles[Role.ACCESS]
    return ClusterStatus(
        observed_generation=observed.generation,
        conditions=_finish(observed, wanted),
        roles=RolesStatus.build(roles),
        access_ready=f"{access.ready}/{access.desired}",
        access_selector=selector_string(cluster, Role.ACCESS),
        connections=autoscaling.connections if autoscaling is not None else None,
        autoscaling=AutoscalingStatus(
            mode=autoscaling.mode.value,
            current_connections=autoscaling.connections,
            desired_replicas=autoscaling.desired_replicas,
            last_scale_time=autoscaling.last_scale_time,
            reason=autoscaling.decision or None,
        )
        if autoscaling is not None
        else None,
        version=cluster.spec.version,
        topics=_topics_status(observed),
        table=_table_status(cluster, observed),
    )


def problems_of(cluster: Cluster, observed: Observed) -> list[Problem]:
    """Every problem the observation shows, unordered."""
    problems: list[Problem] = []
    if observed.apply_errors:
        problems.append(
            Problem(
                Reason.APPLY_FAILED,
                "Could not apply " + "; ".join(observed.apply_errors) + ".",
                blocks_ready=True,
            )
        )
    spec = cluster.spec
    kafka = observed.kafka
    if kafka is not None:
        if kafka.error is not None:
            servers = ",".join(spec.backends.kafka.bootstrap_servers)
            problems.append(
                Problem(
                    Reason.KAFKA_UNAVAILABLE,
                    f"Kafka at {servers} is unavailable: {kafka.error}. "
                    "Topics are checked again at the next resync.",
                    blocks_ready=True,
                )
            )
        for failure in kafka.failures:
            problems.append(Problem(Reason.TOPIC_FAILED, failure, blocks_ready=True))
        states = {t.key: t for t in kafka.topics}
        for key, wanted in (("p2p", spec.topics.p2p), ("group", spec.topics.group)):
            state = states.get(key)
            if state is not None:
                problems += _topic_refusals(key, wanted, state)
    hbase = observed.hbase
    if hbase is not None:
        if hbase.error is not None:
            where = f"{spec.backends.hbase.thrift_host}:{spec.backends.hbase.thrift_port}"
            problems.append(
                Problem(
                    Reason.HBASE_UNAVAILABLE,
                    f"HBase Thrift at {where} is unavailable: {hbase.error}. "
                    "The table is checked again at the next resync.",
                    blocks_ready=True,
                )
            )
        elif hbase.table_exists:
            missing = [f for f in TABLE_FAMILIES if f not in hbase.families]
            if missing:
                problems.append(
                    Problem(
                        Reason.TABLE_FAMILIES_MISMATCH,
                        f"HBase table {spec.table.name} lacks column families {', '.join(missing)}; "
                        "the operator does not alter an existing table. Add the families in HBase "
                        "or choose another table name.",
                        blocks_ready=True,
                    )
                )
    autoscaling = _autoscaling(cluster, observed)
    if (
        autoscaling is not None
        and autoscaling.mode is AutoscalingMode.OPERATOR
        and autoscaling.metric_status == FALSE
        and autoscaling.metric_reason in METRIC_PROBLEMS
    ):
        problems.append(
            Problem(
                Reason(autoscaling.metric_reason),
                f"Access autoscaling keeps {autoscaling.desired_replicas} replicas: "
                f"{autoscaling.metric_message}",
                blocks_ready=False,
            )
        )
    return problems


def _autoscaling(cluster: Cluster, observed: Observed) -> AutoscalingObservation | None:
    """The autoscaling observation, if autoscaling is enabled and has run for the current mode."""
    autoscaling = observed.autoscaling
    policy = cluster.spec.autoscaling
    if autoscaling is None or not policy.enabled or autoscaling.mode is not policy.mode:
        return None
    return autoscaling


def _topic_refusals(key: str, wanted: TopicSpec, state: TopicState) -> list[Problem]:
    problems: list[Problem] = []
    if state.partitions > wanted.partitions:
        problems.append(
            Problem(
                Reason.PARTITION_SHRINK_REFUSED,
                f"Topic {state.name} has {state.partitions} partitions and "
                f"spec.topics.{key}.partitions asks for {wanted.partitions}; Kafka cannot remove "
                f"partitions, so the topic keeps {state.partitions}. "
                f"Set spec.topics.{key}.partitions to {state.partitions} or more.",
                blocks_ready=False,
            )
        )
    if state.replication_factor != wanted.replication_factor:
        problems.append(
            Problem(
                Reason.REPLICATION_FACTOR_CHANGE_REFUSED,
                f"Topic {state.name} has replication factor {state.replication_factor} and "
                f"spec.topics.{key}.replicationFactor asks for {wanted.replication_factor}; "
                "the operator only sets it at creation (a reassignment is an administrator's decision). "
                f"Set it back to {state.replication_factor} or reassign the partitions with Kafka's tools.",
                blocks_ready=False,
            )
        )
    return problems


def _role_status(cluster: Cluster, role: Role, dep: DeploymentObservation | None) -> RoleStatus:
    desired = cluster.spec.roles.of(role).replicas
    if dep is None or not dep.exists:
        return RoleStatus(desired=desired, replicas=0, ready=0, updated=0, available=0)
    return RoleStatus(
        desired=desired, replicas=dep.replicas, ready=dep.ready, updated=dep.updated, available=dep.available
    )


def _rolled_out(cluster: Cluster, role: Role, dep: DeploymentObservation | None) -> bool:
    return dep is not None and dep.desired == cluster.spec.roles.of(role).replicas and dep.rolled_out


def _role_ready(cluster: Cluster, role: Role, dep: DeploymentObservation | None) -> bool:
    return _rolled_out(cluster, role, dep) and dep is not None and dep.all_ready


def _waiting_for(role: Role, status: RoleStatus) -> str:
    if status.ready < status.desired:
        return f"{role.value} ({status.ready}/{status.desired} ready)"
    return f"{role.value} ({status.updated}/{status.desired} on the current template)"


def _join(problems: list[Problem]) -> str:
    return " ".join(p.message if p.message.endswith(".") else p.message + "." for p in problems)


def _finish(
    observed: Observed, wanted: list[tuple[ConditionType, str, Reason | str, str]]
) -> tuple[Condition, ...]:
    previous = {c.type: c for c in observed.previous}
    out: list[Condition] = []
    for type_, status, reason, message in wanted:
        condition = Condition(
            type=type_.value,
            status=status,
            reason=str(reason),
            message=message,
            last_transition_time=observed.now,
            observed_generation=observed.generation,
        )
        before = previous.get(type_.value)
        if before is not None and before.status == status:
            condition = replace(condition, last_transition_time=before.last_transition_time)
        out.append(condition)
    return tuple(out)


def _topics_status(observed: Observed) -> TopicsStatus | None:
    if observed.kafka is None or not observed.kafka.topics:
        return None
    states = {
        t.key: TopicStatus(name=t.name, partitions=t.partitions, replication_factor=t.replication_factor)
        for t in observed.kafka.topics
    }
    return TopicsStatus(p2p=states.get("p2p"), group=states.get("group"))


def _table_status(cluster: Cluster, observed: Observed) -> TableStatus | None:
    if observed.hbase is None or not observed.hbase.table_exists:
        return None
    return TableStatus(name=cluster.spec.table.name, families=observed.hbase.families)
