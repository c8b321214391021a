"""Helpers for the consent fan-out tests and benchmark, on the real stack.

- `start_fanout` runs services as real processes (`tests.support.system`), each with its own
  consumer group (`<service>.<run>`) positioned at the end of every topic it consumes, so the
  run sees only what it publishes.
- `Clinic` publishes sealed consent commands (and registrations) to intake as the clinic app,
  and keeps the exact bytes it sent, so a test can deliver a submission again (same bytes: a
  duplicate) or replay an old one under a new event id. The `capture`/`withdraw`/`objection`/
  `lift` builders make the documents; `renewed` gives a document a new event id.
- `ConsentModel` is what the versions say: an independent, deliberately plain rendering of the
  consent rules (every command applied once bumps the version; a consent expressed before the
  purpose's last change never overrides it; an objection suppresses until an explicit lift
  expressed after it; an unknown customer is allowed nothing).
- `Views` reads what each service holds (consent's state and directives, marketing's view and
  `may_contact`, analytics' and photos' views) through each service's own role.
- `Tap` reads one topic from its end without a consumer group, keeping this run's keys.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts.client import IntakeClient
from contracts.consent import (
    CATALOGUE,
    OBJECTION_ALIASES,
    SUPPRESSES,
    ConsentStatus,
    ObjectionKind,
    Purpose,
)
from contracts.envelope import new_event_id
from contracts.topics import all_topics
from services.analytics.domain import pseudonym
from services.analytics.repository import COUNT_CONTRIBUTIONS_SQL
from services.common.db import open_pool
from services.consent.repository import ConsentView, DirectiveStatus, directive_status, load_consent
from services.consentview.store import parse_purposes
from services.marketing.repository import load_view, may_contact
from services.photos.repository import load_photo_consent
from tests.support.kafka import start_group_at_end
from tests.support.system import System

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from pathlib import Path
    from uuid import UUID

    from aiokafka import ConsumerRecord

    from services.common.db import Pool
    from services.consentview.view import ViewRow
    from tests.support.infra import Infra

SUBMISSIONS: Final = "intake.submissions.v1"
FANOUT: Final = ("intake", "consent", "marketing", "analytics", "photos")
"""The services of the fan-out: the front door, the single writer and the three processors."""
PROCESSORS: Final = ("marketing", "analytics", "photos")
"""The services that answer stop directives."""
GROUP_TOPICS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "intake": (SUBMISSIONS,),
        "records": ("records.commands.v1",),
        "consent": ("consent.commands.v1", "privacy.acks.v1"),
        "marketing": ("consent.state.v1", "privacy.directives.v1"),
        "analytics": ("consent.state.v1", "privacy.directives.v1", "records.customer.v1"),
        "photos": ("consent.state.v1", "privacy.directives.v1"),
    }
)
"""Every topic each service consumes (its group starts at their ends)."""
MARKETING_CHANNELS: Final = (
    Purpose.MARKETING_EMAIL,
    Purpose.MARKETING_SMS,
    Purpose.MARKETING_POST,
    Purpose.MARKETING_PHONE,
    Purpose.RESEARCH,
)
SERVICE_PURPOSES: Final[Mapping[str, frozenset[Purpose]]] = MappingProxyType(
    {
        "marketing": frozenset(MARKETING_CHANNELS),
        "analytics": frozenset({Purpose.ANALYTICS, Purpose.WEB_ANALYTICS}),
        "photos": frozenset({Purpose.PHOTO_STORAGE, Purpose.PHOTO_MARKETING_USE}),
    }
)
"""The purposes each processor keeps in its view."""

NOTICE_TEXT: Final = "Saan sähköpostitse tietoa klinikan palveluista ja tarjouksista."
NOTICE_SHA256: Final = hashlib.sha256(NOTICE_TEXT.encode()).hexdigest()
CONSENT_VERSION_SQL: Final = "SELECT version FROM consent_current WHERE customer_id = $1"
CONSENT_VERSIONS_SQL: Final = """
SELECT customer_id, version FROM consent_current WHERE customer_id = ANY($1::text[])
"""
MARKETING_VERSIONS_SQL: Final = """
SELECT customer_id, version FROM consent_view WHERE customer_id = ANY($1::text[])
"""
ANALYTICS_VIEW_SQL: Final = "SELECT version, allowed FROM consent_view WHERE subject = $1"
PHOTOS_VERSIONS_SQL: Final = """
SELECT customer_id, version FROM photo_consent WHERE customer_id = ANY($1::text[])
"""
ANALYTICS_VERSIONS_SQL: Final = """
SELECT subject, version FROM consent_view WHERE subject = ANY($1::bytea[])
"""
DIRECTIVES_SQL: Final = """
SELECT directive_id, customer_id, consent_version, reason, expected_services, committed_at,
       fully_applied_at, latency_ms
