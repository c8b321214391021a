"""The canary scan used by the end-to-end tests can find a leak (so its silence means something).

A record carrying a run tag and an identity code in clear is written to a dead-letter topic, as
a buggy service might; the scan must report it, by tag and by identity code separately.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from services.intake.hetu import build_hetu
from tests.support.infra import Infra
from tests.support.topics import find_in_topics

pytestmark = pytest.mark.real

TOPIC = "records.commands.v1.dlq"


async def test_the_scan_finds_plaintext_by_tag_and_by_identity_code(infra: Infra) -> None:
    tag = f"q{uuid.uuid4().hex[:8]}q"
    rand = uuid.uuid4().int
    hetu = build_hetu(date(1950, 1, 1) + timedelta(days=rand % 20000), 900 + rand % 97)
    other = build_hetu(date(1971, 2, 2), 901)
    producer = AIOKafkaProducer(**infra.kafka_client_args("records"), enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, f'{{"name": "Leak{tag}"}}'.encode(), key=b"T-1")
        await producer.send_and_wait(TOPIC, f'{{"hetu": "{hetu}"}}'.encode(), key=b"T-2")
    finally:
        await producer.stop()
    assert await find_in_topics(infra, tag.encode(), set(), only={TOPIC}) == {TOPIC: 1}
    assert TOPIC in await find_in_topics(infra, b"qnotherq", {hetu.encode()}, only={TOPIC})
    assert await find_in_topics(infra, b"qnotherq", {other.encode()}, only={TOPIC}) == {}
    assert await find_in_topics(infra, b"qnotherq", set(), only={TOPIC}) == {}
