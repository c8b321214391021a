"""Analytics: pseudonymised contributions that a withdrawal or objection deletes and excludes.

Pure rules (pseudonyms, contributions, settings) run without a network; the store runs against
PostgreSQL in an isolated schema owned by the analytics role (marked `real`): ingestion under
the consent view, deletion and exclusion on a stop, versions deciding, fail closed, the
aggregates, and no customer number anywhere in the schema.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pytest

from contracts.consent import ObjectionKind, Purpose, StopReason
from contracts.records import CustomerRecord
from services.analytics.app import MIGRATIONS
from services.analytics.domain import MIN_CELL, contribution_of, month_of, pseudonym
from services.analytics.handlers import (
    PROCESSOR,
    Ingested,
    apply_customer_record,
    decode_customer_record,
)
from services.analytics.repository import AnalyticsStore, aggregates
from services.analytics.settings import AnalyticsSettings
from services.common.kafka import PermanentError, RetryPolicy
from services.consentview.feed import ConsentFeed, Outcome, apply_directive, apply_state
from tests.support.infra import Infra
from tests.unit.test_marketing import (
    DeadLetters,
    acks,
    audits,
    consent_state,
    customer_id,
    directive,
    isolated_schema,
    no_sleep,
    outbox_events,
    record,
    state_record,
)

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from services.common.db import Pool
    from services.consentview.feed import ViewStore

ANALYTICS = Purpose.ANALYTICS
KEY = secrets.token_bytes(32)


def entry(
    cid: str,
    version: int,
    *,
    at: datetime | None = None,
    registered: bool = True,
    sources: dict[str, str] | None = None,
    data_classes: tuple[str, ...] = ("customer_register",),
    facts: dict[str, Any] | None = None,
) -> CustomerRecord:
    return CustomerRecord.model_validate(
        {
            "customer_id": cid,
            "version": version,
            "registered": registered,
            "data_classes": data_classes,
            "sources": sources if sources is not None else {"name": "customer"},
            "pii": {"name": "Y2lwaGVydGV4dA=="},
            "occurred_at": at or datetime(2026, 3, 14, 9, 30, tzinfo=UTC),
            "analytics": facts,
        }
    )


# --- Pure ------------------------------------------------------------------------------------


def test_the_pseudonym_is_a_keyed_hash_of_the_customer_number() -> None:
    cid = customer_id()
    p = pseudonym(KEY, cid)
    assert len(p) == 32
    assert p == pseudonym(KEY, cid)
    assert p != pseudonym(secrets.token_bytes(32), cid)
    assert p != pseudonym(KEY, customer_id())
    assert cid.encode() not in p


def test_a_contribution_keeps_only_clear_metadata() -> None:
    e = entry(
        "TC-1",
        7,
        at=datetime(2026, 2, 28, 23, 59, tzinfo=UTC),
        sources={"name": "customer", "address": "population_register", "phones": "customer"},
        data_classes=("patient_record", "customer_register"),
    )
    c = contribution_of(e)
    assert c.version == 7
    assert c.month == date(2026, 2, 1)
    assert c.registered
    assert c.sources == ("customer", "population_register")
    assert c.data_classes == ("customer_register", "patient_record")
    assert not hasattr(c, "pii")
    assert not hasattr(c, "customer_id")
    assert (c.age_band, c.language, c.channel, c.visit_months) == (None, None, None, ())
    assert month_of(date(2026, 12, 31)) == date(2026, 12, 1)


def test_a_contribution_keeps_the_analytics_facts() -> None:
    facts = {
        "age_band": "25-34",
        "preferred_language": "sv",
        "acquisition_channel": "campaign",
        "visit_months": ["2026-02", "2025-12", "2026-02"],
    }
    c = contribution_of(entry("TC-2", 3, facts=facts))
    assert (c.age_band, c.language, c.channel) == ("25-34", "sv", "campaign")
    assert c.visit_months == (date(2025, 12, 1), date(2026, 2, 1), date(2026, 2, 1))
    # An entry from before the facts existed still decodes (the field is additive).
    wire = json.loads(entry("TC-2", 3, facts=facts).to_bytes())
    del wire["analytics"]
    assert CustomerRecord.model_validate(wire).analytics is None


def test_decode_customer_record() -> None:
    cid = customer_id()
    e = entry(cid, 1)
    assert decode_customer_record(record("records.customer.v1", cid, e.to_bytes())) == (cid, e)
    assert decode_customer_record(record("records.customer.v1", cid, None)) == (cid, None)
    for key, value, reason in (
        (None, e.to_bytes(), "key_invalid"),
        (cid, b"nope", "not_json"),
        (cid, b'{"type": "ConsentState"}', "unexpected_type"),
        (cid, b'{"type": "CustomerRecord"}', "invalid_record"),
        ("TX-other", e.to_bytes(), "key_mismatch"),
    ):
        with pytest.raises(PermanentError, match=reason):
            decode_customer_record(record("records.customer.v1", key, value))


def test_settings_need_a_real_pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYTICS_KAFKA_USERNAME", "analytics")
    monkeypatch.setenv("ANALYTICS_KAFKA_PASSWORD", "x")
    monkeypatch.setenv("ANALYTICS_PG_DSN", "postgresql://x@localhost/x")
    key = base64.b64encode(KEY).decode()
    monkeypatch.setenv("ANALYTICS_PSEUDONYM_KEY", key)
    settings = AnalyticsSettings()
    assert settings.pseudonym_key_bytes() == KEY
    assert key not in repr(settings)
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        monkeypatch.setenv("ANALYTICS_PSEUDONYM_KEY", bad)
        with pytest.raises(ValueError, match="pseudonym_key") as error:
            AnalyticsSettings().pseudonym_key_bytes()
        assert bad not in str(error.value)
    monkeypatch.delenv("ANALYTICS_PSEUDONYM_KEY")
    with pytest.raises(ValueError, match="pseudonym_key"):
        AnalyticsSettings()


# --- The store (PostgreSQL) ------------------------------------------------------------------


@pytest.fixture
async def pool(infra: Infra) -> AsyncIterator[Pool]:
    async with isolated_schema(infra, "analytics", MIGRATIONS) as pool:
        yield pool


class Analytics:
    """The analytics use cases on the isolated schema."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def unit(self) -> AbstractAsyncContextManager[ViewStore]:
        @asynccontextmanager
        async def opened() -> AsyncIterator[ViewStore]:
            async with self.pool.acquire() as conn, conn.transaction():
                yield AnalyticsStore(conn, KEY)

        return opened()

    async def state(
        self, cid: str, version: int, *, objections: Sequence[ObjectionKind] = ()
    ) -> Outcome:
        s = consent_state(cid, version, objections=objections)
        async with self.pool.acquire() as conn, conn.transaction():
            return await apply_state(AnalyticsStore(conn, KEY), PROCESSOR, cid, s)

    async def stop(self, cid: str, version: int, reason: StopReason = "objection") -> Outcome:
        d = directive(cid, version, [ANALYTICS], reason=reason)
        async with self.pool.acquire() as conn, conn.transaction():
            return await apply_directive(AnalyticsStore(conn, KEY), PROCESSOR, d)

    async def ingest(self, cid: str, e: CustomerRecord | None) -> Ingested:
        async with self.pool.acquire() as conn, conn.transaction():
            return await apply_customer_record(AnalyticsStore(conn, KEY), cid, e)

    async def held(self, cid: str) -> int:
        async with self.pool.acquire() as conn:
            return await AnalyticsStore(conn, KEY).contributions(cid)

    async def excluded(self, cid: str) -> bool:
        async with self.pool.acquire() as conn:
            return await AnalyticsStore(conn, KEY).excluded(cid)


