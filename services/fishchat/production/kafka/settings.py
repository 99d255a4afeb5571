"""Where the message log lives in Kafka and how the producer and the msg-job consumer group behave."""

from __future__ import annotations

from dataclasses import dataclass

from fishchat.domain.records import MsgType

P2P_TOPIC = "logic_producer_p2p"  # the original's topic names
GROUP_TOPIC = "logic_producer_group"
CONSUMER_GROUP = "msg_group"  # the original msg-job's group.id


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """`bootstrap` is comma-separated `host:port`.

    p2p and group records go to separate topics as in the original; one user's records keep their
    order within each topic. Give both the same name to keep a user's p2p and group records in one
    partition, in one order (otherwise sync's gap grace covers the interleaving).
    """

    bootstrap: str = "127.0.0.1:9092"
    p2p_topic: str = P2P_TOPIC
    group_topic: str = GROUP_TOPIC
    consumer_group: str = CONSUMER_GROUP
    client_id: str = "fishchat"
    # Every broker request (produce, fetch, commit, metadata) fails after this long.
    request_timeout_ms: int = 15_000
    # append() gives up (with an error) if the producer cannot queue the records by then; queued
    # records are waited for until the broker acknowledges them (an outage makes sends wait).
    delivery_timeout_ms: int = 30_000
    linger_ms: int = 0
    compression: str | None = None  # None, "gzip", "lz4" or "zstd" (needs the codec's package)
    max_batch_bytes: int = 256 * 1024
    # Consumer group membership (msg-job). A member that misses heartbeats for session_timeout_ms,
    # or does not poll for max_poll_interval_ms, is dropped and its partitions reassigned.
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    rebalance_timeout_ms: int | None = None
    metadata_max_age_ms: int = 30_000
    # Topic provisioning (`ensure_topics`).
    partitions: int = 8
    replication_factor: int = 1
    min_insync_replicas: int | None = None  # default: 2 when replicated 3 or more times, else 1

    def __post_init__(self) -> None:
        if not self.bootstrap.strip():
            raise ValueError("kafka bootstrap must not be empty")
        for name in (self.p2p_topic, self.group_topic, self.consumer_group):
            if not name:
                raise ValueError("kafka topic and group names must not be empty")
        for name, value in (
            ("request_timeout_ms", self.request_timeout_ms),
            ("delivery_timeout_ms", self.delivery_timeout_ms),
            ("session_timeout_ms", self.session_timeout_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("max_poll_interval_ms", self.max_poll_interval_ms),
            ("partitions", self.partitions),
            ("replication_factor", self.replication_factor),
            ("max_batch_bytes", self.max_batch_bytes),
        ):
            if value <= 0:
                raise ValueError(f"kafka {name} must be positive, got {value}")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("kafka heartbeat_interval_ms must be below session_timeout_ms")
        if self.linger_ms < 0:
            raise ValueError("kafka linger_ms must not be negative")
        if self.compression not in (None, "gzip", "lz4", "zstd", "snappy"):
            raise ValueError(f"unknown kafka compression {self.compression!r}")

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.p2p_topic, self.group_topic)))

    def topic_of(self, msg_type: MsgType) -> str:
        return self.group_topic if msg_type is MsgType.GROUP else self.p2p_topic

    @property
    def insync_replicas(self) -> int:
        if self.min_insync_replicas is not None:
            return self.min_insync_replicas
        return 2 if self.replication_factor >= 3 else 1
