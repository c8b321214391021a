"""Marketing as a consent-driven processor: versions decide, unknown is uncontactable, fail closed.

The shared consent rules (`services.consentview.view`, `consent_feed`, `consent_store`)
run against the memory store and against PostgreSQL (an isolated schema owned by the marketing
role, marked `real`); the audience and the final per-send check run against PostgreSQL only,
including a stop that commits while an export waits for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import asyncpg
import pytest
from aiokafka import ConsumerRecord

from contracts.audit import AuditEvent
from contracts.consent import (
    SUPPRESSES,
    ConsentState,
    ConsentStatus,
    ObjectionKind,
    ProcessingStopped,
    ProcessingStopRequested,
    Purpose,
    PurposeState,
    StopReason,
    affected_services,
    purpose_allowed,
)
from contracts.envelope import EVENT_TYPES, Event
from services.common.db import open_pool
from services.common.kafka import RetryPolicy
from services.common.migrate import migrate
from services.consentview.feed import (
    ConsentFeed,
    Outcome,
    Processor,
    ViewStore,
    apply_directive,
    apply_state,
    decode_state,
)
from services.consentview.store import MemoryViewStore
from services.consentview.view import (
    ALERT,
    UNKNOWN,
    ViewRow,
    plan_directive,
    plan_state,
    purposes_of,
)
from services.marketing.app import MIGRATIONS
from services.marketing.domain import CHANNELS, AudienceError, check_campaign, check_channel
from services.marketing.handlers import PROCESSOR
from services.marketing.repository import (
    MarketingStore,
    audience,
    load_suppressions,
    load_view,
    may_contact,
)
from tests.support.infra import Infra

if TYPE_CHECKING:
    from services.common.db import Pool

EMAIL = Purpose.MARKETING_EMAIL
SMS = Purpose.MARKETING_SMS
POST = Purpose.MARKETING_POST
STATE_TOPIC = "consent.state.v1"
DIRECTIVES_TOPIC = "privacy.directives.v1"


# --- Builders (shared with the analytics and photos tests) ----------------------------------


def customer_id(tag: str = "C") -> str:
    return f"T{tag}-{uuid.uuid4().hex[:12]}"


def consent_state(
    cid: str,
    version: int,
    *,
    given: Sequence[Purpose] = (),
    withdrawn: Sequence[Purpose] = (),
    refused: Sequence[Purpose] = (),
    objections: Sequence[ObjectionKind] = (),
    photo_ids: dict[Purpose, tuple[str, ...]] | None = None,
) -> ConsentState:
    """A state as consent publishes it: every purpose, `allowed` as the contract computes it."""
    statuses: dict[Purpose, ConsentStatus | None] = dict.fromkeys(Purpose)
    for purposes, status in (
        (given, ConsentStatus.GIVEN),
        (withdrawn, ConsentStatus.WITHDRAWN),
        (refused, ConsentStatus.REFUSED),
    ):
        for p in purposes:
            statuses[p] = status
    photos = photo_ids or {}
    states = {
        p: PurposeState(
            status=s,
            allowed=purpose_allowed(p, s, objections),
            version=version if s is not None else None,
            photo_ids=photos.get(p, ()),
        )
        for p, s in statuses.items()
    }
    suppressed = {p for kind in objections for p in SUPPRESSES[kind]}
    return ConsentState(
        customer_id=cid,
        version=version,
        purposes=states,
        suppressions=tuple(sorted(objections, key=str)),
        suppressed=tuple(sorted(suppressed, key=str)),
    )


def directive(
    cid: str,
    version: int,
    purposes: Sequence[Purpose],
    *,
    reason: StopReason = "withdrawal",
    photo_ids: tuple[str, ...] = (),
    services: Sequence[str] | None = None,
) -> ProcessingStopRequested:
    return ProcessingStopRequested(
        customer_id=cid,
        directive_id=uuid.uuid4(),
        purposes=tuple(purposes),
        reason=reason,
        consent_version=version,
        services=tuple(services if services is not None else affected_services(purposes)),
        photo_ids=photo_ids,
        producer="consent",
    )


def record(topic: str, key: str | None, value: bytes | None, offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key.encode() if key is not None else None,
        value=value,
        checksum=None,
        serialized_key_size=len(key or ""),
        serialized_value_size=len(value or b""),
        headers=[],
    )


def state_record(state: ConsentState) -> ConsumerRecord:
    return record(STATE_TOPIC, state.customer_id, state.to_bytes())


def directive_record(d: ProcessingStopRequested) -> ConsumerRecord:
    return record(DIRECTIVES_TOPIC, d.customer_id, d.to_bytes())


def acks(published: Sequence[tuple[str, Event]], cid: str) -> list[ProcessingStopped]:
    return [
        e
        for t, e in published
        if t == "privacy.acks.v1" and isinstance(e, ProcessingStopped) and e.customer_id == cid
    ]


def audits(published: Sequence[tuple[str, Event]], cid: str) -> list[AuditEvent]:
    return [
        e
        for t, e in published
        if t == "audit.events.v1" and isinstance(e, AuditEvent) and e.customer_id == cid
    ]


class DeadLetters:
    def __init__(self) -> None:
        self.records: list[tuple[ConsumerRecord, str, int]] = []

    async def __call__(self, rec: ConsumerRecord, exc: Exception, attempts: int) -> None:
        self.records.append((rec, getattr(exc, "reason", type(exc).__name__), attempts))


async def no_sleep(_: float) -> None:
    return None


# --- Backends: the memory store, and the service's store in an isolated schema ----------------


class Backend(Protocol):
    def unit(self) -> AbstractAsyncContextManager[ViewStore]: ...
    async def view(self, cid: str) -> ViewRow: ...
    async def stops(self, cid: str) -> dict[Purpose, int]: ...
    async def published(self) -> list[tuple[str, Event]]: ...


class MemoryBackend:
    def __init__(self) -> None:
        self.store = MemoryViewStore()

    def unit(self) -> AbstractAsyncContextManager[ViewStore]:
        @asynccontextmanager
        async def opened() -> AsyncIterator[ViewStore]:
            yield self.store

        return opened()

    async def view(self, cid: str) -> ViewRow:
        return self.store.views.get(cid, UNKNOWN)

    async def stops(self, cid: str) -> dict[Purpose, int]:
        return await self.store.stops(cid)

    async def published(self) -> list[tuple[str, Event]]:
        return list(self.store.published)


class PostgresBackend:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def unit(self) -> AbstractAsyncContextManager[ViewStore]:
        @asynccontextmanager
        async def opened() -> AsyncIterator[ViewStore]:
            async with self.pool.acquire() as conn, conn.transaction():
                yield MarketingStore(conn)

        return opened()

    async def view(self, cid: str) -> ViewRow:
        async with self.pool.acquire() as conn:
            return await load_view(conn, cid) or UNKNOWN

    async def stops(self, cid: str) -> dict[Purpose, int]:
        async with self.pool.acquire() as conn:
            return {s.purpose: s.consent_version for s in await load_suppressions(conn, cid)}

    async def published(self) -> list[tuple[str, Event]]:
        return await outbox_events(self.pool)


async def outbox_events(pool: Pool) -> list[tuple[str, Event]]:
    rows = await pool.fetch("SELECT topic, payload FROM outbox ORDER BY position")
    out: list[tuple[str, Event]] = []
    for r in rows:
        doc = json.loads(bytes(r["payload"]))
        out.append((r["topic"], EVENT_TYPES[doc["type"]].model_validate(doc)))
    return out


@asynccontextmanager
async def isolated_schema(infra: Infra, service: str, migrations: Path) -> AsyncIterator[Pool]:
    """A fresh schema owned by the service's role, migrated like the service's own."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(infra.pg_admin_dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {schema} AUTHORIZATION svc_{service}")
    finally:
        await admin.close()
    pool = await open_pool(infra.pg_dsn(service), schema=schema, max_size=4)
    try:
        await migrate(pool, schema=schema, directory=migrations)
        yield pool
    finally:
        await pool.close()
        admin = await asyncpg.connect(infra.pg_admin_dsn)
        try:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await admin.close()


