"""The outbox relay and the inbox against the real PostgreSQL and Kafka.

Each test gets its own schema (owned by svc_records, with the common outbox/inbox migration) and
its own customer numbers, so the shared topic `records.commands.v1` never mixes tests up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaTimeoutError

from contracts.envelope import Event, new_event_id
from contracts.topics import topic
from services.common.db import open_pool
from services.common.inbox import claim, prune
from services.common.migrate import migrate
from services.common.outbox import OutboxError, OutboxRelay, Producer, enqueue, enqueue_event
from tests.support.infra import Infra, find_infra
from tests.support.pg import scratch_schema

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

    from aiokafka.structs import ConsumerRecord

    from services.common.db import Connection, Pool

pytestmark = pytest.mark.real

SERVICE = "records"
TOPIC = "records.commands.v1"
PRODUCER = "intake"


class Rollback(Exception):  # noqa: N818 - a control-flow signal, not an error
    pass


class BrokerRefusedError(Exception):
    """A permanent publish failure (like an authorisation error)."""


@pytest.fixture(scope="module")
def infra() -> Infra:
    return find_infra()


@pytest.fixture
async def schema(infra: Infra) -> AsyncIterator[str]:
    async with scratch_schema(infra, SERVICE) as name:
        yield name


@pytest.fixture
async def pool(infra: Infra, schema: str) -> AsyncIterator[Pool]:
    pool = await open_pool(infra.pg_dsn(SERVICE), schema=schema, max_size=6)
    await migrate(pool, schema=schema, directory=None)
    yield pool
    await pool.close()


@pytest.fixture
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(
        **infra.kafka_client_args(PRODUCER), enable_idempotence=True, acks="all"
    )
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def tail(infra: Infra) -> AsyncIterator[AIOKafkaConsumer]:
    """A group-less reader of the topic, positioned at its end before the test writes."""
    consumer = AIOKafkaConsumer(**infra.kafka_client_args(SERVICE), enable_auto_commit=False)
    await consumer.start()
    partitions = [TopicPartition(TOPIC, p) for p in range(topic(TOPIC).partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    yield consumer
    await consumer.stop()


def new_keys(n: int) -> list[str]:
    run = uuid4().hex[:10]
    return [f"obx-{run}-{i}" for i in range(n)]


async def collect(
    consumer: AIOKafkaConsumer, keys: Iterable[str], count: int, within: float = 20.0
) -> list[ConsumerRecord]:
    """Read until `count` records with one of `keys` arrived (others are ignored)."""
    wanted = {k.encode() for k in keys}
    got: list[ConsumerRecord] = []
    deadline = time.monotonic() + within
    while len(got) < count and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=200)
        for records in batches.values():
            got.extend(r for r in records if r.key in wanted)
    return got


async def outbox_size(pool: Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM outbox"))


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> bool:
    """Poll `check` until it holds or `within` seconds passed; its last answer."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.005)
    return await check()


async def wait_published(relay: OutboxRelay, count: int) -> None:
    async def done() -> bool:
        return relay.published >= count

    await eventually(done)


async def put(pool: Pool, key: str, payload: bytes = b"{}") -> UUID:
    event_id = new_event_id()
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(
            conn,
            topic=TOPIC,
            key=key,
            payload=payload,
            event_id=event_id,
            event_type="OutboxProbe",
        )
    return event_id


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run(), name=relay.name)
    try:
        yield task
    finally:
        relay.stop()
        await asyncio.wait([task], timeout=10)
        if not task.done():
            task.cancel()
            await asyncio.wait([task])


def relay_of(
    pool: Pool,
    producer: Producer,
    schema: str,
    *,
    name: str = "relay",
    poll_interval: float = 1.0,
) -> OutboxRelay:
    return OutboxRelay(
        pool,
        producer,
        schema=schema,
        name=name,
        poll_interval=poll_interval,
        standby_interval=0.2,
    )