FROM directives WHERE customer_id LIKE $1 ORDER BY committed_at
"""


# --- Running the services ---------------------------------------------------------------------


async def start_fanout(
    infra: Infra,
    run: str,
    log_dir: Path,
    services: Iterable[str] = FANOUT,
    **overrides: str,
) -> System:
    """Start `services` as processes with group `<service>.<run>` at the end of their topics.

    `overrides` are extra environment variables for every service. Returns once every service
    is ready; on failure, whatever started is stopped.
    """
    system = System(infra, run, log_dir)
    for name in services:
        await start_group_at_end(infra, name, f"{name}.{run}", *GROUP_TOPICS[name])
        system.add(name, **overrides)
    try:
        await system.start_all()
    except BaseException:
        system.stop_all()
        raise
    return system


def assert_alive(system: System) -> None:
    """Every service is still running (none crashed on its own)."""
    for svc in system.services.values():
        assert svc.alive(), f"{svc.name} died on its own:\n{svc.tail()}"


def assert_no_alerts(system: System) -> None:
    """No service logged a critical alert (a fail-closed suppression, a lost command)."""
    for svc in system.services.values():
        log = svc.log_path.read_text("utf-8", "replace") if svc.log_path.exists() else ""
        assert '"level": "CRITICAL"' not in log, f"{svc.name} raised an alert:\n{svc.tail()}"


async def eventually(
    check: Callable[[], Awaitable[bool]],
    *,
    within: float = 30.0,
    pause: float = 0.02,
    what: str = "condition",
) -> float:
    """Poll `check` until it holds; return the seconds it took (fail after `within`)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within, f"timed out after {within} s: {what}"
        await asyncio.sleep(pause)
    return time.monotonic() - started


# --- Commands as a clinic app sends them ------------------------------------------------------


def _doc(kind: str, customer_id: str, occurred_at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(new_event_id()),
        "type": kind,
        "schema_version": 1,
        "customer_id": customer_id,
        "producer": "kiosk",
        "occurred_at": occurred_at.isoformat(),
        **fields,
    }


def capture(customer_id: str, purpose: Purpose, occurred_at: datetime) -> dict[str, Any]:
    """A `ConsentCaptured` (given) for one purpose, with the notice shown and its hash."""
    return _doc(
        "ConsentCaptured",
        customer_id,
        occurred_at,
        purpose=str(purpose),
        status="given",
        notice_version="2026.1",
        language="fi",
        notice_sha256=NOTICE_SHA256,
        channel="kiosk",
        evidence_ref="kiosk-7:session",
    )


def withdraw(customer_id: str, purpose: Purpose, occurred_at: datetime) -> dict[str, Any]:
    """A `ConsentWithdrawn` by the customer."""
    return _doc("ConsentWithdrawn", customer_id, occurred_at, purpose=str(purpose), channel="web")


def objection(customer_id: str, kind: str, occurred_at: datetime) -> dict[str, Any]:
    """An `ObjectionLodged` (kind as a clinic app names it, e.g. `direct_marketing`)."""
    return _doc(
        "ObjectionLodged",
        customer_id,
        occurred_at,
        objection=kind,
        channel="desk",
        recorded_by="staff-3",
    )


def lift(customer_id: str, kind: str, occurred_at: datetime) -> dict[str, Any]:
    """An `ObjectionLifted` by the customer."""
    return _doc("ObjectionLifted", customer_id, occurred_at, objection=kind, channel="web")