@pytest.fixture
async def marketing_pool(infra: Infra) -> AsyncIterator[Pool]:
    async with isolated_schema(infra, "marketing", MIGRATIONS) as pool:
        yield pool


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.real)])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return MemoryBackend()
    return PostgresBackend(request.getfixturevalue("marketing_pool"))


def feed_for(backend: Backend, dead: DeadLetters, processor: Processor = PROCESSOR) -> ConsentFeed:
    return ConsentFeed(
        processor,
        backend.unit,
        dead,
        RetryPolicy(max_retries=1, backoff_ms=0),
        sleep=no_sleep,
    )


async def state_of(backend: Backend, state: ConsentState | None, cid: str) -> Outcome:
    async with backend.unit() as store:
        return await apply_state(store, PROCESSOR, cid, state)


async def directive_of(backend: Backend, d: ProcessingStopRequested) -> Outcome:
    async with backend.unit() as store:
        return await apply_directive(store, PROCESSOR, d)


# --- The rules, pure -------------------------------------------------------------------------


def test_marketing_processes_every_marketing_channel_and_research() -> None:
    assert purposes_of("marketing") == {EMAIL, SMS, POST, Purpose.MARKETING_PHONE, Purpose.RESEARCH}
    assert purposes_of("marketing") == CHANNELS


