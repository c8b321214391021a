"""The register's storage: one set of cases, run against the fake and against PostgreSQL.

Each case applies commands through the real use case (`handlers.apply_commands`) and reads back
through the staff read API (`read_customer`, `read_history`) and the outbox. The PostgreSQL
variant (real tier) runs in a schema of its own, owned by the records role, with the records
migrations applied, one transaction per batch as the service does.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import pytest

from contracts.audit import AuditEvent
from contracts.records import CustomerRecord
from services.common import crypto
from services.common.db import open_pool
from services.common.kafka import PermanentError
from services.common.migrate import migrate
from services.records.app import MIGRATIONS
from services.records.domain import CustomerView, ItemVersion
from services.records.handlers import BatchResult, apply_commands
from services.records.repository import (
    FakeRegister,
    PostgresRegister,
    load_customer,
    load_history,
    read_customer,
    read_history,
)
from tests.unit.test_records_domain import (
    CANARIES,
    CANARY_EMAIL,
    CANARY_HETU,
    at,
    contact_change,
    customer_id,
    demographics_change,
    feedback,
    registration,
    visit,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from services.common.db import Pool
    from services.records.domain import RecordsCommand
    from tests.support.infra import Infra


class Backend(Protocol):
    async def apply(self, *commands: RecordsCommand) -> BatchResult: ...
    async def view(self, cid: str) -> CustomerView | None: ...
    async def history(self, cid: str, kind: str) -> list[ItemVersion]: ...
    async def published(self) -> list[tuple[str, bytes]]: ...
    async def key(self, cid: str) -> crypto.DataKey | None: ...
    async def shred(self, cid: str) -> None: ...


class FakeBackend:
    def __init__(self) -> None:
        self.repo = FakeRegister()

    async def apply(self, *commands: RecordsCommand) -> BatchResult:
        return await apply_commands(self.repo, commands)

    async def view(self, cid: str) -> CustomerView | None:
        return await read_customer(self.repo, cid)

    async def history(self, cid: str, kind: str) -> list[ItemVersion]:
        return await read_history(self.repo, cid, kind)

    async def published(self) -> list[tuple[str, bytes]]:
        return [(topic, event.to_bytes()) for topic, event in self.repo.published]

    async def key(self, cid: str) -> crypto.DataKey | None:
        return await self.repo.read_key(cid)

    async def shred(self, cid: str) -> None:
        self.repo.shred(cid)


class PostgresBackend:
    def __init__(self, pool: Pool, keys: crypto.KeyStore) -> None:
        self.pool = pool
        self.keys = keys

    async def apply(self, *commands: RecordsCommand) -> BatchResult:
        async with self.pool.acquire() as conn, conn.transaction():
            return await apply_commands(PostgresRegister(conn, self.keys), commands)

    async def view(self, cid: str) -> CustomerView | None:
        async with self.pool.acquire() as conn:
            return await load_customer(conn, self.keys, cid)

    async def history(self, cid: str, kind: str) -> list[ItemVersion]:
        async with self.pool.acquire() as conn:
            return await load_history(conn, self.keys, cid, kind)

    async def published(self) -> list[tuple[str, bytes]]:
        rows = await self.pool.fetch("SELECT topic, payload FROM outbox ORDER BY position")
        return [(r["topic"], bytes(r["payload"])) for r in rows]

    async def key(self, cid: str) -> crypto.DataKey | None:
        return await self.keys.get(self.pool, cid)

    async def shred(self, cid: str) -> None:
        await self.keys.shred(self.pool, cid)


async def migrate_records(pool: Pool, schema: str) -> None:
    """The records service's migrations, as its runtime applies them."""
    await migrate(pool, schema=schema, directory=MIGRATIONS)
    await migrate(
        pool,
        schema=schema,
        directory=crypto.MIGRATIONS_DIR,
        include_common=False,
        prefix="crypto/",
    )


