"""Least privilege holds: each service's credentials are refused on other services' resources.

Kafka (SCRAM user + ACLs), PostgreSQL (role owning just its schema) and S3 (identity on just its
buckets) are each tried at least three ways with the wrong service's credentials, and each
refusal is asserted; the allowed twin of each attempt is checked too, so a test cannot pass
because everything is refused.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from minio import Minio
from minio.error import S3Error

from tests.support.infra import Infra

pytestmark = pytest.mark.real


async def _produce(infra: Infra, principal: str, topic: str) -> None:
    producer = AIOKafkaProducer(
        **infra.kafka_client_args(principal), enable_idempotence=True, request_timeout_ms=10_000
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=f"lp-{uuid.uuid4().hex}".encode())
    finally:
        await producer.stop()


async def _consume_one_poll(infra: Infra, principal: str, topic: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        **infra.kafka_client_args(principal),
        group_id=group,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=3_000)
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("principal", "topic"),
    [
        ("records", "consent.state.v1"),  # consent is the single writer of consent
        ("marketing", "privacy.directives.v1"),  # marketing obeys directives, never issues them
        ("clinic-app", "records.commands.v1"),  # clinic apps use the front door only
        ("analytics", "audit.ledger.v1"),  # only compliance writes the ledger
    ],
)
async def test_kafka_produce_refused_on_foreign_topic(
    infra: Infra, principal: str, topic: str
) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(infra, principal, topic)


async def test_kafka_produce_allowed_on_own_topic(infra: Infra) -> None:
    await _produce(infra, "clinic-app", "intake.submissions.v1")


@pytest.mark.parametrize(
    ("principal", "topic", "group"),
    [
        ("marketing", "records.customer.v1", "marketing.lp"),  # not a reader of the register
        ("photos", "audit.events.v1", "photos.lp"),  # only compliance reads audit events
        ("clinic-app", "consent.state.v1", "clinic-app.lp"),
    ],
)
async def test_kafka_consume_refused_on_foreign_topic(
    infra: Infra, principal: str, topic: str, group: str
) -> None:
    with pytest.raises((TopicAuthorizationFailedError, KafkaError)) as caught:
        await _consume_one_poll(infra, principal, topic, group)
    assert "Authorization" in type(caught.value).__name__ or "authoriz" in str(caught.value).lower()


async def test_kafka_consumer_group_of_another_service_refused(infra: Infra) -> None:
    # intake may read its own topic, but not under the records service's consumer group.
    with pytest.raises(GroupAuthorizationFailedError):
        await _consume_one_poll(infra, "intake", "intake.submissions.v1", "records")


async def test_kafka_consume_allowed_on_own_topic(infra: Infra) -> None:
    await _consume_one_poll(infra, "intake", "intake.submissions.v1", f"intake.lp-{uuid.uuid4()}")


@pytest.fixture(scope="module")
async def records_table(infra: Infra) -> AsyncIterator[str]:
    """A table owned by records in its schema, with one row."""
    name = f"lp_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(infra.pg_dsn("records"))
    try:
        await conn.execute(f"CREATE TABLE records.{name} (id int PRIMARY KEY, note text)")
        await conn.execute(f"INSERT INTO records.{name} VALUES (1, 'x')")
        yield name
        await conn.execute(f"DROP TABLE records.{name}")
    finally:
        await conn.close()


async def test_postgres_own_schema_read_write(infra: Infra, records_table: str) -> None:
    conn = await asyncpg.connect(infra.pg_dsn("records"))
    try:
        await conn.execute(f"INSERT INTO {records_table} VALUES (2, 'y')")  # search_path = records
        assert await conn.fetchval(f"SELECT count(*) FROM {records_table}") == 2
        await conn.execute(f"DELETE FROM {records_table} WHERE id = 2")
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("service", "statement"),
    [
        ("intake", "SELECT * FROM records.{t}"),
        ("marketing", "UPDATE records.{t} SET note = 'z'"),
        ("analytics", "DELETE FROM records.{t}"),
        ("consent", "CREATE TABLE records.intruder_{t} (id int)"),
        ("photos", "CREATE SCHEMA intruder_{t}"),
        ("rights", "CREATE TABLE public.intruder_{t} (id int)"),
    ],
)
async def test_postgres_refused_outside_own_schema(
    infra: Infra, records_table: str, service: str, statement: str
) -> None:
    conn = await asyncpg.connect(infra.pg_dsn(service))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement.format(t=records_table))
    finally:
        await conn.close()


def _s3(infra: Infra, who: str) -> Minio:
    access, secret = infra.s3_keys(who)
    return Minio(infra.s3_endpoint, access_key=access, secret_key=secret, secure=False)


def test_s3_round_trip_with_service_identity(infra: Infra) -> None:
    s3 = _s3(infra, "photos")
    key = f"test/{uuid.uuid4().hex}"
    body = uuid.uuid4().bytes * 100
    s3.put_object("photos", key, io.BytesIO(body), len(body))
    response = s3.get_object("photos", key)
    try:
        assert response.read() == body
    finally:
        response.close()
        response.release_conn()
    s3.remove_object("photos", key)
    with pytest.raises(S3Error) as caught:
        s3.stat_object("photos", key)
    assert caught.value.code in {"NoSuchKey", "NoSuchObject", "ResponseHeaderNotFound"} or (
        caught.value.response is not None and caught.value.response.status == 404
    )


def test_s3_put_refused_in_foreign_bucket(infra: Infra) -> None:
    with pytest.raises(S3Error) as caught:
        _s3(infra, "photos").put_object("exports", "x", io.BytesIO(b"x"), 1)
    assert caught.value.code == "AccessDenied"


def test_s3_get_refused_in_foreign_bucket(infra: Infra) -> None:
    key = f"test/{uuid.uuid4().hex}"
    _s3(infra, "photos").put_object("photos", key, io.BytesIO(b"secret"), 6)
    try:
        with pytest.raises(S3Error) as caught:
            _s3(infra, "rights").get_object("photos", key)
        assert caught.value.code == "AccessDenied"
    finally:
        _s3(infra, "photos").remove_object("photos", key)


def test_s3_list_refused_in_foreign_bucket(infra: Infra) -> None:
    with pytest.raises(S3Error) as caught:
        list(_s3(infra, "marketing").list_objects("quarantine"))
    assert caught.value.code == "AccessDenied"


def test_s3_delete_refused_in_foreign_bucket(infra: Infra) -> None:
    key = f"test/{uuid.uuid4().hex}"
    _s3(infra, "rights").put_object("exports", key, io.BytesIO(b"e"), 1)
    try:
        with pytest.raises(S3Error) as caught:
            _s3(infra, "compliance").remove_object("exports", key)
        assert caught.value.code == "AccessDenied"
        assert _s3(infra, "rights").stat_object("exports", key).size == 1
    finally:
        _s3(infra, "rights").remove_object("exports", key)


def test_s3_anonymous_refused(infra: Infra) -> None:
    anonymous = Minio(infra.s3_endpoint, secure=False)
    with pytest.raises(S3Error) as caught:
        list(anonymous.list_objects("photos"))
    assert caught.value.code == "AccessDenied"