def test_a_stale_state_is_not_applied() -> None:
    row = ViewRow(version=5, state=None, allowed=frozenset())
    assert plan_state(row, consent_state("C1", 5, given=[EMAIL]), CHANNELS, {}) is None
    assert plan_state(row, consent_state("C1", 4, given=[EMAIL]), CHANNELS, {}) is None


def test_a_newer_state_allows_only_what_no_stop_fences_at_or_above_its_version() -> None:
    stops = {EMAIL: 7, SMS: 3}
    plan = plan_state(UNKNOWN, consent_state("C1", 5, given=[EMAIL, SMS]), CHANNELS, stops)
    assert plan is not None
    assert plan.lift == {SMS}  # fenced at 3 < 5: the customer consented again since
    assert EMAIL not in plan.allowed  # fenced at 7 > 5: this state is older than the stop
    assert {SMS, POST} <= plan.allowed  # post: legitimate interest, not objected
    assert EMAIL in plan.stopped


def test_only_a_state_newer_than_the_stop_lifts_it() -> None:
    same = plan_state(UNKNOWN, consent_state("C1", 5, given=[EMAIL]), CHANNELS, {EMAIL: 5})
    assert same is not None
    assert same.lift == frozenset()
    assert EMAIL not in same.allowed
    newer = plan_state(UNKNOWN, consent_state("C1", 6, given=[EMAIL]), CHANNELS, {EMAIL: 5})
    assert newer is not None
    assert newer.lift == {EMAIL}
    assert EMAIL in newer.allowed


def test_an_objection_in_the_state_suppresses_every_marketing_channel() -> None:
    state = consent_state("C1", 3, given=[EMAIL, SMS], objections=[ObjectionKind.DIRECT_MARKETING])
    plan = plan_state(UNKNOWN, state, CHANNELS, {})
    assert plan is not None
    assert plan.allowed == {Purpose.RESEARCH}


def test_a_directive_newer_than_the_view_fences_and_disallows_at_once() -> None:
    row = ViewRow(
        version=4, state=consent_state("C1", 4, given=[EMAIL]), allowed=frozenset({EMAIL, POST})
    )
    plan = plan_directive(row, directive("C1", 5, [EMAIL]), "marketing", CHANNELS)
    assert not plan.superseded
    assert plan.fence == {EMAIL}
    assert plan.allowed == {POST}
    assert plan.answer


