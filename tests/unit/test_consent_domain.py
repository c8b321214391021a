"""Consent's rules without I/O: commands to history, state, directives; acks to fully applied.

The use cases run against the in-memory repository (same inbox and version checks as the
Postgres one); a Hypothesis state machine drives random sequences of captures, withdrawals,
objections, lifts and replays and checks the invariants: versions rise by exactly one per new
command, replays change nothing, and an objection is only ever lifted by an explicit lift.
The builders here are reused by the integration test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from contracts import consent as c
from contracts.audit import AuditEvent
from contracts.envelope import new_event_id
from contracts.intake import ConsentCaptured, ConsentWithdrawn, ObjectionLifted, ObjectionLodged
from contracts.sealing import TopicKey, seal
from services.common.kafka import PermanentError
from services.consent.domain import CustomerConsent, decide, from_documents, hold, to_documents
from services.consent.handlers import (
    apply_command,
    command_id_of,
    decode_ack,
    decode_command,
    hold_customer,
    record_ack,
)
from services.consent.repository import InMemoryConsent

T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
SHA = "a" * 64
CANARY_GROUNDS = f"Canary grounds {uuid.uuid4().hex[:8]}"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def customer_id(prefix: str = "K") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _envelope(cid: str, occurred: datetime, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": extra.pop("event_id", None) or new_event_id(),
        "customer_id": cid,
        "producer": "intake",
        "occurred_at": occurred,
        **extra,
    }


def captured(
    cid: str, purpose: str = "marketing_email", occurred: datetime = T0, **extra: Any
) -> ConsentCaptured:
    fields = {
        "purpose": purpose,
        "notice_version": "2026.1",
        "language": "fi",
        "notice_sha256": SHA,
        "channel": "kiosk",
        "evidence_ref": "kiosk-7:session-1",
    } | extra
    return ConsentCaptured.model_validate(_envelope(cid, occurred, fields))


def withdrawn(
    cid: str, purpose: str = "marketing_email", occurred: datetime = T0, **extra: Any
) -> ConsentWithdrawn:
    fields = {"purpose": purpose, "channel": "web"} | extra
    return ConsentWithdrawn.model_validate(_envelope(cid, occurred, fields))


def objected(
    cid: str, objection: str = "direct_marketing", occurred: datetime = T0, **extra: Any
) -> ObjectionLodged:
    fields = {"objection": objection, "channel": "desk", "recorded_by": "staff-3"} | extra
    return ObjectionLodged.model_validate(_envelope(cid, occurred, fields))


def lifted(
    cid: str, objection: str = "direct_marketing", occurred: datetime = T0, **extra: Any
) -> ObjectionLifted:
    fields = {"objection": objection, "channel": "web"} | extra
    return ObjectionLifted.model_validate(_envelope(cid, occurred, fields))


def sealed_record(command: Any, key: TopicKey, *, record_key: str | None = None) -> ConsumerRecord:
    wire = seal(command.model_dump(mode="json"), key)
    value = json.dumps(wire).encode()
    return raw_record(value, record_key or command.customer_id)


def raw_record(
    value: bytes | None, key: str | None, topic: str = c.COMMANDS_TOPIC
) -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=key.encode() if key else None,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=[],
    )


def run(state: CustomerConsent, *commands: Any) -> tuple[CustomerConsent, list[Any]]:
    decisions = []
    for command in commands:
        decision = decide(state, command, now=at(100))
        decisions.append(decision)
        state = decision.state
    return state, decisions


# --- The catalogue -------------------------------------------------------------------------


def test_catalogue_covers_every_purpose_with_a_basis_and_services() -> None:
    assert set(c.CATALOGUE) == set(c.LEGAL_BASIS) == set(c.SERVICES_BY_PURPOSE) == set(c.Purpose)
    assert c.LEGAL_BASIS[c.Purpose.MARKETING_EMAIL] == "consent"
    assert c.LEGAL_BASIS[c.Purpose.MARKETING_POST] == "legitimate_interests"
    assert c.CATALOGUE[c.Purpose.PHOTO_MARKETING_USE].explicit
    assert c.CONSENT_BASED.isdisjoint(c.OPT_OUT)
    assert c.affected_services(c.MARKETING | {c.Purpose.RESEARCH}) == ("marketing",)
    assert c.AFFECTED_SERVICES([c.Purpose.WEB_ANALYTICS, "photo_storage"]) == (
        "analytics",
        "photos",
    )
    assert c.SUPPRESSES[c.ObjectionKind.DIRECT_MARKETING] == c.MARKETING
    assert {c.ObjectionKind.DIRECT_MARKETING, c.ObjectionKind.RESEARCH} == c.ABSOLUTE


def test_effective_fails_closed() -> None:
    assert not c.effective(None, c.Purpose.ANALYTICS)
    state, _ = run(CustomerConsent("K-1"), captured("K-1"))
    snap = decide(state, withdrawn("K-1", "marketing_sms"), now=at(1)).snapshot
    assert c.effective(snap, c.Purpose.MARKETING_EMAIL)
    assert not c.effective(snap, c.Purpose.MARKETING_SMS)
    assert c.effective(snap, c.Purpose.MARKETING_POST)  # legitimate interest, not refused
    assert not c.effective(snap, c.Purpose.WEB_ANALYTICS)  # opt-in, nothing given
    held = snap.model_copy(update={"held": True})
    assert not c.effective(held, c.Purpose.MARKETING_EMAIL)


# --- Commands ------------------------------------------------------------------------------


def test_a_capture_is_a_27560_record_and_allows_the_purpose() -> None:
    command = captured("K-1", recorded_by="staff-3", actor="guardian", actor_id="G-77")
    decision = decide(CustomerConsent("K-1"), command, now=at(5))
    (record,) = decision.history
    assert isinstance(record, c.ConsentRecorded)
    assert (record.version, record.status, record.legal_basis) == (1, "given", "consent")
    assert (record.notice_id, record.notice_version, record.notice_language) == (
        "consent.marketing_email",
        "2026.1",
        "fi",
    )
    assert record.notice_sha256 == SHA
    assert (record.channel, record.actor, record.actor_id, record.recorded_by) == (
        "kiosk",
        "guardian",
        "G-77",
        "staff-3",
    )
    assert record.occurred_at == T0
    assert record.recorded_at == at(5)
    assert record.evidence_ref == "kiosk-7:session-1"
    assert record.command_id == command.event_id
    assert decision.directive is None
    assert decision.notice == ("consent.marketing_email", "2026.1", "fi", SHA)
    snap = decision.snapshot
    assert snap.version == 1
    assert set(snap.purposes) == set(c.Purpose)
    assert snap.purposes[c.Purpose.MARKETING_EMAIL].allowed
    assert decision.audit.action == "consent_change"
    assert (decision.audit.actor, decision.audit.actor_role) == ("staff-3", "staff")
    assert decision.audit.purpose == "marketing_email"


def test_a_withdrawal_before_anything_else_is_recorded_and_stops() -> None:
    decision = decide(CustomerConsent("K-2"), withdrawn("K-2", "photo_storage"), now=at(1))
    (record,) = decision.history
    assert isinstance(record, c.ConsentRecorded)
    assert (record.version, record.status) == (1, "withdrawn")
    assert record.notice_id is None
    directive = decision.directive
    assert directive is not None
    assert directive.purposes == (c.Purpose.PHOTO_STORAGE,)
    assert directive.services == ("photos",)
    assert (directive.reason, directive.consent_version) == ("withdrawal", 1)
    assert directive.directive_id == directive.event_id
    assert directive.producer == "consent"


def test_staff_acting_for_the_customer_revoke() -> None:
    decision = decide(
        CustomerConsent("K-3"), withdrawn("K-3", actor="staff", actor_id="staff-9"), now=at(1)
    )
    assert decision.history[0].status == "revoked"  # type: ignore[attr-defined]
    assert decision.state.status(c.Purpose.MARKETING_EMAIL) is c.ConsentStatus.REVOKED


def test_an_objection_suppresses_every_marketing_channel_until_lifted() -> None:
    cid = "K-4"
    state, decisions = run(
        CustomerConsent(cid),
        captured(cid, "marketing_email", at(0)),
        objected(cid, "distance_selling", at(1), grounds=CANARY_GROUNDS),
        captured(cid, "marketing_sms", at(2)),  # re-consent: the suppression stays
        captured(cid, "marketing_email", at(3)),
    )
    objection = decisions[1]
    (record,) = objection.history
    assert isinstance(record, c.ObjectionRecorded)
    assert record.objection is c.ObjectionKind.DIRECT_MARKETING
    assert record.absolute
    assert set(record.purposes) == c.MARKETING
    assert CANARY_GROUNDS not in record.model_dump_json()
    assert objection.directive is not None
    assert set(objection.directive.purposes) == c.MARKETING
    assert objection.directive.reason == "objection"
    assert objection.directive.services == ("marketing",)
    assert state.status(c.Purpose.MARKETING_SMS) is c.ConsentStatus.GIVEN
    for purpose in c.MARKETING:
        assert not state.allowed(purpose)
    snap = decisions[-1].snapshot
    assert snap.suppressions == (c.ObjectionKind.DIRECT_MARKETING,)
    assert not c.effective(snap, c.Purpose.MARKETING_EMAIL)
    assert c.effective(snap, c.Purpose.RESEARCH)  # another purpose, another objection

    after = decide(state, lifted(cid, "direct_marketing", at(4)), now=at(100))
    assert after.history[0].applied  # type: ignore[attr-defined]
    assert after.directive is None
    assert after.state.allowed(c.Purpose.MARKETING_EMAIL)
    assert after.state.allowed(c.Purpose.MARKETING_SMS)
    assert after.state.allowed(c.Purpose.MARKETING_PHONE)


def test_a_lift_expressed_before_the_objection_lifts_nothing() -> None:
    cid = "K-5"
    state, decisions = run(
        CustomerConsent(cid),
        objected(cid, "market_research", at(10)),
        lifted(cid, "opinion_research", at(5)),
        lifted(cid, "analytics", at(20)),  # nothing to lift
    )
    assert not decisions[1].history[0].applied
    assert not decisions[2].history[0].applied
    assert state.objections.keys() == {c.ObjectionKind.RESEARCH}
    assert not state.allowed(c.Purpose.RESEARCH)
    assert state.version == 3


def test_a_late_consent_never_overrides_a_later_withdrawal() -> None:
    cid = "K-6"
    state, decisions = run(
        CustomerConsent(cid),
        withdrawn(cid, "marketing_email", at(10)),
        captured(cid, "marketing_email", at(5)),  # expressed earlier, arrived later
    )
    record = decisions[1].history[0]
    assert isinstance(record, c.ConsentRecorded)
    assert not record.applied
    assert record.version == 2
    assert state.status(c.Purpose.MARKETING_EMAIL) is c.ConsentStatus.WITHDRAWN
    assert not state.allowed(c.Purpose.MARKETING_EMAIL)


def test_a_refusal_stops_only_what_was_allowed() -> None:
    cid = "K-7"
    state, decisions = run(
        CustomerConsent(cid),
        captured(cid, "marketing_post", at(1), status="refused"),  # opt-out: was allowed
        captured(cid, "marketing_sms", at(2), status="refused"),  # opt-in: never was
    )
    assert decisions[0].directive is not None
    assert decisions[0].directive.purposes == (c.Purpose.MARKETING_POST,)
    assert decisions[1].directive is None
    assert not state.allowed(c.Purpose.MARKETING_POST)


def test_photo_consents_cover_single_photos() -> None:
    cid = "K-8"
    use = "photo_marketing_use"
    state, decisions = run(
        CustomerConsent(cid),
        captured(cid, use, at(1), photo_id="ph-1"),
        captured(cid, use, at(2), photo_id="ph-2"),
        withdrawn(cid, use, at(3), photo_id="ph-1"),
    )
    snap = decisions[-1].snapshot
    assert snap.purposes[c.Purpose.PHOTO_MARKETING_USE].photo_ids == ("ph-2",)
    assert c.effective(snap, c.Purpose.PHOTO_MARKETING_USE, "ph-2")
    assert not c.effective(snap, c.Purpose.PHOTO_MARKETING_USE, "ph-1")
    assert not c.effective(snap, c.Purpose.PHOTO_MARKETING_USE)
    directive = decisions[-1].directive
    assert directive is not None
    assert directive.photo_ids == ("ph-1",)
    last = decide(state, withdrawn(cid, use, at(4), photo_id="ph-2"), now=at(100))
    assert last.state.status(c.Purpose.PHOTO_MARKETING_USE) is c.ConsentStatus.WITHDRAWN
    assert last.directive is not None
    assert last.directive.photo_ids == ()


def test_a_hold_stops_everything_until_the_failed_command_is_applied() -> None:
    cid = "K-9"
    state, _ = run(CustomerConsent(cid), captured(cid))
    failed = withdrawn(cid, "marketing_email", at(1))
    decision = hold(
        state, failed.event_id, "sealed_undecryptable", now=at(2), correlation_id=failed.event_id
    )
    assert decision is not None
    assert decision.state.held
    assert decision.snapshot.held
    assert not any(p.allowed for p in decision.snapshot.purposes.values())
    assert decision.directive is not None
    assert set(decision.directive.purposes) == set(c.Purpose)
    assert decision.directive.services == ("analytics", "marketing", "photos")
    assert decision.directive.reason == "hold"
    assert (
        hold(decision.state, failed.event_id, "again", now=at(3), correlation_id=failed.event_id)
        is None
    )
    replayed = decide(decision.state, failed, now=at(4))
    assert [type(e).__name__ for e in replayed.history] == ["ConsentHeld", "ConsentRecorded"]
    assert [e.version for e in replayed.history] == [3, 4]  # type: ignore[attr-defined]
    assert not replayed.state.held
    assert not replayed.state.allowed(c.Purpose.MARKETING_EMAIL)  # the withdrawal applied
    assert replayed.state.allowed(c.Purpose.MARKETING_POST)


def test_stored_documents_round_trip() -> None:
    cid = "K-10"
    state, _ = run(
        CustomerConsent(cid),
        captured(cid, "photo_storage", at(1), photo_id="p-1"),
        objected(cid, "analytics", at(2)),
    )
    state = hold(state, uuid.uuid4(), "x", now=at(3), correlation_id=uuid.uuid4()).state  # type: ignore[union-attr]
    docs = json.loads(json.dumps(to_documents(state)))
    assert from_documents(cid, state.version, *docs) == state


def test_a_command_for_another_customer_is_refused() -> None:
    with pytest.raises(Exception, match="customer_mismatch"):
        decide(CustomerConsent("K-11"), captured("K-12"), now=at(1))


# --- Use cases on the in-memory repository -----------------------------------------------


async def test_a_replayed_command_is_a_no_op() -> None:
    repo = InMemoryConsent()
    command = withdrawn("K-20")
    first = await apply_command(repo, command, now=at(1))
    assert first.applied
    assert first.version == 1
    assert first.directive_id is not None
    written = list(repo.outbox)
    again = await apply_command(repo, command, now=at(2))
    assert not again.applied
    assert repo.outbox == written
    assert [t for t, _ in written] == [
        c.EVENTS_TOPIC,
        c.STATE_TOPIC,
        c.DIRECTIVES_TOPIC,
        "audit.events.v1",
    ]


async def test_a_capture_without_a_hash_takes_it_from_the_notice_catalogue() -> None:
    repo = InMemoryConsent()
    await apply_command(repo, captured("K-21", notice_sha256="b" * 64), now=at(1))
    await apply_command(repo, captured("K-21", notice_sha256=None), now=at(2))
    await apply_command(repo, captured("K-21", notice_sha256=None, language="sv"), now=at(3))
    hashes = [e.notice_sha256 for e in repo.history["K-21"]]  # type: ignore[attr-defined]
    assert hashes == ["b" * 64, "b" * 64, None]


async def test_objection_grounds_never_leave_the_service() -> None:
    repo = InMemoryConsent()
    await apply_command(repo, objected("K-22", "analytics", grounds=CANARY_GROUNDS), now=at(1))
    for _, event in repo.outbox:
        assert CANARY_GROUNDS not in event.model_dump_json()


async def test_hold_customer_writes_once() -> None:
    repo = InMemoryConsent()
    command_id = uuid.uuid4()
    assert await hold_customer(repo, "K-23", command_id=command_id, reason="not_json") is not None
    assert await hold_customer(repo, "K-23", command_id=command_id, reason="not_json") is None
    assert repo.current["K-23"].version == 1


def ack(
    directive: c.ProcessingStopRequested, service: str, **overrides: Any
) -> c.ProcessingStopped:
    return c.ProcessingStopped.model_validate(
        {
            "producer": service,
            "service": service,
            "customer_id": directive.customer_id,
            "directive_id": directive.directive_id,
            "consent_version": directive.consent_version,
        }
        | overrides
    )


async def test_a_directive_is_fully_applied_when_every_expected_service_answered() -> None:
    repo = InMemoryConsent()
    cid = "K-24"
    await apply_command(repo, withdrawn(cid, "marketing_email", at(0)), now=at(1))
    await apply_command(repo, withdrawn(cid, "web_analytics", at(1)), now=at(1))
    # A hold stops every purpose: three services must answer.
    await hold_customer(repo, cid, command_id=uuid.uuid4(), reason="x")
    directive = [e for t, e in repo.outbox if t == c.DIRECTIVES_TOPIC][-1]
    assert isinstance(directive, c.ProcessingStopRequested)
    assert directive.services == ("analytics", "marketing", "photos")

    first = ack(directive, "marketing")
    assert (await record_ack(repo, first)).outcome == "recorded"
    assert (await record_ack(repo, first)).outcome == "duplicate"
    assert (await record_ack(repo, ack(directive, "marketing"))).outcome == "repeated"
    assert (await record_ack(repo, ack(directive, "records"))).outcome == "recorded"
    assert (await record_ack(repo, ack(directive, "analytics"))).outcome == "recorded"
    assert repo.directives[directive.directive_id].fully_applied_at is None
    assert repo.directives[directive.directive_id].pending == ("photos",)
    done = await record_ack(repo, ack(directive, "photos"))
    assert done.outcome == "fully_applied"
    assert done.latency_ms is not None
    assert done.latency_ms >= 0
    status = repo.directives[directive.directive_id]
    assert status.fully_applied_at is not None
    assert status.pending == ()
    assert (await record_ack(repo, ack(directive, "photos"))).outcome == "repeated"


async def test_acks_for_other_directives_and_mismatches() -> None:
    repo = InMemoryConsent()
    await apply_command(repo, withdrawn("K-25"), now=at(1))
    directive = next(e for t, e in repo.outbox if t == c.DIRECTIVES_TOPIC)
    assert isinstance(directive, c.ProcessingStopRequested)
    unknown = ack(directive, "marketing", directive_id=uuid.uuid4())
    assert (await record_ack(repo, unknown)).outcome == "unknown_directive"
    with pytest.raises(PermanentError, match="ack_mismatch"):
        await record_ack(repo, ack(directive, "marketing", consent_version=9))


# --- The wire ------------------------------------------------------------------------------


KEY = TopicKey.from_b64(TopicKey.generate())


def test_sealed_commands_decode() -> None:
    for command in (captured("K-30"), withdrawn("K-30"), objected("K-30"), lifted("K-30")):
        assert decode_command(sealed_record(command, KEY), KEY) == command


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: raw_record(b"\xff{", "K-31"), "not_json"),
        (lambda: raw_record(b"[1]", "K-31"), "not_object"),
        (
            lambda: raw_record(json.dumps({"type": "CustomerRegistered"}).encode(), "K-31"),
            "unexpected_type",
        ),
        (
            lambda: sealed_record(captured("K-31"), TopicKey.from_b64(TopicKey.generate())),
            "sealed_undecryptable",
        ),
        (lambda: sealed_record(captured("K-31"), KEY, record_key="K-32"), "key_mismatch"),
    ],
)
def test_malformed_commands_are_permanent_with_a_code(make: Any, reason: str) -> None:
    with pytest.raises(PermanentError) as caught:
        decode_command(make(), KEY)
    assert caught.value.reason == reason


def test_tampered_commands_are_undecryptable_and_keep_their_id_for_the_hold() -> None:
    command = withdrawn("K-33")
    record = sealed_record(command, KEY)
    wire = json.loads(record.value)
    wire["sealed"] = base64.b64encode(b"\x01" + b"x" * 60).decode()
    bad = raw_record(json.dumps(wire).encode(), "K-33")
    with pytest.raises(PermanentError, match="sealed_undecryptable"):
        decode_command(bad, KEY)
    assert command_id_of(bad) == command.event_id
    garbage = raw_record(b"nope", "K-33")
    assert command_id_of(garbage) == command_id_of(raw_record(b"nope", "K-33"))


def test_acks_decode_and_other_types_are_ignored() -> None:
    directive_id = uuid.uuid4()
    answer = c.ProcessingStopped(
        producer="photos",
        service="photos",
        customer_id="K-34",
        directive_id=directive_id,
        consent_version=3,
    )
    topic = c.ACKS_TOPIC
    assert decode_ack(raw_record(answer.to_bytes(), "K-34", topic)) == answer
    assert decode_ack(raw_record(b'{"type": "ErasureCompleted"}', "K-34", topic)) is None
    assert decode_ack(raw_record(None, "K-34", topic)) is None
    with pytest.raises(PermanentError, match="key_mismatch"):
        decode_ack(raw_record(answer.to_bytes(), "K-35", topic))
    with pytest.raises(PermanentError, match="invalid_ack"):
        decode_ack(raw_record(b'{"type": "ProcessingStopped"}', "K-34", topic))


def test_audit_events_are_pii_free_codes() -> None:
    decision = decide(CustomerConsent("K-36"), objected("K-36", grounds=CANARY_GROUNDS), now=at(1))
    assert isinstance(decision.audit, AuditEvent)
    assert decision.audit.action == "object"
    assert decision.audit.resource == "consent.objection"
    assert CANARY_GROUNDS not in decision.audit.model_dump_json()


# --- Properties ----------------------------------------------------------------------------

PURPOSES = st.sampled_from(
    ["marketing_email", "marketing_post", "research", "photo_storage", "web_analytics"]
)
OBJECTIONS = st.sampled_from(
    ["direct_marketing", "distance_selling", "market_research", "analytics"]
)
MINUTES = st.integers(min_value=0, max_value=60)


class ConsentMachine(RuleBasedStateMachine):
    """Random command sequences through the use case, checked against the invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.repo = InMemoryConsent()
        self.cid = "K-prop"
        self.applied: list[Any] = []
        self.version = 0

    def state(self) -> CustomerConsent:
        return self.repo.current.get(self.cid, CustomerConsent(self.cid))

    def apply(self, command: Any) -> None:
        before = self.state()
        result = asyncio.run(apply_command(self.repo, command, now=at(1000)))
        after = self.state()
        assert result.applied
        assert after.version == before.version + 1  # strictly rises, one per change
        # No objection disappears except by an explicit, applied lift of that very kind.
        for kind in before.objections:
            if kind not in after.objections:
                assert isinstance(command, ObjectionLifted)
                assert c.OBJECTION_ALIASES[command.objection] is kind
                assert command.occurred_at >= before.objections[kind]
        self.applied.append(command)
        self.version = after.version

    @rule(purpose=PURPOSES, minute=MINUTES, refused=st.booleans())
    def capture(self, purpose: str, minute: int, refused: bool) -> None:
        status = "refused" if refused else "given"
        self.apply(captured(self.cid, purpose, at(minute), status=status))

    @rule(purpose=PURPOSES, minute=MINUTES, staff=st.booleans())
    def withdraw(self, purpose: str, minute: int, staff: bool) -> None:
        actor = {"actor": "staff", "actor_id": "staff-1"} if staff else {}
        self.apply(withdrawn(self.cid, purpose, at(minute), **actor))

    @rule(objection=OBJECTIONS, minute=MINUTES)
    def object(self, objection: str, minute: int) -> None:
        self.apply(objected(self.cid, objection, at(minute)))

    @rule(objection=OBJECTIONS, minute=MINUTES)
    def lift(self, objection: str, minute: int) -> None:
        self.apply(lifted(self.cid, objection, at(minute)))

    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        if not self.applied:
            return
        command = data.draw(st.sampled_from(self.applied))
        before, outbox = self.state(), list(self.repo.outbox)
        result = asyncio.run(apply_command(self.repo, command, now=at(2000)))
        assert not result.applied
        assert self.state() == before
        assert self.repo.outbox == outbox

    @invariant()
    def history_is_contiguous_and_state_agrees(self) -> None:
        history = self.repo.history.get(self.cid, [])
        assert [e.version for e in history] == list(range(1, self.version + 1))  # type: ignore[attr-defined]
        state = self.state()
        states = [e for t, e in self.repo.outbox if t == c.STATE_TOPIC]
        if states:
            snap = states[-1]
            assert isinstance(snap, c.ConsentState)
            assert snap.version == state.version
            for purpose in c.Purpose:
                assert snap.purposes[purpose].allowed == state.allowed(purpose)
                assert c.effective(snap, purpose) == state.allowed(purpose) or bool(
                    snap.purposes[purpose].photo_ids
                )
                if purpose in state.suppressed():
                    assert not c.effective(snap, purpose)
        directives = [e for t, e in self.repo.outbox if t == c.DIRECTIVES_TOPIC]
        versions = [d.consent_version for d in directives]  # type: ignore[attr-defined]
        assert versions == sorted(set(versions))


ConsentMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestConsentMachine = ConsentMachine.TestCase
