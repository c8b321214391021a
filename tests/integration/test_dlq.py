"""A poison message goes to the dead-letter topic and never blocks its partition (real Kafka)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from contracts.topics import topic
from services.common.kafka import aiokafka_client_args, create_broker, subscriber_kwargs
from services.common.settings import ServiceSettings
from tests.support.infra import Infra, find_infra
from tests.support.kafka import start_group_at_end

pytestmark = [pytest.mark.real, pytest.mark.timeout(60)]

TOPIC = "records.commands.v1"
DLQ = "records.commands.v1.dlq"
MAX_RETRIES = 2
FAKE_EMAIL = "anna.virtanen@example.com"


class _Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REKISTERI_IT_UNUSED_", frozen=True)


def _settings(infra: Infra, principal: str, **overrides: Any) -> _Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": infra.kafka_bootstrap,
        "kafka_username": principal,
        "kafka_password": SecretStr(infra.kafka_password(principal)),
        "pg_dsn": SecretStr("postgresql://unused"),
    }
    return _Settings(**(values | overrides))


class _PoisonError(Exception):
    reason = "poison_test"


async def _raw_body(msg: StreamMessage[Any]) -> bytes:
    # Other tests share the topic: never decode (or dead-letter) their records.
    return msg.body


async def _read_dead_letters(infra: Infra, key: bytes, run: str) -> list[ConsumerRecord[Any, Any]]:
    """Every record on the DLQ with `key`, read to the end as the operator principal."""
    consumer = AIOKafkaConsumer(
        group_id=f"operator.test-{run}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **aiokafka_client_args(_settings(infra, "operator")),
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(DLQ, p) for p in range(topic(TOPIC).partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        found: list[ConsumerRecord[Any, Any]] = []
        deadline = time.monotonic() + 15
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, "timed out reading the DLQ"
            batches = await consumer.getmany(timeout_ms=500)
            found.extend(r for records in batches.values() for r in records if r.key == key)
        return found
    finally:
        await consumer.stop()


async def _committed(infra: Infra, group: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(**aiokafka_client_args(_settings(infra, "records")))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
        meta = offsets.get(tp)
        return -1 if meta is None else int(meta.offset)
    finally:
        await admin.close()


async def test_poison_message_is_dead_lettered_and_the_partition_moves_on() -> None:
    infra = find_infra()
    run = uuid4().hex
    key = f"T-{run}".encode()
    group = f"records.test-{run}"
    seen: list[str] = []
    done = asyncio.Event()

    consumer = create_broker(
        _settings(infra, "records", max_retries=MAX_RETRIES, retry_backoff_ms=20),
        service="records",
    )

    @consumer.subscriber(
        TOPIC, decoder=_raw_body, **subscriber_kwargs("records", suffix=f"test-{run}")
    )
    async def handle(body: bytes, msg: KafkaMessage) -> None:
        if msg.raw_message.key != key:  # type: ignore[union-attr]
            return
        label = json.loads(body)["label"]
        seen.append(label)
        if label == "P":
            raise _PoisonError(f"cannot register {FAKE_EMAIL}")
        if label == "C":
            done.set()

    producer = create_broker(_settings(infra, "intake"), service="intake")
    bodies = {
        label: json.dumps({"run": run, "label": label, "email": FAKE_EMAIL}).encode()
        for label in "APBC"
    }
    await start_group_at_end(infra, "records", group, TOPIC)
    async with producer, consumer:
        await producer.start()
        metas = {
            label: await producer.publish(bodies[label], topic=TOPIC, key=key) for label in "APBC"
        }
        assert len({m.partition for m in metas.values()}) == 1, "same key, same partition"
        await consumer.start()
        await asyncio.wait_for(done.wait(), timeout=30)

        partition = metas["P"].partition
        tp = TopicPartition(TOPIC, partition)
        deadline = time.monotonic() + 10
        while await _committed(infra, group, tp) <= metas["C"].offset:
            assert time.monotonic() < deadline, "offset past C never committed"
            await asyncio.sleep(0.2)

    assert seen == ["A", *["P"] * (1 + MAX_RETRIES), "B", "C"]

    [dead] = await _read_dead_letters(infra, key, run)
    assert dead.value == bodies["P"]
    assert dead.partition == partition
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["x-error"] == "poison_test"
    assert headers["x-error-type"] == "_PoisonError"
    assert headers["x-attempts"] == str(1 + MAX_RETRIES)
    assert headers["x-original-topic"] == TOPIC
    assert headers["x-original-partition"] == str(partition)
    assert headers["x-original-offset"] == str(metas["P"].offset)
    assert headers["x-consumer"] == "records"
    assert all(FAKE_EMAIL not in v for v in headers.values())
