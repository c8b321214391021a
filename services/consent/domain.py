"""Consent's domain: apply one command to a customer's consent, purely.

`decide(state, command, now=...)` takes the customer's current consent and one command
(`ConsentCaptured`, `ConsentWithdrawn`, `ObjectionLodged`, `ObjectionLifted`) and returns a
`Decision`: the new state, the history event(s) to append, the compacted snapshot, the audit
event, and the stop directive when the command stops a purpose. No I/O: the handler locks the
customer, reads the state, calls this and writes what it returns in the same transaction.

The rules:

- Every command is recorded (the history is the Art 7(1) proof) and bumps the customer's
  version by one, so versions rise strictly, one per history row.
- A stop always applies: a withdrawal (`withdrawn` by the customer or guardian, `revoked` by
  staff for them), a refusal, an objection. A withdrawal or an objection always publishes a
  `ProcessingStopRequested`; a refusal does when it stops a purpose that was allowed.
- A consent never overrides a later stop: a `given` consent expressed before the purpose's last
  change is recorded (`applied=false`) but changes nothing.
- An objection (Art 21) is its own record and a suppression: it covers its purposes on every
  channel and stays while consents are captured, until the customer explicitly lifts it. A lift
  expressed before the objection it would lift changes nothing. Direct-marketing and research
  objections are absolute.
- Consent needs no registration: a withdrawal for a customer consent has never seen applies.
- Fail closed: `hold(...)` suppresses every purpose of a customer whose command could not be
  applied; applying that very command later (a replay from the dead-letter topic) releases it.

A repeated command (same `event_id`) never reaches `decide`: the handler's inbox drops it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from uuid import UUID

from contracts.audit import AuditAction, AuditEvent, LegalBasis
from contracts.consent import (
    ABSOLUTE,
    ALL_PURPOSES,
    CATALOGUE,
    LEGAL_BASIS,
    OBJECTION_ALIASES,
    SUPPRESSES,
    ConsentHeld,
    ConsentRecorded,
    ConsentState,
    ConsentStatus,
    ObjectionKind,
    ObjectionLiftedRecorded,
    ObjectionRecorded,
    ProcessingStopRequested,
    Purpose,
    PurposeState,
    StopReason,
    affected_services,
    purpose_allowed,
)
from contracts.envelope import new_event_id
from contracts.intake import ConsentCaptured, ConsentWithdrawn, ObjectionLifted, ObjectionLodged

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from contracts.envelope import Event

PRODUCER: Final = "consent"
"""The producer of every event consent publishes."""
PHOTO_PURPOSES: Final = frozenset({Purpose.PHOTO_STORAGE, Purpose.PHOTO_MARKETING_USE})
"""Purposes whose consent may cover single photos."""
STAFF_ROLE: Final = "staff"
"""The audit `actor_role` of a staff member acting for the customer."""

ConsentCommand: TypeAlias = ConsentCaptured | ConsentWithdrawn | ObjectionLodged | ObjectionLifted
"""A command the consent service applies."""

COMMAND_TYPES: Final[Mapping[str, type[ConsentCommand]]] = MappingProxyType(
    {
        "ConsentCaptured": ConsentCaptured,
        "ConsentWithdrawn": ConsentWithdrawn,
        "ObjectionLodged": ObjectionLodged,
        "ObjectionLifted": ObjectionLifted,
    }
)
"""The commands of `consent.commands.v1`, by type name."""


class ConsentError(Exception):
    """A command consent must refuse; `reason` is a machine-readable code (no personal data)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PurposeRecord:
    """The current consent for one purpose of one customer.

    Attributes:
        status: The last status that took effect.
        version: The customer's version when it took effect.
        changed_at: When the customer expressed it (the command's `occurred_at`).
        notice_version: The notice version of the last `given`/`refused`.
        photo_ids: For photo purposes under `given`: the photos covered (empty: every photo).
    """

    status: ConsentStatus
    version: int
    changed_at: datetime
    notice_version: str | None = None
    photo_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CustomerConsent:
    """A customer's current consent: what `consent_current` holds.

    Attributes:
        customer_id: The customer number.
        version: The consent version, 0 before the first change.
        purposes: The current record of every purpose with one.
        objections: Active objections, each with when it was (last) expressed.
        holds: Commands that could not be applied (event id to reason): while any is held,
            nothing is allowed.
    """

    customer_id: str
    version: int = 0
    purposes: Mapping[Purpose, PurposeRecord] = field(default_factory=dict)
    objections: Mapping[ObjectionKind, datetime] = field(default_factory=dict)
    holds: Mapping[UUID, str] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        """Whether consent failed closed for the customer."""
        return bool(self.holds)

    def status(self, purpose: Purpose) -> ConsentStatus | None:
        """The current status of `purpose` (None: nothing recorded)."""
        record = self.purposes.get(purpose)
        return record.status if record is not None else None

    def allowed(self, purpose: Purpose) -> bool:
        """Whether `purpose` is allowed now (see `contracts.consent.purpose_allowed`)."""
        return not self.held and purpose_allowed(purpose, self.status(purpose), self.objections)

    def suppressed(self) -> frozenset[Purpose]:
        """The purposes the active objections suppress."""
        return frozenset(p for kind in self.objections for p in SUPPRESSES[kind])


