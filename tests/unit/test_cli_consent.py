"""`rekisteri consent` and `rekisteri marketing audience` without a network.

Consent is the real use case on its in-memory repository (`apply_command`, `record_ack` on
`InMemoryConsent`), read back as `load_consent` would return it. The wire to intake is a fake
that applies, rejects, holds or ignores what is sent; audit events are read back from a fake
connection's outbox rows, as `services.common.audit.emit` writes them. The commands run through
typer's `CliRunner` with the store and the wire swapped for these fakes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Self, get_args

import pytest
from typer.testing import CliRunner

import cli.consent
import cli.marketing
from cli.consent import (
    DENIED,
    NOT_FOUND,
    Change,
    ChangeRequest,
    LookRequest,
    NoticeLanguage,
    Outcome,
    Store,
    Where,
    Who,
    build_submission,
    change_consent,
    check_actor,
    consent_document,
    look,
    record_change,
)
from cli.customer import Staff, StaffRole, UsageError
from cli.main import app
from cli.marketing import (
    AudienceChannel,
    AudienceRequest,
    audience_document,
    audience_request,
    export,
)
from contracts import consent as c
from contracts.audit import AUDIT_TOPIC, AuditEvent
from contracts.intake import (
    ConsentCaptured,
    ConsentWithdrawn,
    Language,
    ObjectionLifted,
    ObjectionLodged,
    ObjectionName,
    Reason,
    Submission,
    SubmissionRejected,
)
from services.consent.domain import snapshot
from services.consent.handlers import apply_command, hold_customer, record_ack
from services.consent.repository import ConsentView, InMemoryConsent
from services.marketing.domain import CHANNELS

runner = CliRunner()
HETU = "120785-912R"
RECEPTION = Staff("t1", StaffRole.RECEPTION)
MARKETER = Staff("m1", StaffRole.MARKETING)


def db(conn: FakeConn) -> Any:
    """The fake as the connection type the code under test expects."""
    return conn


def new_customer() -> str:
    return f"K{uuid.uuid4().hex[:12]}"


# --- Fakes -------------------------------------------------------------------------------------


class FakeConn:
    """What `audit.emit` needs of a connection (a transaction and `execute`), and nothing else."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.transactions = 0

    def is_in_transaction(self) -> bool:
        return True

    @asynccontextmanager
    async def transaction(self, **_options: Any) -> AsyncIterator[None]:
        self.transactions += 1
        yield

    async def execute(self, _sql: str, *args: Any) -> str:
        self.rows.append(args)
        return "INSERT 0 1"

    def audit_events(self) -> list[tuple[str | None, AuditEvent]]:
        out = []
        for _event_id, topic, key, _headers, payload, _aggregate, _type in self.rows:
            assert topic == AUDIT_TOPIC
            out.append((key, AuditEvent.model_validate_json(payload)))
        return out


class FakeConsent:
    """The consent service on its in-memory repository, read as `load_consent` returns it.

    `answering` names the services that answer every directive the next time it is read (the
    fan-out, compressed).
    """

    def __init__(self, *, answering: tuple[str, ...] = ()) -> None:
        self.repo = InMemoryConsent()
        self.answering = answering
        self.reads = 0

    async def apply(self, command: Any) -> None:
        await apply_command(self.repo, command)

    async def view(self, customer_id: str) -> ConsentView | None:
        self.reads += 1
        for directive in list(self.repo.directives.values()):
            if directive.customer_id != customer_id or directive.fully_applied_at is not None:
                continue
            for service in self.answering:
                if service in directive.expected_services:
                    await record_ack(
                        self.repo,
                        c.ProcessingStopped(
                            producer=service,
                            service=service,
                            customer_id=customer_id,
                            directive_id=directive.directive_id,
                            consent_version=directive.consent_version,
                        ),
                    )
        state = self.repo.current.get(customer_id)
        if state is None or state.version == 0:
            return None
        directives = sorted(
            (d for d in self.repo.directives.values() if d.customer_id == customer_id),
            key=lambda d: d.consent_version,
        )
        return ConsentView(
            state=snapshot(state, now=datetime.now(UTC)),
            history=tuple(self.repo.history.get(customer_id, ())),
            directives=tuple(directives),
        )


