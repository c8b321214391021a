"""Consent → marketing, analytics and photos, end to end on the real stack.

Intake, records, consent, marketing, analytics and photos run as real processes (once for the
module), each with its own consumer group started at the end of its topics. Everything enters
as a clinic app sends it: sealed submissions to `intake.submissions.v1`.

1. A Hypothesis state machine drives consents, withdrawals (three in a row, before the
   customer's registration arrives), objections and lifts (re-consent after an objection), old
   events replayed under a new event id (an old consent after a withdrawal), the same bytes
   delivered twice, and directives already on `privacy.directives.v1` delivered again (as
   consent). After every step, once consent's version for the customer reaches the model's,
   consent's state is exactly what the versions say; once each processor's view reaches that
   version, marketing's `may_contact` and every processor's allowed purposes agree with it, so
   no stale or replayed event ever lifted a suppression. At the end of each example, barrier
   withdrawals (one per processor) are fully applied and everything agrees again. The same
   machine also runs a fixed script with each scenario of the acceptance once, so none can go
   unexercised whatever Hypothesis draws.
2. A concurrency test withdraws e-mail marketing for customers while audiences and
   `may_contact` are asked for in a tight loop on separate connections: no answer computed
   after marketing acknowledged the stop includes the customer, no export ever names a customer
   whose stop was committed while the export held them, and no export names a customer under
   the withdrawal's consent version.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from contracts.consent import (
    ACKS_TOPIC,
    DIRECTIVES_TOPIC,
    OBJECTION_ALIASES,
    SUPPRESSES,
    ProcessingStopped,
    Purpose,
)
from services.marketing.repository import audience, may_contact
from tests.support.consent import (
    FANOUT,
    MARKETING_CHANNELS,
    PROCESSORS,
    SERVICE_PURPOSES,
    Clinic,
    ConsentModel,
    CustomerModel,
    Submitted,
    Tap,
    Views,
    assert_alive,
    assert_no_alerts,
    base_time,
    capture,
    eventually,
    lift,
    objection,
    renewed,
    start_fanout,
    withdraw,
)
from tests.support.dataset import Generator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine

    from tests.support.infra import Infra
    from tests.support.system import System

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.timeout(600)]

log = logging.getLogger(__name__)
T = TypeVar("T")
EMAIL: Final = Purpose.MARKETING_EMAIL
RULE_PURPOSES: Final = (EMAIL, Purpose.MARKETING_SMS, Purpose.ANALYTICS, Purpose.PHOTO_STORAGE)
"""The purposes the machine gives and withdraws consent for (every processor has one)."""
OBJECTIONS: Final = ("direct_marketing", "research", "analytics")
BARRIERS: Final = (Purpose.MARKETING_PHONE, Purpose.WEB_ANALYTICS, Purpose.PHOTO_MARKETING_USE)
"""Withdrawn at the end of an example, one per processor: when their directives are fully
applied, every earlier record of the customer has been consumed by every processor."""
CUSTOMERS: Final = 3
SCENARIOS: Final = (
    "withdrawn_three_times",
    "withdrawn_before_registration",
    "consent_after_objection",
    "old_consent_after_withdrawal",
    "delivered_twice",
    "directive_delivered_twice",
)
"""What the issue's acceptance names; each must have happened at least once."""


@dataclass
class Fanout:
    """The services of the module, and its run id."""

    infra: Infra
    run: str
    system: System


@pytest.fixture(scope="module")
async def fanout(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fanout]:
    run = uuid.uuid4().hex
    log_dir = tmp_path_factory.mktemp("fanout")
    system = await start_fanout(infra, run, log_dir, services=(*FANOUT, "records"))
    try:
        yield Fanout(infra, run, system)
    finally:
        system.stop_all()


# --- What the services must agree on --------------------------------------------------------