async def test_enqueue_outside_a_transaction_is_refused(pool: Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(OutboxError, match="inside the transaction"):
            await enqueue(
                conn,
                topic=TOPIC,
                key="k",
                payload=b"{}",
                event_id=new_event_id(),
                event_type="OutboxProbe",
            )
    assert await outbox_size(pool) == 0


async def test_rolled_back_enqueue_publishes_nothing(
    pool: Pool, schema: str, producer: AIOKafkaProducer, tail: AIOKafkaConsumer
) -> None:
    (key,) = new_keys(1)
    ghost = new_event_id()

    async def enqueue_then_fail() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(
                conn, topic=TOPIC, key=key, payload=b"{}", event_id=ghost, event_type="Ghost"
            )
            raise Rollback

    with pytest.raises(Rollback):
        await enqueue_then_fail()
    marker = await put(pool, key)

    async with running(relay_of(pool, producer, schema)):
        records = await collect(tail, [key], 1)
        # Anything published after the marker would be a bug too: give it a moment.
        records += await collect(tail, [key], 1, within=1.0)

    assert [dict(r.headers)["event_id"] for r in records] == [str(marker).encode()]
    assert await outbox_size(pool) == 0


async def test_committed_rows_are_published_in_key_order_and_deleted(
    pool: Pool, schema: str, producer: AIOKafkaProducer, tail: AIOKafkaConsumer
) -> None:
    keys = new_keys(3)
    expected: dict[str, list[UUID]] = {k: [] for k in keys}
    for _ in range(5):
        async with pool.acquire() as conn, conn.transaction():
            for key in keys:
                event = Event(type="OutboxProbe", producer="tests", customer_id=key)
                await enqueue_event(conn, topic=TOPIC, event=event)
                expected[key].append(event.event_id)
    assert await outbox_size(pool) == 15

    relay = relay_of(pool, producer, schema)
    async with running(relay):
        records = await collect(tail, keys, 15)
        await wait_published(relay, 15)

    seen: dict[str, list[UUID]] = {k: [] for k in keys}
    for record in records:
        headers = {k: v.decode() for k, v in record.headers}
        event = Event.model_validate_json(record.value)
        assert record.key == (event.customer_id or "").encode()
        assert headers["event_id"] == str(event.event_id)
        assert headers["event_type"] == "OutboxProbe"
        assert headers["content-type"] == "application/json"
        assert headers["correlation_id"] == str(event.correlation_id)
        seen[record.key.decode()].append(event.event_id)
    assert seen == expected
    assert relay.published == 15
    assert await outbox_size(pool) == 0


async def test_only_one_relay_is_active_and_a_standby_takes_over(
    pool: Pool, schema: str, producer: AIOKafkaProducer, tail: AIOKafkaConsumer
) -> None:
    (key,) = new_keys(1)
    first = relay_of(pool, producer, schema, name="first")
    second = relay_of(pool, producer, schema, name="second")
    async with running(first) as first_task, running(second):
        await asyncio.wait_for(first.wait_active(), 5)
        await asyncio.sleep(1.0)  # several standby attempts of the second
        assert (first.is_active, second.is_active) == (True, False)

        for _ in range(5):
            await put(pool, key)
        assert len(await collect(tail, [key], 5)) == 5
        await wait_published(first, 5)
        assert (first.published, second.published) == (5, 0)

        first_task.cancel()  # dies abruptly; its connection (and lock) goes back to the pool
        await asyncio.wait_for(second.wait_active(), 5)
        for _ in range(5):
            await put(pool, key)
        assert len(await collect(tail, [key], 5)) == 5
        await wait_published(second, 5)
        assert (first.published, second.published) == (5, 5)


async def test_notify_wakes_the_relay_at_once(
    pool: Pool, schema: str, producer: AIOKafkaProducer, tail: AIOKafkaConsumer
) -> None:
    (key,) = new_keys(1)
    relay = relay_of(pool, producer, schema, poll_interval=60.0)
    async with running(relay):
        await asyncio.wait_for(relay.wait_active(), 5)
        await asyncio.sleep(0.3)  # the first (empty) round is over: it waits for a NOTIFY
        started = time.monotonic()
        await put(pool, key)
        await wait_published(relay, 1)
        elapsed = time.monotonic() - started
        assert len(await collect(tail, [key], 1)) == 1

    print(f"commit to published: {elapsed * 1000:.1f} ms")  # noqa: T201
    assert relay.published == 1
    assert elapsed < 1.0


async def test_polling_finds_rows_written_without_notify(
    pool: Pool, schema: str, producer: AIOKafkaProducer, tail: AIOKafkaConsumer
) -> None:
    (key,) = new_keys(1)
    relay = relay_of(pool, producer, schema, poll_interval=0.3)
    async with running(relay):
        await asyncio.wait_for(relay.wait_active(), 5)
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO outbox (event_id, topic, key, payload, event_type)"
                " VALUES ($1, $2, $3, $4, 'OutboxProbe')",
                new_event_id(),
                TOPIC,
                key,
                b"{}",
            )
        assert len(await collect(tail, [key], 1, within=3.0)) == 1