@pytest.fixture
def analytics(pool: Pool) -> Analytics:
    return Analytics(pool)


@pytest.mark.real
async def test_a_withdrawal_deletes_contributions_and_excludes(analytics: Analytics) -> None:
    cid = customer_id()
    await analytics.state(cid, 1)  # analytics: legitimate interest, nothing refused
    assert await analytics.ingest(cid, entry(cid, 1)) is Ingested.ADDED
    assert await analytics.ingest(cid, entry(cid, 3)) is Ingested.ADDED
    assert await analytics.ingest(cid, entry(cid, 2)) is Ingested.STALE
    assert await analytics.held(cid) == 2
    assert await analytics.stop(cid, 2) is Outcome.APPLIED
    assert await analytics.held(cid) == 0
    assert await analytics.excluded(cid)
    # Later register entries are not taken, and a stale state does not lift the exclusion.
    assert await analytics.ingest(cid, entry(cid, 4)) is Ingested.EXCLUDED
    assert await analytics.state(cid, 1) is Outcome.STALE
    assert await analytics.ingest(cid, entry(cid, 5)) is Ingested.EXCLUDED
    assert await analytics.held(cid) == 0
    published = await outbox_events(analytics.pool)
    [ack] = acks(published, cid)
    assert (ack.service, ack.consent_version) == ("analytics", 2)
    assert [a.resource for a in audits(published, cid)] == ["analytics.contribution"]
    # The customer lifts the objection: a newer state allows analytics again.
    await analytics.state(cid, 3)
    assert not await analytics.excluded(cid)
    assert await analytics.ingest(cid, entry(cid, 6)) is Ingested.ADDED