async def assert_agrees(views: Views, m: CustomerModel, *, within: float = 30.0) -> None:
    """Consent and every processor hold what the versions say for one customer."""
    cid = m.customer_id

    async def consent_caught_up() -> bool:
        return await views.consent_version(cid) >= m.version

    await eventually(consent_caught_up, within=within, what=f"consent at version {m.version}")
    view = await views.consent(cid)
    if m.version == 0:
        assert view is None
        for channel in MARKETING_CHANNELS:
            assert not await views.may_contact(cid, channel), "unknown customer contactable"
        return
    assert view is not None
    state = view.state
    assert state.version == m.version, "a command was lost or applied twice"
    assert not state.held, "consent failed closed"
    assert set(state.suppressions) == set(m.objections)
    for purpose in Purpose:
        assert state.purposes[purpose].status == m.status(purpose), purpose
        assert state.purposes[purpose].allowed == m.allows(purpose), purpose
    for purpose in m.suppressed():
        assert not state.purposes[purpose].allowed, f"suppression of {purpose} lifted"

    for service in PROCESSORS:

        async def caught_up(service: str = service) -> bool:
            held = await views.processor_versions(service, [cid])
            return held.get(cid, 0) >= m.version

        await eventually(caught_up, within=within, what=f"{service} at version {m.version}")

    marketing = await views.marketing(cid)
    assert marketing is not None
    assert marketing.version == m.version
    assert marketing.allowed == m.allowed(SERVICE_PURPOSES["marketing"])
    for channel in MARKETING_CHANNELS:
        allowed = await views.may_contact(cid, channel)
        assert allowed == m.allows(channel), f"may_contact({channel}) is {allowed}"
        if channel in m.suppressed():
            assert not allowed, f"suppression of {channel} lifted in marketing"
    analytics = await views.analytics(cid)
    assert analytics is not None
    assert analytics.version == m.version
    assert analytics.allowed == m.allowed(SERVICE_PURPOSES["analytics"])
    photos = await views.photos(cid)
    assert photos is not None
    assert photos.version == m.version
    assert photos.allowed == m.allowed(SERVICE_PURPOSES["photos"])


# --- The state machine ----------------------------------------------------------------------


@dataclass
class Harness:
    """The machine's clients, on the event loop of the thread the machine runs in."""

    infra: Infra
    prefix: str
    loop: asyncio.AbstractEventLoop
    clinic: Clinic
    views: Views
    directives: Tap
    redeliver: AIOKafkaProducer
    registrations: Generator
    examples: itertools.count[int] = field(default_factory=itertools.count)
    scenarios: Counter[str] = field(default_factory=Counter)
    steps: int = 0

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to completion on the machine's loop."""
        return self.loop.run_until_complete(coro)

    @classmethod
    def open(cls, infra: Infra, run: str, loop: asyncio.AbstractEventLoop) -> Harness:
        prefix = f"F{run[:8]}-{uuid.uuid4().hex[:6]}-"

        async def connect() -> Harness:
            clinic = Clinic(infra)
            await clinic.start()
            views = await Views.open(infra)
            directives = Tap(infra, "marketing", DIRECTIVES_TOPIC, prefix)
            await directives.start()
            redeliver = AIOKafkaProducer(**infra.kafka_client_args("consent"), acks="all")
            await redeliver.start()
            return cls(infra, prefix, loop, clinic, views, directives, redeliver, Generator(run))

        return loop.run_until_complete(connect())

    def close(self) -> None:
        async def disconnect() -> None:
            await self.redeliver.stop()
            await self.directives.stop()
            await self.views.close()
            await self.clinic.stop()

        self.loop.run_until_complete(disconnect())


WHO = st.integers(min_value=0, max_value=CUSTOMERS - 1)