@dataclass(frozen=True, slots=True)
class Decision:
    """What applying one command (or a hold) changes; the handler writes all of it.

    Attributes:
        state: The customer's new state.
        history: The history events to append, one per version, in order.
        snapshot: The compacted state for `consent.state.v1`.
        audit: The audit event for `audit.events.v1`.
        directive: The stop directive for `privacy.directives.v1`, if any.
        notice: A notice `(notice_id, version, language, sha256)` to register, if any.
    """

    state: CustomerConsent
    history: tuple[Event, ...]
    snapshot: ConsentState
    audit: AuditEvent
    directive: ProcessingStopRequested | None = None
    notice: tuple[str, str, str, str] | None = None


def notice_id_of(command: ConsentCaptured) -> str:
    """The notice a capture names, or the purpose's own consent notice `consent.<purpose>`."""
    return command.notice_id or f"consent.{command.purpose}"


def decide(
    state: CustomerConsent,
    command: ConsentCommand,
    *,
    now: datetime,
    known_notice_sha256: str | None = None,
) -> Decision:
    """Apply one command to the customer's state.

    Args:
        state: The customer's current state (version 0 for a customer never seen).
        command: The command, already decoded and checked against its Kafka key.
        now: When consent records it (`recorded_at`).
        known_notice_sha256: For a capture without a hash: the hash consent's notice catalogue
            has for its notice, if any.

    Raises:
        ConsentError: `customer_mismatch` when the command is for another customer.
    """
    if command.customer_id != state.customer_id:
        raise ConsentError("customer_mismatch")
    released = _release(state, command.event_id, now=now)
    base = released.state if released is not None else state
    history_before = released.history if released is not None else ()
    match command:
        case ConsentCaptured():
            decision = _capture(base, command, now=now, known_sha256=known_notice_sha256)
        case ConsentWithdrawn():
            decision = _withdraw(base, command, now=now)
        case ObjectionLodged():
            decision = _object(base, command, now=now)
        case ObjectionLifted():
            decision = _lift(base, command, now=now)
    if history_before:
        return replace(decision, history=history_before + decision.history)
    return decision


def hold(
    state: CustomerConsent, command_id: UUID, reason: str, *, now: datetime, correlation_id: UUID
) -> Decision | None:
    """Fail closed: hold the customer because command `command_id` could not be applied.

    Every purpose stops (a directive with reason `hold` to every affected service) until that
    command is applied. None when the command already holds the customer.
    """
    if command_id in state.holds:
        return None
    version = state.version + 1
    new = replace(state, version=version, holds={**state.holds, command_id: reason})
    held = ConsentHeld(
        customer_id=state.customer_id,
        version=version,
        held=True,
        command_id=command_id,
        reason=reason,
        recorded_at=now,
        correlation_id=correlation_id,
    )
    purposes = tuple(sorted(ALL_PURPOSES))
    return Decision(
        state=new,
        history=(held,),
        snapshot=snapshot(new, now=now, correlation_id=correlation_id),
        audit=_audit(
            state.customer_id,
            actor=PRODUCER,
            role="service",
            action=AuditAction.STOP,
            resource="consent.hold",
            correlation_id=correlation_id,
            reason_code=reason,
            outcome="failed",
        ),
        directive=_directive(new, purposes, "hold", correlation_id=correlation_id),
    )


