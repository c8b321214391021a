"""The consent service against the real Kafka and PostgreSQL, with its own credentials.

Two parts. The repository cases run on the in-memory fake and on PostgreSQL (an isolated
schema owned by `svc_consent`, migrated as the runtime does): the same use cases, the
append-only history, the version check, the read API. Then the service runs in process (its own
consumer group for the test, positioned at the end of its topics): intake's principal publishes
sealed commands to `consent.commands.v1`; the history is read as compliance, the state and the
directives as marketing; a command that cannot be opened is dead-lettered and holds its
customer until the fixed command (same event id) is applied; marketing, analytics and photos
answer the directives on `privacy.acks.v1`, and a directive is fully applied only when every
expected service has answered. Topics and the `consent` schema are shared, so customer numbers
are unique per run and the readers keep only this run's keys.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from faststream import TestApp

from contracts import consent as c
from contracts.audit import AuditEvent
from contracts.sealing import TopicKey, seal
from contracts.topics import all_topics
from services.common.db import open_pool
from services.common.migrate import migrate
from services.common.runtime import ServiceContext
from services.consent.app import MIGRATIONS, build
from services.consent.handlers import apply_command, hold_customer, record_ack
from services.consent.repository import (
    ConcurrentChangeError,
    ConsentRepository,
    ConsentView,
    DirectiveStatus,
    InMemoryConsent,
    PostgresConsent,
    directive_status,
    load_consent,
)
from services.consent.settings import ConsentSettings
from tests.support.infra import Infra
from tests.support.kafka import start_group_at_end
from tests.unit.test_consent_domain import (
    CANARY_GROUNDS,
    at,
    captured,
    customer_id,
    lifted,
    objected,
    withdrawn,
)

if TYPE_CHECKING:
    from services.common.db import Pool
    from services.consent.domain import ConsentCommand

pytestmark = [pytest.mark.real, pytest.mark.timeout(240)]

COMMANDS = c.COMMANDS_TOPIC
DLQ = f"{COMMANDS}.dlq"
AUDIT = "audit.events.v1"

Transaction = Callable[[], AbstractAsyncContextManager[ConsentRepository]]


# --- Repository cases: the fake and PostgreSQL ------------------------------------------------


@dataclass
class Backend:
    transaction: Transaction
    pool: Pool | None = None


@pytest.fixture
async def postgres_pool(infra: Infra) -> AsyncIterator[Pool]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(infra.pg_admin_dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {schema} AUTHORIZATION svc_consent")
    finally:
        await admin.close()
    pool = await open_pool(infra.pg_dsn("consent"), schema=schema, max_size=4)
    try:
        await migrate(pool, schema=schema, directory=MIGRATIONS)
        yield pool
    finally:
        await pool.close()
        admin = await asyncpg.connect(infra.pg_admin_dsn)
        try:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await admin.close()


@pytest.fixture(params=["fake", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "fake":
        fake = InMemoryConsent()

        @asynccontextmanager
        async def fake_transaction() -> AsyncIterator[ConsentRepository]:
            yield fake

        return Backend(fake_transaction)
    pool: Pool = request.getfixturevalue("postgres_pool")

    @asynccontextmanager
    async def transaction() -> AsyncIterator[ConsentRepository]:
        async with pool.acquire() as conn, conn.transaction():
            yield PostgresConsent(conn)

    return Backend(transaction, pool)


async def test_use_cases_on_both_backends(backend: Backend) -> None:
    cid = customer_id()
    commands: list[ConsentCommand] = [
        captured(cid, "marketing_email", at(0)),
        objected(cid, "direct_marketing", at(1), grounds=CANARY_GROUNDS),
        captured(cid, "marketing_email", at(2), notice_sha256=None),
        lifted(cid, "direct_marketing", at(3)),
        withdrawn(cid, "marketing_email", at(4)),
    ]
    results = []
    for command in commands:
        async with backend.transaction() as repo:
            results.append(await apply_command(repo, command, now=at(10)))
    async with backend.transaction() as repo:
        assert not (await apply_command(repo, commands[0], now=at(11))).applied
        state = await repo.lock(cid)
    assert [r.version for r in results] == [1, 2, 3, 4, 5]
    assert state.version == 5
    assert not state.objections
    assert state.status(c.Purpose.MARKETING_EMAIL) is c.ConsentStatus.WITHDRAWN
    objection_directive = results[1].directive_id
    withdrawal_directive = results[4].directive_id
    assert objection_directive is not None
    assert withdrawal_directive is not None
    assert results[2].directive_id is None

    # The objection's directive: only marketing is expected.
    answer = c.ProcessingStopped(
        producer="marketing",
        service="marketing",
        customer_id=cid,
        directive_id=objection_directive,
        consent_version=2,
    )
    async with backend.transaction() as repo:
        done = await record_ack(repo, answer)
    assert done.outcome == "fully_applied"
    async with backend.transaction() as repo:
        assert (await record_ack(repo, answer)).outcome == "duplicate"
    async with backend.transaction() as repo:
        held = await hold_customer(repo, cid, command_id=uuid.uuid4(), reason="not_json")
    assert held is not None
    assert held.state.version == 6

    if backend.pool is None:
        return
    async with backend.pool.acquire() as conn:
        view = await load_consent(conn, cid)
        status = await directive_status(conn, objection_directive)
        pending = await directive_status(conn, withdrawal_directive)
        assert await load_consent(conn, "nobody-" + cid) is None
        assert await directive_status(conn, uuid.uuid4()) is None
    assert isinstance(view, ConsentView)
    assert view.state.version == 6
    assert view.state.held
    assert [getattr(e, "version", None) for e in view.history] == [1, 2, 3, 4, 5, 6]
    assert type(view.history[3]).__name__ == "ObjectionLiftedRecorded"
    assert view.history[2].notice_sha256 == view.history[0].notice_sha256  # type: ignore[attr-defined]
    assert [d.reason for d in view.directives] == ["objection", "withdrawal", "hold"]
    assert isinstance(status, DirectiveStatus)
    assert status.fully_applied_at is not None
    assert status.latency_ms is not None
    assert status.latency_ms >= 0
    assert set(status.acks) == {"marketing"}
    assert pending is not None
    assert pending.pending == ("marketing",)
    assert pending.fully_applied_at is None


async def test_history_is_append_only_and_versions_unique(postgres_pool: Pool) -> None:
    cid = customer_id()
    async with postgres_pool.acquire() as conn, conn.transaction():
        await apply_command(PostgresConsent(conn), withdrawn(cid), now=at(1))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await postgres_pool.execute("UPDATE consent_events SET status = 'given'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await postgres_pool.execute("DELETE FROM consent_events")
    async with postgres_pool.acquire() as conn:
        record = await conn.fetchval(
            "SELECT record FROM consent_events WHERE customer_id = $1", cid
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO consent_events (customer_id, version, event_id, command_id, kind,"
                " record, occurred_at) VALUES ($1, 1, $2, $2, 'ConsentRecorded', $3, now())",
                cid,
                uuid.uuid4(),
                record,
            )
    # A writer that read an old version cannot store over a newer one.
    async with postgres_pool.acquire() as conn, conn.transaction():
        repo = PostgresConsent(conn)
        state = await repo.lock(cid)
        from services.consent.domain import decide  # noqa: PLC0415

        decision = decide(state, withdrawn(cid, "research"), now=at(2))
        with pytest.raises(ConcurrentChangeError):
            await repo.save(state.version - 1, decision)


# --- The service, running -----------------------------------------------------------------


def settings_for(infra: Infra, group_suffix: str) -> ConsentSettings:
    """Consent's own settings (`CONSENT_*` of the provisioned environment), its own test group."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in infra.service_env("consent").items():
            env.setenv(name, value)
        return ConsentSettings(
            consumer_group_suffix=group_suffix, health_port=0, max_retries=1, retry_backoff_ms=50
        )


