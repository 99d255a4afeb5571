"""Kafka topics through aiokafka's admin client: create, grow, describe and delete.

The decisions (create, grow, keep) are pure and live in `topics.py`; this module only carries them
out and reports what exists afterwards. Creation is idempotent (TopicAlreadyExists counts as done).
Topics are listed before they are described, because describing a missing topic can auto-create it
with broker defaults on a Kafka that allows that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code

from fishchat_operator.model import TopicsSpec
from fishchat_operator.observations import KafkaObservation, TopicState
from fishchat_operator.topics import TopicAction, plan_topic, wanted_topics

CLIENT_ID = "fishchat-operator"


@dataclass(frozen=True)
class TopicChange:
    """A change this reconcile made (for an Event): created or grown."""

    action: TopicAction
    name: str
    partitions: int
    replication_factor: int


@dataclass
class TopicsOutcome:
    observation: KafkaObservation
    changes: list[TopicChange] = field(default_factory=list)


def _error_text(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error) or type(error).__name__
    return text if type(error).__name__ in text else f"{type(error).__name__}: {text}"


def _admin(bootstrap: Sequence[str], call_timeout: float) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=list(bootstrap), client_id=CLIENT_ID, request_timeout_ms=int(call_timeout * 1000)
    )


async def _describe(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """name -> (partitions, replication factor) for those of `names` that exist."""
    present = set(await admin.list_topics()) & set(names)
    if not present:
        return {}
    found: dict[str, tuple[int, int]] = {}
    for topic in await admin.describe_topics(sorted(present)):
        if topic["error_code"]:
            continue
        partitions: list[dict[str, Any]] = topic["partitions"]
        replicas = max((len(p["replicas"]) for p in partitions), default=0)
        found[topic["topic"]] = (len(partitions), replicas)
    return found


def _response_errors(response: Any) -> list[tuple[str, BaseException]]:
    errors: list[tuple[str, BaseException]] = []
    for item in response.topic_errors:
        topic, code = item[0], item[1]
        message = item[2] if len(item) > 2 else None
        if code:
            errors.append((topic, for_code(code)(message or "")))
    return errors


async def ensure_topics(bootstrap: Sequence[str], topics: TopicsSpec, call_timeout: float) -> TopicsOutcome:
    """Create missing topics and grow short ones; never shrink. Failures are reported, not raised."""
    admin = _admin(bootstrap, call_timeout)
    try:
        await asyncio.wait_for(admin.start(), call_timeout)
        return await asyncio.wait_for(_ensure(admin, topics), call_timeout * 3)
    except (KafkaError, OSError, TimeoutError) as error:
        return TopicsOutcome(KafkaObservation(error=_error_text(error)))
    finally:
        await admin.close()


async def _ensure(admin: AIOKafkaAdminClient, topics: TopicsSpec) -> TopicsOutcome:
    wanted = wanted_topics(topics)
    existing = await _describe(admin, [spec.name for _, spec in wanted])
    states: list[TopicState] = []
    failures: list[str] = []
    changes: list[TopicChange] = []
    for key, spec in wanted:
        have = existing.get(spec.name)
        state = TopicState(key, spec.name, *have) if have else None
        plan = plan_topic(key, spec, state)
        if plan.action is TopicAction.CREATE:
            new = NewTopic(
                plan.name, plan.partitions, plan.replication_factor, topic_configs=dict(plan.configs)
            )
            errors = _response_errors(await admin.create_topics([new]))
            raced = any(isinstance(e, TopicAlreadyExistsError) for _, e in errors)
            errors = [(t, e) for t, e in errors if not isinstance(e, TopicAlreadyExistsError)]
            if errors:
                failures.append(f"Kafka refused to create topic {plan.name}: {_error_text(errors[0][1])}")
                continue
            # Metadata can lag just after creation; then report what was asked for.
            described = (await _describe(admin, [plan.name])).get(plan.name)
            partitions, replication = described or (plan.partitions, plan.replication_factor)
            if not raced:
                changes.append(TopicChange(TopicAction.CREATE, plan.name, partitions, replication))
            states.append(TopicState(key, plan.name, partitions, replication))
        elif plan.action is TopicAction.GROW:
            assert state is not None
            try:
                await admin.create_partitions({plan.name: NewPartitions(total_count=plan.partitions)})
            except KafkaError as error:
                failures.append(
                    f"Kafka refused to grow topic {plan.name} to {plan.partitions} partitions: "
                    f"{_error_text(error)}"
                )
                states.append(state)
                continue
            changes.append(
                TopicChange(TopicAction.GROW, plan.name, plan.partitions, state.replication_factor)
            )
            states.append(TopicState(key, plan.name, plan.partitions, state.replication_factor))
        else:
            assert state is not None
            states.append(state)
    return TopicsOutcome(KafkaObservation(topics=tuple(states), failures=tuple(failures)), changes)


async def delete_topics(bootstrap: Sequence[str], names: Sequence[str], call_timeout: float) -> list[str]:
    """Delete `names`; returns the ones that existed. Raises KafkaError or TimeoutError on failure."""
    admin = _admin(bootstrap, call_timeout)
    try:
        await asyncio.wait_for(admin.start(), call_timeout)
        present = sorted(set(await admin.list_topics()) & set(names))
        if not present:
            return []
        response = await asyncio.wait_for(admin.delete_topics(present), call_timeout * 2)
        for topic, code in response.topic_error_codes:
            error = for_code(code) if code else None
            if error is not None and error is not UnknownTopicOrPartitionError:
                raise error(f"Kafka refused to delete topic {topic}")
        return present
    finally:
        await admin.close()
