"""Kafka helpers for the real tier: start a fresh consumer group at the end of a topic.

Topics are shared by every test (and by a running system), so a new group that started from
the earliest offset would wade through everything ever written. `start_group_at_end` commits
the current end offsets for the group first; a consumer of that group then sees only what is
produced afterwards, with no race against its partition assignment.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from contracts.topics import all_topics
from tests.support.infra import Infra


async def start_group_at_end(infra: Infra, principal: str, group: str, *topics: str) -> None:
    """Commit the end offsets of `topics` for `group`, as `principal`."""
    partitions = {t.name: t.partitions for t in all_topics()}
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions[t])]
    consumer = AIOKafkaConsumer(
        **infra.kafka_client_args(principal), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: OffsetAndMetadata(end, "") for tp, end in ends.items()})
    finally:
        await consumer.stop()
