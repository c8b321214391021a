"""`rekisteri consent`: a customer's consent and objections, shown (audited) and changed by staff.

    rekisteri consent show ID --as STAFF --role ROLE [--directives N] [--json]
    rekisteri consent give ID --purpose P --notice-version V [--language fi|sv|en] ...
    rekisteri consent withdraw ID --purpose P ...
    rekisteri consent object ID --kind direct_marketing|research|analytics ...
    rekisteri consent lift ID --kind K --actor customer|guardian ...

Reading. Staff run the CLI on the clinic's server, so `show` reads consent's schema directly as
the consent role (`CONSENT_PG_DSN`), with consent's read API (`load_consent`). Every lookup is
audited: a `read` of `consent.state` goes to consent's outbox in the transaction of the read
(if the audit cannot be written, nothing is shown), and the consent service's relay publishes
it to `audit.events.v1`. An unknown customer is audited `failed`/`customer_not_found` without a
customer id (the typed text must not become a Kafka key); a role that may not look is audited
`denied`/`role_not_permitted`, with the customer id only when consent knows the customer.

Changing. Staff never write consent's tables. A change is built as the clinic apps' submission
(`ConsentCaptured`, `ConsentWithdrawn`, `ObjectionLodged`, `ObjectionLifted` of
`contracts.intake`), sealed to intake's public key and published to `intake.submissions.v1` as
the `clinic-app` principal with producer `rekisteri-cli`, exactly as a clinic app would: intake
validates and routes it, consent applies it. The staff account is the submission's
`recorded_by` (and its `actor_id` with `--actor staff`, which makes a withdrawal a `revoked`).
The CLI then waits, at most `--wait` seconds, for the outcome: intake's rejection of that
event id on `intake.rejected.v1` (exit 1, with the reasons), or consent's history holding an
event caused by it (the customer's version rose). For a stop (withdrawal, objection) it goes on
waiting, within the same bound, until the directive is fully applied, and reports whether it
is. The state then shown is audited like `show`.

Roles (DESIGN.md: least privilege). Reception, clinicians and the privacy officer may look at
consent, record a consent and lift an objection at the customer's request. Every role may
record a withdrawal or an objection: a stop must be as easy to record as a consent (Art 7(3),
Art 21), and whoever receives it must be able to. Marketing may not read consent here (it sees
who may be contacted through `rekisteri marketing audience`) nor give consent on a customer's
behalf. A refused change is audited `denied` in consent's outbox and never sent.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final, Protocol, Self

import asyncpg
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cli.config import kafka_args, load_environment
from cli.customer import (
    Staff,
    StaffRole,
    UsageError,
    check_customer_id,
    staff_of,
)
from contracts.audit import AuditAction, AuditEvent, AuditOutcome
from contracts.client import REJECTIONS, IntakeClient
from contracts.consent import (
    ABSOLUTE,
    LEGAL_BASIS,
    SUPPRESSES,
    ConsentHeld,
    ConsentRecorded,
    ObjectionKind,
    ObjectionRecorded,
    Purpose,
)
from contracts.envelope import new_event_id
from contracts.intake import (
    ConsentCaptured,
    ConsentWithdrawn,
    ObjectionLifted,
    ObjectionLodged,
    Submission,
    SubmissionRejected,
)
from contracts.topics import topic
from services.common import audit
from services.consent.repository import ConsentView, DirectiveStatus, load_consent

if TYPE_CHECKING:
    from contracts.envelope import Event
    from services.common.db import Connection

AUDIT_SERVICE: Final = "consent"
"""The audit events are consent's: written to its outbox, relayed by it."""
SCHEMA: Final = "consent"
"""The schema consent lives in."""
DSN_VARIABLE: Final = "CONSENT_PG_DSN"
"""Where the consent role's DSN is found (environment or `.rekisteri/env`)."""
PRODUCER: Final = "rekisteri-cli"
"""The `producer` of the submissions the CLI publishes."""
PRINCIPAL: Final = "clinic-app"
"""The Kafka principal the CLI publishes submissions as (a clinic app)."""
STATE_RESOURCE: Final = "consent.state"
"""The audited resource of a look at a customer's consent."""
CONSENT_RESOURCE: Final = "consent.consent"
OBJECTION_RESOURCE: Final = "consent.objection"
AUDIT_PURPOSE: Final = "consent_management"
"""The processing purpose of a staff look at consent."""
NOT_FOUND: Final = "customer_not_found"
DENIED: Final = "role_not_permitted"
DEFAULT_WAIT: Final = 10.0
"""Seconds a change waits for its outcome by default."""
POLL_SECONDS: Final = 0.5
"""How often consent's state is read while waiting."""
DEFAULT_DIRECTIVES: Final = 5
"""How many of the latest directives `show` lists."""

LOOK_ROLES: Final = frozenset({StaffRole.RECEPTION, StaffRole.CLINICIAN, StaffRole.PRIVACY_OFFICER})
"""Roles that may look at a customer's consent."""
CONSENT_ROLES: Final = LOOK_ROLES
"""Roles that may record a consent or lift an objection at the customer's request."""
STOP_ROLES: Final = frozenset(StaffRole)
"""Roles that may record a withdrawal or an objection: every one (a stop is never refused)."""


class Change(StrEnum):
    """What a change command does."""

    GIVE = "give"
    WITHDRAW = "withdraw"
    OBJECT = "object"
    LIFT = "lift"


PERMITTED: Final[Mapping[Change, frozenset[StaffRole]]] = {
    Change.GIVE: CONSENT_ROLES,
    Change.WITHDRAW: STOP_ROLES,
    Change.OBJECT: STOP_ROLES,
    Change.LIFT: CONSENT_ROLES,
}
"""The roles that may make each change."""


