"""Read whole topics from offset 0, as an auditor looking for personal data would."""

from __future__ import annotations

import re

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.topics import all_topics
from tests.support.infra import Infra


async def find_in_topics(
    infra: Infra, tag: bytes, hetus: set[bytes], *, only: set[str] | None = None
) -> dict[str, int]:
    """Every topic (DLQs included) read from offset 0 as the admin: where canaries occur.

    Canaries are found by the run's `tag` (carried by every canary name, e-mail, street and
    text) and by identity-code shape (each match checked against `hetus`), so a scan costs one
    pass over the bytes, however many canaries there are. Keys, values and header values are
    all searched. Returns the number of leaking records per topic.
    """
    shape = re.compile(rb"\d{6}[-+A-FU-Y]\d{3}[0-9A-FHJ-NPR-Y]")
    found: dict[str, int] = {}
    consumer = AIOKafkaConsumer(
        **infra.kafka_client_args("admin"),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    try:
        for topic in all_topics():
            if only is not None and topic.name not in only:
                continue
            tps = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=2000, max_records=5000)
                for records in batch.values():
                    for r in records:
                        blob = b"\0".join(
                            [r.key or b"", r.value or b""] + [v for _, v in r.headers]
                        )
                        if tag in blob or hetus.intersection(shape.findall(blob)):
                            found[topic.name] = found.get(topic.name, 0) + 1
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return found