class FanoutMachine(RuleBasedStateMachine):
    """Consent commands through intake against the running services, checked by a model."""

    harness: ClassVar[Harness]

    def __init__(self) -> None:
        super().__init__()
        h = self.harness
        n = next(h.examples)
        self.customers = [f"{h.prefix}{n:03d}-{i}" for i in range(CUSTOMERS)]
        self.model = ConsentModel()
        self.sent: dict[str, list[Submitted]] = {c: [] for c in self.customers}
        self.clock = base_time()
        self.touched: set[str] = set()

    # -- helpers

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def send(self, doc: dict[str, Any]) -> Submitted:
        cid = str(doc["customer_id"])
        before = self.model[cid].suppressed()
        sub = self.harness.call(self.harness.clinic.send(doc))
        changed = self.model.apply(doc)
        assert changed, "a fresh event id must count"
        lifted = before - self.model[cid].suppressed()
        if lifted:  # only an explicit lift of that objection may end a suppression
            assert doc["type"] == "ObjectionLifted"
            assert lifted <= SUPPRESSES[OBJECTION_ALIASES[doc["objection"]]]
        self.sent[cid].append(sub)
        self.touched.add(cid)
        self.harness.steps += 1
        return sub

    def register_customer(self, cid: str) -> None:
        doc, _ = self.harness.registrations.registration(cid)
        self.harness.call(self.harness.clinic.send(doc))
        self.model[cid].registered = True
        self.touched.add(cid)

    # -- single commands

    @rule(who=WHO, purpose=st.sampled_from(RULE_PURPOSES))
    def give(self, who: int, purpose: Purpose) -> None:
        self.send(capture(self.customers[who], purpose, self.tick()))

    @rule(who=WHO, purpose=st.sampled_from(RULE_PURPOSES))
    def withdraw_consent(self, who: int, purpose: Purpose) -> None:
        self.send(withdraw(self.customers[who], purpose, self.tick()))

    @rule(who=WHO, kind=st.sampled_from(OBJECTIONS))
    def object_to(self, who: int, kind: str) -> None:
        self.send(objection(self.customers[who], kind, self.tick()))

    @rule(who=WHO, kind=st.sampled_from(OBJECTIONS))
    def lift_objection(self, who: int, kind: str) -> None:
        self.send(lift(self.customers[who], kind, self.tick()))

    @rule(who=WHO)
    def register(self, who: int) -> None:
        cid = self.customers[who]
        if not self.model[cid].registered:
            self.register_customer(cid)

    @precondition(lambda self: any(self.sent.values()))
    @rule(data=st.data())
    def replay_old_event(self, data: st.DataObject) -> None:
        """Any earlier command again, under a new event id (its old `occurred_at` kept)."""
        old = data.draw(st.sampled_from([s for subs in self.sent.values() for s in subs]))
        self.send(renewed(old.doc))

    # -- the acceptance's scenarios

    @rule(who=WHO, purpose=st.sampled_from(RULE_PURPOSES))
    def withdraw_three_times(self, who: int, purpose: Purpose) -> None:
        for _ in range(3):
            self.send(withdraw(self.customers[who], purpose, self.tick()))
        self.harness.scenarios["withdrawn_three_times"] += 1

    @rule(who=WHO, purpose=st.sampled_from(RULE_PURPOSES))
    def withdraw_before_registration(self, who: int, purpose: Purpose) -> None:
        cid = self.customers[who]
        if self.model[cid].registered:
            return
        self.send(withdraw(cid, purpose, self.tick()))
        self.register_customer(cid)
        self.harness.scenarios["withdrawn_before_registration"] += 1

    @rule(who=WHO, kind=st.sampled_from(OBJECTIONS), data=st.data())
    def consent_after_objection(self, who: int, kind: str, data: st.DataObject) -> None:
        covered = sorted(SUPPRESSES[OBJECTION_ALIASES[kind]] & set(RULE_PURPOSES), key=str)
        purpose = data.draw(st.sampled_from(covered or RULE_PURPOSES))
        self.object_then_consent(self.customers[who], kind, purpose)

    def object_then_consent(self, cid: str, kind: str, purpose: Purpose) -> None:
        self.send(objection(cid, kind, self.tick()))
        self.send(capture(cid, purpose, self.tick()))
        self.harness.scenarios["consent_after_objection"] += 1

    @rule(who=WHO, purpose=st.sampled_from(RULE_PURPOSES))
    def old_consent_after_withdrawal(self, who: int, purpose: Purpose) -> None:
        cid = self.customers[who]
        earlier = [
            s
            for s in self.sent[cid]
            if s.doc["type"] == "ConsentCaptured" and s.doc["purpose"] == purpose
        ]
        old = earlier[-1] if earlier else self.send(capture(cid, purpose, self.tick()))
        self.send(withdraw(cid, purpose, self.tick()))
        self.send(renewed(old.doc))
        assert not self.model[cid].allows(purpose)
        self.harness.scenarios["old_consent_after_withdrawal"] += 1

    @precondition(lambda self: any(self.sent.values()))
    @rule(data=st.data())
    def deliver_twice(self, data: st.DataObject) -> None:
        self.deliver_again(
            data.draw(st.sampled_from([s for subs in self.sent.values() for s in subs]))
        )

    def deliver_again(self, old: Submitted) -> None:
        """The same bytes again: a clinic app's retry, or a redelivery."""
        self.harness.call(self.harness.clinic.deliver(old))
        assert not self.model.apply(old.doc)
        self.touched.add(str(old.doc["customer_id"]))
        self.harness.scenarios["delivered_twice"] += 1

    @rule(pick=st.integers(min_value=0, max_value=2**16))
    def deliver_directive_twice(self, pick: int) -> None:
        """A directive already on `privacy.directives.v1`, published again as consent.

        Which one is drawn as a number first: what is on the topic is outside Hypothesis'
        control, so nothing it draws may depend on it.
        """
        h = self.harness
        ours = set(self.customers)
        stops = {"ConsentWithdrawn", "ObjectionLodged"}
        if not any(s.doc["type"] in stops for subs in self.sent.values() for s in subs):
            return  # no directive for these customers yet

        async def directives_seen() -> bool:
            await h.directives.poll(timeout_ms=50)
            return any(s.record.key.decode() in ours for s in h.directives.seen)

        h.call(eventually(directives_seen, within=10, what="a directive on the topic"))
        seen = [s.record for s in h.directives.seen if s.record.key.decode() in ours]
        record = seen[pick % len(seen)]
        h.call(
            h.redeliver.send_and_wait(
                DIRECTIVES_TOPIC, record.value, key=record.key, headers=list(record.headers)
            )
        )
        self.touched.add(record.key.decode())
        h.scenarios["directive_delivered_twice"] += 1

    # -- checks

    @invariant()
    def services_agree_with_the_versions(self) -> None:
        for cid in sorted(self.touched):
            self.harness.call(assert_agrees(self.harness.views, self.model[cid]))
        self.touched.clear()

    def teardown(self) -> None:
        self.harness.call(self.settle())

    async def settle(self) -> None:
        """Withdraw the barrier purposes; once fully applied, everything agrees for good."""
        h = self.harness
        active = [c for c in self.customers if self.model[c].version > 0]
        for cid in active:
            for purpose in BARRIERS:
                doc = withdraw(cid, purpose, self.tick())
                await h.clinic.send(doc)
                self.model.apply(doc)

        async def all_applied() -> bool:
            rows = [r for r in await h.views.directives(h.prefix) if r["customer_id"] in active]
            last = {
                r["customer_id"]
                for r in rows
                if r["consent_version"] == self.model[r["customer_id"]].version
            }
            return last == set(active) and all(r["fully_applied_at"] is not None for r in rows)

        await eventually(all_applied, within=60, what="every directive fully applied")
        for cid in self.customers:
            m = self.model[cid]
            await assert_agrees(h.views, m)
            if m.version and not m.allows(Purpose.ANALYTICS):
                assert await h.views.contributions(cid) == 0, "analytics kept a contribution"