@pytest.mark.real
async def test_a_state_that_refuses_analytics_deletes_without_waiting(analytics: Analytics) -> None:
    cid = customer_id()
    await analytics.ingest(cid, entry(cid, 1))  # before any consent is known: held, not counted
    assert await analytics.held(cid) == 1
    await analytics.state(cid, 1, objections=[ObjectionKind.ANALYTICS])
    assert await analytics.held(cid) == 0
    assert await analytics.ingest(cid, entry(cid, 2)) is Ingested.EXCLUDED
    # Its directive comes after the state: superseded, answered, nothing lifted.
    assert await analytics.stop(cid, 1) is Outcome.SUPERSEDED
    assert len(acks(await outbox_events(analytics.pool), cid)) == 1
    assert await analytics.held(cid) == 0


@pytest.mark.real
async def test_the_register_forgetting_a_customer_deletes_their_contributions(
    analytics: Analytics,
) -> None:
    cid = customer_id()
    await analytics.state(cid, 1)
    await analytics.ingest(cid, entry(cid, 1))
    assert await analytics.ingest(cid, None) is Ingested.FORGOTTEN
    assert await analytics.held(cid) == 0


@pytest.mark.real
async def test_failing_closed_excludes_without_destroying(analytics: Analytics) -> None:
    cid = customer_id()
    await analytics.state(cid, 1)
    await analytics.ingest(cid, entry(cid, 1))
    dead = DeadLetters()
    feed = ConsentFeed(
        PROCESSOR, analytics.unit, dead, RetryPolicy(max_retries=0, backoff_ms=0), no_sleep
    )
    bad = record("consent.state.v1", cid, b"{broken")
    assert await feed.on_state(bad) is Outcome.FAILED_CLOSED
    assert await analytics.excluded(cid)
    assert await analytics.held(cid) == 1  # kept, but not counted
    async with analytics.pool.acquire() as conn:
        assert (await aggregates(conn, min_cell=1)).customers == 0
    await feed.on_state(state_record(consent_state(cid, 2)))
    assert not await analytics.excluded(cid)
    async with analytics.pool.acquire() as conn:
        assert (await aggregates(conn, min_cell=1)).customers == 1


def facts(
    band: str | None, language: str | None, channel: str | None, *months: str
) -> dict[str, Any]:
    return {
        "age_band": band,
        "preferred_language": language,
        "acquisition_channel": channel,
        "visit_months": list(months),
    }