class FakeWire:
    """Intake and the consent service behind it: applies (after `polls` polls), rejects, holds
    the customer, or never answers."""

    def __init__(
        self,
        consent: FakeConsent,
        mode: str = "apply",
        *,
        polls: int = 1,
        reasons: tuple[Reason, ...] = (Reason(code="field_format", field="notice_version"),),
    ) -> None:
        self.consent = consent
        self.mode = mode
        self.polls_before = polls
        self.reasons = reasons
        self.sent: list[Submission] = []
        self.polls = 0
        self.opened = 0

    async def __aenter__(self) -> Self:
        self.opened += 1
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None

    async def send(self, submission: Submission) -> None:
        self.sent.append(submission)

    async def rejection(self, event_id: uuid.UUID, within: float) -> SubmissionRejected | None:
        assert within > 0
        self.polls += 1
        await asyncio.sleep(0)
        submission = self.sent[-1]
        assert submission.event_id == event_id
        if self.mode == "reject":
            return SubmissionRejected(
                producer="intake", submission_event_id=event_id, reasons=self.reasons
            )
        if self.polls == self.polls_before:
            if self.mode == "apply":
                await self.consent.apply(submission)
            elif self.mode == "hold":
                await hold_customer(
                    self.consent.repo,
                    str(submission.customer_id),
                    command_id=event_id,
                    reason="invalid_command",
                )
        return None


def give(cid: str, staff: Staff = RECEPTION, **extra: Any) -> ChangeRequest:
    fields: dict[str, Any] = {"purpose": c.Purpose.MARKETING_EMAIL, "notice_version": "2026.1"}
    return ChangeRequest(Change.GIVE, cid, staff, **(fields | extra))


def withdraw(cid: str, staff: Staff = RECEPTION, **extra: Any) -> ChangeRequest:
    fields: dict[str, Any] = {"purpose": c.Purpose.MARKETING_EMAIL}
    return ChangeRequest(Change.WITHDRAW, cid, staff, **(fields | extra))


# --- The submissions -------------------------------------------------------------------------


def test_the_cli_vocabularies_match_the_contracts() -> None:
    assert {w.value for w in Where} == set(get_args(c.ConsentChannel))
    assert {w.value for w in Who} == set(get_args(c.Actor))
    assert {n.value for n in NoticeLanguage} == set(get_args(Language))
    assert {k.value for k in c.ObjectionKind} <= set(get_args(ObjectionName))
    assert {ch.value for ch in AudienceChannel} == {p.value for p in CHANNELS}


def test_a_give_is_the_clinic_apps_consent_captured_entered_by_staff() -> None:
    cid = new_customer()
    request = give(cid, channel=Where.PHONE, language=NoticeLanguage.SV, evidence_ref="call-42")
    submission = build_submission(request)
    assert isinstance(submission, ConsentCaptured)
    assert submission.event_id == request.event_id
    assert submission.correlation_id == request.correlation_id
    assert submission.customer_id == cid
    assert submission.producer == "rekisteri-cli"
    assert submission.purpose is c.Purpose.MARKETING_EMAIL
    assert submission.status == "given"
    assert submission.notice_version == "2026.1"
    assert submission.language == "sv"
    assert submission.channel == "phone"
    assert submission.actor == "customer"
    assert submission.actor_id is None
    assert submission.recorded_by == "t1"
    assert submission.evidence_ref == "call-42"


