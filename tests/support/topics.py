"""Read whole topics from offset 0, as an auditor looking for personal data would."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.topics import all_topics
from tests.support.infra import Infra


async def find_in_topics(infra: Infra, needles: set[bytes]) -> dict[str, set[bytes]]:
    """Every topic (DLQs included) read from offset 0 as the admin; which needles occur where.

    Keys, values and header values are all searched, as raw bytes.
    """
    found: dict[str, set[bytes]] = {}
    consumer = AIOKafkaConsumer(
        **infra.kafka_client_args("admin"),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    try:
        for topic in all_topics():
            tps = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=2000, max_records=5000)
                for tp, records in batch.items():
                    for r in records:
                        blobs = [r.key or b"", r.value or b""] + [v for _, v in r.headers]
                        for needle in needles:
                            if any(needle in b for b in blobs):
                                found.setdefault(topic.name, set()).add(needle)
                        if r.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return found