def test_a_superseded_directive_fences_nothing_and_lifts_nothing() -> None:
    row = ViewRow(
        version=9, state=consent_state("C1", 9, given=[EMAIL]), allowed=frozenset({EMAIL})
    )
    plan = plan_directive(row, directive("C1", 5, [EMAIL]), "marketing", CHANNELS)
    assert plan.superseded
    assert plan.fence == frozenset()
    assert plan.allowed == {EMAIL}  # the customer consented again at 9: the view decides
    assert plan.stopped == frozenset()
    assert plan.answer


def test_campaign_and_channel_are_codes() -> None:
    assert check_channel("marketing_sms") is SMS
    with pytest.raises(AudienceError):
        check_channel(Purpose.ANALYTICS)
    with pytest.raises(AudienceError):
        check_channel("fax")
    assert check_campaign("spring-2026.whitening") == "spring-2026.whitening"
    with pytest.raises(AudienceError):
        check_campaign("Matti Meikäläinen's list")


# --- The use cases, on both backends ---------------------------------------------------------


async def test_unknown_customer_is_allowed_nothing(backend: Backend) -> None:
    cid = customer_id()
    view = await backend.view(cid)
    assert view.version == 0
    assert not view.known
    assert view.allowed == frozenset()


async def test_states_apply_by_version_not_arrival(backend: Backend) -> None:
    cid = customer_id()
    assert await state_of(backend, consent_state(cid, 2, given=[EMAIL]), cid) is Outcome.APPLIED
    stale = consent_state(cid, 1, given=[EMAIL, SMS])
    assert await state_of(backend, stale, cid) is Outcome.STALE
    view = await backend.view(cid)
    assert view.version == 2
    assert EMAIL in view.allowed
    assert SMS not in view.allowed


async def test_stale_states_and_directives_never_lift_a_suppression(backend: Backend) -> None:
    cid = customer_id()
    await state_of(backend, consent_state(cid, 3, given=[EMAIL]), cid)
    # The withdrawal's directive (version 4) overtakes its state.
    assert await directive_of(backend, directive(cid, 4, [EMAIL])) is Outcome.APPLIED
    assert EMAIL not in (await backend.view(cid)).allowed
    assert (await backend.stops(cid)) == {EMAIL: 4}
    # A replay of an older state, and a replayed older directive: nothing is lifted.
    assert await state_of(backend, consent_state(cid, 3, given=[EMAIL]), cid) is Outcome.STALE
    assert await directive_of(backend, directive(cid, 2, [EMAIL])) is Outcome.SUPERSEDED
    assert (await backend.stops(cid)) == {EMAIL: 4}
    assert EMAIL not in (await backend.view(cid)).allowed
    # The withdrawal's own state arrives: still suppressed.
    await state_of(backend, consent_state(cid, 4, withdrawn=[EMAIL]), cid)
    assert EMAIL not in (await backend.view(cid)).allowed
    assert (await backend.stops(cid)) == {EMAIL: 4}
    # Only a newer consent lifts it.
    await state_of(backend, consent_state(cid, 5, given=[EMAIL]), cid)
    assert EMAIL in (await backend.view(cid)).allowed
    assert (await backend.stops(cid)) == {}


async def test_a_directive_is_answered_once_in_the_transaction_of_the_stop(
    backend: Backend,
) -> None:
    cid = customer_id()
    await state_of(backend, consent_state(cid, 1, given=[EMAIL, SMS]), cid)
    d = directive(cid, 2, [EMAIL, SMS], reason="objection")
    assert await directive_of(backend, d) is Outcome.APPLIED
    assert await directive_of(backend, d) is Outcome.DUPLICATE
    published = await backend.published()
    [ack] = acks(published, cid)
    assert ack.directive_id == d.directive_id
    assert ack.service == "marketing"
    assert ack.producer == "marketing"
    assert ack.consent_version == 2
    assert ack.correlation_id == d.correlation_id
    stops = audits(published, cid)
    assert sorted(a.purpose or "" for a in stops) == ["marketing_email", "marketing_sms"]
    assert {a.action for a in stops} == {"stop"}
    assert {a.reason_code for a in stops} == {"directive.objection"}
    assert {a.legal_basis for a in stops} == {"consent"}


