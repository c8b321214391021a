"""`rekisteri status`: consumer lag per service group and dead letters per DLQ."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contracts.topics import SERVICES, TOPICS, dlq_topics


@dataclass(frozen=True)
class GroupLag:
    """How far one service's consumer group is behind on one topic."""

    group: str
    topic: str
    committed: int
    end: int

    @property
    def lag(self) -> int:
        """Records not yet processed (all of them when nothing was committed)."""
        return max(self.end - self.committed, 0)


@dataclass(frozen=True)
class DlqCount:
    """Records retained on one dead-letter topic."""

    topic: str
    count: int


async def collect(kafka: dict[str, Any]) -> tuple[list[GroupLag], list[DlqCount]]:
    """Read lag per (service group, consumed topic) and the size of every DLQ."""
    admin = AIOKafkaAdminClient(**kafka)
    consumer = AIOKafkaConsumer(**kafka, enable_auto_commit=False)
    try:
        await admin.start()
        await consumer.start()
        topics = list(TOPICS) + list(dlq_topics())
        parts = {t.name: [TopicPartition(t.name, p) for p in range(t.partitions)] for t in topics}
        every = [tp for tps in parts.values() for tp in tps]
        ends = await consumer.end_offsets(every)
        begins = await consumer.beginning_offsets(every)
        lags: list[GroupLag] = []
        for service in SERVICES:
            consumed = [t for t in TOPICS if service in t.consumers]
            if not consumed:
                continue
            offsets = await admin.list_consumer_group_offsets(service)
            for t in consumed:
                committed = sum(
                    offsets[tp].offset if tp in offsets and offsets[tp].offset >= 0 else begins[tp]
                    for tp in parts[t.name]
                )
                end = sum(ends[tp] for tp in parts[t.name])
                lags.append(GroupLag(service, t.name, committed, end))
        dlqs = [
            DlqCount(t.name, sum(ends[tp] - begins[tp] for tp in parts[t.name]))
            for t in dlq_topics()
        ]
        return lags, dlqs
    finally:
        await consumer.stop()
        await admin.close()