def snapshot(
    state: CustomerConsent, *, now: datetime, correlation_id: UUID | None = None
) -> ConsentState:
    """The compacted `ConsentState` of a customer: every purpose, allowed or not."""
    purposes: dict[Purpose, PurposeState] = {}
    for purpose in sorted(ALL_PURPOSES):
        record = state.purposes.get(purpose)
        purposes[purpose] = PurposeState(
            status=record.status if record else None,
            allowed=state.allowed(purpose),
            version=record.version if record else None,
            notice_version=record.notice_version if record else None,
            photo_ids=record.photo_ids if record else (),
            changed_at=record.changed_at if record else None,
        )
    return ConsentState(
        customer_id=state.customer_id,
        version=state.version,
        purposes=purposes,
        suppressions=tuple(sorted(state.objections)),
        suppressed=tuple(sorted(state.suppressed())),
        held=state.held,
        occurred_at=now,
        correlation_id=correlation_id or new_event_id(),
    )


# --- The commands --------------------------------------------------------------------------


def _capture(
    state: CustomerConsent, command: ConsentCaptured, *, now: datetime, known_sha256: str | None
) -> Decision:
    purpose = Purpose(command.purpose)
    version = state.version + 1
    current = state.purposes.get(purpose)
    status = ConsentStatus(command.status)
    photo = command.photo_id if purpose in PHOTO_PURPOSES else None
    stale = current is not None and command.occurred_at < current.changed_at
    applied = status is not ConsentStatus.GIVEN or not stale
    purposes = dict(state.purposes)
    if applied:
        scope: tuple[str, ...] = ()
        if status is ConsentStatus.GIVEN and photo is not None:
            if current is not None and current.status is ConsentStatus.GIVEN:
                scope = tuple(sorted({*current.photo_ids, photo})) if current.photo_ids else ()
            else:
                scope = (photo,)
        purposes[purpose] = PurposeRecord(
            status=status,
            version=version,
            changed_at=max(command.occurred_at, current.changed_at)
            if current is not None
            else command.occurred_at,
            notice_version=command.notice_version,
            photo_ids=scope,
        )
    new = replace(state, version=version, purposes=purposes)
    notice_id = notice_id_of(command)
    sha256 = command.notice_sha256 or known_sha256
    recorded = ConsentRecorded(
        customer_id=state.customer_id,
        version=version,
        purpose=purpose,
        legal_basis=LEGAL_BASIS[purpose],
        status=status,
        notice_id=notice_id,
        notice_version=command.notice_version,
        notice_language=command.language,
        notice_sha256=sha256,
        occurred_at=command.occurred_at,
        correlation_id=command.correlation_id,
        photo_ids=(photo,) if photo is not None else (),
        applied=applied,
        recorded_at=now,
        **_actor_fields(command),
    )
    directive = None
    if state.allowed(purpose) and not new.allowed(purpose):
        directive = _directive(new, (purpose,), "withdrawal", correlation_id=command.correlation_id)
    notice = None
    if command.notice_sha256 is not None:
        notice = (notice_id, command.notice_version, command.language, command.notice_sha256)
    return Decision(
        state=new,
        history=(recorded,),
        snapshot=snapshot(new, now=now, correlation_id=command.correlation_id),
        audit=_command_audit(command, AuditAction.CONSENT_CHANGE, "consent.consent", purpose),
        directive=directive,
        notice=notice,
    )