class Tail:
    """A group-less reader of one topic from its end at creation; keeps this run's records."""

    def __init__(self, infra: Infra, principal: str, name: str, keys: set[bytes]) -> None:
        self.consumer = AIOKafkaConsumer(
            **infra.kafka_client_args(principal), group_id=None, enable_auto_commit=False
        )
        self.name = name
        self.keys = keys
        self.records: list[ConsumerRecord[bytes, bytes]] = []

    async def start(self) -> None:
        await self.consumer.start()
        count = next(t.partitions for t in all_topics() if t.name == self.name)
        partitions = [TopicPartition(self.name, p) for p in range(count)]
        self.consumer.assign(partitions)
        for tp, end in (await self.consumer.end_offsets(partitions)).items():
            self.consumer.seek(tp, end)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def read(self, seconds: float = 0.3) -> None:
        batches = await self.consumer.getmany(timeout_ms=int(seconds * 1000))
        for records in batches.values():
            self.records.extend(r for r in records if r.key in self.keys)

    def of(self, key: str) -> list[ConsumerRecord[bytes, bytes]]:
        return [r for r in self.records if r.key == key.encode()]

    def events(self, key: str) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in self.of(key)]


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def sealed(command: Any, key: str) -> bytes:
    """The command as intake forwards it: `producer` intake, sealed with the topic key."""
    document = command.model_copy(update={"producer": "intake"}).model_dump(mode="json")
    return json.dumps(seal(document, TopicKey.from_b64(key))).encode()