def test_staff_acting_for_the_customer_is_the_actor_and_a_guardian_is_named() -> None:
    cid = new_customer()
    revoked = build_submission(withdraw(cid, actor=Who.STAFF))
    assert isinstance(revoked, ConsentWithdrawn)
    assert (revoked.actor, revoked.actor_id, revoked.recorded_by) == ("staff", "t1", "t1")
    guardian = build_submission(withdraw(cid, actor=Who.GUARDIAN, actor_id="G-77"))
    assert (guardian.actor, guardian.actor_id) == ("guardian", "G-77")  # type: ignore[attr-defined]


def test_objections_and_lifts() -> None:
    cid = new_customer()
    lodged = build_submission(
        ChangeRequest(Change.OBJECT, cid, MARKETER, objection=c.ObjectionKind.DIRECT_MARKETING)
    )
    assert isinstance(lodged, ObjectionLodged)
    assert lodged.objection == "direct_marketing"
    assert lodged.recorded_by == "m1"
    lifted = build_submission(
        ChangeRequest(
            Change.LIFT, cid, RECEPTION, objection=c.ObjectionKind.RESEARCH, actor=Who.GUARDIAN
        )
    )
    assert isinstance(lifted, ObjectionLifted)
    assert (lifted.objection, lifted.actor) == ("research", "guardian")
    with pytest.raises(UsageError, match="only the customer or their guardian"):
        build_submission(
            ChangeRequest(
                Change.LIFT, cid, RECEPTION, objection=c.ObjectionKind.RESEARCH, actor=Who.STAFF
            )
        )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (give("K1", notice_version=None), "--notice-version is required"),
        (give("K1", purpose=None), "--purpose is required"),
        (ChangeRequest(Change.OBJECT, "K1", RECEPTION), "--kind is required"),
        (give("K1", notice_version="2026 spring"), "--notice-version"),
        (give("K1", evidence_ref="line\nbreak"), "--evidence"),
        (give("K1", photo_id="../x"), "--photo-id"),
    ],
)
def test_bad_options_are_usage_errors_that_never_quote_the_value(
    request_: ChangeRequest, message: str
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        build_submission(request_)
    for value in ("2026 spring", "line", "../x"):
        assert value not in str(caught.value)


def test_actor_ids_name_guardians_only() -> None:
    assert check_actor(Who.GUARDIAN, "G-77") == "G-77"
    assert check_actor(Who.CUSTOMER, None) is None
    with pytest.raises(UsageError, match="--actor guardian only"):
        check_actor(Who.CUSTOMER, "G-77")
    with pytest.raises(UsageError, match="guardian's customer number") as caught:
        check_actor(Who.GUARDIAN, HETU)
    assert HETU not in str(caught.value)


# --- Looking, audited -------------------------------------------------------------------------


async def test_a_look_is_audited_and_unknown_or_denied_looks_too() -> None:
    consent = FakeConsent()
    cid = new_customer()
    await consent.apply(build_submission(give(cid)))

    conn = FakeConn()
    found = await look(consent, db(conn), LookRequest(cid, RECEPTION))
    assert found.view is not None
    assert found.error is None
    [(key, event)] = conn.audit_events()
    assert key == cid
    assert event == found.audited[0]
    assert (event.producer, event.action, event.resource, event.outcome) == (
        "consent",
        "read",
        "consent.state",
        "success",
    )
    assert (event.actor, event.actor_role) == ("t1", "reception")

    conn = FakeConn()
    missing = await look(consent, db(conn), LookRequest("nobody-" + cid, RECEPTION))
    assert (missing.view, missing.error) == (None, NOT_FOUND)
    [(key, event)] = conn.audit_events()
    assert key is None
    assert event.customer_id is None
    assert (event.outcome, event.reason_code) == ("failed", NOT_FOUND)

    for target, expected_key in ((cid, cid), ("nobody-" + cid, None)):
        conn = FakeConn()
        denied = await look(consent, db(conn), LookRequest(target, MARKETER))
        assert (denied.view, denied.error) == (None, DENIED)
        [(key, event)] = conn.audit_events()
        assert key == expected_key
        assert (event.outcome, event.reason_code, event.actor_role) == (
            "denied",
            DENIED,
            "marketing",
        )


async def test_the_document_shows_every_purpose_with_its_record_and_the_fan_out() -> None:
    consent = FakeConsent(answering=("marketing",))
    cid = new_customer()
    await consent.apply(build_submission(give(cid, channel=Where.KIOSK, evidence_ref="k-1")))
    await consent.apply(build_submission(give(cid, purpose=c.Purpose.MARKETING_SMS)))
    await consent.apply(
        build_submission(
            ChangeRequest(Change.OBJECT, cid, RECEPTION, objection=c.ObjectionKind.RESEARCH)
        )
    )
    await consent.apply(build_submission(withdraw(cid, actor=Who.STAFF)))
    view = await consent.view(cid)
    assert view is not None
    doc = consent_document(view, directives=1)
    assert json.loads(json.dumps(doc)) == doc
    assert doc["customer_id"] == cid
    assert doc["version"] == 4
    assert doc["held"] is False
    assert list(doc["purposes"]) == [p.value for p in c.Purpose]
    email = doc["purposes"]["marketing_email"]
    assert email["status"] == "revoked"
    assert email["allowed"] is False
    assert email["legal_basis"] == "consent"
    assert (email["channel"], email["actor"], email["actor_id"]) == ("desk", "staff", "t1")
    assert email["notice_version"] == "2026.1"
    assert email["version"] == 4
    sms = doc["purposes"]["marketing_sms"]
    assert (sms["status"], sms["allowed"], sms["actor"]) == ("given", True, "customer")
    assert doc["purposes"]["marketing_post"] == {
        "status": None,
        "legal_basis": "legitimate_interests",
        "allowed": True,
        "since": None,
        "version": None,
        "notice_version": None,
        "photo_ids": [],
        "channel": None,
        "actor": None,
        "actor_id": None,
        "recorded_by": None,
    }
    assert doc["purposes"]["research"]["allowed"] is False
    assert doc["purposes"]["photo_storage"]["allowed"] is False
    [objection] = doc["objections"]
    assert objection["objection"] == "research"
    assert objection["suppresses"] == ["research"]
    assert objection["absolute"] is True
    assert objection["recorded_by"] == "t1"
    assert doc["directives_total"] == 2
    [latest] = doc["directives"]
    assert latest["consent_version"] == 4
    assert latest["reason"] == "withdrawal"
    assert latest["purposes"] == ["marketing_email"]
    assert latest["expected_services"] == ["marketing"]
    assert latest["answered"] == ["marketing"]
    assert latest["pending"] == []
    assert latest["fully_applied"] is True
    assert isinstance(latest["latency_ms"], int)


# --- Changing, and waiting for the outcome ----------------------------------------------------


async def test_a_give_waits_for_consents_record() -> None:
    consent = FakeConsent()
    cid = new_customer()
    await consent.apply(build_submission(give(cid, purpose=c.Purpose.MARKETING_SMS)))
    wire = FakeWire(consent, polls=3)
    outcome = await record_change(give(cid), wire, consent, wait=5, poll=0.01)
    assert outcome.outcome is Outcome.APPLIED
    assert outcome.applied
    assert outcome.version == 2  # the earlier change is not mistaken for this one
    assert outcome.directive is None
    assert wire.polls == 3
    assert consent.reads == 3
    assert outcome.view is not None
    assert outcome.view.state.purposes[c.Purpose.MARKETING_EMAIL].allowed


async def test_a_withdrawal_waits_until_its_directive_is_fully_applied() -> None:
    consent = FakeConsent(answering=("marketing",))
    cid = new_customer()
    await consent.apply(build_submission(give(cid)))
    outcome = await record_change(withdraw(cid), FakeWire(consent), consent, wait=5, poll=0.01)
    assert outcome.outcome is Outcome.APPLIED
    assert outcome.version == 2
    assert outcome.directive is not None
    assert outcome.directive.consent_version == 2
    assert outcome.directive.fully_applied_at is not None
    assert outcome.directive.pending == ()


async def test_a_directive_nobody_answers_is_reported_pending_after_the_wait() -> None:
    consent = FakeConsent()
    cid = new_customer()
    request = ChangeRequest(Change.OBJECT, cid, MARKETER, objection=c.ObjectionKind.ANALYTICS)
    outcome = await record_change(request, FakeWire(consent), consent, wait=0.3, poll=0.02)
    assert outcome.outcome is Outcome.APPLIED
    assert outcome.directive is not None
    assert outcome.directive.fully_applied_at is None
    assert outcome.directive.pending == ("analytics",)
    assert consent.reads > 2  # it kept looking until the wait was over


@pytest.mark.parametrize(
    ("mode", "wait", "expected"),
    [
        ("reject", 5.0, Outcome.REJECTED),
        ("silent", 0.2, Outcome.NO_ANSWER),
        ("hold", 5.0, Outcome.HELD),
        ("apply", 0.0, Outcome.SENT),
    ],
)
async def test_rejections_silence_holds_and_not_waiting(
    mode: str, wait: float, expected: Outcome
) -> None:
    consent = FakeConsent()
    cid = new_customer()
    wire = FakeWire(consent, mode)
    outcome = await record_change(give(cid), wire, consent, wait=wait, poll=0.02)
    assert outcome.outcome is expected
    assert not outcome.applied
    assert len(wire.sent) == 1
    if expected is Outcome.REJECTED:
        assert outcome.reasons == ("field_format@notice_version",)
    if expected is Outcome.HELD:
        assert outcome.reasons == ("invalid_command",)
        assert outcome.view is not None
        assert outcome.view.state.held
    if expected is Outcome.SENT:
        assert wire.polls == 0


async def test_a_role_that_may_not_change_is_audited_and_nothing_is_sent() -> None:
    consent = FakeConsent()
    cid = new_customer()
    await consent.apply(build_submission(give(cid)))
    wire = FakeWire(consent)
    conn = FakeConn()
    outcome = await change_consent(
        give(cid, staff=MARKETER), lambda: wire, consent, db(conn), wait=1, poll=0.01
    )
    assert outcome.outcome is Outcome.DENIED
    assert wire.opened == 0
    assert wire.sent == []
    [(key, event)] = conn.audit_events()
    assert key == cid
    assert (event.action, event.resource, event.outcome, event.reason_code) == (
        "consent_change",
        "consent.consent",
        "denied",
        DENIED,
    )


async def test_every_role_may_record_a_stop_and_the_state_shown_is_audited() -> None:
    consent = FakeConsent(answering=("marketing",))
    cid = new_customer()
    await consent.apply(build_submission(give(cid)))
    request = withdraw(cid, staff=MARKETER)
    conn = FakeConn()
    wire = FakeWire(consent)
    outcome = await change_consent(request, lambda: wire, consent, db(conn), wait=5, poll=0.01)
    assert outcome.outcome is Outcome.APPLIED
    assert [s.event_id for s in wire.sent] == [request.event_id]
    assert outcome.directive is not None
    assert outcome.directive.fully_applied_at is not None
    # Marketing may record the stop, but may not read consent: the look afterwards is denied.
    assert outcome.view is None
    [(key, event)] = conn.audit_events()
    assert key == cid
    assert (event.outcome, event.correlation_id) == ("denied", request.correlation_id)

    conn = FakeConn()
    again = await change_consent(give(cid), lambda: FakeWire(consent), consent, db(conn), wait=5)
    assert again.outcome is Outcome.APPLIED
    [(key, event)] = conn.audit_events()
    assert (key, event.action, event.outcome) == (cid, "read", "success")


# --- The commands -----------------------------------------------------------------------------


def cli_env(tmp_path: Any, **extra: str | None) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "REKISTERI_ENV_FILE": str(tmp_path / "missing.env"),
        "REKISTERI_STAFF": None,
        "REKISTERI_STAFF_ROLE": None,
        "CONSENT_PG_DSN": None,
        "MARKETING_PG_DSN": None,
        "COLUMNS": "200",
    }
    return env | extra