def renewed(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The same document under a new event id: an old event replayed as if it were new."""
    return {**doc, "event_id": str(new_event_id())}


@dataclass(frozen=True)
class Submitted:
    """One submission as it went on the wire."""

    doc: dict[str, Any]
    key: bytes
    value: bytes


class Clinic:
    """Publishes sealed submissions to intake as the clinic app, keeping the bytes sent."""

    def __init__(self, infra: Infra) -> None:
        self.infra = infra
        self.client = IntakeClient(
            bootstrap_servers=infra.kafka_bootstrap,
            username="clinic-app",
            password=infra.kafka_password("clinic-app"),
            intake_public_key=infra.env["REKISTERI_INTAKE_PUBLIC_KEY"],
        )
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect the producer (encoding needs none)."""
        self._producer = AIOKafkaProducer(
            **self.infra.kafka_client_args("clinic-app"), enable_idempotence=True, linger_ms=0
        )
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and close the producer."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def encode(self, doc: dict[str, Any]) -> Submitted:
        """Seal a document as the clinic app would."""
        key, value, _ = self.client.encode(doc)
        return Submitted(doc, key, value)

    async def send(self, doc: dict[str, Any]) -> Submitted:
        """Seal and publish one document; returns once Kafka has it."""
        sub = self.encode(doc)
        await self.deliver(sub)
        return sub

    async def deliver(self, sub: Submitted) -> None:
        """Publish exactly these bytes (again, for a duplicate delivery)."""
        if self._producer is None:
            raise RuntimeError("Clinic.start() first")
        await self._producer.send_and_wait(SUBMISSIONS, sub.value, key=sub.key)


# --- What the versions say ---------------------------------------------------------------------


@dataclass
class CustomerModel:
    """One customer's consent as the commands applied so far say it must be."""

    customer_id: str
    version: int = 0
    statuses: dict[Purpose, tuple[ConsentStatus, datetime]] = field(default_factory=dict)
    objections: dict[ObjectionKind, datetime] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    registered: bool = False

    def apply(self, doc: Mapping[str, Any]) -> bool:
        """Apply one command document; False for an event id applied before (a no-op)."""
        if doc["event_id"] in self.applied:
            return False
        self.applied.add(str(doc["event_id"]))
        self.version += 1
        at = datetime.fromisoformat(doc["occurred_at"])
        kind = doc["type"]
        if kind in {"ConsentCaptured", "ConsentWithdrawn"}:
            purpose = Purpose(doc["purpose"])
            current = self.statuses.get(purpose)
            if kind == "ConsentCaptured":
                if current is not None and at < current[1]:
                    return True  # expressed before the last change: recorded, changes nothing
                status = ConsentStatus.GIVEN
            else:
                status = ConsentStatus.WITHDRAWN
            self.statuses[purpose] = (status, max(at, current[1]) if current else at)
        elif kind == "ObjectionLodged":
            objected = OBJECTION_ALIASES[doc["objection"]]
            since = self.objections.get(objected)
            self.objections[objected] = at if since is None else max(since, at)
        elif kind == "ObjectionLifted":
            lifted = OBJECTION_ALIASES[doc["objection"]]
            since = self.objections.get(lifted)
            if since is not None and at >= since:
                del self.objections[lifted]
        else:
            raise AssertionError(f"not a consent command: {kind}")
        return True

    def suppressed(self) -> frozenset[Purpose]:
        """The purposes the active objections suppress."""
        return frozenset(p for k in self.objections for p in SUPPRESSES[k])

    def status(self, purpose: Purpose) -> ConsentStatus | None:
        """The purpose's current status (None: nothing recorded)."""
        current = self.statuses.get(purpose)
        return current[0] if current is not None else None

    def allows(self, purpose: Purpose) -> bool:
        """Whether processing for `purpose` is allowed now; an unknown customer: never."""
        if self.version == 0 or purpose in self.suppressed():
            return False
        status = self.status(purpose)
        if CATALOGUE[purpose].opt_out:
            return status not in {
                ConsentStatus.REFUSED,
                ConsentStatus.WITHDRAWN,
                ConsentStatus.REVOKED,
                ConsentStatus.EXPIRED,
            }
        return status is ConsentStatus.GIVEN

    def allowed(self, purposes: Iterable[Purpose] = tuple(Purpose)) -> frozenset[Purpose]:
        """Which of `purposes` are allowed now."""
        return frozenset(p for p in purposes if self.allows(p))


@dataclass
class ConsentModel:
    """What the versions say, for every customer of a run."""

    customers: dict[str, CustomerModel] = field(default_factory=dict)

    def __getitem__(self, customer_id: str) -> CustomerModel:
        return self.customers.setdefault(customer_id, CustomerModel(customer_id))

    def apply(self, doc: Mapping[str, Any]) -> bool:
        """Apply one command document to its customer."""
        return self[str(doc["customer_id"])].apply(doc)


# --- What the services hold --------------------------------------------------------------------


@dataclass(frozen=True)
class AnalyticsRow:
    """Analytics' view of a customer (stored under the pseudonym)."""

    version: int
    allowed: frozenset[Purpose]


class Views:
    """Read-only access to each service's tables, with the service's own role."""

    def __init__(self, pools: dict[str, Pool], pseudonym_key: bytes) -> None:
        self.pools = pools
        self.pseudonym_key = pseudonym_key

    @classmethod
    async def open(cls, infra: Infra, services: Iterable[str] = ("consent", *PROCESSORS)) -> Views:
        """Open a small pool per service."""
        pools: dict[str, Pool] = {}
        try:
            for name in services:
                pools[name] = await open_pool(
                    infra.pg_dsn(name), schema=name, max_size=4, application_name="fanout-test"
                )
        except BaseException:
            for pool in pools.values():
                await pool.close()
            raise
        key = base64.b64decode(infra.service_env("analytics")["ANALYTICS_PSEUDONYM_KEY"])
        return cls(pools, key)

    async def close(self) -> None:
        """Close every pool."""
        for pool in self.pools.values():
            await pool.close()

    async def consent_version(self, customer_id: str) -> int:
        """The customer's consent version (0: consent has nothing)."""
        async with self.pools["consent"].acquire() as conn:
            value = await conn.fetchval(CONSENT_VERSION_SQL, customer_id)
        return int(value) if value is not None else 0

    async def consent_versions(self, customer_ids: list[str]) -> dict[str, int]:
        """The consent version of each customer consent has."""
        async with self.pools["consent"].acquire() as conn:
            rows = await conn.fetch(CONSENT_VERSIONS_SQL, customer_ids)
        return {r["customer_id"]: int(r["version"]) for r in rows}

    async def consent(self, customer_id: str) -> ConsentView | None:
        """Everything consent holds on the customer (`load_consent`)."""
        async with self.pools["consent"].acquire() as conn:
            return await load_consent(conn, customer_id)

    async def directive(self, directive_id: UUID) -> DirectiveStatus | None:
        """A directive and its answers (`directive_status`)."""
        async with self.pools["consent"].acquire() as conn:
            return await directive_status(conn, directive_id)

    async def directives(self, prefix: str) -> list[dict[str, Any]]:
        """Every directive of customers whose number starts with `prefix`, oldest first."""
        async with self.pools["consent"].acquire() as conn:
            rows = await conn.fetch(DIRECTIVES_SQL, prefix + "%")
        return [dict(r) for r in rows]

    async def marketing(self, customer_id: str) -> ViewRow | None:
        """Marketing's view of the customer (`load_view`)."""
        async with self.pools["marketing"].acquire() as conn:
            return await load_view(conn, customer_id)

    async def marketing_versions(self, customer_ids: list[str]) -> dict[str, int]:
        """The version of marketing's view of each customer it has a row for."""
        async with self.pools["marketing"].acquire() as conn:
            rows = await conn.fetch(MARKETING_VERSIONS_SQL, customer_ids)
        return {r["customer_id"]: int(r["version"]) for r in rows}

    async def may_contact(self, customer_id: str, channel: Purpose) -> bool:
        """Marketing's final check before a send (`may_contact`)."""
        async with self.pools["marketing"].acquire() as conn:
            return await may_contact(conn, customer_id, channel)

    async def analytics(self, customer_id: str) -> AnalyticsRow | None:
        """Analytics' view of the customer, found by the customer's pseudonym."""
        async with self.pools["analytics"].acquire() as conn:
            row = await conn.fetchrow(
                ANALYTICS_VIEW_SQL, pseudonym(self.pseudonym_key, customer_id)
            )
        if row is None:
            return None
        return AnalyticsRow(int(row["version"]), parse_purposes(row["allowed"]))

    async def analytics_versions(self, customer_ids: list[str]) -> dict[str, int]:
        """The version of analytics' view of each customer it has a row for."""
        subjects = {pseudonym(self.pseudonym_key, c): c for c in customer_ids}
        async with self.pools["analytics"].acquire() as conn:
            rows = await conn.fetch(ANALYTICS_VERSIONS_SQL, list(subjects))
        return {subjects[bytes(r["subject"])]: int(r["version"]) for r in rows}

    async def contributions(self, customer_id: str) -> int:
        """How many register contributions analytics holds for the customer."""
        async with self.pools["analytics"].acquire() as conn:
            value = await conn.fetchval(
                COUNT_CONTRIBUTIONS_SQL, pseudonym(self.pseudonym_key, customer_id)
            )
        return int(value or 0)

    async def photos(self, customer_id: str) -> ViewRow | None:
        """Photos' consent view of the customer."""
        async with self.pools["photos"].acquire() as conn:
            return await load_photo_consent(conn, customer_id)

    async def photos_versions(self, customer_ids: list[str]) -> dict[str, int]:
        """The version of photos' view of each customer it has a row for."""
        async with self.pools["photos"].acquire() as conn:
            rows = await conn.fetch(PHOTOS_VERSIONS_SQL, customer_ids)
        return {r["customer_id"]: int(r["version"]) for r in rows}

    async def processor_versions(self, service: str, customer_ids: list[str]) -> dict[str, int]:
        """The view version of each customer in a processor (`marketing`, `analytics`, ...)."""
        match service:
            case "marketing":
                return await self.marketing_versions(customer_ids)
            case "analytics":
                return await self.analytics_versions(customer_ids)
            case "photos":
                return await self.photos_versions(customer_ids)
            case _:
                raise ValueError(service)


# --- Reading a topic ---------------------------------------------------------------------------


@dataclass
class Seen:
    """A record read by a `Tap`, with when it was read (`time.monotonic()`)."""

    record: ConsumerRecord[bytes, bytes]
    at: float


class Tap:
    """Reads one topic from its end without a consumer group, keeping this run's keys."""

    def __init__(self, infra: Infra, principal: str, topic: str, prefix: str) -> None:
        self.topic = topic
        self.prefix = prefix.encode()
        self.consumer = AIOKafkaConsumer(
            **infra.kafka_client_args(principal),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        self.seen: list[Seen] = []

    async def start(self) -> None:
        """Connect and position at the end of every partition."""
        await self.consumer.start()
        count = next(t.partitions for t in all_topics() if t.name == self.topic)
        tps = [TopicPartition(self.topic, p) for p in range(count)]
        self.consumer.assign(tps)
        for tp, end in (await self.consumer.end_offsets(tps)).items():
            self.consumer.seek(tp, end)

    async def stop(self) -> None:
        """Disconnect."""
        await self.consumer.stop()

    async def poll(self, timeout_ms: int = 100) -> list[Seen]:
        """Read what arrived; return (and keep) the records of this run's keys."""
        batches = await self.consumer.getmany(timeout_ms=timeout_ms)
        now = time.monotonic()
        fresh = [
            Seen(r, now)
            for records in batches.values()
            for r in records
            if r.key is not None and r.key.startswith(self.prefix)
        ]
        self.seen.extend(fresh)
        return fresh


def base_time() -> datetime:
    """A starting point for `occurred_at` a day in the past (intake refuses no past time)."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