@dataclass
class Run:
    """What the scenario left behind, for the tests below to check."""

    a: str
    b: str
    poison: str
    view_a: ConsentView
    view_b: ConsentView
    poison_held: ConsentView
    poison_released: ConsentView
    objection: DirectiveStatus
    hold_partial: DirectiveStatus
    hold_done: DirectiveStatus
    tails: dict[str, Tail]


@asynccontextmanager
async def running_consent(settings: ConsentSettings) -> AsyncIterator[ServiceContext]:
    app, ctx = build(settings)
    async with TestApp(app):
        yield ctx


async def view(ctx: ServiceContext, cid: str) -> ConsentView | None:
    async with ctx.pool.acquire() as conn:
        return await load_consent(conn, cid)


async def status(ctx: ServiceContext, directive_id: uuid.UUID) -> DirectiveStatus | None:
    async with ctx.pool.acquire() as conn:
        return await directive_status(conn, directive_id)


async def version_is(ctx: ServiceContext, cid: str, version: int) -> bool:
    current = await view(ctx, cid)
    return current is not None and current.state.version == version


def the_directive(current: ConsentView | None, reason: str) -> DirectiveStatus:
    assert current is not None
    return next(d for d in current.directives if d.reason == reason)


async def send_ack(
    producers: dict[str, AIOKafkaProducer], service: str, directive: DirectiveStatus
) -> None:
    answer = c.ProcessingStopped(
        producer=service,
        service=service,
        customer_id=directive.customer_id,
        directive_id=directive.directive_id,
        consent_version=directive.consent_version,
    )
    await producers[service].send_and_wait(
        c.ACKS_TOPIC, answer.to_bytes(), key=directive.customer_id.encode()
    )