class Patched:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, consent: FakeConsent) -> None:
        self.consent = consent
        self.conn = FakeConn()
        self.wires: list[FakeWire] = []
        self.mode = "apply"

        @asynccontextmanager
        async def open_store(_env: Any) -> AsyncIterator[Store]:
            yield Store(consent, self.conn)  # type: ignore[arg-type]

        def open_wire(_env: Any) -> FakeWire:
            wire = FakeWire(consent, self.mode)
            self.wires.append(wire)
            return wire

        monkeypatch.setattr(cli.consent, "open_store", open_store)
        monkeypatch.setattr(cli.consent, "open_wire", open_wire)


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> Patched:
    return Patched(monkeypatch, FakeConsent(answering=("marketing",)))


def invoke(args: list[str], env: dict[str, str | None]) -> Any:
    return runner.invoke(app, args, env=env, catch_exceptions=False)


STAFF = ["--as", "t1", "--role", "reception"]
GIVE_K1 = ["consent", "give", "K1"]


def test_give_withdraw_and_show_through_the_cli(patched: Patched, tmp_path: Any) -> None:
    env = cli_env(tmp_path)
    cid = new_customer()
    give_args = ["consent", "give", cid, "--purpose", "marketing_email", "--notice-version", "1"]
    extra = ["--channel", "phone", "--evidence", "call-1", "--json"]
    given = invoke([*give_args, *STAFF, *extra], env)
    assert given.exit_code == 0, given.output
    doc = json.loads(given.stdout)
    assert doc["change"] == "give"
    assert doc["outcome"] == "applied"
    assert doc["applied"] is True
    assert doc["version"] == 1
    assert doc["directive"] is None
    assert doc["state"]["purposes"]["marketing_email"]["allowed"] is True
    assert doc["state"]["purposes"]["marketing_email"]["notice_version"] == "1"
    assert doc["state"]["purposes"]["marketing_email"]["channel"] == "phone"
    [sent] = patched.wires[0].sent
    assert str(sent.event_id) == doc["event_id"]
    assert sent.producer == "rekisteri-cli"

    withdrawn = invoke(["consent", "withdraw", cid, "--purpose", "marketing_email", *STAFF], env)
    assert withdrawn.exit_code == 0, withdrawn.output
    assert "consent withdrawn (consent version 2" in withdrawn.stdout
    assert "fully applied in" in withdrawn.stdout
    assert "marketing_email" in withdrawn.stdout

    shown = invoke(["consent", "show", cid, *STAFF, "--json"], env)
    assert shown.exit_code == 0, shown.output
    state = json.loads(shown.stdout)
    assert state["version"] == 2
    assert state["purposes"]["marketing_email"]["status"] == "withdrawn"
    assert state["directives"][-1]["fully_applied"] is True

    table = invoke(["consent", "show", cid, *STAFF], env)
    assert table.exit_code == 0, table.output
    for text in ("marketing_email", "withdrawn", "legitimate_interests", "fully applied in"):
        assert text in table.stdout
    assert "logged for audit" in table.stdout
    reads = [e for _, e in patched.conn.audit_events() if e.action == "read"]
    assert len(reads) == 4  # two changes shown, two looks
    assert all(e.outcome == "success" for e in reads)


