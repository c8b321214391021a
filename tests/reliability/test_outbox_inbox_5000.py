"""The acceptance test of the outbox and the inbox: 5,000 events, crashes everywhere, no effect
lost, none applied twice, and every customer's events applied in order.

What runs, all against the real PostgreSQL and Kafka:

- Writers (as a producing service would) put 5,000 events over 50 keys into an outbox, in
  transactions of one or two keys and a few events each; some transactions roll back. Each
  event carries its key's sequence number (1..100).
- Outbox relays publish them to `records.commands.v1` as principal `intake`, one active and one
  on standby, starting once a backlog has built up. Three times the active relay dies in the
  middle of a batch: twice its task is cancelled between two sends, once its producer is closed
  under it. The standby takes over (republishing what was acknowledged but not yet deleted) and
  a new standby is started.
- A consumer (principal `records`, its own group, offsets committed by hand only after the
  database commit) applies each event in a transaction with the inbox. The handler fails at
  random: ~10% before the commit (rolled back), ~2% after it (a crash before the offset
  commit); the consumer seeks back and the event comes again. The consumer itself is killed and
  restarted twice, once just after a database commit and once inside a transaction.

Asserted at the end: exactly 5,000 effect rows, each event once, none from a rolled-back
transaction, the outbox empty, and for every key the sequence numbers in the order of
application are exactly 1..100; and that the faults really happened (events on the topic twice,
duplicates absorbed by the inbox). The counts and a timeline are printed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerClosed

from contracts.envelope import new_event_id
from services.common.db import open_pool
from services.common.inbox import claim
from services.common.migrate import migrate
from services.common.outbox import OutboxRelay, enqueue
from tests.support.infra import Infra, find_infra
from tests.support.pg import scratch_schema

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from aiokafka.structs import ConsumerRecord

    from services.common.db import Pool

pytestmark = [pytest.mark.real, pytest.mark.slow]

SERVICE = "records"
TOPIC = "records.commands.v1"
KEYS = 50
PER_KEY = 100
TOTAL = KEYS * PER_KEY
WRITERS = 5
CONSUMER = "records.reliability"
FAIL_BEFORE_COMMIT = 0.10
FAIL_AFTER_COMMIT = 0.02
ROLLBACK_RATE = 0.05
RELAY_KILLS: list[tuple[Literal["cancel", "close"], int]] = [
    ("cancel", 700),
    ("close", 900),
    ("cancel", 600),
]
"""How each of the first active relays dies, after how many of its own sends."""
CONSUMER_KILLS: dict[int, Literal["after_commit", "in_transaction"]] = {
    1500: "after_commit",
    3500: "in_transaction",
}
"""When (the n-th effect applied) the consumer is killed, and where."""
RELAY_DELAY = 1.5
DEADLINE = 150.0

EFFECTS_MIGRATION = """
CREATE TABLE effects (
    applied   bigserial PRIMARY KEY,
    key       text NOT NULL,
    seq       int NOT NULL,
    event_id  uuid NOT NULL
);
"""
INSERT_EFFECT = "INSERT INTO effects (key, seq, event_id) VALUES ($1, $2, $3)"


class InjectedFailure(Exception):  # noqa: N818 - a deliberate fault
    pass


@dataclass
class Stats:
    rolled_back: set[UUID] = field(default_factory=set)
    written: int = 0
    deliveries: int = 0
    applied: int = 0
    duplicates: int = 0
    republished: int = 0
    first_seen: dict[UUID, tuple[int, int]] = field(default_factory=dict)
    failed_before_commit: int = 0
    failed_after_commit: int = 0
    relay_kills: list[str] = field(default_factory=list)
    relays_started: int = 0
    consumer_kills: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    timeline: list[str] = field(default_factory=list)

    def mark(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.started:.1f}s {what}")


@pytest.fixture(scope="module")
def infra() -> Infra:
    return find_infra()


@pytest.fixture
async def schema(infra: Infra) -> AsyncIterator[str]:
    async with scratch_schema(infra, SERVICE) as name:
        yield name


@pytest.fixture
async def pool(infra: Infra, schema: str, tmp_path: Path) -> AsyncIterator[Pool]:
    (tmp_path / "0001_effects.sql").write_text(EFFECTS_MIGRATION)
    pool = await open_pool(infra.pg_dsn(SERVICE), schema=schema, max_size=12)
    await migrate(pool, schema=schema, directory=tmp_path)
    yield pool
    await pool.close()


# --- the producing side -----------------------------------------------------------------------


async def write(pool: Pool, keys: list[str], rng: random.Random, stats: Stats) -> None:
    """Write PER_KEY events for each of `keys`, in order per key, in small transactions."""
    next_seq = dict.fromkeys(keys, 1)
    while open_keys := [k for k in keys if next_seq[k] <= PER_KEY]:
        chosen = rng.sample(open_keys, k=min(len(open_keys), 1 if rng.random() < 0.8 else 2))
        planned = {k: min(rng.randint(1, 3), PER_KEY - next_seq[k] + 1) for k in chosen}
        ids: list[UUID] = []
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            for key, count in planned.items():
                for seq in range(next_seq[key], next_seq[key] + count):
                    event_id = new_event_id()
                    ids.append(event_id)
                    await enqueue(
                        conn,
                        topic=TOPIC,
                        key=key,
                        payload=json.dumps({"key": key, "seq": seq}).encode(),
                        event_id=event_id,
                        event_type="ReliabilityProbe",
                    )
            if rng.random() < ROLLBACK_RATE:
                await transaction.rollback()
                stats.rolled_back.update(ids)
            else:
                await transaction.commit()
                for key, count in planned.items():
                    next_seq[key] += count
                stats.written += len(ids)
        await asyncio.sleep(rng.uniform(0, 0.02))


class KillSwitch:
    """The relay's producer; when its relay becomes active it takes the next planned death."""

    def __init__(self, real: AIOKafkaProducer, plan: list[tuple[str, int]], stats: Stats) -> None:
        self.real = real
        self.plan = plan
        self.stats = stats
        self.task: asyncio.Task[None] | None = None
        self.death: tuple[str, int] | None = None
        self.sends = 0
        self._closing: asyncio.Task[None] | None = None

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> object:
        if self.sends == 0 and self.plan:
            self.death = self.plan.pop(0)
        self.sends += 1
        if self.death is not None and self.sends == self.death[1]:
            how = self.death[0]
            self.stats.relay_kills.append(f"{how}@{self.sends}")
            self.stats.mark(f"relay kill {how}")
            if how == "cancel":
                assert self.task is not None
                self.task.cancel()  # the batch is cut short: nothing of it is deleted
            else:
                self._closing = asyncio.create_task(self.real.stop())
        return await self.real.send_and_wait(topic, value, key, headers=headers)


