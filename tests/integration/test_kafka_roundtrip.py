"""A command published by one service principal reaches another over SASL/SCRAM (real Kafka)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import uuid4

import pytest
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.kafka import broker_ready, create_broker, subscriber_kwargs
from services.common.settings import ServiceSettings
from tests.support.infra import Infra, find_infra
from tests.support.kafka import start_group_at_end

pytestmark = [pytest.mark.real, pytest.mark.timeout(60)]

TOPIC = "records.commands.v1"


class _Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REKISTERI_IT_UNUSED_", frozen=True)


def _settings(infra: Infra, service: str, **overrides: Any) -> _Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": infra.kafka_bootstrap,
        "kafka_username": service,
        "kafka_password": SecretStr(infra.kafka_password(service)),
        "pg_dsn": SecretStr(infra.pg_dsn(service)),
    }
    return _Settings(**(values | overrides))


async def _raw_body(msg: StreamMessage[Any]) -> bytes:
    # Other tests share the topic: never decode (or dead-letter) their records.
    return msg.body


async def test_intake_publishes_and_records_consumes_over_scram() -> None:
    infra = find_infra()
    run = uuid4().hex
    key = f"T-{run}".encode()
    payload = {"run": run, "type": "RoundTrip"}
    got: asyncio.Future[tuple[bytes, dict[str, Any]]] = asyncio.get_running_loop().create_future()

    records = create_broker(_settings(infra, "records"), service="records")

    @records.subscriber(
        TOPIC, decoder=_raw_body, **subscriber_kwargs("records", suffix=f"test-{run}")
    )
    async def handle(body: bytes, msg: KafkaMessage) -> None:
        if msg.raw_message.key == key and not got.done():  # type: ignore[union-attr]
            got.set_result((body, msg.headers))

    intake = create_broker(_settings(infra, "intake"), service="intake")
    await start_group_at_end(infra, "records", f"records.test-{run}", TOPIC)
    async with intake, records:
        await records.start()
        await intake.start()
        assert await broker_ready(intake)()
        meta = await intake.publish(payload, topic=TOPIC, key=key, headers={"x-run": run})
        body, headers = await asyncio.wait_for(got, timeout=30)

    assert json.loads(body) == payload
    assert headers["x-run"] == run
    assert meta.topic == TOPIC