@pytest.mark.real
async def test_aggregates_count_only_customers_analytics_may_count(analytics: Analytics) -> None:
    march, april = datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 4, 9, tzinfo=UTC)
    counted = [customer_id(f"A{i}") for i in range(3)]
    objected, unknown, stopped = customer_id("O"), customer_id("U"), customer_id("S")
    first = {
        counted[0]: facts("25-34", "fi", "web", "2026-03"),
        counted[1]: facts("25-34", "sv", "web", "2026-03", "2026-03"),
        counted[2]: facts("75+", "fi", None),
    }
    for cid in [*counted, objected, stopped]:
        await analytics.state(cid, 1)
    for cid in [*counted, objected, unknown, stopped]:
        f = first.get(cid, facts("0-14", "en", "campaign", "2026-03"))
        await analytics.ingest(cid, entry(cid, 1, at=march, sources={"name": "customer"}, facts=f))
    await analytics.ingest(
        counted[0],
        entry(
            counted[0],
            4,
            at=april,
            sources={"name": "customer", "address": "population_register"},
            data_classes=("customer_register", "patient_record"),
            facts=facts("35-44", "en", "web", "2026-03", "2026-04"),  # the latest counts
        ),
    )
    await analytics.state(objected, 2, objections=[ObjectionKind.ANALYTICS])
    await analytics.stop(stopped, 2, reason="withdrawal")
    async with analytics.pool.acquire() as conn:
        stats = await aggregates(conn, min_cell=1)
        assert stats.customers == 3
        assert stats.registrations_per_month == {date(2026, 3, 1): 3}
        assert stats.changes_per_month == {date(2026, 3, 1): 3, date(2026, 4, 1): 3}
        assert stats.customers_by_source == {"customer": 3, "population_register": 1}
        assert stats.customers_by_data_class == {"customer_register": 3, "patient_record": 1}
        assert stats.visits_per_month == {date(2026, 3, 1): 3, date(2026, 4, 1): 1}
        assert stats.customers_by_channel == {"web": 2}
        assert stats.customers_by_age_band == {"35-44": 1, "25-34": 1, "75+": 1}
        assert list(stats.customers_by_age_band) == ["25-34", "35-44", "75+"]
        assert stats.customers_by_language == {"en": 1, "fi": 1, "sv": 1}
        two = await aggregates(conn, min_cell=2)
        assert two.visits_per_month == {date(2026, 3, 1): 3}  # April: one customer's visit
        assert two.customers_by_channel == {"web": 2}
        assert two.customers_by_age_band == {}
        assert two.customers_by_language == {}
        small = await aggregates(conn)
        assert small.min_cell == MIN_CELL
        assert small.customers == 3
        assert small.registrations_per_month == {}  # 3 < 5: a small cell identifies
        assert small.customers_by_source == {}
        assert small.visits_per_month == {}
        assert small.customers_by_channel == {}


@pytest.mark.real
async def test_no_customer_number_is_stored(analytics: Analytics) -> None:
    cid = customer_id()
    await analytics.state(cid, 1)
    await analytics.ingest(cid, entry(cid, 1))
    await analytics.stop(cid, 2)
    await analytics.state(cid, 3)
    await analytics.ingest(cid, entry(cid, 2))
    pool = analytics.pool
    tables = await pool.fetch(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name NOT IN ('outbox', 'inbox')"
    )
    assert {t["table_name"] for t in tables} >= {"consent_view", "exclusions", "contributions"}
    for t in tables:
        rows = await pool.fetch(f"SELECT to_jsonb(x)::text AS row FROM {t['table_name']} x")
        for r in rows:
            assert cid not in r["row"]
    [view] = await pool.fetch("SELECT subject, state FROM consent_view")
    assert bytes(view["subject"]) == pseudonym(KEY, cid)
    assert "customer_id" not in json.dumps(view["state"])