class FakeProducer:
    """Records what it sends; fails the first attempt of chosen events."""

    def __init__(self, fail_once: set[str], error: type[Exception] = KafkaTimeoutError) -> None:
        self.fail_once = set(fail_once)
        self.error = error
        self.sent: list[tuple[str, str]] = []

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        assert topic == TOPIC
        assert key is not None
        assert value is not None
        event_id = dict(headers or [])["event_id"].decode()
        await asyncio.sleep(0.001)
        if event_id in self.fail_once:
            self.fail_once.discard(event_id)
            raise self.error
        self.sent.append((key.decode(), event_id))


async def test_a_failed_send_stops_its_key_until_it_succeeds(pool: Pool, schema: str) -> None:
    key_a, key_b = new_keys(2)
    a = [str(await put(pool, key_a)) for _ in range(4)]
    b = [str(await put(pool, key_b)) for _ in range(2)]
    producer = FakeProducer(fail_once={a[1]})

    relay = relay_of(pool, producer, schema, poll_interval=0.1)
    async with running(relay):
        await wait_published(relay, 6)
        assert await outbox_size(pool) == 0

    # b is not held up by a's failure; a's later events wait for a[1], and none is sent twice.
    assert producer.sent.index((key_b, b[1])) < producer.sent.index((key_a, a[1]))
    assert [e for k, e in producer.sent if k == key_a] == a
    assert [e for k, e in producer.sent if k == key_b] == b
    assert relay.published == 6


async def test_a_permanent_failure_stops_the_relay_and_keeps_the_rows(
    pool: Pool, schema: str
) -> None:
    (key,) = new_keys(1)
    first = str(await put(pool, key))
    await put(pool, key)
    producer = FakeProducer(fail_once={first}, error=BrokerRefusedError)

    relay = relay_of(pool, producer, schema)
    with pytest.raises(BrokerRefusedError):
        await asyncio.wait_for(relay.run(), 10)

    assert producer.sent == []
    assert await outbox_size(pool) == 2
    assert not relay.is_active


async def test_inbox_claims_once_per_consumer(pool: Pool) -> None:
    event_id = new_event_id()

    async def claim_then_fail(conn: Connection) -> None:
        async with conn.transaction():
            assert await claim(conn, "records.commands", event_id)
            raise Rollback  # the effect failed: the claim goes with it

    async with pool.acquire() as conn:
        with pytest.raises(Rollback):
            await claim_then_fail(conn)
        async with conn.transaction():
            assert await claim(conn, "records.commands", event_id)
        async with conn.transaction():
            assert not await claim(conn, "records.commands", event_id)
        async with conn.transaction():
            assert await claim(conn, "records.directives", event_id)


async def test_inbox_prune_removes_only_old_claims(pool: Pool) -> None:
    old, recent = new_event_id(), new_event_id()
    async with pool.acquire() as conn:
        async with conn.transaction():
            await claim(conn, "c", old)
            await claim(conn, "c", recent)
        await conn.execute(
            "UPDATE inbox SET processed_at = now() - interval '8 days' WHERE event_id = $1", old
        )

        assert await prune(conn, timedelta(days=7)) == 1
        assert await prune(conn, timedelta(days=7)) == 0
        remaining = await conn.fetch("SELECT event_id FROM inbox")
        assert [r["event_id"] for r in remaining] == [recent]
