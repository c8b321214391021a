"""Marketing, analytics and photos, in process, obeying consent and stop directives on real Kafka.

Each service runs its real app with its own credentials and its own consumer group (suffix
`test-<run>`, positioned at the end of its topics). The consent principal publishes
`ConsentState`s on `consent.state.v1` and `ProcessingStopRequested`s on `privacy.directives.v1`;
the records principal publishes register entries for analytics. Then, per service: the view
holds the latest version, the stop is durable (suppression; deleted contributions and an
exclusion; restricted and deleted photos), and the answer `ProcessingStopped` is on
`privacy.acks.v1` (read as compliance). A record no one can read fails closed in every service:
the customer is suppressed and the record is on `consent.state.v1.dlq`, once per service.
Topics and schemas are shared, so customer numbers are unique per run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from faststream import TestApp

from contracts.consent import (
    ConsentState,
    ObjectionKind,
    ProcessingStopped,
    ProcessingStopRequested,
    Purpose,
)
from contracts.records import CustomerRecord
from contracts.topics import all_topics
from services.analytics.app import build as build_analytics
from services.analytics.repository import AnalyticsStore
from services.analytics.settings import AnalyticsSettings
from services.common.runtime import ServiceContext
from services.common.settings import ServiceSettings
from services.consentview.view import ViewRow
from services.marketing.app import build as build_marketing
from services.marketing.repository import audience, load_suppressions, load_view, may_contact
from services.marketing.settings import MarketingSettings
from services.photos.app import build as build_photos
from services.photos.domain import PhotoClass, PhotoStatus
from services.photos.repository import (
    accept_new_photo,
    load_photo_consent,
    load_photos,
    record_photo,
)
from services.photos.settings import PhotosSettings
from tests.support.infra import Infra, find_infra
from tests.support.kafka import start_group_at_end
from tests.unit.test_marketing import consent_state, directive

pytestmark = [pytest.mark.real, pytest.mark.timeout(240)]

STATE = "consent.state.v1"
DIRECTIVES = "privacy.directives.v1"
ACKS = "privacy.acks.v1"
REGISTER = "records.customer.v1"
STATE_DLQ = "consent.state.v1.dlq"
EMAIL, SMS = Purpose.MARKETING_EMAIL, Purpose.MARKETING_SMS
ANALYTICS, STORAGE = Purpose.ANALYTICS, Purpose.PHOTO_STORAGE
SERVICES = ("marketing", "analytics", "photos")

S = TypeVar("S", bound=ServiceSettings)


@pytest.fixture(scope="module")
def infra() -> Infra:
    return find_infra()


def settings_for(infra: Infra, service: str, cls: type[S], suffix: str) -> S:
    """The service's own settings (`<SERVICE>_*` as provisioned), its own test group."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in infra.service_env(service).items():
            env.setenv(name, value)
        return cls(consumer_group_suffix=suffix, health_port=0, max_retries=1, retry_backoff_ms=50)


