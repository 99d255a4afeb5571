"""The message log on Kafka: producer (`KafkaMessageLog`), msg-job consumer group
(`KafkaMessageLogConsumer`), topic provisioning (`ensure_topics`) and the record format (`codec`)."""

from fishchat.production.kafka.codec import MalformedRecord, decode_record, encode_record
from fishchat.production.kafka.consumer import KafkaMessageLogConsumer, commit_end_offsets
from fishchat.production.kafka.log import KafkaMessageLog, MessageLogTimeout
from fishchat.production.kafka.settings import KafkaSettings
from fishchat.production.kafka.topics import TopicCreationError, ensure_topics

__all__ = [
    "KafkaMessageLog",
    "KafkaMessageLogConsumer",
    "KafkaSettings",
    "MalformedRecord",
    "MessageLogTimeout",
    "TopicCreationError",
    "commit_end_offsets",
    "decode_record",
    "encode_record",
    "ensure_topics",
]