def test_an_objection_and_its_lift_through_the_cli(patched: Patched, tmp_path: Any) -> None:
    env = cli_env(tmp_path, REKISTERI_STAFF="t9", REKISTERI_STAFF_ROLE="privacy_officer")
    cid = new_customer()
    lodged = invoke(["consent", "object", cid, "--kind", "direct_marketing", "--json"], env)
    assert lodged.exit_code == 0, lodged.output
    doc = json.loads(lodged.stdout)
    assert doc["directive"]["purposes"] == sorted(p.value for p in c.MARKETING)
    assert doc["directive"]["fully_applied"] is True
    assert doc["state"]["objections"][0]["objection"] == "direct_marketing"
    lifted = invoke(
        ["consent", "lift", cid, "--kind", "direct_marketing", "--actor", "customer", "--json"],
        env,
    )
    assert lifted.exit_code == 0, lifted.output
    assert json.loads(lifted.stdout)["state"]["objections"] == []


def test_a_rejection_exits_1_with_the_reasons(patched: Patched, tmp_path: Any) -> None:
    patched.mode = "reject"
    env = cli_env(tmp_path)
    cid = new_customer()
    base = ["consent", "give", cid, "--purpose", "marketing_sms", "--notice-version", "1"]
    result = invoke([*base, *STAFF], env)
    assert result.exit_code == 1
    assert "intake rejected the change: field_format@notice_version" in result.stderr
    as_json = invoke([*base, *STAFF, "--json"], env)
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["reasons"] == ["field_format@notice_version"]