@dataclass
class Relay:
    relay: OutboxRelay
    task: asyncio.Task[None]
    producer: AIOKafkaProducer


@dataclass
class Harness:
    """What the relays, the consumer and the test share."""

    infra: Infra
    pool: Pool
    schema: str
    group: str
    prefix: bytes
    rng: random.Random
    stats: Stats = field(default_factory=Stats)
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def run_relays(h: Harness) -> None:
    """Keep one active and one standby relay until `done`, replacing each one that dies."""
    plan: list[tuple[str, int]] = list(RELAY_KILLS)

    async def spawn() -> Relay:
        producer = AIOKafkaProducer(
            **h.infra.kafka_client_args("intake"), enable_idempotence=True, acks="all"
        )
        await producer.start()
        switch = KillSwitch(producer, plan, h.stats)
        relay = OutboxRelay(
            h.pool,
            switch,
            schema=h.schema,
            batch_size=200,
            poll_interval=0.5,
            standby_interval=0.1,
            name=f"relay-{h.stats.relays_started}",
        )
        h.stats.relays_started += 1
        switch.task = asyncio.create_task(relay.run(), name=relay.name)
        return Relay(relay, switch.task, producer)

    fleet = [await spawn(), await spawn()]
    finished = asyncio.create_task(h.done.wait())
    try:
        while not h.done.is_set():
            await asyncio.wait(
                [finished, *(r.task for r in fleet)], return_when=asyncio.FIRST_COMPLETED
            )
            for dead in [r for r in fleet if r.task.done()]:
                if not dead.task.cancelled():
                    error = dead.task.exception()
                    if not isinstance(error, ProducerClosed):
                        raise AssertionError("a relay failed unexpectedly") from error
                h.stats.mark(f"{dead.relay.name} ended")
                await dead.producer.stop()  # flushes what it still had: zombie duplicates
                h.stats.mark(f"{dead.relay.name} producer stopped")
                fleet.remove(dead)
                fleet.append(await spawn())
    finally:
        finished.cancel()
        for r in fleet:
            r.relay.stop()
        await asyncio.wait([r.task for r in fleet], timeout=10)
        for r in fleet:
            r.task.cancel()
            await r.producer.stop()