class Where(StrEnum):
    """Where the customer expressed it (`contracts.consent.ConsentChannel`)."""

    DESK = "desk"
    WEB = "web"
    KIOSK = "kiosk"
    PHONE = "phone"
    PAPER = "paper"


class Who(StrEnum):
    """Who expressed it (`contracts.consent.Actor`)."""

    CUSTOMER = "customer"
    GUARDIAN = "guardian"
    STAFF = "staff"


class Requester(StrEnum):
    """Who asked to lift an objection: only the customer or their guardian, never staff."""

    CUSTOMER = "customer"
    GUARDIAN = "guardian"


class NoticeLanguage(StrEnum):
    """The language of the notice the customer saw."""

    FI = "fi"
    SV = "sv"
    EN = "en"


class Outcome(StrEnum):
    """How a change ended, as far as the CLI saw within its wait."""

    APPLIED = "applied"
    """Consent recorded it (see `ChangeOutcome.applied` for whether it changed the state)."""
    REJECTED = "rejected"
    """Intake refused the submission."""
    HELD = "held"
    """Consent could not apply it and holds the customer (every purpose stopped)."""
    NO_ANSWER = "no_answer"
    """Neither a rejection nor consent's record arrived within the wait."""
    SENT = "sent"
    """Sent without waiting (`--wait 0`)."""
    DENIED = "denied"
    """The role may not make this change; nothing was sent."""


# --- Requests --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LookRequest:
    """One `consent show`: whose consent, by whom."""

    customer_id: str
    staff: Staff
    correlation_id: uuid.UUID = field(default_factory=new_event_id)


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """One change a staff member enters for a customer.

    Attributes:
        change: give, withdraw, object or lift.
        customer_id: The customer number.
        staff: Who enters it (the submission's `recorded_by`), and in which role.
        purpose: The purpose (give, withdraw).
        objection: The objection (object, lift).
        channel: Where the customer expressed it.
        actor: Who expressed it: customer, guardian, or staff acting for the customer.
        actor_id: The guardian's customer number (with `actor` guardian).
        notice_version: The version of the consent wording shown (give).
        notice_id: The notice shown (give; None: the purpose's own).
        language: The language of the wording shown (give).
        evidence_ref: A reference to the evidence, e.g. a signed form's archive id.
        photo_id: For photo purposes: the one photo (None: every photo).
        event_id: The submission's event id (a rejection names it; consent's history too).
        correlation_id: Shared by the submission and the audit of the state shown.
    """

    change: Change
    customer_id: str
    staff: Staff
    purpose: Purpose | None = None
    objection: ObjectionKind | None = None
    channel: Where = Where.DESK
    actor: Who = Who.CUSTOMER
    actor_id: str | None = None
    notice_version: str | None = None
    notice_id: str | None = None
    language: NoticeLanguage = NoticeLanguage.FI
    evidence_ref: str | None = None
    photo_id: str | None = None
    event_id: uuid.UUID = field(default_factory=new_event_id)
    correlation_id: uuid.UUID = field(default_factory=new_event_id)


OPTION_OF_FIELD: Final[Mapping[str, str]] = {
    "notice_version": "--notice-version",
    "notice_id": "--notice-id",
    "evidence_ref": "--evidence",
    "photo_id": "--photo-id",
    "actor_id": "--actor-id",
    "recorded_by": "--as",
    "customer_id": "ID",
    "actor": "--actor",
}


def check_actor(actor: Who, actor_id: str | None) -> str | None:
    """The submission's `actor_id` for `actor`: the guardian's number, or nothing.

    With `--actor staff` the staff account itself is the actor (set by `build_submission`).

    Raises:
        UsageError: `--actor-id` with an actor other than guardian, or not a customer number.
    """
    if actor_id is None:
        return None
    if actor is not Who.GUARDIAN:
        raise UsageError("--actor-id names a guardian; use it with --actor guardian only")
    try:
        return check_customer_id(actor_id)
    except UsageError:
        raise UsageError("--actor-id must be the guardian's customer number") from None


def build_submission(request: ChangeRequest) -> Submission:
    """The intake submission a clinic app would publish for `request`.

    Raises:
        UsageError: An option's value does not fit the contract (the message names the option,
            never the value), or a required option for this change is missing.
    """
    staff_id = request.staff.staff_id
    fields: dict[str, Any] = {
        "event_id": request.event_id,
        "correlation_id": request.correlation_id,
        "customer_id": request.customer_id,
        "producer": PRODUCER,
        "channel": request.channel.value,
        "actor": request.actor.value,
        "actor_id": staff_id if request.actor is Who.STAFF else request.actor_id,
        "recorded_by": staff_id,
        "evidence_ref": request.evidence_ref,
    }
    model: type[Submission]
    if request.change in {Change.GIVE, Change.WITHDRAW}:
        if request.purpose is None:
            raise UsageError("--purpose is required")
        fields |= {"purpose": request.purpose.value, "photo_id": request.photo_id}
        model = ConsentWithdrawn
        if request.change is Change.GIVE:
            if request.notice_version is None:
                raise UsageError("--notice-version is required: the version of the wording shown")
            fields |= {
                "status": "given",
                "notice_version": request.notice_version,
                "notice_id": request.notice_id,
                "language": request.language.value,
            }
            model = ConsentCaptured
    else:
        if request.objection is None:
            raise UsageError("--kind is required")
        fields["objection"] = request.objection.value
        model = ObjectionLodged
        if request.change is Change.LIFT:
            if request.actor not in {Who.CUSTOMER, Who.GUARDIAN}:
                raise UsageError(
                    "only the customer or their guardian can lift an objection: --actor "
                    "customer or --actor guardian"
                )
            model = ObjectionLifted
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        # The error's text quotes the input: name the options only.
        names = sorted(
            {OPTION_OF_FIELD.get(str(e["loc"][0]), str(e["loc"][0])) for e in exc.errors()}
        )
        raise UsageError(f"not a valid value for {', '.join(names)}") from None