def _withdraw(state: CustomerConsent, command: ConsentWithdrawn, *, now: datetime) -> Decision:
    purpose = Purpose(command.purpose)
    version = state.version + 1
    current = state.purposes.get(purpose)
    status = ConsentStatus.REVOKED if command.actor == STAFF_ROLE else ConsentStatus.WITHDRAWN
    photo = command.photo_id if purpose in PHOTO_PURPOSES else None
    changed_at = max(command.occurred_at, current.changed_at) if current else command.occurred_at
    partial = (
        photo is not None
        and current is not None
        and current.status is ConsentStatus.GIVEN
        and len(current.photo_ids) > 1
        and photo in current.photo_ids
    )
    purposes = dict(state.purposes)
    if partial and current is not None:
        # One photo of several: the consent stays for the others.
        remaining = tuple(p for p in current.photo_ids if p != photo)
        purposes[purpose] = replace(
            current, version=version, changed_at=changed_at, photo_ids=remaining
        )
        stopped_photos: tuple[str, ...] = (photo,) if photo is not None else ()
    else:
        # The whole purpose; a single photo of an all-photos consent withdraws them all
        # (fail closed: "all but one" has no representation).
        purposes[purpose] = PurposeRecord(
            status=status,
            version=version,
            changed_at=changed_at,
            notice_version=current.notice_version if current else None,
        )
        stopped_photos = ()
    new = replace(state, version=version, purposes=purposes)
    recorded = ConsentRecorded(
        customer_id=state.customer_id,
        version=version,
        purpose=purpose,
        legal_basis=LEGAL_BASIS[purpose],
        status=status,
        occurred_at=command.occurred_at,
        correlation_id=command.correlation_id,
        photo_ids=(photo,) if photo is not None else (),
        recorded_at=now,
        **_actor_fields(command),
    )
    directive = _directive(
        new,
        (purpose,),
        "withdrawal",
        correlation_id=command.correlation_id,
        photo_ids=stopped_photos,
    )
    return Decision(
        state=new,
        history=(recorded,),
        snapshot=snapshot(new, now=now, correlation_id=command.correlation_id),
        audit=_command_audit(command, AuditAction.CONSENT_CHANGE, "consent.consent", purpose),
        directive=directive,
    )


def _object(state: CustomerConsent, command: ObjectionLodged, *, now: datetime) -> Decision:
    kind = OBJECTION_ALIASES[command.objection]
    version = state.version + 1
    since = state.objections.get(kind)
    latest = command.occurred_at if since is None else max(since, command.occurred_at)
    new = replace(state, version=version, objections={**state.objections, kind: latest})
    purposes = tuple(sorted(SUPPRESSES[kind]))
    recorded = ObjectionRecorded(
        customer_id=state.customer_id,
        version=version,
        objection=kind,
        purposes=purposes,
        absolute=kind in ABSOLUTE,
        occurred_at=command.occurred_at,
        correlation_id=command.correlation_id,
        recorded_at=now,
        **_actor_fields(command),
    )
    return Decision(
        state=new,
        history=(recorded,),
        snapshot=snapshot(new, now=now, correlation_id=command.correlation_id),
        audit=_command_audit(command, AuditAction.OBJECT, "consent.objection", None),
        directive=_directive(new, purposes, "objection", correlation_id=command.correlation_id),
    )


def _lift(state: CustomerConsent, command: ObjectionLifted, *, now: datetime) -> Decision:
    kind = OBJECTION_ALIASES[command.objection]
    version = state.version + 1
    since = state.objections.get(kind)
    applied = since is not None and command.occurred_at >= since
    objections = {k: v for k, v in state.objections.items() if not (applied and k is kind)}
    new = replace(state, version=version, objections=objections)
    recorded = ObjectionLiftedRecorded(
        customer_id=state.customer_id,
        version=version,
        objection=kind,
        purposes=tuple(sorted(SUPPRESSES[kind])),
        applied=applied,
        occurred_at=command.occurred_at,
        correlation_id=command.correlation_id,
        recorded_at=now,
        **_actor_fields(command),
    )
    return Decision(
        state=new,
        history=(recorded,),
        snapshot=snapshot(new, now=now, correlation_id=command.correlation_id),
        audit=_command_audit(command, AuditAction.CONSENT_CHANGE, "consent.objection", None),
    )


def _release(state: CustomerConsent, command_id: UUID, *, now: datetime) -> Decision | None:
    """Release the hold of `command_id` (it is being applied now), if it holds the customer."""
    reason = state.holds.get(command_id)
    if reason is None:
        return None
    version = state.version + 1
    holds = {k: v for k, v in state.holds.items() if k != command_id}
    new = replace(state, version=version, holds=holds)
    released = ConsentHeld(
        customer_id=state.customer_id,
        version=version,
        held=False,
        command_id=command_id,
        reason="applied",
        recorded_at=now,
    )
    return Decision(
        state=new,
        history=(released,),
        snapshot=snapshot(new, now=now, correlation_id=released.correlation_id),
        audit=_audit(
            state.customer_id,
            actor=PRODUCER,
            role="service",
            action=AuditAction.UNRESTRICT,
            resource="consent.hold",
            correlation_id=released.correlation_id,
        ),
    )