# --- the consuming side -----------------------------------------------------------------------


async def apply(h: Harness, record: ConsumerRecord) -> None:
    """The handler: the effect and the inbox claim in one transaction, faults injected."""
    stats = h.stats
    body = json.loads(record.value)
    event_id = UUID(dict(record.headers)["event_id"].decode())
    stats.deliveries += 1
    where = stats.first_seen.setdefault(event_id, (record.partition, record.offset))
    if where != (record.partition, record.offset):
        stats.republished += 1  # on the topic twice: a relay died between ack and delete
    nth = stats.applied + 1
    async with h.pool.acquire() as conn, conn.transaction():
        if not await claim(conn, CONSUMER, event_id):
            stats.duplicates += 1
            return
        await conn.execute(INSERT_EFFECT, body["key"], body["seq"], event_id)
        if CONSUMER_KILLS.get(nth) == "in_transaction":
            await kill_consumer(stats, "in_transaction")
        if h.rng.random() < FAIL_BEFORE_COMMIT:
            stats.failed_before_commit += 1
            raise InjectedFailure
    stats.applied += 1
    if CONSUMER_KILLS.get(nth) == "after_commit":
        await kill_consumer(stats, "after_commit")
    if h.rng.random() < FAIL_AFTER_COMMIT:
        stats.failed_after_commit += 1
        raise InjectedFailure


async def kill_consumer(stats: Stats, where: str) -> None:
    if where in stats.consumer_kills:
        return
    stats.consumer_kills.append(where)
    stats.mark(f"consumer kill {where}")
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)  # the cancellation lands here: no offset commit, maybe no DB commit


async def consume(h: Harness, consumer: AIOKafkaConsumer) -> None:
    """Poll, apply in partition order, commit each partition's offset after the DB commits."""
    while True:
        batches = await consumer.getmany(timeout_ms=100, max_records=500)
        for tp, records in batches.items():
            next_offset: int | None = None
            for record in records:
                if record.key is None or not record.key.startswith(h.prefix):
                    next_offset = record.offset + 1  # another test's message
                    continue
                try:
                    await apply(h, record)
                except InjectedFailure:
                    consumer.seek(tp, record.offset)  # redelivered by the next poll
                    break
                next_offset = record.offset + 1
            if next_offset is not None:
                await consumer.commit({tp: next_offset})


async def start_consumer(h: Harness, *, first: bool) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        TOPIC,
        **h.infra.kafka_client_args(SERVICE),
        group_id=h.group,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        # After a seek the next fetch waits for the one in flight, which long-polls the idle
        # partitions: keep that short, or every injected failure costs half a second.
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    if first:
        # Pin the group's start at the current end before anything is written, so a restarted
        # consumer resumes from committed offsets and never from "latest".
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        positions: dict[TopicPartition, int] = {
            tp: await consumer.position(tp) for tp in consumer.assignment()
        }
        await consumer.commit(positions)
    return consumer


async def run_consumers(h: Harness, first: AIOKafkaConsumer) -> None:
    """Run the consumer until `done`, restarting it (same group) whenever it is killed."""
    consumer = first
    task = asyncio.create_task(consume(h, consumer))
    finished = asyncio.create_task(h.done.wait())
    try:
        while not h.done.is_set():
            await asyncio.wait([finished, task], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                if not task.cancelled():
                    task.result()  # an unexpected error fails the test here
                await consumer.stop()  # leaves the group without committing anything
                consumer = await start_consumer(h, first=False)
                h.stats.mark("consumer restarted")
                task = asyncio.create_task(consume(h, consumer))
    finally:
        finished.cancel()
        task.cancel()
        await asyncio.wait([task])
        await consumer.stop()


# --- the test ----------------------------------------------------------------------------------


async def effects_and_backlog(pool: Pool) -> tuple[int, int]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM effects) AS effects,"
            " (SELECT count(*) FROM outbox) AS backlog"
        )
    assert row is not None
    return int(row["effects"]), int(row["backlog"])