# --- Reading consent, audited ------------------------------------------------------------------


class ConsentReader(Protocol):
    """What the CLI reads of consent: everything it holds on one customer."""

    async def view(self, customer_id: str) -> ConsentView | None:
        """The customer's consent, or None when consent has nothing on them."""


class PostgresReader:
    """Consent's read API on one connection of the consent role (search_path consent)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def view(self, customer_id: str) -> ConsentView | None:
        """The customer's consent, or None when consent has nothing on them."""
        return await load_consent(self.conn, customer_id)


@dataclass(frozen=True, slots=True)
class Look:
    """What a look at consent found, and what it logged.

    Attributes:
        view: The customer's consent, or None (not found, or denied).
        error: `customer_not_found` or `role_not_permitted`, or None.
        audited: The audit events written.
    """

    view: ConsentView | None
    error: str | None = None
    audited: tuple[AuditEvent, ...] = ()


async def _audit(  # noqa: PLR0913 - the audit fields, keyword-only
    conn: Connection,
    staff: Staff,
    *,
    action: AuditAction,
    resource: str,
    customer_id: str | None,
    outcome: AuditOutcome,
    correlation_id: uuid.UUID,
    reason_code: str | None = None,
) -> AuditEvent:
    return await audit.emit(
        conn,
        service=AUDIT_SERVICE,
        actor=staff.staff_id,
        actor_role=staff.role.value,
        action=action,
        customer_id=customer_id,
        resource=resource,
        outcome=outcome,
        purpose=AUDIT_PURPOSE,
        reason_code=reason_code,
        correlation_id=correlation_id,
    )


async def look(reader: ConsentReader, conn: Connection, request: LookRequest) -> Look:
    """Read a customer's consent and audit the read, inside the caller's transaction."""
    cid = request.customer_id
    staff = request.staff
    view = await reader.view(cid)
    if staff.role not in LOOK_ROLES:
        event = await _audit(
            conn,
            staff,
            action=AuditAction.READ,
            resource=STATE_RESOURCE,
            customer_id=cid if view is not None else None,
            outcome=AuditOutcome.DENIED,
            correlation_id=request.correlation_id,
            reason_code=DENIED,
        )
        return Look(None, DENIED, (event,))
    if view is None:
        event = await _audit(
            conn,
            staff,
            action=AuditAction.READ,
            resource=STATE_RESOURCE,
            customer_id=None,
            outcome=AuditOutcome.FAILED,
            correlation_id=request.correlation_id,
            reason_code=NOT_FOUND,
        )
        return Look(None, NOT_FOUND, (event,))
    event = await _audit(
        conn,
        staff,
        action=AuditAction.READ,
        resource=STATE_RESOURCE,
        customer_id=cid,
        outcome=AuditOutcome.SUCCESS,
        correlation_id=request.correlation_id,
    )
    return Look(view, audited=(event,))


async def look_audited(reader: ConsentReader, conn: Connection, request: LookRequest) -> Look:
    """`look` in a transaction of its own (one snapshot for the state and its audit)."""
    async with conn.transaction(isolation="repeatable_read"):
        return await look(reader, conn, request)


# --- Changing consent through intake -------------------------------------------------------


class Wire(Protocol):
    """How a change reaches intake, and how intake's rejection comes back."""

    async def send(self, submission: Submission) -> None:
        """Publish the submission (sealed) and wait until Kafka has it."""

    async def rejection(self, event_id: uuid.UUID, within: float) -> SubmissionRejected | None:
        """Intake's rejection of `event_id` if it arrives within `within` seconds, else None."""


