"""The retry/DLQ middleware and the broker factory, in memory with `TestKafkaBroker`."""

from __future__ import annotations

import io
import json
import logging
import ssl
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from faststream.exceptions import SetupError
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from pydantic import BaseModel, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.kafka import (
    DeadLetterTopicMissingError,
    PermanentError,
    RetryDlqMiddleware,
    RetryPolicy,
    aiokafka_client_args,
    create_broker,
    dlq_topic_for,
    error_reason,
    subscriber_kwargs,
)
from services.common.logs import configure_logging
from services.common.settings import ServiceSettings

TOPIC = "records.commands.v1"
DLQ = "records.commands.v1.dlq"
KEY = b"C-1001"
FAKE_EMAIL = "anna.virtanen@example.com"


class _Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REKISTERI_UNIT_UNUSED_", frozen=True)


def _settings(**overrides: Any) -> _Settings:
    values: dict[str, Any] = {
        "kafka_username": "records",
        "kafka_password": SecretStr("unit-test-password"),
        "pg_dsn": SecretStr("postgresql://unused"),
        "max_retries": 3,
        "retry_backoff_ms": 1,
    }
    return _Settings(**(values | overrides))


class _Cmd(BaseModel):
    customer_id: str
    n: int


class _CustomerUnknownError(Exception):
    reason = "customer_unknown"


async def _raw_body(msg: StreamMessage[Any]) -> bytes:
    return msg.body


def _dlq_collector() -> tuple[KafkaBroker, list[ConsumerRecord[Any, Any]]]:
    """A plain broker (no retry middleware) that records what lands on the DLQ topic."""
    dlq_broker = KafkaBroker()
    seen: list[ConsumerRecord[Any, Any]] = []

    # Dead letters keep their original content-type; read them as raw bytes, never decoded.
    @dlq_broker.subscriber(DLQ, decoder=_raw_body)
    async def collect(msg: KafkaMessage) -> None:
        seen.append(msg.raw_message)

    return dlq_broker, seen


