"""The FishChatCluster status as frozen dataclasses: what the operator reports back.

Like the spec, these types generate the CRD's status schema, so the fields `kubectl get fcc` prints
(Ready, Access, Connections) and the scale subresource's paths are defined here once.
"""

# `spec_field` is a dataclasses.field() with schema metadata; ruff only knows the plain one.
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass

from fishchat_operator.constants import ROLES, Role
from fishchat_operator.schema import Described, spec_field


@dataclass(frozen=True)
class Condition(Described):
    type: str = spec_field("Ready, Progressing or Degraded.", max_length=64)
    status: str = spec_field("True, False or Unknown.", max_length=16)
    reason: str = spec_field("Why, in one CamelCase word.", max_length=128)
    message: str = spec_field("What happened and what to do about it, for humans.", max_length=32768)
    last_transition_time: str = spec_field(
        "When the status last changed (RFC 3339).", max_length=64, date_time=True
    )
    observed_generation: int | None = spec_field(
        "The metadata.generation this condition was computed for.", None, minimum=0
    )


@dataclass(frozen=True)
class RoleStatus(Described):
    desired: int = spec_field("Replicas the spec asks for.", minimum=0)
    replicas: int = spec_field("Pods that exist (any state).", minimum=0)
    ready: int = spec_field("Pods that pass their readiness probe.", minimum=0)
    updated: int = spec_field("Pods that run the current pod template.", minimum=0)
    available: int = spec_field("Pods that have been ready long enough to count as available.", minimum=0)


def _role_status(role: Role) -> RoleStatus | None:
    field: RoleStatus | None = spec_field(f"Replica counts of the {role.value} Deployment.", None)
    return field


@dataclass(frozen=True)
class RolesStatus(Described):
    gateway: RoleStatus | None = _role_status(Role.GATEWAY)
    access: RoleStatus | None = _role_status(Role.ACCESS)
    logic: RoleStatus | None = _role_status(Role.LOGIC)
    notify: RoleStatus | None = _role_status(Role.NOTIFY)
    register: RoleStatus | None = _role_status(Role.REGISTER)
    manager: RoleStatus | None = _role_status(Role.MANAGER)
    idgen: RoleStatus | None = _role_status(Role.IDGEN)
    msg_job: RoleStatus | None = _role_status(Role.MSG_JOB)

    def of(self, role: Role) -> RoleStatus | None:
        status: RoleStatus | None = getattr(self, role.value.replace("-", "_"))
        return status

    @staticmethod
    def build(statuses: dict[Role, RoleStatus]) -> RolesStatus:
        return RolesStatus(**{role.value.replace("-", "_"): statuses.get(role) for role in ROLES})


@dataclass(frozen=True)
class TopicStatus(Described):
    name: str = spec_field("Topic name.", max_length=249)
    partitions: int = spec_field("Partitions the topic has in Kafka.", minimum=0)
    replication_factor: int = spec_field("Replicas of each partition in Kafka.", minimum=0)


@dataclass(frozen=True)
class TopicsStatus(Described):
    p2p: TopicStatus | None = spec_field("The p2p topic as it exists in Kafka.", None)
    group: TopicStatus | None = spec_field("The group topic as it exists in Kafka.", None)


@dataclass(frozen=True)
class TableStatus(Described):
    name: str = spec_field("Table name.", max_length=255)
    families: tuple[str, ...] = spec_field(
        "Column families the table has.", max_items=64, item_max_length=255
    )


@dataclass(frozen=True)
class AutoscalingStatus(Described):
    mode: str = spec_field("Who scales access: Operator or HPA.", max_length=16)
    current_connections: int | None = spec_field(
        "Logged-in connections over all access pods at the last good read (mode Operator).", None, minimum=0
    )
    desired_replicas: int | None = spec_field("Access replicas the last decision asked for.", None, minimum=0)
    last_scale_time: str | None = spec_field(
        "When access replicas were last changed by autoscaling (RFC 3339).",
        None,
        max_length=64,
        date_time=True,
    )
    reason: str | None = spec_field("The last decision, in words.", None, max_length=1024)


@dataclass(frozen=True)
class ClusterStatus(Described):
    observed_generation: int | None = spec_field(
        "The metadata.generation the operator last reconciled.", None, minimum=0
    )
    conditions: tuple[Condition, ...] = spec_field(
        "Ready (every role ready and the backends provisioned), Progressing (a rollout is under way), "
        "Degraded (something the operator cannot fix by itself; the reason says what) and, while "
        "autoscaling is enabled, ScalingActive (its metric can be read).",
        (),
        max_items=16,
        list_map_keys=("type",),
    )
    roles: RolesStatus | None = spec_field("Replica counts per role.", None)
    access_ready: str | None = spec_field(
        "Ready and desired access pods as ready/desired (the Access printer column).", None, max_length=32
    )
    access_selector: str | None = spec_field(
        "Label selector of the access pods (the scale subresource's selector).", None, max_length=1024
    )
    connections: int | None = spec_field(
        "Live client connections over all access pods, as last measured by autoscaling; unset until "
        "autoscaling has measured.",
        None,
        minimum=0,
    )
    autoscaling: AutoscalingStatus | None = spec_field(
        "Access autoscaling's last measurement and decision; unset while autoscaling is disabled.", None
    )
    version: str | None = spec_field("The FishChat version the children were last rendered with.", None)
    topics: TopicsStatus | None = spec_field("The Kafka topics as they exist.", None)
    table: TableStatus | None = spec_field("The HBase table as it exists.", None)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)