class KafkaWire:
    """The real wire: `IntakeClient` to publish, and a reader of `intake.rejected.v1`.

    The reader is positioned at the end of every partition before anything is sent, so the
    rejection of what is sent cannot be missed, and nothing older is read. It uses no consumer
    group (nothing is committed), like `IntakeClient.rejections`.
    """

    def __init__(self, client: IntakeClient, kafka: Mapping[str, str]) -> None:
        self.client = client
        self.kafka = dict(kafka)
        self._consumer: AIOKafkaConsumer | None = None
        self._keys: dict[uuid.UUID, bytes] = {}

    async def __aenter__(self) -> Self:
        consumer = AIOKafkaConsumer(**self.kafka, group_id=None, enable_auto_commit=False)
        await consumer.start()
        self._consumer = consumer
        try:
            partitions = [
                TopicPartition(REJECTIONS, p) for p in range(topic(REJECTIONS).partitions)
            ]
            consumer.assign(partitions)
            for tp, offset in (await consumer.end_offsets(partitions)).items():
                consumer.seek(tp, offset)
            await self.client.__aenter__()
        except BaseException:
            await consumer.stop()
            self._consumer = None
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        try:
            await self.client.__aexit__(None, None, None)
        finally:
            if self._consumer is not None:
                await self._consumer.stop()
                self._consumer = None

    async def send(self, submission: Submission) -> None:
        """Publish the submission (sealed) and wait until Kafka has it."""
        await self.client.submit(submission)
        self._keys[submission.event_id] = str(submission.customer_id).encode()

    async def rejection(self, event_id: uuid.UUID, within: float) -> SubmissionRejected | None:
        """Intake's rejection of `event_id` if it arrives within `within` seconds, else None."""
        if self._consumer is None:
            raise RuntimeError("use `async with KafkaWire(...)`")
        key = self._keys.get(event_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (remaining := deadline - loop.time()) > 0:
            batch = await self._consumer.getmany(timeout_ms=max(1, int(remaining * 1000)))
            for records in batch.values():
                for record in records:
                    if record.value is None or (key is not None and record.key != key):
                        continue
                    try:
                        rejected = SubmissionRejected.model_validate_json(record.value)
                    except ValidationError:
                        continue
                    if rejected.submission_event_id == event_id:
                        return rejected
        return None


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """What became of a change.

    Attributes:
        outcome: applied, rejected, held, no_answer, sent or denied.
        event_id: The submission's event id.
        reasons: Intake's reasons (`code@field`) for a rejection, or consent's for a hold.
        recorded: The history event consent wrote for it.
        view: The customer's consent afterwards (applied, held).
        directive: The stop directive it caused, as last seen.
        audited: The audit events the CLI wrote (a denial, or the read of the state shown).
    """

    outcome: Outcome
    event_id: uuid.UUID
    reasons: tuple[str, ...] = ()
    recorded: Event | None = None
    view: ConsentView | None = None
    directive: DirectiveStatus | None = None
    audited: tuple[AuditEvent, ...] = ()

    @property
    def version(self) -> int | None:
        """The customer's consent version the change made, if consent recorded it."""
        return getattr(self.recorded, "version", None)

    @property
    def applied(self) -> bool:
        """Whether it changed the state (a late consent or a lift of nothing does not)."""
        return self.outcome is Outcome.APPLIED and bool(getattr(self.recorded, "applied", True))


def caused_by(view: ConsentView | None, event_id: uuid.UUID) -> tuple[Event | None, Event | None]:
    """The history event recording command `event_id`, and the hold it caused, if any."""
    recorded = held = None
    for event in view.history if view is not None else ():
        if getattr(event, "command_id", None) != event_id:
            continue
        if isinstance(event, ConsentHeld):
            held = event if event.held else None
        else:
            recorded = event
    return recorded, held


def directive_of(view: ConsentView | None, version: int | None) -> DirectiveStatus | None:
    """The directive made at consent `version`, if any."""
    if view is None or version is None:
        return None
    return next((d for d in view.directives if d.consent_version == version), None)


def _reasons(rejected: SubmissionRejected) -> tuple[str, ...]:
    return tuple(f"{r.code}@{r.field}" if r.field else r.code for r in rejected.reasons)


async def _await_directive(  # noqa: PLR0913 - the outcome, its reader, and the wait
    reader: ConsentReader,
    customer_id: str,
    outcome: ChangeOutcome,
    deadline: float,
    *,
    poll: float,
    clock: Callable[[], float],
) -> ChangeOutcome:
    """Poll until the change's directive is fully applied or the deadline passes."""
    view, directive = outcome.view, outcome.directive
    while directive is not None and directive.fully_applied_at is None:
        remaining = deadline - clock()
        if remaining <= 0:
            break
        await asyncio.sleep(min(poll, remaining))
        view = await reader.view(customer_id) or view
        directive = directive_of(view, outcome.version) or directive
    return ChangeOutcome(
        outcome.outcome, outcome.event_id, recorded=outcome.recorded, view=view, directive=directive
    )


async def record_change(  # noqa: PLR0913 - the change, its ports, and the wait, keyword-only
    request: ChangeRequest,
    wire: Wire,
    reader: ConsentReader,
    *,
    wait: float,
    poll: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> ChangeOutcome:
    """Send a change through intake and wait, at most `wait` seconds, for what became of it.

    The outcome is intake's rejection of the submission, or consent's record of it (or a hold,
    when consent could not apply it). For a change that stops a purpose, the wait goes on, in
    the same bound, until its directive is fully applied. With `wait` 0 it is only sent.

    Raises:
        UsageError: The request does not make a valid submission.
    """
    submission = build_submission(request)
    await wire.send(submission)
    event_id = submission.event_id
    if wait <= 0:
        return ChangeOutcome(Outcome.SENT, event_id)
    deadline = clock() + wait
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return ChangeOutcome(Outcome.NO_ANSWER, event_id)
        rejected = await wire.rejection(event_id, min(poll, remaining))
        if rejected is not None:
            return ChangeOutcome(Outcome.REJECTED, event_id, reasons=_reasons(rejected))
        view = await reader.view(request.customer_id)
        recorded, held = caused_by(view, event_id)
        if recorded is not None:
            outcome = ChangeOutcome(
                Outcome.APPLIED,
                event_id,
                recorded=recorded,
                view=view,
                directive=directive_of(view, getattr(recorded, "version", None)),
            )
            return await _await_directive(
                reader, request.customer_id, outcome, deadline, poll=poll, clock=clock
            )
        if isinstance(held, ConsentHeld):
            return ChangeOutcome(
                Outcome.HELD, event_id, reasons=(held.reason,), recorded=held, view=view
            )


def permitted(change: Change, role: StaffRole) -> bool:
    """Whether `role` may make `change`."""
    return role in PERMITTED[change]


async def deny_change(
    reader: ConsentReader, conn: Connection, request: ChangeRequest
) -> AuditEvent:
    """Audit a change the role may not make (nothing is sent), in a transaction of its own."""
    objection = request.change in {Change.OBJECT, Change.LIFT}
    async with conn.transaction():
        known = await reader.view(request.customer_id) is not None
        return await _audit(
            conn,
            request.staff,
            action=AuditAction.OBJECT
            if request.change is Change.OBJECT
            else AuditAction.CONSENT_CHANGE,
            resource=OBJECTION_RESOURCE if objection else CONSENT_RESOURCE,
            customer_id=request.customer_id if known else None,
            outcome=AuditOutcome.DENIED,
            correlation_id=request.correlation_id,
            reason_code=DENIED,
        )


async def change_consent(  # noqa: PLR0913 - the change, its ports, and the wait, keyword-only
    request: ChangeRequest,
    wire_factory: Callable[[], AbstractAsyncContextManager[Wire]],
    reader: ConsentReader,
    conn: Connection,
    *,
    wait: float,
    poll: float = POLL_SECONDS,
) -> ChangeOutcome:
    """Check the role, send the change, wait for it, and audit the state shown afterwards.

    A role that may not make the change is audited `denied` and nothing is sent (the wire is
    never opened).
    """
    if not permitted(request.change, request.staff.role):
        denied = await deny_change(reader, conn, request)
        return ChangeOutcome(Outcome.DENIED, request.event_id, audited=(denied,))
    build_submission(request)  # a usage error before anything connects
    async with wire_factory() as wire:
        outcome = await record_change(request, wire, reader, wait=wait, poll=poll)
    if outcome.view is None:
        return outcome
    # What is shown of the state afterwards is a read like `show`, and is audited like it.
    shown = await look_audited(
        reader, conn, LookRequest(request.customer_id, request.staff, request.correlation_id)
    )
    # A role that may not look (marketing recording a stop) is not shown the state.
    view = shown.view
    directive = directive_of(view, outcome.version) or outcome.directive
    return ChangeOutcome(
        outcome.outcome,
        outcome.event_id,
        outcome.reasons,
        outcome.recorded,
        view,
        directive,
        shown.audited,
    )


# --- What is shown ---------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _by_version(history: Sequence[Event]) -> dict[int, Event]:
    return {int(getattr(e, "version", 0)): e for e in history}


def directive_document(directive: DirectiveStatus) -> dict[str, Any]:
    """A directive as JSON-compatible data."""
    return {
        "directive_id": str(directive.directive_id),
        "consent_version": directive.consent_version,
        "reason": directive.reason,
        "purposes": list(directive.purposes),
        "expected_services": list(directive.expected_services),
        "answered": sorted(directive.acks),
        "pending": list(directive.pending),
        "committed_at": _iso(directive.committed_at),
        "fully_applied": directive.fully_applied_at is not None,
        "fully_applied_at": _iso(directive.fully_applied_at),
        "latency_ms": directive.latency_ms,
    }


def consent_document(view: ConsentView, *, directives: int = DEFAULT_DIRECTIVES) -> dict[str, Any]:
    """A customer's consent as JSON-compatible data (the `--json` output of `show`).

    Per purpose: status, legal basis, whether it is allowed now, since when, the notice
    version, and where and by whom it was expressed (from the history record that set it).
    Then the active objections, and the latest `directives` stop directives.
    """
    state = view.state
    by_version = _by_version(view.history)
    purposes: dict[str, Any] = {}
    for purpose in Purpose:
        current = state.purposes.get(purpose)
        record = by_version.get(current.version or 0) if current is not None else None
        source = record if isinstance(record, ConsentRecorded) else None
        purposes[purpose.value] = {
            "status": current.status.value if current and current.status else None,
            "legal_basis": LEGAL_BASIS[purpose].value,
            "allowed": bool(current and current.allowed),
            "since": _iso(current.changed_at) if current else None,
            "version": current.version if current else None,
            "notice_version": current.notice_version if current else None,
            "photo_ids": list(current.photo_ids) if current else [],
            "channel": source.channel if source else None,
            "actor": source.actor if source else None,
            "actor_id": source.actor_id if source else None,
            "recorded_by": source.recorded_by if source else None,
        }
    objections = []
    for kind in state.suppressions:
        lodged = [
            e for e in view.history if isinstance(e, ObjectionRecorded) and e.objection is kind
        ]
        last = lodged[-1] if lodged else None
        objections.append(
            {
                "objection": kind.value,
                "suppresses": sorted(p.value for p in SUPPRESSES[kind]),
                "absolute": kind in ABSOLUTE,
                "since": _iso(last.occurred_at) if last else None,
                "channel": last.channel if last else None,
                "actor": last.actor if last else None,
                "recorded_by": last.recorded_by if last else None,
            }
        )
    latest = view.directives[-directives:] if directives > 0 else ()
    return {
        "customer_id": state.customer_id,
        "version": state.version,
        "held": state.held,
        "purposes": purposes,
        "objections": objections,
        "directives": [directive_document(d) for d in latest],
        "directives_total": len(view.directives),
    }


def change_document(outcome: ChangeOutcome, request: ChangeRequest) -> dict[str, Any]:
    """A change's outcome as JSON-compatible data (the `--json` output of a change)."""
    return {
        "change": request.change.value,
        "event_id": str(outcome.event_id),
        "outcome": outcome.outcome.value,
        "reasons": list(outcome.reasons),
        "version": outcome.version if outcome.outcome is Outcome.APPLIED else None,
        "applied": outcome.applied,
        "directive": directive_document(outcome.directive) if outcome.directive else None,
        "state": consent_document(outcome.view) if outcome.view is not None else None,
    }


def _when(text: str | None) -> str:
    return text[:16].replace("T", " ") if text else ""


def _who(actor: str | None, actor_id: str | None) -> str:
    if actor is None:
        return ""
    return f"{actor} {actor_id}" if actor_id else actor


def directive_line(doc: Mapping[str, Any]) -> str:
    """A directive's fan-out status in one line."""
    if doc["fully_applied"]:
        return f"fully applied in {doc['latency_ms']} ms ({', '.join(doc['answered'])})"
    return "waiting for " + ", ".join(doc["pending"])


def render(doc: Mapping[str, Any], console: Console) -> None:
    """Print a consent document (from `consent_document`) as tables; values are never markup."""
    head = Text(f"customer {doc['customer_id']}", style="bold")
    head.append(f"  consent version {doc['version']}")
    console.print(head)
    if doc["held"]:
        console.print(
            Text(
                "HELD: consent could not apply a change for this customer; every purpose is "
                "stopped until it is applied",
                style="bold red",
            )
        )
    table = Table(
        "purpose", "status", "legal basis", "allowed", "since (UTC)", "notice", "channel", "actor"
    )
    for purpose, p in doc["purposes"].items():
        table.add_row(
            Text(purpose),
            Text(p["status"] or "-"),
            Text(p["legal_basis"]),
            Text("yes" if p["allowed"] else "no", style="green" if p["allowed"] else "red"),
            Text(_when(p["since"])),
            Text(p["notice_version"] or ""),
            Text(p["channel"] or ""),
            Text(_who(p["actor"], p["actor_id"])),
        )
    console.print(table)
    if doc["objections"]:
        objections = Table("objection", "suppresses", "absolute", "since (UTC)", "channel", "actor")
        for o in doc["objections"]:
            objections.add_row(
                Text(o["objection"]),
                Text(", ".join(o["suppresses"])),
                Text("yes" if o["absolute"] else "no"),
                Text(_when(o["since"])),
                Text(o["channel"] or ""),
                Text(o["actor"] or ""),
            )
        console.print(objections)
    else:
        console.print(Text("no objections"))
    if doc["directives"]:
        title = f"latest stop directives ({len(doc['directives'])} of {doc['directives_total']})"
        directives = Table(
            "directive", "version", "reason", "purposes", "fan-out", "committed (UTC)", title=title
        )
        for d in doc["directives"]:
            directives.add_row(
                Text(d["directive_id"]),
                Text(str(d["consent_version"])),
                Text(d["reason"]),
                Text(", ".join(d["purposes"])),
                Text(directive_line(d), style="green" if d["fully_applied"] else "yellow"),
                Text(_when(d["committed_at"])),
            )
        console.print(directives)
    console.print(Text("this read was logged for audit", style="dim"))


SUMMARY: Final[Mapping[Change, str]] = {
    Change.GIVE: "consent given",
    Change.WITHDRAW: "consent withdrawn",
    Change.OBJECT: "objection recorded",
    Change.LIFT: "objection lifted",
}


def error_message(error: str) -> str:
    """The message for a failed look (no personal data, not even the typed ID)."""
    return {
        NOT_FOUND: "consent has nothing recorded for this customer: nothing is allowed "
        "(the lookup was logged)",
        DENIED: "your role may not do this (the attempt was logged)",
    }.get(error, f"the consent could not be read: {error}")


def report_change(
    outcome: ChangeOutcome, request: ChangeRequest, console: Console, errors: Console
) -> int:
    """Print a change's outcome as text; the exit code (0 recorded, 1 otherwise)."""
    event = str(outcome.event_id)
    if outcome.outcome is Outcome.DENIED:
        errors.print(Text(f"rekisteri: {error_message(DENIED)}; nothing was sent"))
        return 1
    if outcome.outcome is Outcome.SENT:
        console.print(Text(f"sent (event {event}); not waiting for consent"))
        return 0
    if outcome.outcome is Outcome.REJECTED:
        errors.print(Text(f"rekisteri: intake rejected the change: {', '.join(outcome.reasons)}"))
        return 1
    if outcome.outcome is Outcome.NO_ANSWER:
        errors.print(
            Text(
                f"rekisteri: sent (event {event}), but consent has not recorded it within the "
                "wait; check with `rekisteri consent show`"
            )
        )
        return 1
    if outcome.outcome is Outcome.HELD:
        errors.print(
            Text(
                f"rekisteri: consent could not apply the change ({', '.join(outcome.reasons)}) "
                "and holds the customer: every purpose is stopped until it is applied"
            )
        )
        return 1
    what = SUMMARY[request.change]
    line = Text(f"{what} (consent version {outcome.version}, event {event})", style="bold")
    if not outcome.applied:
        line = Text(
            f"{what} recorded but not applied: a later change wins, or there was nothing to "
            f"lift (consent version {outcome.version})",
            style="bold yellow",
        )
    console.print(line)
    if outcome.directive is not None:
        doc = directive_document(outcome.directive)
        console.print(Text(f"stop directive {doc['directive_id']}: {directive_line(doc)}"))
    if outcome.view is not None:
        render(consent_document(outcome.view), console)
    return 0


# --- Connections -----------------------------------------------------------------------------


def schema_dsn(env: Mapping[str, str], variable: str) -> str:
    """A service role's DSN from `env`.

    Raises:
        SystemExit: It is missing (the message names the variable, never a value).
    """
    dsn = env.get(variable)
    if not dsn:
        raise SystemExit(
            f"rekisteri: no {variable}; run this on the clinic's server where `make run` "
            "generated it, or set REKISTERI_ENV_FILE"
        )
    return dsn


async def connect(dsn: str, schema: str) -> asyncpg.Connection[asyncpg.Record]:
    """One connection bound to `schema`, decoding json/jsonb like the services' pools."""
    conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
        dsn, server_settings={"search_path": schema, "application_name": "rekisteri-cli"}
    )
    try:
        for type_name in ("json", "jsonb"):
            await conn.set_type_codec(
                type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
    except BaseException:
        await conn.close()
        raise
    return conn


@dataclass(frozen=True, slots=True)
class Store:
    """Consent's schema, as the CLI uses it: the reader and the connection audits go to."""

    reader: ConsentReader
    conn: Connection


@asynccontextmanager
async def open_store(env: Mapping[str, str]) -> AsyncIterator[Store]:
    """Connect to consent's schema as the consent role (`CONSENT_PG_DSN`)."""
    conn = await connect(schema_dsn(env, DSN_VARIABLE), SCHEMA)
    try:
        yield Store(PostgresReader(conn), conn)
    finally:
        await conn.close()


def intake_client(env: Mapping[str, str]) -> IntakeClient:
    """The client changes are published with: principal `clinic-app`, producer `rekisteri-cli`."""
    kafka = kafka_args(dict(env), PRINCIPAL)
    public_key = env.get("REKISTERI_INTAKE_PUBLIC_KEY")
    if not public_key:
        raise SystemExit("rekisteri: no REKISTERI_INTAKE_PUBLIC_KEY to seal submissions to")
    return IntakeClient(
        bootstrap_servers=kafka["bootstrap_servers"],
        username=PRINCIPAL,
        password=kafka["sasl_plain_password"],
        intake_public_key=public_key,
        producer_name=PRODUCER,
        security_protocol=kafka["security_protocol"],
    )


def open_wire(env: Mapping[str, str]) -> AbstractAsyncContextManager[Wire]:
    """The real wire: publish as `clinic-app`, read `intake.rejected.v1` as `clinic-app`."""
    return KafkaWire(intake_client(env), kafka_args(dict(env), PRINCIPAL))


# --- The commands ----------------------------------------------------------------------------

consent_app = typer.Typer(
    no_args_is_help=True,
    help="A customer's consent and objections (staff): show them, or record a change the "
    "customer asked for. Every look is logged for audit.",
)
console = Console()
errors = Console(stderr=True)

CustomerArgument = Annotated[
    str, typer.Argument(metavar="ID", help="The customer number (asiakasnumero)")
]
StaffOption = Annotated[
    str | None,
    typer.Option("--as", envvar="REKISTERI_STAFF", help="Your staff account id (required)"),
]
RoleOption = Annotated[
    StaffRole | None,
    typer.Option(envvar="REKISTERI_STAFF_ROLE", help="The role you act in (required)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
WaitOption = Annotated[
    float,
    typer.Option(
        help="Seconds to wait for intake's rejection or consent's record (0: do not wait)"
    ),
]
ChannelOption = Annotated[Where, typer.Option(help="Where the customer expressed it")]
ActorOption = Annotated[
    Who, typer.Option(help="Who expressed it: the customer, their guardian, or staff for them")
]
ActorIdOption = Annotated[
    str | None, typer.Option(help="With --actor guardian: the guardian's customer number")
]
EvidenceOption = Annotated[
    str | None, typer.Option("--evidence", help="Reference to the evidence, e.g. a form's id")
]
PhotoOption = Annotated[
    str | None, typer.Option(help="For photo purposes: the one photo (default: every photo)")
]
KindOption = Annotated[ObjectionKind, typer.Option("--kind", help="What the objection is to")]


def _usage(exc: UsageError) -> typer.Exit:
    errors.print(Text(f"rekisteri: {exc}"))
    return typer.Exit(2)


def _run_change(request: ChangeRequest, *, wait: float, as_json: bool) -> None:
    try:
        build_submission(request)
    except UsageError as exc:
        raise _usage(exc) from None
    env = load_environment()

    async def run() -> ChangeOutcome:
        async with open_store(env) as store:
            return await change_consent(
                request, lambda: open_wire(env), store.reader, store.conn, wait=wait
            )

    try:
        outcome = asyncio.run(run())
    except KafkaError as exc:
        errors.print(Text(f"rekisteri: cannot reach Kafka ({type(exc).__name__})"))
        raise typer.Exit(1) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The type says enough; a server message could quote the connection settings.
        errors.print(Text(f"rekisteri: cannot reach consent ({type(exc).__name__})"))
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(change_document(outcome, request), ensure_ascii=False))
        code = 0 if outcome.outcome in {Outcome.APPLIED, Outcome.SENT} else 1
    else:
        code = report_change(outcome, request, console, errors)
    raise typer.Exit(code)


def _identify(customer_id: str, staff_id: str | None, role: StaffRole | None) -> tuple[str, Staff]:
    try:
        return check_customer_id(customer_id), staff_of(staff_id, role)
    except UsageError as exc:
        raise _usage(exc) from None


def _change(  # noqa: PLR0913 - the command's identity, actor and delivery, keyword-only
    change: Change,
    customer_id: str,
    staff_id: str | None,
    role: StaffRole | None,
    *,
    actor: Who,
    actor_id: str | None,
    wait: float,
    as_json: bool,
    **fields: Any,  # noqa: ANN401 - ChangeRequest's own fields, checked by it
) -> None:
    """Validate a consent change from the command line, send it and report (the commands' body)."""
    cid, staff = _identify(customer_id, staff_id, role)
    try:
        request = ChangeRequest(
            change, cid, staff, actor=actor, actor_id=check_actor(actor, actor_id), **fields
        )
    except UsageError as exc:
        raise _usage(exc) from None
    _run_change(request, wait=wait, as_json=as_json)


@consent_app.command("show")
def show_command(
    customer_id: CustomerArgument,
    staff_id: StaffOption = None,
    role: RoleOption = None,
    directives: Annotated[
        int, typer.Option(min=0, help="How many of the latest stop directives to list")
    ] = DEFAULT_DIRECTIVES,
    as_json: JsonOption = False,
) -> None:
    """The customer's consent per purpose, objections, and latest stop directives.

    Every look is logged for audit (who, when, which customer).
    """
    cid, staff = _identify(customer_id, staff_id, role)
    env = load_environment()
    request = LookRequest(cid, staff)

    async def run() -> Look:
        async with open_store(env) as store:
            return await look_audited(store.reader, store.conn, request)

    try:
        result = asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        errors.print(Text(f"rekisteri: cannot read consent ({type(exc).__name__})"))
        raise typer.Exit(1) from None
    if result.view is None:
        if as_json:
            print(json.dumps({"error": result.error}))
        else:
            errors.print(Text(f"rekisteri: {error_message(result.error or NOT_FOUND)}"))
        raise typer.Exit(1)
    doc = consent_document(result.view, directives=directives)
    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
    else:
        render(doc, console)


@consent_app.command("give")
def give_command(  # noqa: PLR0913, PLR0917 - one parameter per option
    customer_id: CustomerArgument,
    purpose: Annotated[Purpose, typer.Option(help="The purpose consented to")],
    notice_version: Annotated[
        str | None, typer.Option(help="Version of the consent wording the customer saw (required)")
    ] = None,
    language: Annotated[
        NoticeLanguage, typer.Option(help="Language of the wording the customer saw")
    ] = NoticeLanguage.FI,
    notice_id: Annotated[
        str | None, typer.Option(help="The notice shown (default: the purpose's own)")
    ] = None,
    channel: ChannelOption = Where.DESK,
    actor: ActorOption = Who.CUSTOMER,
    actor_id: ActorIdOption = None,
    evidence: EvidenceOption = None,
    photo_id: PhotoOption = None,
    staff_id: StaffOption = None,
    role: RoleOption = None,
    wait: WaitOption = DEFAULT_WAIT,
    as_json: JsonOption = False,
) -> None:
    """Record that the customer gave consent for one purpose (sent through intake)."""
    _change(
        Change.GIVE,
        customer_id,
        staff_id,
        role,
        actor=actor,
        actor_id=actor_id,
        wait=wait,
        as_json=as_json,
        purpose=purpose,
        channel=channel,
        notice_version=notice_version,
        notice_id=notice_id,
        language=language,
        evidence_ref=evidence,
        photo_id=photo_id,
    )


@consent_app.command("withdraw")
def withdraw_command(  # noqa: PLR0913, PLR0917 - one parameter per option
    customer_id: CustomerArgument,
    purpose: Annotated[Purpose, typer.Option(help="The purpose withdrawn")],
    channel: ChannelOption = Where.DESK,
    actor: ActorOption = Who.CUSTOMER,
    actor_id: ActorIdOption = None,
    evidence: EvidenceOption = None,
    photo_id: PhotoOption = None,
    staff_id: StaffOption = None,
    role: RoleOption = None,
    wait: WaitOption = DEFAULT_WAIT,
    as_json: JsonOption = False,
) -> None:
    """Record that the customer withdrew a consent; `--actor staff` revokes it for them.

    Waits until every service processing the purpose has stopped, or the wait is over.
    """
    _change(
        Change.WITHDRAW,
        customer_id,
        staff_id,
        role,
        actor=actor,
        actor_id=actor_id,
        wait=wait,
        as_json=as_json,
        purpose=purpose,
        channel=channel,
        evidence_ref=evidence,
        photo_id=photo_id,
    )


@consent_app.command("object")
def object_command(  # noqa: PLR0913, PLR0917 - one parameter per option
    customer_id: CustomerArgument,
    kind: KindOption,
    channel: ChannelOption = Where.DESK,
    actor: ActorOption = Who.CUSTOMER,
    actor_id: ActorIdOption = None,
    evidence: EvidenceOption = None,
    staff_id: StaffOption = None,
    role: RoleOption = None,
    wait: WaitOption = DEFAULT_WAIT,
    as_json: JsonOption = False,
) -> None:
    """Record the customer's objection (Art 21); it suppresses until the customer lifts it.

    Direct marketing (distance selling included) and research objections are absolute.
    Waits until every service concerned has stopped, or the wait is over.
    """
    _change(
        Change.OBJECT,
        customer_id,
        staff_id,
        role,
        actor=actor,
        actor_id=actor_id,
        wait=wait,
        as_json=as_json,
        objection=kind,
        channel=channel,
        evidence_ref=evidence,
    )


@consent_app.command("lift")
def lift_command(  # noqa: PLR0913, PLR0917 - one parameter per option
    customer_id: CustomerArgument,
    kind: KindOption,
    actor: Annotated[
        Requester | None,
        typer.Option(
            help="Who asked to lift it (required): the customer or their guardian, never staff"
        ),
    ] = None,
    actor_id: ActorIdOption = None,
    channel: ChannelOption = Where.DESK,
    evidence: EvidenceOption = None,
    staff_id: StaffOption = None,
    role: RoleOption = None,
    wait: WaitOption = DEFAULT_WAIT,
    as_json: JsonOption = False,
) -> None:
    """Lift an objection at the customer's own, explicit request (capturing consent never does)."""
    _identify(customer_id, staff_id, role)  # a bad customer number or staff id is told first
    if actor is None:
        raise _usage(
            UsageError(
                "lifting an objection needs the customer's own request: say who asked, "
                "--actor customer or --actor guardian"
            )
        )
    _change(
        Change.LIFT,
        customer_id,
        staff_id,
        role,
        actor=Who(actor.value),
        actor_id=actor_id,
        wait=wait,
        as_json=as_json,
        objection=kind,
        channel=channel,
        evidence_ref=evidence,
    )
