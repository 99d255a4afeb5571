"""Pure decisions about Kafka topics: create, grow, or leave alone.

Kafka can add partitions but never remove them, and changing a replication factor is a partition
reassignment, which is an administrator's call. So the plan only ever creates a topic or grows its
partition count; a smaller count or another replication factor leaves the topic as it is, and
`conditions()` reports the refusal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fishchat_operator.model import TopicSpec, TopicsSpec
from fishchat_operator.observations import TopicState


class TopicAction(enum.StrEnum):
    CREATE = "create"
    GROW = "grow"
    KEEP = "keep"


@dataclass(frozen=True)
class TopicPlan:
    key: str
    name: str
    action: TopicAction
    partitions: int  # the count to create with or grow to
    replication_factor: int
    configs: tuple[tuple[str, str], ...]


def min_insync_replicas(replication_factor: int) -> int:
    """One less than the replication factor (at least 1): acks=all survives one broker down."""
    return max(1, replication_factor - 1)


def wanted_topics(topics: TopicsSpec) -> tuple[tuple[str, TopicSpec], ...]:
    return (("p2p", topics.p2p), ("group", topics.group))


def plan_topic(key: str, wanted: TopicSpec, existing: TopicState | None) -> TopicPlan:
    configs = (("min.insync.replicas", str(min_insync_replicas(wanted.replication_factor))),)
    if existing is None:
        return TopicPlan(
            key, wanted.name, TopicAction.CREATE, wanted.partitions, wanted.replication_factor, configs
        )
    if wanted.partitions > existing.partitions:
        return TopicPlan(
            key, wanted.name, TopicAction.GROW, wanted.partitions, existing.replication_factor, ()
        )
    return TopicPlan(key, wanted.name, TopicAction.KEEP, existing.partitions, existing.replication_factor, ())