def test_a_denied_change_exits_1_and_sends_nothing(patched: Patched, tmp_path: Any) -> None:
    env = cli_env(tmp_path)
    cid = new_customer()
    args = ["consent", "give", cid, "--purpose", "marketing_sms", "--notice-version", "1"]
    result = invoke([*args, "--as", "m1", "--role", "marketing"], env)
    assert result.exit_code == 1
    assert "nothing was sent" in result.stderr
    assert patched.wires == []
    [(_, event)] = patched.conn.audit_events()
    assert (event.outcome, event.customer_id) == ("denied", None)  # consent never knew them


def test_show_of_an_unknown_customer_exits_1(patched: Patched, tmp_path: Any) -> None:
    result = invoke(["consent", "show", new_customer(), *STAFF, "--json"], cli_env(tmp_path))
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": NOT_FOUND}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["consent", "show", "K1"], "say who you are"),
        (["consent", "show", HETU, *STAFF], "identity code"),
        (["consent", "withdraw", "K1", "--purpose", "marketing_sms"], "say who you are"),
        (["consent", "give", "K1", "--purpose", "marketing_sms", *STAFF], "--notice-version"),
        (["consent", "lift", "K1", "--kind", "research", *STAFF], "customer's own request"),
        (
            [
                *GIVE_K1,
                "--purpose",
                "analytics",
                "--notice-version",
                "1",
                *STAFF,
                "--actor-id",
                "G1",
            ],
            "--actor guardian only",
        ),
    ],
)
def test_usage_errors_exit_2_before_anything_connects(
    patched: Patched, tmp_path: Any, args: list[str], message: str
) -> None:
    result = invoke(args, cli_env(tmp_path))
    assert result.exit_code == 2
    assert message in result.stderr
    assert HETU not in result.output
    assert patched.wires == []
    assert patched.conn.rows == []