def _headers(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def test_handler_failing_then_succeeding_is_retried_in_place() -> None:
    broker = create_broker(_settings(), service="records")
    dlq_broker, dead = _dlq_collector()
    calls: list[int] = []

    @broker.subscriber(TOPIC, **subscriber_kwargs("records", suffix="unit"))
    async def handle(body: dict[str, int]) -> None:
        calls.append(body["n"])
        if len(calls) < 3:
            raise RuntimeError("transient")

    async with TestKafkaBroker(broker, dlq_broker):
        await broker.publish({"n": 7}, topic=TOPIC, key=KEY)

    assert calls == [7, 7, 7]
    assert dead == []


async def test_permanently_failing_handler_goes_to_dlq_with_headers_and_never_raises() -> None:
    broker = create_broker(_settings(max_retries=2), service="records")
    dlq_broker, dead = _dlq_collector()
    attempts = 0

    @broker.subscriber(TOPIC, **subscriber_kwargs("records"))
    async def handle(body: dict[str, Any]) -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError(f"cannot use {FAKE_EMAIL}")

    original = b'{"customer_id": "C-1001", "n": 1}'
    async with TestKafkaBroker(broker, dlq_broker):
        await broker.publish(original, topic=TOPIC, key=KEY)  # must not raise

    assert attempts == 3
    assert len(dead) == 1
    record = dead[0]
    assert record.value == original
    assert record.key == KEY
    headers = _headers(record)
    assert headers["x-error"] == "ValueError"
    assert headers["x-error-type"] == "ValueError"
    assert headers["x-attempts"] == "3"
    assert headers["x-original-topic"] == TOPIC
    assert headers["x-original-partition"] == "0"
    assert headers["x-original-offset"] == "0"
    assert headers["x-consumer"] == "records"
    assert all(FAKE_EMAIL not in v for v in headers.values())


async def test_reason_attribute_becomes_the_error_code() -> None:
    broker = create_broker(_settings(max_retries=1), service="records")
    dlq_broker, dead = _dlq_collector()

    @broker.subscriber(TOPIC, **subscriber_kwargs("records"))
    async def handle(body: dict[str, Any]) -> None:
        raise _CustomerUnknownError(FAKE_EMAIL)

    async with TestKafkaBroker(broker, dlq_broker):
        await broker.publish({"n": 1}, topic=TOPIC, key=KEY)

    headers = _headers(dead[0])
    assert headers["x-error"] == "customer_unknown"
    assert headers["x-error-type"] == "_CustomerUnknownError"


def test_a_reason_that_is_not_a_code_falls_back_to_the_class_name() -> None:
    class Leaky(Exception):  # noqa: N818
        reason = f"no customer {FAKE_EMAIL}"

    assert error_reason(Leaky()) == "Leaky"
    assert error_reason(PermanentError("bad_photo")) == "bad_photo"
    assert error_reason(KeyError("x")) == "KeyError"


async def test_validation_error_skips_retries() -> None:
    broker = create_broker(_settings(max_retries=5, retry_backoff_ms=10_000), service="records")
    dlq_broker, dead = _dlq_collector()
    handled: list[_Cmd] = []

    @broker.subscriber(TOPIC, **subscriber_kwargs("records"))
    async def handle(cmd: _Cmd) -> None:
        handled.append(cmd)

    async with TestKafkaBroker(broker, dlq_broker):
        await broker.publish({"customer_id": "C-1001", "n": "not a number"}, topic=TOPIC, key=KEY)

    assert handled == []
    headers = _headers(dead[0])
    assert headers["x-error"] == "ValidationError"
    assert headers["x-attempts"] == "1"


async def test_json_decode_error_and_permanent_error_skip_retries() -> None:
    broker = create_broker(_settings(max_retries=5, retry_backoff_ms=10_000), service="records")
    dlq_broker, dead = _dlq_collector()
    calls = 0

    @broker.subscriber(TOPIC, **subscriber_kwargs("records"))
    async def handle(body: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("photo_not_found")

    broken = b'{"customer_id": '
    async with TestKafkaBroker(broker, dlq_broker):
        await broker.publish(
            broken, topic=TOPIC, key=KEY, headers={"content-type": "application/json"}
        )
        await broker.publish({"n": 1}, topic=TOPIC, key=KEY)

    assert calls == 1
    assert [_headers(r)["x-error"] for r in dead] == ["JSONDecodeError", "photo_not_found"]
    assert [_headers(r)["x-attempts"] for r in dead] == ["1", "1"]
    assert dead[0].value == broken


async def test_backoff_doubles_between_attempts() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(max_retries=3, backoff_ms=200)
    broker = KafkaBroker(
        ack_policy=AckPolicy.NACK_ON_ERROR,
        middlewares=(RetryDlqMiddleware(service="records", policy=policy, sleep=fake_sleep),),
    )
    dlq_broker, dead = _dlq_collector()

    @broker.subscriber(TOPIC, group_id="records")
    async def handle(body: dict[str, Any]) -> None:
        raise RuntimeError

    async with TestKafkaBroker(broker, dlq_broker):
        await broker.publish({"n": 1}, topic=TOPIC, key=KEY)

    assert slept == [0.2, 0.4, 0.8]
    assert _headers(dead[0])["x-attempts"] == "4"


def test_backoff_is_bounded_per_delay_and_in_total() -> None:
    delays = RetryPolicy(max_retries=20, backoff_ms=60_000).delays()
    assert len(delays) == 20
    assert max(delays) <= 30.0
    assert sum(delays) <= 120.0
    assert RetryPolicy(max_retries=0, backoff_ms=200).delays() == ()


async def test_a_failed_dlq_publish_propagates() -> None:
    broker = create_broker(_settings(max_retries=0), service="records")
    dlq_broker = KafkaBroker()

    @dlq_broker.subscriber(DLQ)
    async def dlq_down(msg: KafkaMessage) -> None:
        raise ConnectionError

    @broker.subscriber(TOPIC, **subscriber_kwargs("records"))
    async def handle(body: dict[str, Any]) -> None:
        raise RuntimeError

    async with TestKafkaBroker(broker, dlq_broker):
        with pytest.raises(ConnectionError):
            await broker.publish({"n": 1}, topic=TOPIC, key=KEY)


async def test_a_dead_lettered_message_publishes_no_result() -> None:
    broker = create_broker(_settings(max_retries=0), service="records")
    dlq_broker, dead = _dlq_collector()
    downstream: list[Any] = []

    @broker.subscriber("records.customer.v1", group_id="test-downstream")
    async def watch(body: Any) -> None:
        downstream.append(body)

    @broker.subscriber(TOPIC, **subscriber_kwargs("records"))
    @broker.publisher("records.customer.v1")
    async def handle(body: dict[str, Any]) -> dict[str, str]:
        if body.get("poison"):
            raise RuntimeError
        return {"ok": "yes"}

    async with TestKafkaBroker(broker, dlq_broker):
        await broker.publish({"poison": True}, topic=TOPIC, key=KEY)
        await broker.publish({"poison": False}, topic=TOPIC, key=KEY)

    assert len(dead) == 1
    assert downstream == [{"ok": "yes"}]


async def test_grouped_subscription_to_a_topic_without_dlq_twin_is_refused() -> None:
    broker = create_broker(_settings(), service="intake")

    @broker.subscriber("intake.rejected.v1", **subscriber_kwargs("intake"))
    async def handle(body: bytes) -> None:
        return None

    with pytest.raises(DeadLetterTopicMissingError):
        async with TestKafkaBroker(broker):
            pass


async def test_a_failure_on_a_topic_without_twin_fails_loudly() -> None:
    broker = create_broker(_settings(max_retries=2), service="intake")
    calls = 0

    @broker.subscriber("not.in.catalog.v1")
    async def handle(body: bytes) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError

    async with TestKafkaBroker(broker):
        with pytest.raises(RuntimeError):
            await broker.publish(b"x", topic="not.in.catalog.v1", key=KEY)
    assert calls == 1


def test_dlq_topic_for_uses_the_catalog() -> None:
    assert dlq_topic_for(TOPIC) == DLQ
    with pytest.raises(DeadLetterTopicMissingError):
        dlq_topic_for("audit.ledger.v1")
    assert issubclass(DeadLetterTopicMissingError, SetupError)


def test_subscriber_kwargs_name_the_services_group() -> None:
    assert subscriber_kwargs("records") == {
        "group_id": "records",
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
    }
    assert subscriber_kwargs("records", suffix="test-1")["group_id"] == "records.test-1"
    with pytest.raises(ValueError, match="suffix"):
        subscriber_kwargs("records", suffix="a b")


def test_create_broker_configures_scram_idempotence_and_acks_without_connecting() -> None:
    broker = create_broker(_settings(kafka_bootstrap_servers="k1:9092, k2:9092"), service="records")
    params = broker._connection_kwargs
    assert params["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert params["sasl_mechanism"] == "SCRAM-SHA-512"
    assert params["security_protocol"] == "SASL_PLAINTEXT"
    assert params["sasl_plain_username"] == "records"
    assert params["sasl_plain_password"] == "unit-test-password"  # noqa: S105
    assert params["enable_idempotence"] is True
    assert params["acks"] == "all"
    assert params["client_id"] == "rekisteri-records"
    assert broker.config.broker_config.ack_policy is AckPolicy.NACK_ON_ERROR
    assert broker._connection is None
    assert any(isinstance(m, RetryDlqMiddleware) for m in broker.middlewares)


def test_sasl_ssl_gets_a_tls_context() -> None:
    settings = _settings(kafka_security_protocol="SASL_SSL")
    params = create_broker(settings, service="records")._connection_kwargs
    assert params["security_protocol"] == "SASL_SSL"
    assert isinstance(params["ssl_context"], ssl.SSLContext)
    args = aiokafka_client_args(settings)
    assert isinstance(args["ssl_context"], ssl.SSLContext)


def test_aiokafka_client_args() -> None:
    assert aiokafka_client_args(_settings()) == {
        "bootstrap_servers": ["127.0.0.1:19092"],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "records",
        "sasl_plain_password": "unit-test-password",
    }
    assert json.dumps(aiokafka_client_args(_settings()))  # plain data, no objects


async def test_dead_letter_log_lines_carry_the_reason_but_no_exception_text() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging("records", "INFO", stream=buffer)
    try:
        broker = create_broker(_settings(max_retries=1), service="records")
        dlq_broker, dead = _dlq_collector()

        @broker.subscriber(TOPIC, **subscriber_kwargs("records"))
        async def handle(body: dict[str, Any]) -> None:
            raise _CustomerUnknownError(FAKE_EMAIL)

        async with TestKafkaBroker(broker, dlq_broker):
            await broker.publish({"n": 1}, topic=TOPIC, key=KEY)
    finally:
        for handler in list(root.handlers):
            if handler not in saved_handlers:
                root.removeHandler(handler)
        root.setLevel(saved_level)

    assert len(dead) == 1
    assert FAKE_EMAIL not in buffer.getvalue()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    [retry] = [line for line in lines if line["msg"] == "handler failed, retrying"]
    assert retry["reason"] == "customer_unknown"
    assert retry["attempt"] == 1
    [final] = [line for line in lines if line["msg"] == "message dead-lettered"]
    assert final["level"] == "ERROR"
    assert final["reason"] == "customer_unknown"
    assert final["attempts"] == 2
    assert final["topic"] == TOPIC
    assert final["customer_id"] == KEY.decode()
    assert final["dlq_topic"] == DLQ
    assert final["exc_type"] == "_CustomerUnknownError"