async def test_a_superseded_directive_is_still_answered(backend: Backend) -> None:
    cid = customer_id()
    await state_of(backend, consent_state(cid, 6, given=[EMAIL]), cid)  # consented again at 6
    d = directive(cid, 5, [EMAIL])
    assert await directive_of(backend, d) is Outcome.SUPERSEDED
    assert [a.directive_id for a in acks(await backend.published(), cid)] == [d.directive_id]
    assert EMAIL in (await backend.view(cid)).allowed
    assert (await backend.stops(cid)) == {}


async def test_a_directive_for_other_services_is_not_ours(backend: Backend) -> None:
    cid = customer_id()
    d = directive(cid, 2, [Purpose.PHOTO_STORAGE])
    assert await directive_of(backend, d) is Outcome.IGNORED
    assert acks(await backend.published(), cid) == []


async def test_a_directive_for_an_unknown_customer_suppresses_ahead_of_any_state(
    backend: Backend,
) -> None:
    cid = customer_id()
    await directive_of(backend, directive(cid, 3, [EMAIL]))
    await state_of(backend, consent_state(cid, 2, given=[EMAIL, SMS]), cid)
    view = await backend.view(cid)
    assert view.version == 2
    assert SMS in view.allowed
    assert EMAIL not in view.allowed


async def test_a_tombstone_forgets_and_no_stale_state_brings_consent_back(backend: Backend) -> None:
    cid = customer_id()
    await state_of(backend, consent_state(cid, 4, given=[EMAIL]), cid)
    assert await state_of(backend, None, cid) is Outcome.FORGOTTEN
    view = await backend.view(cid)
    assert (view.version, view.known, view.allowed) == (4, False, frozenset())
    assert await state_of(backend, consent_state(cid, 3, given=[EMAIL]), cid) is Outcome.STALE
    assert (await backend.view(cid)).allowed == frozenset()


# --- The feed: decoding and failing closed ---------------------------------------------------


def test_decode_state_refuses_what_is_not_a_state() -> None:
    cid = customer_id()
    good = consent_state(cid, 1, given=[EMAIL])
    assert decode_state(state_record(good)) == (cid, good)
    assert decode_state(record(STATE_TOPIC, cid, None)) == (cid, None)
    for value, reason in (
        (b"not json", "not_json"),
        (b"[]", "not_object"),
        (b'{"type": "ConsentRecorded"}', "unexpected_type"),
        (b'{"type": "ConsentState", "version": "x"}', "invalid_state"),
        (consent_state("TX-other", 1).to_bytes(), "key_mismatch"),
    ):
        with pytest.raises(Exception, match=reason):
            decode_state(record(STATE_TOPIC, cid, value))