def test_a_lift_by_staff_is_not_a_choice(patched: Patched, tmp_path: Any) -> None:
    result = invoke(
        ["consent", "lift", "K1", "--kind", "research", "--actor", "staff", *STAFF],
        cli_env(tmp_path),
    )
    assert result.exit_code == 2
    assert patched.wires == []


# --- marketing audience ----------------------------------------------------------------------


class FakeExporter:
    def __init__(self, members: list[str]) -> None:
        self.members = members
        self.calls: list[tuple[Any, ...]] = []

    async def __call__(
        self, _conn: Any, campaign: str, channel: c.Purpose, *, actor: str, actor_role: str
    ) -> list[str]:
        self.calls.append((campaign, channel, actor, actor_role))
        return self.members


def test_audience_requests_are_checked() -> None:
    request = audience_request("spring-2026.whitening", "marketing_post", "m1", "marketing")
    assert request == AudienceRequest(
        "spring-2026.whitening",
        c.Purpose.MARKETING_POST,
        MARKETER,
        request.correlation_id,
    )
    with pytest.raises(UsageError, match="--campaign"):
        audience_request("spring sale!", "marketing_post", "m1", "marketing")
    with pytest.raises(UsageError, match="--channel"):
        audience_request("c1", "analytics", "m1", "marketing")
    with pytest.raises(UsageError, match="say who you are"):
        audience_request("c1", "marketing_sms", None, "marketing")