class Reader:
    """A consumer of one topic as `principal`, in `group` started at the end; keeps our keys."""

    def __init__(self, infra: Infra, principal: str, group: str | None, topic: str) -> None:
        self.infra, self.principal, self.group, self.topic = infra, principal, group, topic
        self.consumer = AIOKafkaConsumer(
            **infra.kafka_client_args(principal),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.records: list[ConsumerRecord[bytes, bytes]] = []

    async def start(self) -> None:
        if self.group is not None:
            await start_group_at_end(self.infra, self.principal, self.group, self.topic)
            await self.consumer.start()
            self.consumer.subscribe([self.topic])
            return
        await self.consumer.start()
        count = next(t.partitions for t in all_topics() if t.name == self.topic)
        tps = [TopicPartition(self.topic, p) for p in range(count)]
        self.consumer.assign(tps)
        for tp, end in (await self.consumer.end_offsets(tps)).items():
            self.consumer.seek(tp, end)

    async def read(self, prefix: str) -> None:
        """Read what arrived; keep the records whose key starts with `prefix` (this run's)."""
        batches = await self.consumer.getmany(timeout_ms=200)
        wanted = prefix.encode()
        for records in batches.values():
            self.records.extend(r for r in records if r.key and r.key.startswith(wanted))

    def of(self, key: str) -> list[ConsumerRecord[bytes, bytes]]:
        return [r for r in self.records if r.key == key.encode()]


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 90.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def register_entry(cid: str, version: int) -> CustomerRecord:
    return CustomerRecord.model_validate(
        {
            "customer_id": cid,
            "version": version,
            "registered": True,
            "data_classes": ["customer_register"],
            "sources": {"name": "customer"},
            "pii": {"name": "Y2lwaGVydGV4dA=="},
            "producer": "records",
            "occurred_at": datetime(2026, 5, 2, tzinfo=UTC),
            "analytics": {
                "age_band": "45-54",
                "preferred_language": "sv",
                "acquisition_channel": "referral",
                "visit_months": ["2026-04", "2026-01"],
            },
        }
    )


@dataclass
class Run:
    """The services and Kafka clients of this run."""

    infra: Infra
    tag: str
    contexts: dict[str, ServiceContext] = field(default_factory=dict)
    pseudonym_key: bytes = b""
    producers: dict[str, AIOKafkaProducer] = field(default_factory=dict)
    acks: Reader | None = None
    dlq: Reader | None = None

    def cid(self, name: str) -> str:
        return f"T{self.tag}-{name}"

    async def publish(self, principal: str, topic: str, key: str, value: bytes | None) -> None:
        await self.producers[principal].send_and_wait(topic, value, key=key.encode())

    async def state(self, s: ConsentState) -> None:
        await self.publish("consent", STATE, s.customer_id, s.to_bytes())

    async def stop(self, d: ProcessingStopRequested) -> None:
        await self.publish("consent", DIRECTIVES, d.customer_id, d.to_bytes())

    def pool(self, service: str) -> Any:
        return self.contexts[service].pool

    async def answers(self, cid: str) -> list[ProcessingStopped]:
        assert self.acks is not None
        await self.acks.read(self.cid(""))
        return [ProcessingStopped.model_validate_json(r.value) for r in self.acks.of(cid)]

    async def answered(self, cid: str, services: set[str]) -> bool:
        return {a.service for a in await self.answers(cid)} >= services


@asynccontextmanager
async def running(infra: Infra) -> AsyncIterator[Run]:
    tag = uuid.uuid4().hex[:10]
    run = Run(infra, tag)
    suffix = f"test-{tag}"
    marketing = settings_for(infra, "marketing", MarketingSettings, suffix)
    analytics = settings_for(infra, "analytics", AnalyticsSettings, suffix)
    photos = settings_for(infra, "photos", PhotosSettings, suffix)
    run.pseudonym_key = analytics.pseudonym_key_bytes()
    async with AsyncExitStack() as stack:
        for principal in ("consent", "records"):
            producer = AIOKafkaProducer(
                **infra.kafka_client_args(principal), enable_idempotence=True, acks="all"
            )
            await producer.start()
            stack.push_async_callback(producer.stop)
            run.producers[principal] = producer
        run.acks = Reader(infra, "compliance", f"compliance.test-{uuid.uuid4().hex}", ACKS)
        run.dlq = Reader(infra, "operator", None, STATE_DLQ)
        for reader in (run.acks, run.dlq):
            await reader.start()
            stack.push_async_callback(reader.consumer.stop)
        for service, topics in (
            ("marketing", (STATE, DIRECTIVES)),
            ("analytics", (STATE, DIRECTIVES, REGISTER)),
            ("photos", (STATE, DIRECTIVES)),
        ):
            await start_group_at_end(infra, service, f"{service}.{suffix}", *topics)
        for service, (app, ctx) in (
            ("marketing", build_marketing(marketing)),
            ("analytics", build_analytics(analytics)),
            ("photos", build_photos(photos)),
        ):
            await stack.enter_async_context(TestApp(app))
            run.contexts[service] = ctx
        yield run


@dataclass
class Outcome:
    """What the scenario left behind."""

    run: Run
    ids: dict[str, str]
    directives: dict[str, ProcessingStopRequested]
    marketing_view: ViewRow | None = None
    marketing_suppressed: dict[Purpose, tuple[int, str]] = field(default_factory=dict)
    audience: list[str] = field(default_factory=list)
    contact: dict[str, bool] = field(default_factory=dict)
    contributions_at_ack: int = -1
    excluded_at_ack: bool = False
    photos_at_ack: dict[str, PhotoStatus] = field(default_factory=dict)
    photo_accept_at_ack: bool = True
    photo_view: ViewRow | None = None
    answers: dict[str, list[ProcessingStopped]] = field(default_factory=dict)
    poison_views: dict[str, bool] = field(default_factory=dict)
    poison_dlq_consumers: list[str] = field(default_factory=list)
    contributions_later: int = -1
    excluded_later: bool = False
    facts_before_stop: tuple[Any, ...] = ()


async def marketing_view(run: Run, cid: str) -> ViewRow | None:
    async with run.pool("marketing").acquire() as conn:
        return await load_view(conn, cid)


async def photo_view(run: Run, cid: str) -> ViewRow | None:
    async with run.pool("photos").acquire() as conn:
        return await load_photo_consent(conn, cid)


async def analytics_held(run: Run, cid: str) -> tuple[int, bool, int]:
    async with run.pool("analytics").acquire() as conn:
        store = AnalyticsStore(conn, run.pseudonym_key)
        row = await conn.fetchrow(
            "SELECT version FROM consent_view WHERE subject = $1", store.key(cid)
        )
        return (
            await store.contributions(cid),
            await store.excluded(cid),
            row["version"] if row is not None else 0,
        )


async def analytics_facts(run: Run, cid: str) -> tuple[Any, ...]:
    """The facts of the customer's latest contribution, found by pseudonym."""
    async with run.pool("analytics").acquire() as conn:
        row = await conn.fetchrow(
            "SELECT age_band, language, channel, visit_months FROM contributions "
            "WHERE subject = $1 ORDER BY version DESC LIMIT 1",
            AnalyticsStore(conn, run.pseudonym_key).key(cid),
        )
        return tuple(row.values()) if row is not None else ()


async def versions_reached(run: Run, expected: dict[tuple[str, str], int]) -> bool:
    for (service, cid), version in expected.items():
        if service == "marketing":
            view = await marketing_view(run, cid)
            got = view.version if view is not None else 0
        elif service == "photos":
            view = await photo_view(run, cid)
            got = view.version if view is not None else 0
        else:
            got = (await analytics_held(run, cid))[2]
        if got < version:
            return False
    return True


@pytest.fixture(scope="module")
async def outcome(infra: Infra) -> Outcome:  # noqa: PLR0915 - one scenario, told in order
    async with running(infra) as run:
        ids = {n: run.cid(n) for n in ("m", "u", "a", "p", "all", "poison")}
        m, a, p, every, poison = ids["m"], ids["a"], ids["p"], ids["all"], ids["poison"]

        # Consent known everywhere; analytics gets register entries; photos get stored.
        await run.state(consent_state(m, 1, given=[EMAIL, SMS]))
        await run.state(consent_state(a, 1))
        await run.state(consent_state(p, 1, given=[STORAGE]))
        await run.state(consent_state(every, 1, given=[EMAIL, STORAGE]))
        await run.state(consent_state(poison, 1, given=[EMAIL, STORAGE]))
        for cid in (a, every, poison):
            await run.publish("records", REGISTER, cid, register_entry(cid, 1).to_bytes())
        await eventually(
            lambda: versions_reached(
                run,
                {("marketing", m): 1, ("analytics", a): 1, ("photos", p): 1}
                | {
                    (s, c): 1 for s in ("marketing", "analytics", "photos") for c in (every, poison)
                },
            ),
            what="the first states",
        )
        await eventually(
            lambda: contributions_present(run, a, every, poison), what="register entries"
        )
        facts_before_stop = await analytics_facts(run, a)
        async with run.pool("photos").acquire() as conn:
            for cid, photo_id, klass in (
                (p, f"{p}.front", PhotoClass.PATIENT_RECORD),
                (p, f"{p}.smile", PhotoClass.MARKETING),
                (every, f"{every}.left", PhotoClass.PATIENT_RECORD),
            ):
                assert await record_photo(
                    conn, photo_id=photo_id, customer_id=cid, data_class=klass
                )

        # The stops: each directive goes out before its own state (the topics are not ordered).
        directives = {
            "m": directive(m, 2, [EMAIL]),
            "a": directive(a, 2, [ANALYTICS], reason="objection"),
            "p": directive(p, 2, [STORAGE]),
            "all": directive(every, 2, [EMAIL, ANALYTICS, STORAGE], reason="objection"),
        }
        for d in directives.values():
            await run.stop(d)
        await run.publish("consent", STATE, poison, b'{"type": "ConsentState", "version": "x"}')

        await eventually(lambda: run.answered(m, {"marketing"}), what="marketing's answer")
        out = Outcome(run, ids, directives, facts_before_stop=facts_before_stop)
        out.marketing_view = await marketing_view(run, m)
        async with run.pool("marketing").acquire() as conn:
            out.marketing_suppressed = {
                s.purpose: (s.consent_version, s.reason) for s in await load_suppressions(conn, m)
            }
        await eventually(lambda: run.answered(a, {"analytics"}), what="analytics' answer")
        held, excluded, _ = await analytics_held(run, a)
        out.contributions_at_ack, out.excluded_at_ack = held, excluded
        await eventually(lambda: run.answered(p, {"photos"}), what="photos' answer")
        async with run.pool("photos").acquire() as conn:
            out.photos_at_ack = {x.photo_id: x.status for x in await load_photos(conn, p)}
            out.photo_accept_at_ack = await accept_new_photo(conn, p)
        await eventually(
            lambda: run.answered(every, {"marketing", "analytics", "photos"}),
            what="every answer to the directive for three services",
        )

        # The states of the stops arrive after them; then a stale state is replayed.
        await run.state(consent_state(m, 2, given=[SMS], withdrawn=[EMAIL]))
        await run.state(consent_state(a, 2, objections=[ObjectionKind.ANALYTICS]))
        await run.state(consent_state(p, 2, withdrawn=[STORAGE]))
        await run.state(consent_state(m, 1, given=[EMAIL, SMS]))  # stale replay
        await run.publish("records", REGISTER, a, register_entry(a, 2).to_bytes())
        await eventually(
            lambda: versions_reached(
                run, {("marketing", m): 2, ("analytics", a): 2, ("photos", p): 2}
            ),
            what="the states of the stops",
        )
        await asyncio.sleep(1.0)  # let the stale replay and the late register entry land

        out.marketing_view = await marketing_view(run, m)
        out.photo_view = await photo_view(run, p)
        async with run.pool("marketing").acquire() as conn:
            out.audience = [
                c
                for c in await audience(conn, f"it-{run.tag}", EMAIL)
                if c.startswith(f"T{run.tag}")
            ]
            for name in ("m", "u", "all", "poison"):
                out.contact[name] = await may_contact(conn, ids[name], EMAIL)
            out.contact["m-sms"] = await may_contact(conn, m, SMS)
        out.contributions_later, out.excluded_later, _ = await analytics_held(run, a)

        # The poison record: every service suppressed the customer and dead-lettered it.
        async def poison_everywhere() -> bool:
            assert run.dlq is not None
            await run.dlq.read(run.cid(""))
            return len(run.dlq.of(poison)) >= 3

        await eventually(poison_everywhere, what="the poison record in the DLQ")
        assert run.dlq is not None
        out.poison_dlq_consumers = sorted(
            dict(r.headers)["x-consumer"].decode() for r in run.dlq.of(poison)
        )
        out.poison_views["marketing"] = bool(
            (await marketing_view(run, poison) or ViewRow()).allowed
        )
        out.poison_views["photos"] = bool((await photo_view(run, poison) or ViewRow()).allowed)
        out.poison_views["analytics"] = not (await analytics_held(run, poison))[1]
        for name in ("m", "a", "p", "all"):
            out.answers[name] = await run.answers(ids[name])
        return out


async def contributions_present(run: Run, *cids: str) -> bool:
    for cid in cids:
        if (await analytics_held(run, cid))[0] < 1:
            return False
    return True


def test_marketing_suppresses_the_withdrawn_channel_and_answers(outcome: Outcome) -> None:
    m = outcome.ids["m"]
    d = outcome.directives["m"]
    assert outcome.marketing_suppressed == {EMAIL: (2, "withdrawal")}
    view = outcome.marketing_view
    assert view is not None
    assert view.version == 2  # the stale replay of version 1 was not applied
    assert view.allowed == {SMS, Purpose.MARKETING_POST, Purpose.MARKETING_PHONE, Purpose.RESEARCH}
    assert not outcome.contact["m"]
    assert outcome.contact["m-sms"]
    [ack] = [x for x in outcome.answers["m"] if x.service == "marketing"]
    assert (ack.directive_id, ack.consent_version, ack.customer_id) == (d.directive_id, 2, m)


def test_unknown_and_stopped_customers_are_not_in_the_audience(outcome: Outcome) -> None:
    assert not outcome.contact["u"]
    assert not outcome.contact["all"]
    assert not outcome.contact["poison"]
    assert outcome.ids["m"] not in outcome.audience
    assert outcome.ids["u"] not in outcome.audience


def test_analytics_keeps_the_register_entrys_facts_by_pseudonym(outcome: Outcome) -> None:
    assert outcome.facts_before_stop == (
        "45-54",
        "sv",
        "referral",
        [date(2026, 1, 1), date(2026, 4, 1)],
    )


def test_analytics_deletes_and_excludes_before_answering(outcome: Outcome) -> None:
    assert outcome.contributions_at_ack == 0
    assert outcome.excluded_at_ack
    # The objection's state and a later register entry changed nothing: still excluded.
    assert outcome.contributions_later == 0
    assert outcome.excluded_later
    [ack] = [x for x in outcome.answers["a"] if x.service == "analytics"]
    assert ack.directive_id == outcome.directives["a"].directive_id


def test_photos_restrict_clinical_and_delete_marketing_photos_before_answering(
    outcome: Outcome,
) -> None:
    p = outcome.ids["p"]
    assert outcome.photos_at_ack == {
        f"{p}.front": PhotoStatus.RESTRICTED,
        f"{p}.smile": PhotoStatus.DELETED,
    }
    assert not outcome.photo_accept_at_ack
    assert outcome.photo_view is not None
    assert outcome.photo_view.version == 2
    assert STORAGE not in outcome.photo_view.allowed
    [ack] = [x for x in outcome.answers["p"] if x.service == "photos"]
    assert ack.directive_id == outcome.directives["p"].directive_id


def test_a_directive_for_three_services_is_answered_by_each(outcome: Outcome) -> None:
    d = outcome.directives["all"]
    answers = outcome.answers["all"]
    assert sorted(x.service for x in answers) == ["analytics", "marketing", "photos"]
    assert {(x.directive_id, x.consent_version, x.producer == x.service) for x in answers} == {
        (d.directive_id, 2, True)
    }


def test_an_unreadable_state_fails_closed_in_every_service(outcome: Outcome) -> None:
    assert outcome.poison_dlq_consumers == ["analytics", "marketing", "photos"]
    assert outcome.poison_views == {"marketing": False, "photos": False, "analytics": False}