async def wait_for_quiet_end(pool: Pool, stats: Stats) -> None:
    """Until every event is applied, the outbox is empty, and nothing moved for 1.5 s."""
    quiet_since: float | None = None
    last = (-1, -1, -1)
    while True:
        effects, backlog = await effects_and_backlog(pool)
        now = (effects, backlog, stats.deliveries)
        if now != last:
            stats.mark(f"effects={effects} backlog={backlog}")
        complete = stats.written == TOTAL and backlog == 0 and effects >= TOTAL
        if complete and now == last:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.5:
                return
        else:
            quiet_since = None
        last = now
        await asyncio.sleep(0.2)


async def test_5000_events_survive_relay_and_consumer_crashes(
    infra: Infra, pool: Pool, schema: str
) -> None:
    seed = random.randrange(2**32)
    run = uuid4().hex[:10]
    keys = [f"rel-{run}-{i:02d}" for i in range(KEYS)]
    h = Harness(
        infra,
        pool,
        schema,
        group=f"{SERVICE}.test-{uuid4()}",
        prefix=f"rel-{run}-".encode(),
        rng=random.Random(seed),
    )
    stats = h.stats
    started = time.monotonic()

    first = await start_consumer(h, first=True)
    consumers = asyncio.create_task(run_consumers(h, first))
    writers = [
        asyncio.create_task(write(pool, keys[i::WRITERS], random.Random(seed + i), stats))
        for i in range(WRITERS)
    ]
    # Let a backlog build up first, so the first relays die in the middle of full batches.
    await asyncio.sleep(RELAY_DELAY)
    relays = asyncio.create_task(run_relays(h))

    async def to_the_end() -> None:
        await asyncio.gather(*writers)
        stats.mark("writers done")
        await wait_for_quiet_end(pool, stats)

    end = asyncio.create_task(to_the_end())
    try:
        # A consumer or relay failure ends the wait early; its error is raised below.
        await asyncio.wait(
            [end, consumers, relays], timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        h.done.set()
        for task in [end, *writers]:
            task.cancel()
        results = await asyncio.gather(end, consumers, relays, return_exceptions=True)
        print(  # noqa: T201 - the report of the run
            f"\nseed={seed} elapsed={time.monotonic() - started:.1f}s "
            f"written={stats.written} rolled_back={len(stats.rolled_back)} "
            f"deliveries={stats.deliveries} applied={stats.applied} "
            f"duplicates_absorbed={stats.duplicates} republished={stats.republished} "
            f"failed_before_commit={stats.failed_before_commit} "
            f"failed_after_commit={stats.failed_after_commit} "
            f"relay_kills={stats.relay_kills} relays_started={stats.relays_started} "
            f"consumer_kills={stats.consumer_kills}\ntimeline: {'; '.join(stats.timeline)}"
        )
    for result in results[1:]:
        if isinstance(result, BaseException):
            raise result
    assert results[0] is None, f"no quiet end within {DEADLINE} s"

    async with pool.acquire() as conn:
        total = await conn.fetchval("SELECT count(*) FROM effects")
        distinct = await conn.fetchval("SELECT count(DISTINCT event_id) FROM effects")
        twice = await conn.fetch(
            "SELECT key, seq FROM effects GROUP BY key, seq HAVING count(*) > 1 LIMIT 5"
        )
        orders = await conn.fetch(
            "SELECT key, array_agg(seq ORDER BY applied) AS seqs FROM effects GROUP BY key"
        )
        applied_ids = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM effects")}
        backlog = await conn.fetchval("SELECT count(*) FROM outbox")

    assert stats.written == TOTAL
    assert total == TOTAL
    assert distinct == TOTAL, "an event was applied twice"
    assert twice == [], f"a (key, seq) was applied twice: {twice}"
    assert not applied_ids & stats.rolled_back, "an event of a rolled-back transaction was applied"
    assert backlog == 0
    assert sorted(r["key"] for r in orders) == sorted(keys)
    for row in orders:
        seqs = list(row["seqs"])
        assert all(a < b for a, b in itertools.pairwise(seqs)), (
            f"key {row['key']} applied out of order: {seqs}"
        )
        assert seqs == list(range(1, PER_KEY + 1))
    # The faults really happened, and the inbox is what kept the effects exactly-once.
    assert len(stats.relay_kills) == len(RELAY_KILLS)
    assert sorted(stats.consumer_kills) == sorted(CONSUMER_KILLS.values())
    assert stats.failed_before_commit > 0
    assert stats.duplicates > 0
    assert stats.republished > 0, "no relay died between a broker ack and the delete"
    assert stats.deliveries >= TOTAL + stats.duplicates