async def test_an_export_runs_as_the_staff_member_and_other_roles_are_refused() -> None:
    exporter = FakeExporter(["A1", "B2"])
    conn = FakeConn()
    request = audience_request("c1", "marketing_email", "po1", "privacy_officer")
    result = await export(db(conn), request, exporter=exporter)
    assert result.customers == ("A1", "B2")
    assert exporter.calls == [("c1", c.Purpose.MARKETING_EMAIL, "po1", "privacy_officer")]
    assert conn.rows == []  # marketing's `audience` audits the export itself

    for role in ("reception", "clinician"):
        conn = FakeConn()
        request = audience_request("c1", "research", "r1", role)
        refused = await export(db(conn), request, exporter=exporter)
        assert (refused.customers, refused.error) == (None, DENIED)
        [(key, event)] = conn.audit_events()
        assert key is None
        assert (event.producer, event.action, event.resource) == (
            "marketing",
            "export",
            "marketing.audience",
        )
        assert (event.outcome, event.reason_code, event.purpose) == ("denied", DENIED, "research")
        assert (event.actor, event.actor_role) == ("r1", role)
    assert len(exporter.calls) == 1


def test_the_audience_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    exporter = FakeExporter(["A1", "B2", "C3"])
    conn = FakeConn()

    @asynccontextmanager
    async def open_marketing(_env: Any) -> AsyncIterator[FakeConn]:
        yield conn

    monkeypatch.setattr(cli.marketing, "open_marketing", open_marketing)
    monkeypatch.setattr(cli.marketing, "audience", exporter)
    env = cli_env(tmp_path)
    base = ["marketing", "audience", "--campaign", "c1", "--channel", "marketing_email"]
    marketer = ["--as", "m1", "--role", "marketing"]

    listed = invoke([*base, *marketer], env)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == ["A1", "B2", "C3"]
    assert "3 customers" in listed.stderr

    counted = invoke([*base, *marketer, "--count-only"], env)
    assert counted.stdout.strip() == "3"

    doc = json.loads(invoke([*base, *marketer, "--json"], env).stdout)
    assert doc == {
        "campaign": "c1",
        "channel": "marketing_email",
        "count": 3,
        "customers": ["A1", "B2", "C3"],
    }
    only = json.loads(invoke([*base, *marketer, "--json", "--count-only"], env).stdout)
    assert only == {"campaign": "c1", "channel": "marketing_email", "count": 3}
    assert len(exporter.calls) == 4

    denied = invoke([*base, "--as", "t1", "--role", "reception"], env)
    assert denied.exit_code == 1
    assert "only the marketing role and the privacy officer" in denied.stderr
    assert denied.stdout == ""
    assert [e.outcome for _, e in conn.audit_events()] == ["denied"]
    assert len(exporter.calls) == 4

    bad = invoke(
        ["marketing", "audience", "--campaign", "no spaces", "--channel", "research", *marketer],
        env,
    )
    assert bad.exit_code == 2
    assert "--campaign" in bad.stderr
    wrong = invoke([*base[:-1], "analytics", *marketer], env)
    assert wrong.exit_code == 2


def test_audience_document_shapes() -> None:
    request = audience_request("c1", "marketing_sms", "m1", "marketing")
    result = cli.marketing.AudienceResult(("A1",))
    assert audience_document(result, request, count_only=True) == {
        "campaign": "c1",
        "channel": "marketing_sms",
        "count": 1,
    }