@pytest.fixture(scope="module")
async def outcome(infra: Infra) -> Run:  # noqa: C901, PLR0915 - one scenario, told in order
    run = uuid.uuid4().hex[:12]
    settings = settings_for(infra, f"test-{run}")
    key = settings.topic_keys[COMMANDS].get_secret_value()
    a, b, poison = customer_id("CA"), customer_id("CB"), customer_id("CP")
    keys = {k.encode() for k in (a, b, poison)}
    tails = {
        c.EVENTS_TOPIC: Tail(infra, "compliance", c.EVENTS_TOPIC, keys),
        c.STATE_TOPIC: Tail(infra, "marketing", c.STATE_TOPIC, keys),
        c.DIRECTIVES_TOPIC: Tail(infra, "marketing", c.DIRECTIVES_TOPIC, keys),
        AUDIT: Tail(infra, "compliance", AUDIT, keys),
        DLQ: Tail(infra, "operator", DLQ, keys),
    }
    producers = {
        name: AIOKafkaProducer(**infra.kafka_client_args(name), enable_idempotence=True, acks="all")
        for name in ("intake", "marketing", "analytics", "photos")
    }
    first_a = captured(a, "marketing_email", at(0), actor="customer")
    fixed = withdrawn(poison, "marketing_email", at(1))
    broken = json.loads(sealed(fixed, key))
    broken["sealed"] = base64.b64encode(b"\x01" + b"\x00" * 60).decode()
    commands = [
        (a, sealed(first_a, key)),
        (b, sealed(withdrawn(b, "photo_storage", at(0)), key)),  # before any registration
        (a, sealed(captured(a, "marketing_sms", at(1)), key)),
        (poison, json.dumps(broken).encode()),
        (a, sealed(objected(a, "distance_selling", at(2), grounds=CANARY_GROUNDS), key)),
        (a, sealed(captured(a, "marketing_email", at(3)), key)),  # re-consent: suppressed
        (a, sealed(first_a, key)),  # a redelivery: no-op
        (a, sealed(withdrawn(a, "web_analytics", at(4)), key)),
    ]
    try:
        for tail in tails.values():
            await tail.start()
        for producer in producers.values():
            await producer.start()
        await start_group_at_end(infra, "consent", f"consent.test-{run}", COMMANDS, c.ACKS_TOPIC)
        async with running_consent(settings) as ctx:
            for cid, value in commands:
                await producers["intake"].send_and_wait(COMMANDS, value, key=cid.encode())
            await eventually(lambda: version_is(ctx, a, 5), what="A's commands")
            await eventually(lambda: version_is(ctx, b, 1), what="B's withdrawal")
            await eventually(lambda: version_is(ctx, poison, 1), what="the poison's hold")
            poison_held = await view(ctx, poison)
            assert poison_held is not None

            objection = the_directive(await view(ctx, a), "objection")
            await send_ack(producers, "marketing", objection)
            hold_directive = the_directive(poison_held, "hold")
            await send_ack(producers, "marketing", hold_directive)
            await send_ack(producers, "analytics", hold_directive)

            async def objection_applied() -> bool:
                found = await status(ctx, objection.directive_id)
                return found is not None and found.fully_applied_at is not None

            async def two_answers() -> bool:
                found = await status(ctx, hold_directive.directive_id)
                return found is not None and len(found.acks) == 2

            await eventually(objection_applied, what="the objection's answer")
            await eventually(two_answers, what="two answers to the hold")
            hold_partial = await status(ctx, hold_directive.directive_id)
            await send_ack(producers, "photos", hold_directive)

            async def hold_applied() -> bool:
                found = await status(ctx, hold_directive.directive_id)
                return found is not None and found.fully_applied_at is not None

            await eventually(hold_applied, what="the last answer to the hold")
            hold_done = await status(ctx, hold_directive.directive_id)

            # The fix: the same command, now sealed properly, is applied and releases the hold.
            await producers["intake"].send_and_wait(
                COMMANDS, sealed(fixed, key), key=poison.encode()
            )
            await eventually(lambda: version_is(ctx, poison, 3), what="the fixed command")
            poison_released = await view(ctx, poison)

            async def all_published() -> bool:
                for tail in tails.values():
                    await tail.read()
                states = tails[c.STATE_TOPIC].events(poison)
                return (
                    len(tails[c.EVENTS_TOPIC].of(a)) == 5
                    and bool(states)
                    and states[-1]["version"] == 3
                    and bool(tails[DLQ].of(poison))
                    and len(tails[c.DIRECTIVES_TOPIC].of(poison)) == 2
                )

            await eventually(all_published, what="the published events")
            view_a, view_b = await view(ctx, a), await view(ctx, b)
    finally:
        for producer in producers.values():
            await producer.stop()
        for tail in tails.values():
            await tail.stop()
    assert view_a is not None
    assert view_b is not None
    assert hold_partial is not None
    assert hold_done is not None
    assert poison_released is not None
    return Run(
        a,
        b,
        poison,
        view_a,
        view_b,
        poison_held,
        poison_released,
        objection,
        hold_partial,
        hold_done,
        tails,
    )


def test_history_is_published_in_version_order(outcome: Run) -> None:
    events = outcome.tails[c.EVENTS_TOPIC].events(outcome.a)
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in events] == [
        "ConsentRecorded",
        "ConsentRecorded",
        "ObjectionRecorded",
        "ConsentRecorded",
        "ConsentRecorded",
    ]
    first = c.ConsentRecorded.model_validate(events[0])
    assert (first.purpose, first.status, first.channel, first.actor) == (
        "marketing_email",
        "given",
        "kiosk",
        "customer",
    )
    assert first.notice_sha256 is not None
    assert first.legal_basis == "consent"
    objection = c.ObjectionRecorded.model_validate(events[2])
    assert objection.objection is c.ObjectionKind.DIRECT_MARKETING
    assert objection.absolute
    assert [e.version for e in outcome.view_a.history] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]