@pytest.fixture
async def postgres_backend(infra: Infra) -> AsyncIterator[PostgresBackend]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(infra.pg_admin_dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {schema} AUTHORIZATION svc_records")
    finally:
        await admin.close()
    pool = await open_pool(infra.pg_dsn("records"), schema=schema, max_size=4)
    try:
        await migrate_records(pool, schema)
        kek = base64.b64decode(infra.env["RECORDS_KEK"])
        yield PostgresBackend(pool, crypto.KeyStore(pool, kek))
    finally:
        await pool.close()
        admin = await asyncpg.connect(infra.pg_admin_dsn)
        try:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await admin.close()


@pytest.fixture(params=["fake", pytest.param("postgres", marks=pytest.mark.real)])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "fake":
        return FakeBackend()
    result: Backend = request.getfixturevalue("postgres_backend")
    return result


def snapshots(published: list[tuple[str, bytes]], cid: str) -> list[CustomerRecord]:
    out = [
        CustomerRecord.model_validate_json(payload)
        for topic, payload in published
        if topic == "records.customer.v1"
    ]
    return [r for r in out if r.customer_id == cid]


def audits(published: list[tuple[str, bytes]], cid: str) -> list[AuditEvent]:
    out = [
        AuditEvent.model_validate_json(payload)
        for topic, payload in published
        if topic == "audit.events.v1"
    ]
    return [a for a in out if a.customer_id == cid]


def opened(record: CustomerRecord, key: crypto.DataKey) -> dict[str, Any]:
    aad = crypto.associated_data(record.customer_id, "CustomerRecord", 1)
    return {k: json.loads(v) for k, v in crypto.decrypt_fields(key, record.pii, aad).items()}


# --- the shared cases ------------------------------------------------------------------------


async def test_registration_round_trips_through_the_read_api(backend: Backend) -> None:
    cid = customer_id()
    command = registration(cid)
    result = await backend.apply(command)
    assert result == BatchResult(applied=1, duplicates=0, customers=1)

    view = await backend.view(cid)
    assert view is not None
    assert view.version == 1
    assert view.registered_at == command.occurred_at
    assert view.value("emails") == [CANARY_EMAIL]
    assert view.value("hetu") == CANARY_HETU
    assert view.items["emails"].source == "customer"
    assert view.items["billing_reference"].data_class == "billing"
    assert view.data_classes == ("billing", "customer_register")
    assert set(view.history.values()) == {1}
    assert await backend.view(customer_id()) is None

    published = await backend.published()
    (record,) = snapshots(published, cid)
    key = await backend.key(cid)
    assert key is not None
    assert opened(record, key)["emails"] == [CANARY_EMAIL]
    (audit,) = audits(published, cid)
    assert (audit.action, audit.resource, audit.actor, audit.producer) == (
        "create",
        "records.customer",
        "reception-desk",
        "records",
    )
    assert audit.correlation_id == command.correlation_id
    for _, payload in published:
        for canary in CANARIES:
            assert canary.encode() not in payload


async def test_changes_keep_history_and_the_last_one_wins(backend: Backend) -> None:
    cid = customer_id()
    await backend.apply(registration(cid))
    await backend.apply(
        contact_change(cid, at(1), emails=["one@example.com"]),
        contact_change(cid, at(2), emails=["two@example.com"]),
    )
    await backend.apply(contact_change(cid, at(3), emails=["three@example.com"]))

    view = await backend.view(cid)
    assert view is not None
    assert view.version == 4
    assert view.value("emails") == ["three@example.com"]
    assert view.history["emails"] == 4
    history = await backend.history(cid, "emails")
    assert [(v.seq, v.value) for v in history] == [
        (1, [CANARY_EMAIL]),
        (2, ["one@example.com"]),
        (3, ["two@example.com"]),
        (4, ["three@example.com"]),
    ]
    assert [v.valid_to for v in history] == [at(1), at(2), at(3), None]
    assert history[0].closed_by == history[1].event_id
    records = snapshots(await backend.published(), cid)
    assert [r.version for r in records] == [1, 3, 4]  # one per customer per batch


async def test_a_redelivered_event_is_a_no_op(backend: Backend) -> None:
    cid = customer_id()
    command = registration(cid)
    change = contact_change(cid, at(1), emails=["new@example.com"])
    await backend.apply(command, change)
    before = await backend.published()

    again = await backend.apply(change, command, change)
    assert again == BatchResult(applied=0, duplicates=3, customers=0)
    view = await backend.view(cid)
    assert view is not None
    assert view.version == 2
    assert view.value("emails") == ["new@example.com"]
    assert await backend.published() == before

    dup = contact_change(cid, at(2), emails=["x@example.com"])
    result = await backend.apply(dup, dup)
    assert result == BatchResult(applied=1, duplicates=1, customers=1)


async def test_a_change_before_registration_is_applied(backend: Backend) -> None:
    cid = customer_id()
    await backend.apply(contact_change(cid, at(1), phones=["+358501112222"]))
    view = await backend.view(cid)
    assert view is not None
    assert (view.version, view.registered_at) == (1, None)
    assert view.value("phones") == ["+358501112222"]

    await backend.apply(registration(cid, at(2)))
    view = await backend.view(cid)
    assert view is not None
    assert view.registered_at == at(2)
    assert view.value("phones") == ["+358401234567"]
    assert view.history["phones"] == 2


async def test_unchanged_values_add_no_version(backend: Backend) -> None:
    cid = customer_id()
    await backend.apply(registration(cid))
    await backend.apply(demographics_change(cid, at(1)))
    await backend.apply(demographics_change(cid, at(2), gender="undisclosed"))
    view = await backend.view(cid)
    assert view is not None
    assert view.version == 3
    assert view.history["name"] == 1
    assert view.history["gender"] == 2
    assert view.value("gender") == "undisclosed"


async def test_visits_and_feedback_are_kept_encrypted_with_their_class(backend: Backend) -> None:
    cid = customer_id()
    await backend.apply(registration(cid), visit(cid, at(1)))
    await backend.apply(feedback(cid, at(2)), visit(cid, at(3)))
    view = await backend.view(cid)
    assert view is not None
    assert len(view.visits) == 2
    assert view.visits[0].treating_staff[0]["staff_id"] == "dr.virtanen"
    assert view.visits[0].data_class == "patient_record"
    assert view.feedback[0].kind == "wish"
    assert view.feedback[0].text.startswith("Canary feedback")
    assert view.data_classes == ("billing", "customer_register", "patient_record")
    (record,) = snapshots(await backend.published(), cid)[-1:]
    assert record.data_classes == ("billing", "customer_register", "patient_record")


async def test_snapshots_count_stored_visits_in_their_analytics_facts(backend: Backend) -> None:
    cid, other = customer_id(), customer_id()
    await backend.apply(registration(cid), visit(cid, at(1), visit_date="2025-11-03"))
    await backend.apply(registration(other), visit(other, at(1), visit_date="2024-02-02"))
    await backend.apply(feedback(cid, at(2)), visit(cid, at(3), visit_date="2026-01-05"))
    record = snapshots(await backend.published(), cid)[-1]
    assert record.analytics is not None
    assert record.analytics.visit_months == ("2025-11", "2026-01")
    assert (record.analytics.preferred_language, record.analytics.acquisition_channel) == (
        "fi",
        "web",
    )
    assert record.analytics.age_band is not None


async def test_an_erased_customer_reads_shredded_and_takes_no_commands(backend: Backend) -> None:
    cid = customer_id()
    await backend.apply(registration(cid))
    await backend.shred(cid)
    view = await backend.view(cid)
    assert view is not None
    assert view.shredded
    assert view.value("emails") == crypto.SHREDDED
    with pytest.raises(PermanentError, match="customer_erased"):
        await backend.apply(contact_change(cid, at(1), emails=["back@example.com"]))
    history = await backend.history(cid, "emails")
    assert [v.value for v in history] == [crypto.SHREDDED]


async def test_many_customers_in_one_batch(backend: Backend) -> None:
    cids = [customer_id("M") for _ in range(50)]
    commands: list[RecordsCommand] = [registration(c) for c in cids]
    commands += [contact_change(c, at(1), emails=[f"{c.lower()}@example.com"]) for c in cids[::2]]
    result = await backend.apply(*commands)
    assert result == BatchResult(applied=75, duplicates=0, customers=50)
    for i, cid in enumerate(cids):
        view = await backend.view(cid)
        assert view is not None
        assert view.version == (2 if i % 2 == 0 else 1)
        expected = [f"{cid.lower()}@example.com"] if i % 2 == 0 else [CANARY_EMAIL]
        assert view.value("emails") == expected


# --- PostgreSQL only -------------------------------------------------------------------------


@pytest.mark.real
async def test_postgres_stores_no_plaintext_and_no_age(postgres_backend: PostgresBackend) -> None:
    cid = customer_id()
    await postgres_backend.apply(registration(cid), feedback(cid), visit(cid))
    pool = postgres_backend.pool
    dump = ""
    for table in ("customers", "customer_items", "visits", "feedback", "outbox"):
        rows = await pool.fetch(f"SELECT * FROM {table}")
        dump += repr([dict(r) for r in rows])
    for canary in CANARIES:
        assert canary not in dump
    columns = await pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
    )
    assert not [c for c in columns if c["column_name"] == "age"]


@pytest.mark.real
async def test_postgres_batch_is_all_or_nothing(postgres_backend: PostgresBackend) -> None:
    cid = customer_id()
    await postgres_backend.apply(registration(cid))
    await postgres_backend.shred(cid)
    before = await postgres_backend.published()
    other = customer_id()
    with pytest.raises(PermanentError):
        await postgres_backend.apply(registration(other), contact_change(cid, at(1), phones=[]))
    assert await postgres_backend.view(other) is None
    assert await postgres_backend.published() == before
    await postgres_backend.apply(registration(other))
    assert await postgres_backend.view(other) is not None