async def test_an_unreadable_state_fails_closed(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    cid = customer_id()
    dead = DeadLetters()
    feed = feed_for(backend, dead)
    assert await feed.on_state(state_record(consent_state(cid, 2, given=[EMAIL, SMS]))) is (
        Outcome.APPLIED
    )
    bad = record(STATE_TOPIC, cid, b'{"type": "ConsentState", "customer_id": 12}', offset=7)
    with caplog.at_level(logging.CRITICAL):
        assert await feed.on_state(bad) is Outcome.FAILED_CLOSED
    view = await backend.view(cid)
    assert view.allowed == frozenset()
    assert (await backend.stops(cid)) == dict.fromkeys(CHANNELS, 2)
    assert [(r.offset, reason, n) for r, reason, n in dead.records] == [(7, "invalid_state", 1)]
    alerts = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert [r.getMessage() for r in alerts] == [ALERT]
    assert alerts[0].customer_id == cid  # type: ignore[attr-defined]
    assert {a.reason_code for a in audits(await backend.published(), cid)} == {
        "consent.fail_closed"
    }
    # A stale state cannot lift the fail-closed suppression; the next newer one can.
    await feed.on_state(state_record(consent_state(cid, 2, given=[EMAIL, SMS])))
    assert (await backend.view(cid)).allowed == frozenset()
    await feed.on_state(state_record(consent_state(cid, 3, given=[EMAIL])))
    view = await backend.view(cid)
    assert EMAIL in view.allowed
    assert SMS not in view.allowed


async def test_an_unreadable_directive_fails_closed_and_is_not_answered(backend: Backend) -> None:
    cid = customer_id()
    dead = DeadLetters()
    feed = feed_for(backend, dead)
    await feed.on_state(state_record(consent_state(cid, 1, given=[EMAIL])))
    wire = json.loads(directive(cid, 2, [EMAIL]).to_bytes())
    wire["purposes"] = ["marketing_fax"]
    outcome = await feed.on_directive(record(DIRECTIVES_TOPIC, cid, json.dumps(wire).encode()))
    assert outcome is Outcome.FAILED_CLOSED
    assert (await backend.view(cid)).allowed == frozenset()
    assert [reason for _, reason, _ in dead.records] == ["invalid_directive"]
    assert acks(await backend.published(), cid) == []


async def test_a_state_under_another_customers_key_suppresses_both(backend: Backend) -> None:
    key, named = customer_id("K"), customer_id("N")
    dead = DeadLetters()
    feed = feed_for(backend, dead)
    for cid in (key, named):
        await feed.on_state(state_record(consent_state(cid, 1, given=[EMAIL])))
    wrong = record(STATE_TOPIC, key, consent_state(named, 2, given=[EMAIL]).to_bytes())
    assert await feed.on_state(wrong) is Outcome.FAILED_CLOSED
    assert (await backend.view(key)).allowed == frozenset()
    assert (await backend.view(named)).allowed == frozenset()


async def test_a_record_without_a_customer_is_dead_lettered_with_an_alert(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    dead = DeadLetters()
    with caplog.at_level(logging.CRITICAL):
        outcome = await feed_for(backend, dead).on_state(record(STATE_TOPIC, None, b"{}"))
    assert outcome is Outcome.FAILED_CLOSED
    assert [reason for _, reason, _ in dead.records] == ["key_invalid"]
    assert any(r.getMessage() == ALERT for r in caplog.records)


async def test_other_directive_types_are_left_alone(backend: Backend) -> None:
    cid = customer_id()
    dead = DeadLetters()
    value = json.dumps({"type": "ErasureRequested", "customer_id": cid}).encode()
    assert await feed_for(backend, dead).on_directive(record(DIRECTIVES_TOPIC, cid, value)) is (
        Outcome.IGNORED
    )
    assert dead.records == []


class FlakyStore(MemoryViewStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def lock(self, customer_id: str) -> ViewRow:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("transient")
        return await super().lock(customer_id)


async def test_a_transient_failure_is_retried_before_failing_closed() -> None:
    cid = customer_id()
    backend = MemoryBackend()
    backend.store = FlakyStore(failures=1)
    dead = DeadLetters()
    state = consent_state(cid, 1, given=[EMAIL])
    assert await feed_for(backend, dead).on_state(state_record(state)) is Outcome.APPLIED
    assert dead.records == []


async def test_an_outage_is_never_dead_lettered() -> None:
    class Down(MemoryViewStore):
        async def lock(self, customer_id: str) -> ViewRow:
            raise ConnectionRefusedError(customer_id)

    backend = MemoryBackend()
    backend.store = Down()
    dead = DeadLetters()
    with pytest.raises(ConnectionRefusedError):
        await feed_for(backend, dead).on_state(state_record(consent_state(customer_id(), 1)))
    assert dead.records == []


# --- The audience and the per-send check (PostgreSQL) ----------------------------------------


async def apply_states(pool: Pool, *states: ConsentState) -> None:
    for s in states:
        async with pool.acquire() as conn, conn.transaction():
            await apply_state(MarketingStore(conn), PROCESSOR, s.customer_id, s)


@pytest.mark.real
async def test_the_audience_is_who_consented_and_is_not_suppressed(marketing_pool: Pool) -> None:
    pool = marketing_pool
    a, b, c, d, e = (customer_id(t) for t in "ABCDE")
    await apply_states(
        pool,
        consent_state(a, 1, given=[EMAIL]),
        consent_state(b, 2, withdrawn=[EMAIL]),
        consent_state(d, 1, given=[EMAIL]),
        consent_state(e, 1, given=[EMAIL], objections=[ObjectionKind.DIRECT_MARKETING]),
    )
    async with pool.acquire() as conn, conn.transaction():
        await apply_directive(MarketingStore(conn), PROCESSOR, directive(d, 2, [EMAIL]))
    async with pool.acquire() as conn:
        members = await audience(conn, "spring-2026.whitening", EMAIL)
        assert members == [a]  # b withdrew, c is unknown, d was stopped, e objected
        assert await may_contact(conn, a, EMAIL)
        for cid in (b, c, d, e):
            assert not await may_contact(conn, cid, EMAIL)
        assert not await may_contact(conn, a, SMS)  # never consented to SMS
        assert await audience(conn, "spring-2026.whitening", SMS) == []
        export = await conn.fetchrow(
            "SELECT campaign, purpose, size, actor FROM audience_exports WHERE size = 1"
        )
        assert export is not None
        assert dict(export) == {
            "campaign": "spring-2026.whitening",
            "purpose": "marketing_email",
            "size": 1,
            "actor": "marketing",
        }
        tokens = await conn.fetch("SELECT customer_id, consent_version FROM audience_members")
        assert [tuple(t) for t in tokens] == [(a, 1)]
    exported = [x for x in audits(await outbox_events(pool), a) if x.action == "export"]
    assert [(x.resource, x.purpose, x.legal_basis) for x in exported] == [
        ("marketing.audience", "marketing_email", "consent")
    ]


@pytest.mark.real
async def test_a_stop_committed_while_the_audience_is_read_wins(marketing_pool: Pool) -> None:
    pool = marketing_pool
    a, b = customer_id("A"), customer_id("B")
    await apply_states(pool, consent_state(a, 1, given=[EMAIL]), consent_state(b, 1, given=[EMAIL]))
    stopper = await pool.acquire()
    try:
        tx = stopper.transaction()
        await tx.start()
        await apply_directive(MarketingStore(stopper), PROCESSOR, directive(a, 2, [EMAIL]))

        async def export() -> list[str]:
            async with pool.acquire() as conn:
                return await audience(conn, "c1", EMAIL)

        task = asyncio.create_task(export())
        await asyncio.sleep(0.3)
        assert not task.done()  # the export waits for the stop's row lock
        await tx.commit()
        assert await asyncio.wait_for(task, 10) == [b]
    finally:
        await pool.release(stopper)


@pytest.mark.real
async def test_the_final_check_sees_a_stop_the_moment_it_commits(marketing_pool: Pool) -> None:
    pool = marketing_pool
    a = customer_id("A")
    await apply_states(pool, consent_state(a, 1, given=[SMS]))
    async with pool.acquire() as conn:
        assert await may_contact(conn, a, SMS)
        async with conn.transaction():
            await apply_directive(MarketingStore(conn), PROCESSOR, directive(a, 2, [SMS]))
        assert not await may_contact(conn, a, SMS)


async def test_audience_refuses_a_non_marketing_purpose() -> None:
    with pytest.raises(AudienceError):
        await audience(None, "c1", Purpose.ANALYTICS)  # type: ignore[arg-type]