# --- Helpers -------------------------------------------------------------------------------


def _directive(
    state: CustomerConsent,
    purposes: Iterable[Purpose],
    reason: StopReason,
    *,
    correlation_id: UUID,
    photo_ids: tuple[str, ...] = (),
) -> ProcessingStopRequested:
    ordered = tuple(sorted(set(purposes)))
    directive_id = new_event_id()
    return ProcessingStopRequested(
        event_id=directive_id,
        directive_id=directive_id,
        producer=PRODUCER,
        customer_id=state.customer_id,
        purposes=ordered,
        reason=reason,
        consent_version=state.version,
        services=affected_services(ordered),
        photo_ids=photo_ids,
        correlation_id=correlation_id,
    )


def _actor_fields(command: ConsentCommand) -> dict[str, Any]:
    """The 27560 fields every history event copies from its command.

    An objection's free-text grounds are never among them: the history carries no free text.
    """
    return {
        "channel": command.channel,
        "actor": command.actor,
        "actor_id": command.actor_id,
        "recorded_by": command.recorded_by,
        "evidence_ref": command.evidence_ref,
        "command_id": command.event_id,
    }


def _command_audit(
    command: ConsentCommand, action: AuditAction, resource: str, purpose: Purpose | None
) -> AuditEvent:
    if command.recorded_by is not None:
        actor, role = command.recorded_by, STAFF_ROLE
    elif command.actor_id is not None:
        actor, role = command.actor_id, command.actor
    else:
        actor, role = command.actor, command.actor
    return _audit(
        command.customer_id,
        actor=actor,
        role=role,
        action=action,
        resource=resource,
        correlation_id=command.correlation_id,
        purpose=purpose,
        legal_basis=CATALOGUE[purpose].legal_basis if purpose is not None else None,
    )


def _audit(  # noqa: PLR0913 - the audit fields, keyword-only
    customer_id: str,
    *,
    actor: str,
    role: str,
    action: AuditAction,
    resource: str,
    correlation_id: UUID,
    purpose: Purpose | None = None,
    legal_basis: LegalBasis | None = None,
    reason_code: str | None = None,
    outcome: str = "success",
) -> AuditEvent:
    return AuditEvent.model_validate(
        {
            "producer": PRODUCER,
            "actor": actor,
            "actor_role": role,
            "action": action,
            "customer_id": customer_id,
            "resource": resource,
            "outcome": outcome,
            "purpose": str(purpose) if purpose is not None else None,
            "legal_basis": legal_basis,
            "reason_code": reason_code,
            "correlation_id": correlation_id,
        }
    )


# --- Stored form ---------------------------------------------------------------------------


def to_documents(state: CustomerConsent) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The JSON documents `consent_current` stores: purposes, objections and holds."""
    purposes = {
        str(p): {
            "status": str(r.status),
            "version": r.version,
            "changed_at": r.changed_at.isoformat(),
            "notice_version": r.notice_version,
            "photo_ids": list(r.photo_ids),
        }
        for p, r in state.purposes.items()
    }
    objections = {str(k): v.isoformat() for k, v in state.objections.items()}
    holds = {str(k): v for k, v in state.holds.items()}
    return purposes, objections, holds


def from_documents(
    customer_id: str,
    version: int,
    purposes: Mapping[str, Any],
    objections: Mapping[str, str],
    holds: Mapping[str, str],
) -> CustomerConsent:
    """The state from `to_documents`' documents (as read back from `consent_current`)."""
    return CustomerConsent(
        customer_id=customer_id,
        version=version,
        purposes={
            Purpose(p): PurposeRecord(
                status=ConsentStatus(r["status"]),
                version=int(r["version"]),
                changed_at=datetime.fromisoformat(r["changed_at"]),
                notice_version=r.get("notice_version"),
                photo_ids=tuple(r.get("photo_ids") or ()),
            )
            for p, r in purposes.items()
        },
        objections={ObjectionKind(k): datetime.fromisoformat(v) for k, v in objections.items()},
        holds={UUID(k): v for k, v in holds.items()},
    )