def test_state_keeps_the_suppression_after_re_consent(outcome: Run) -> None:
    states = [
        c.ConsentState.model_validate(e) for e in outcome.tails[c.STATE_TOPIC].events(outcome.a)
    ]
    assert [s.version for s in states] == [1, 2, 3, 4, 5]
    last = states[-1]
    assert last.suppressions == (c.ObjectionKind.DIRECT_MARKETING,)
    assert last.purposes[c.Purpose.MARKETING_EMAIL].status == "given"
    assert not c.effective(last, c.Purpose.MARKETING_EMAIL)
    assert not c.effective(last, c.Purpose.MARKETING_SMS)
    assert not c.effective(last, c.Purpose.WEB_ANALYTICS)
    assert c.effective(last, c.Purpose.RESEARCH)
    assert outcome.view_a.state.version == last.version
    assert outcome.view_a.state.purposes == last.purposes


def test_directives_name_purposes_services_and_version(outcome: Run) -> None:
    directives = [
        c.ProcessingStopRequested.model_validate(e)
        for e in outcome.tails[c.DIRECTIVES_TOPIC].events(outcome.a)
    ]
    assert [(d.reason, d.consent_version, d.services) for d in directives] == [
        ("objection", 3, ("marketing",)),
        ("withdrawal", 5, ("analytics",)),
    ]
    assert set(directives[0].purposes) == c.MARKETING
    assert directives[1].purposes == (c.Purpose.WEB_ANALYTICS,)
    (b_directive,) = outcome.tails[c.DIRECTIVES_TOPIC].events(outcome.b)
    assert b_directive["purposes"] == ["photo_storage"]
    assert b_directive["services"] == ["photos"]
    assert outcome.view_b.state.purposes[c.Purpose.PHOTO_STORAGE].status == "withdrawn"


def test_fully_applied_only_when_every_expected_service_answered(outcome: Run) -> None:
    assert outcome.objection.expected_services == ("marketing",)
    partial = outcome.hold_partial
    assert partial.expected_services == ("analytics", "marketing", "photos")
    assert set(partial.acks) == {"analytics", "marketing"}
    assert partial.fully_applied_at is None
    assert partial.latency_ms is None
    assert partial.pending == ("photos",)
    done = outcome.hold_done
    assert set(done.acks) == {"analytics", "marketing", "photos"}
    assert done.fully_applied_at is not None
    assert done.committed_at is not None
    assert done.fully_applied_at >= max(done.acks.values())
    assert done.latency_ms is not None
    expected = (done.fully_applied_at - done.committed_at).total_seconds() * 1000
    assert abs(done.latency_ms - expected) <= 1


def test_an_unopenable_command_holds_its_customer_until_fixed(outcome: Run) -> None:
    (dead,) = outcome.tails[DLQ].of(outcome.poison)
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["x-error"] == "sealed_undecryptable"
    assert headers["x-consumer"] == "consent"
    held = outcome.poison_held.state
    assert held.held
    assert not any(p.allowed for p in held.purposes.values())
    released = outcome.poison_released.state
    assert not released.held
    assert [type(e).__name__ for e in outcome.poison_released.history] == [
        "ConsentHeld",
        "ConsentHeld",
        "ConsentRecorded",
    ]
    assert released.purposes[c.Purpose.MARKETING_EMAIL].status == "withdrawn"
    assert c.effective(released, c.Purpose.MARKETING_POST)
    reasons = [e["reason"] for e in outcome.tails[c.DIRECTIVES_TOPIC].events(outcome.poison)]
    assert reasons == ["hold", "withdrawal"]


def test_audit_events_and_no_free_text_on_any_topic(outcome: Run) -> None:
    audits = [AuditEvent.model_validate(e) for e in outcome.tails[AUDIT].events(outcome.a)]
    assert [e.action for e in audits] == [
        "consent_change",
        "consent_change",
        "object",
        "consent_change",
        "consent_change",
    ]
    assert {e.producer for e in audits} == {"consent"}
    seen = 0
    for tail in outcome.tails.values():
        for record in tail.records:
            seen += 1
            raw = (record.value or b"") + (record.key or b"")
            raw += b"".join(v for _, v in record.headers)
            assert CANARY_GROUNDS.encode() not in raw
    assert seen >= 20