def with_harness(infra: Infra, run: str, body: Callable[[Harness], None]) -> Harness:
    """Run `body` on a harness with an event loop of its own (in the calling thread)."""
    loop = asyncio.new_event_loop()
    harness = Harness.open(infra, run, loop)
    try:
        FanoutMachine.harness = harness
        body(harness)
    finally:
        harness.close()
        loop.close()
    return harness


def explore(_: Harness) -> None:
    """Random sequences of the machine's rules (fresh customers per example)."""
    run_state_machine_as_test(
        FanoutMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=12,
            deadline=None,
            database=None,  # examples run against live services: replaying one is moot
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def acceptance_script(_: Harness) -> None:
    """Each scenario the acceptance names, once, in order, checked after every step."""
    m = FanoutMachine()
    a, b, _c = m.customers
    check = m.services_agree_with_the_versions
    # A withdrawal before the customer's registration arrives (consent needs none).
    m.withdraw_before_registration(0, EMAIL)
    check()
    # Consent, then the withdrawal three times in a row.
    m.give(0, EMAIL)
    check()
    assert m.model[a].allows(EMAIL)
    m.withdraw_three_times(0, EMAIL)
    check()
    # An old consent replayed after the withdrawal (its own occurred_at, a new event id).
    m.old_consent_after_withdrawal(0, EMAIL)
    check()
    assert not m.model[a].allows(EMAIL)
    # Re-consent after an objection: still suppressed, until the customer lifts it.
    m.object_then_consent(b, "direct_marketing", EMAIL)
    check()
    assert not m.model[b].allows(EMAIL)
    lifted = m.send(lift(b, "direct_marketing", m.tick()))
    check()
    assert m.model[b].allows(EMAIL)
    # Objected again: the old lift replayed under a new event id lifts nothing.
    m.object_to(1, "direct_marketing")
    check()
    m.send(renewed(lifted.doc))
    check()
    assert not m.model[b].allows(EMAIL)
    # The same submission delivered twice; directives already seen delivered again.
    m.deliver_again(lifted)
    check()
    for pick in range(3):
        m.deliver_directive_twice(pick)
        check()
    # Analytics and photos: an objection, a consent and its withdrawal.
    m.object_to(2, "analytics")
    m.give(2, Purpose.PHOTO_STORAGE)
    m.withdraw_consent(2, Purpose.PHOTO_STORAGE)
    m.register(2)
    check()
    m.teardown()


async def test_acceptance_scenarios(fanout: Fanout) -> None:
    harness = await asyncio.to_thread(with_harness, fanout.infra, fanout.run, acceptance_script)
    missing = [s for s in SCENARIOS if harness.scenarios[s] == 0]
    assert not missing, f"scenarios never exercised: {missing}"
    assert_alive(fanout.system)
    assert_no_alerts(fanout.system)


async def test_final_state_is_what_the_versions_say(fanout: Fanout) -> None:
    started = time.monotonic()
    harness = await asyncio.to_thread(with_harness, fanout.infra, fanout.run, explore)
    log.info(
        "state machine: %d examples, %d commands, %s, %.0f s",
        next(harness.examples),
        harness.steps,
        dict(harness.scenarios),
        time.monotonic() - started,
    )
    assert harness.steps > 0
    assert_alive(fanout.system)
    assert_no_alerts(fanout.system)


# --- Withdrawal and audience at the same instant ----------------------------------------------

CONCURRENT_CUSTOMERS: Final = 24
EXPORT_READERS: Final = 2
CONTACT_READERS: Final = 2
NOT_CONTACTABLE_SQL: Final = """
SELECT v.customer_id
FROM consent_view v
WHERE v.customer_id = ANY($1::text[])
  AND (NOT ('marketing_email' = ANY (v.allowed))
       OR EXISTS (SELECT 1 FROM suppressions s
                  WHERE s.customer_id = v.customer_id AND s.purpose = 'marketing_email'))
"""
"""Which of the given customers marketing may not e-mail now (read under the export's locks)."""
EXPORTED_AT_SQL: Final = """
SELECT m.customer_id, m.consent_version
FROM audience_members m JOIN audience_exports e USING (export_id)
WHERE e.campaign = $1 AND m.customer_id = ANY($2::text[]) AND m.consent_version >= $3
"""


@dataclass(frozen=True)
class Answer:
    """One audience or `may_contact` answer: who it named, and when it was asked."""

    started: float
    named: frozenset[str]
    stale: frozenset[str] = frozenset()
    """Exported customers that were not contactable while the export held their rows."""


async def export_loop(
    conn: asyncpg.Connection[asyncpg.Record], campaign: str, ours: list[str], stop: asyncio.Event
) -> list[Answer]:
    """Ask for the e-mail audience over and over until `stop`."""
    answers: list[Answer] = []
    mine = set(ours)
    while not stop.is_set():
        started = time.monotonic()
        async with conn.transaction():
            members = await audience(conn, campaign, EMAIL)
            named = sorted(mine.intersection(members))
            # The exported rows stay locked FOR SHARE until this transaction ends: a stop for
            # any of them can neither be committed now nor have been committed unseen.
            stale = await conn.fetch(NOT_CONTACTABLE_SQL, named)
        answers.append(
            Answer(started, frozenset(named), frozenset(r["customer_id"] for r in stale))
        )
    return answers


async def contact_loop(
    conn: asyncpg.Connection[asyncpg.Record], ours: list[str], stop: asyncio.Event
) -> list[Answer]:
    """Ask `may_contact` for every customer over and over until `stop`."""
    answers: list[Answer] = []
    while not stop.is_set():
        for cid in ours:
            started = time.monotonic()
            allowed = await may_contact(conn, cid, EMAIL)
            answers.append(Answer(started, frozenset({cid}) if allowed else frozenset()))
    return answers


@dataclass
class Race:
    """Withdrawals published while audiences and `may_contact` are asked for, all at once."""

    ours: list[str]
    campaign: str
    clinic: Clinic
    acks: Tap
    withdrawn_at: datetime
    acked: dict[str, float] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def withdraw_all(self) -> None:
        for cid in self.ours:
            await self.clinic.send(withdraw(cid, EMAIL, self.withdrawn_at))
            await asyncio.sleep(0.04)

    async def watch_acks(self) -> None:
        """Note when marketing's answer to each stop is seen (its stop committed before)."""
        deadline = time.monotonic() + 60
        try:
            while len(self.acked) < len(self.ours):
                assert time.monotonic() < deadline, "marketing did not answer every stop"
                for seen in await self.acks.poll(timeout_ms=20):
                    if seen.record.value is None:
                        continue
                    answer = ProcessingStopped.model_validate_json(seen.record.value)
                    if answer.service == "marketing":
                        self.acked.setdefault(answer.customer_id, seen.at)
            await asyncio.sleep(0.3)  # keep asking a while after the last stop
        finally:
            self.stop.set()

    async def run(
        self,
        exporters: list[asyncpg.Connection[asyncpg.Record]],
        checkers: list[asyncpg.Connection[asyncpg.Record]],
    ) -> tuple[list[Answer], list[Answer]]:
        """Race; return every audience answer and every `may_contact` answer."""
        exports = [export_loop(c, self.campaign, self.ours, self.stop) for c in exporters]
        contacts = [contact_loop(c, self.ours, self.stop) for c in checkers]
        gathered = asyncio.gather(*exports, *contacts)
        try:
            await asyncio.gather(self.withdraw_all(), self.watch_acks())
        finally:
            self.stop.set()
            answers = await gathered
        return (
            [a for r in answers[: len(exports)] for a in r],
            [a for r in answers[len(exports) :] for a in r],
        )

    def late(self, answers: list[Answer]) -> list[tuple[str, float]]:
        """Customers named by an answer asked after marketing acknowledged their stop."""
        return [
            (cid, a.started - self.acked[cid])
            for a in answers
            for cid in a.named
            if a.started > self.acked[cid]
        ]


async def test_no_audience_includes_a_customer_after_the_withdrawal(
    fanout: Fanout, infra: Infra
) -> None:
    run = uuid.uuid4().hex[:8]
    prefix = f"W{fanout.run[:8]}-{run}-"
    ours = [f"{prefix}{i:03d}" for i in range(CONCURRENT_CUSTOMERS)]
    views = await Views.open(infra, ("consent", "marketing"))
    clinic = Clinic(infra)
    await clinic.start()
    acks = Tap(infra, "compliance", ACKS_TOPIC, prefix)
    await acks.start()
    conns = [
        await asyncpg.connect(infra.pg_dsn("marketing"))
        for _ in range(EXPORT_READERS + CONTACT_READERS)
    ]
    try:
        base = base_time()
        for cid in ours:
            await clinic.send(capture(cid, EMAIL, base))

        async def all_contactable() -> bool:
            return all([await views.may_contact(cid, EMAIL) for cid in ours])

        await eventually(all_contactable, within=60, what="consents applied in marketing")

        race = Race(ours, f"fanout-test.{run}", clinic, acks, base + timedelta(minutes=1))
        exports, contacts = await race.run(conns[:EXPORT_READERS], conns[EXPORT_READERS:])
        log.info(
            "concurrency: %d audiences and %d may_contact answers around %d withdrawals",
            len(exports),
            len(contacts),
            len(ours),
        )

        # Nothing asked after marketing acknowledged a stop names that customer.
        late = race.late(exports + contacts)
        assert late == [], f"contactable after the stop was acknowledged: {late[:5]}"
        # Nor did any export name a customer whose stop had been committed (under its locks).
        assert [a.stale for a in exports if a.stale] == []
        # No export was made under the withdrawal's consent version (2) or a later one.
        async with views.pools["marketing"].acquire() as conn:
            assert await conn.fetch(EXPORTED_AT_SQL, race.campaign, ours, 2) == []

        # The test really raced: every customer was exported before its stop and asked after.
        for cid in ours:
            assert any(cid in a.named for a in exports), f"{cid} never exported before its stop"
            assert any(a.started > race.acked[cid] for a in exports), "no export after the stop"
            assert any(a.started > race.acked[cid] for a in contacts), "no check after the stop"
            assert not await views.may_contact(cid, EMAIL)
        assert_alive(fanout.system)
        assert_no_alerts(fanout.system)
    finally:
        for c in conns:
            await c.close()
        await acks.stop()
        await clinic.stop()
        await views.close()
