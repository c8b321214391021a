"""Consent: the closed purpose catalogue, and what the consent service publishes.

The consent service is the single writer of consent and objections. Every change bumps the
customer's consent `version` (append-only history, one version per change), and:

- `consent.events.v1` carries the history: `ConsentRecorded`, `ObjectionRecorded`,
  `ObjectionLiftedRecorded` (the fields of ISO/IEC TS 27560 as mapped by W3C DPV: customer,
  purpose, status, notice id + version + language + SHA-256 of the exact text shown, channel,
  actor, time, evidence reference);
- `consent.state.v1` (compacted) carries each customer's whole current `ConsentState`;
- `privacy.directives.v1` carries a `ProcessingStopRequested` on every withdrawal or objection
  that stops a purpose, naming the purposes, the version and the services that must answer;
- `privacy.acks.v1` carries each affected service's `ProcessingStopped` once its stop is durable.

Versions decide, not arrival order: a reader applies a state only when its `version` is higher
than the one it holds, and a directive whose version is not higher is a no-op apart from its
(idempotent) ack. No stale or replayed event may lift a suppression. A customer with no state
is not allowed anything (fail closed). Care itself never depends on consent: no purpose here is
care, and nothing in the register checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - pydantic resolves annotations at runtime
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Final, Literal
from uuid import UUID  # noqa: TC003 - pydantic resolves annotations at runtime

from pydantic import Field

from contracts.audit import LegalBasis
from contracts.envelope import Event, WireModel

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

COMMANDS_TOPIC: Final = "consent.commands.v1"
"""Consent commands (sealed with the topic key), from intake and the operator CLI."""
EVENTS_TOPIC: Final = "consent.events.v1"
"""The append-only consent history, keyed by customer_id."""
STATE_TOPIC: Final = "consent.state.v1"
"""The compacted current consent state per customer, keyed by customer_id."""
DIRECTIVES_TOPIC: Final = "privacy.directives.v1"
"""Stop (and erase) orders for every processor, keyed by customer_id."""
ACKS_TOPIC: Final = "privacy.acks.v1"
"""Processors' answers to directives, keyed by customer_id."""

_IDENTIFIER: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
_SINGLE_LINE: Final = r"^[^\x00-\x1f\x7f]*$"
_SHA256: Final = r"^[0-9a-f]{64}$"


# --- The purpose catalogue -----------------------------------------------------------------


class Purpose(StrEnum):
    """A processing purpose that depends on consent or can be objected to (closed catalogue).

    Care is not one of them: care never depends on consent.
    """

    MARKETING_EMAIL = "marketing_email"
    MARKETING_SMS = "marketing_sms"
    MARKETING_POST = "marketing_post"
    MARKETING_PHONE = "marketing_phone"
    RESEARCH = "research"
    ANALYTICS = "analytics"
    PHOTO_STORAGE = "photo_storage"
    PHOTO_MARKETING_USE = "photo_marketing_use"
    WEB_ANALYTICS = "web_analytics"


@dataclass(frozen=True, slots=True)
class PurposeSpec:
    """What the catalogue says about one purpose.

    Attributes:
        legal_basis: The GDPR Art 6(1) basis the purpose relies on.
        description: What the purpose is, for the notice and the CLI.
        law: Where the rule comes from.
        opt_out: A legitimate-interest purpose: allowed until the customer refuses, withdraws
            or objects (opt-out), rather than only after a `given` consent (opt-in).
        explicit: Needs explicit consent (Art 9(2)(a): health data such as tooth photos).
    """

    legal_basis: LegalBasis
    description: str
    law: str
    opt_out: bool = False
    explicit: bool = False


CATALOGUE: Final[Mapping[Purpose, PurposeSpec]] = MappingProxyType(
    {
        Purpose.MARKETING_EMAIL: PurposeSpec(
            LegalBasis.CONSENT,
            "Marketing by e-mail (prior opt-in).",
            "917/2014 §200",
        ),
        Purpose.MARKETING_SMS: PurposeSpec(
            LegalBasis.CONSENT,
            "Marketing by SMS/MMS (prior opt-in).",
            "917/2014 §200",
        ),
        Purpose.MARKETING_POST: PurposeSpec(
            LegalBasis.LEGITIMATE_INTERESTS,
            "Marketing by post (legitimate interest; opt-out).",
            "GDPR Art 6(1)(f), Art 21(2)",
            opt_out=True,
        ),
        Purpose.MARKETING_PHONE: PurposeSpec(
            LegalBasis.LEGITIMATE_INTERESTS,
            "Marketing by phone call (legitimate interest; opt-out).",
            "GDPR Art 6(1)(f), Art 21(2)",
            opt_out=True,
        ),
        Purpose.RESEARCH: PurposeSpec(
            LegalBasis.LEGITIMATE_INTERESTS,
            "Market and opinion research (legitimate interest; an objection is absolute).",
            "GDPR Art 6(1)(f), Art 21; 1050/2018",
            opt_out=True,
        ),
        Purpose.ANALYTICS: PurposeSpec(
            LegalBasis.LEGITIMATE_INTERESTS,
            "Analytics and statistics on pseudonymised data (legitimate interest).",
            "GDPR Art 6(1)(f), Art 21(1), Art 89",
            opt_out=True,
        ),
        Purpose.PHOTO_STORAGE: PurposeSpec(
            LegalBasis.CONSENT,
            "Storing the customer's tooth photos.",
            "GDPR Art 6(1)(a), Art 9(2)(a)",
            explicit=True,
        ),
        Purpose.PHOTO_MARKETING_USE: PurposeSpec(
            LegalBasis.CONSENT,
            "Using the customer's photos in marketing (explicit consent).",
            "GDPR Art 9(2)(a)",
            explicit=True,
        ),
        Purpose.WEB_ANALYTICS: PurposeSpec(
            LegalBasis.CONSENT,
            "Website analytics and other non-essential cookies (prior opt-in).",
            "917/2014 §205",
        ),
    }
)
"""Every purpose with its legal basis and description."""

LEGAL_BASIS: Final[Mapping[Purpose, LegalBasis]] = MappingProxyType(
    {purpose: spec.legal_basis for purpose, spec in CATALOGUE.items()}
)
"""The Art 6(1) legal basis of every purpose."""
DESCRIPTIONS: Final[Mapping[Purpose, str]] = MappingProxyType(
    {purpose: spec.description for purpose, spec in CATALOGUE.items()}
)
"""A one-line description of every purpose."""

ALL_PURPOSES: Final = frozenset(Purpose)
"""Every purpose of the catalogue."""
MARKETING: Final = frozenset(
    {
        Purpose.MARKETING_EMAIL,
        Purpose.MARKETING_SMS,
        Purpose.MARKETING_POST,
        Purpose.MARKETING_PHONE,
    }
)
"""Direct marketing on every channel (what a direct-marketing objection suppresses)."""
CONSENT_BASED: Final = frozenset(p for p, s in CATALOGUE.items() if not s.opt_out)
"""Purposes allowed only after a `given` consent (opt-in)."""
OPT_OUT: Final = frozenset(p for p, s in CATALOGUE.items() if s.opt_out)
"""Legitimate-interest purposes, allowed until refused, withdrawn or objected to."""


# --- Statuses, objections, channels, actors ------------------------------------------------


class ConsentStatus(StrEnum):
    """The status of a consent record (DPV consent status)."""

    GIVEN = "given"
    """The customer agreed."""
    REFUSED = "refused"
    """The customer was asked and declined."""
    WITHDRAWN = "withdrawn"
    """The customer (or their guardian) withdrew a consent given earlier."""
    REVOKED = "revoked"
    """Staff revoked it on the customer's behalf."""
    EXPIRED = "expired"
    """It lapsed (e.g. its notice was replaced); a fresh consent is needed."""


STOPPING_STATUSES: Final = frozenset(
    {ConsentStatus.REFUSED, ConsentStatus.WITHDRAWN, ConsentStatus.REVOKED, ConsentStatus.EXPIRED}
)
"""Statuses under which a purpose is never allowed, whatever its legal basis."""


class ObjectionKind(StrEnum):
    """What an objection (GDPR Art 21) is to."""

    DIRECT_MARKETING = "direct_marketing"
    """Direct marketing, distance selling included: every marketing purpose, every channel."""
    RESEARCH = "research"
    """Market and opinion research."""
    ANALYTICS = "analytics"
    """Analytics and statistics on legitimate interest (Art 21(1))."""


SUPPRESSES: Final[Mapping[ObjectionKind, frozenset[Purpose]]] = MappingProxyType(
    {
        ObjectionKind.DIRECT_MARKETING: MARKETING,
        ObjectionKind.RESEARCH: frozenset({Purpose.RESEARCH}),
        ObjectionKind.ANALYTICS: frozenset({Purpose.ANALYTICS}),
    }
)
"""The purposes each objection suppresses until the customer explicitly lifts it."""
ABSOLUTE: Final = frozenset({ObjectionKind.DIRECT_MARKETING, ObjectionKind.RESEARCH})
"""Objections that can never be refused (Art 21(2)-(3); research as direct marketing, C7)."""

OBJECTION_ALIASES: Final[Mapping[str, ObjectionKind]] = MappingProxyType(
    {
        "direct_marketing": ObjectionKind.DIRECT_MARKETING,
        "distance_selling": ObjectionKind.DIRECT_MARKETING,
        "market_research": ObjectionKind.RESEARCH,
        "opinion_research": ObjectionKind.RESEARCH,
        "research": ObjectionKind.RESEARCH,
        "analytics": ObjectionKind.ANALYTICS,
    }
)
"""The objection names a clinic app may send, and the kind each one is."""

ConsentChannel = Literal["desk", "web", "kiosk", "phone", "paper"]
"""Where the customer expressed it: at the reception desk, on the web, on a kiosk, by phone,
or on a paper form."""
Actor = Literal["customer", "guardian", "staff"]
"""Who expressed it: the customer, their guardian or trustee, or staff acting for them."""
StopReason = Literal["withdrawal", "objection", "erasure", "hold"]
"""Why processing must stop: a withdrawal (or refusal, or revocation), an objection, an
erasure, or a hold (consent could not apply a command for the customer and fails closed)."""


class ServiceName(StrEnum):
    """The services that answer stop directives for consent purposes."""

    MARKETING = "marketing"
    ANALYTICS = "analytics"
    PHOTOS = "photos"


SERVICES_BY_PURPOSE: Final[Mapping[Purpose, tuple[str, ...]]] = MappingProxyType(
    {
        Purpose.MARKETING_EMAIL: (ServiceName.MARKETING,),
        Purpose.MARKETING_SMS: (ServiceName.MARKETING,),
        Purpose.MARKETING_POST: (ServiceName.MARKETING,),
        Purpose.MARKETING_PHONE: (ServiceName.MARKETING,),
        Purpose.RESEARCH: (ServiceName.MARKETING,),
        Purpose.ANALYTICS: (ServiceName.ANALYTICS,),
        Purpose.WEB_ANALYTICS: (ServiceName.ANALYTICS,),
        Purpose.PHOTO_STORAGE: (ServiceName.PHOTOS,),
        Purpose.PHOTO_MARKETING_USE: (ServiceName.PHOTOS,),
    }
)
"""The services that process each purpose, and so must stop it and answer a directive."""


def affected_services(purposes: Iterable[Purpose | str]) -> tuple[str, ...]:
    """The services that must answer a stop directive for `purposes`, sorted, each once."""
    out = {str(s) for p in purposes for s in SERVICES_BY_PURPOSE[Purpose(p)]}
    return tuple(sorted(out))


AFFECTED_SERVICES: Final = affected_services
"""Alias of `affected_services` (the name the design brief uses)."""


# --- Field shapes shared by the events -----------------------------------------------------

CustomerId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=_IDENTIFIER,
        description="The clinic's customer number (asiakasnumero); also the Kafka key.",
    ),
]
"""A customer number, required on every consent event."""


# --- History: consent.events.v1 ------------------------------------------------------------


class ConsentRecorded(Event):
    """One consent record (ISO/IEC TS 27560 via DPV), appended to the history.

    `occurred_at` is when the customer expressed it; `recorded_at` when consent stored it.
    """

    type: Literal["ConsentRecorded"] = Field("ConsentRecorded", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    customer_id: CustomerId
    producer: Literal["consent"] = Field("consent", description="Always the consent service.")
    version: int = Field(ge=1, description="The customer's consent version after this change.")
    purpose: Purpose = Field(description="The purpose the record is about.")
    legal_basis: LegalBasis = Field(description="The Art 6(1) legal basis of the purpose.")
    status: ConsentStatus = Field(description="given, refused, withdrawn, revoked or expired.")
    notice_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=_IDENTIFIER,
        description="The notice (consent wording) shown; null for a withdrawal.",
    )
    notice_version: str | None = Field(
        None,
        min_length=1,
        max_length=32,
        pattern=_IDENTIFIER,
        description="Version of the notice shown; null for a withdrawal.",
    )
    notice_language: Literal["fi", "sv", "en"] | None = Field(
        None, description="Language of the notice shown; null for a withdrawal."
    )
    notice_sha256: str | None = Field(
        None,
        pattern=_SHA256,
        description=(
            "SHA-256 (lower-case hex) of the exact text shown; null when neither the app nor "
            "consent's notice catalogue knew it."
        ),
    )
    channel: ConsentChannel = Field(description="desk, web, kiosk, phone or paper.")
    actor: Actor = Field(description="Who expressed it: customer, guardian or staff.")
    actor_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=_IDENTIFIER,
        description=(
            "The guardian's customer number or the staff account acting (null: the customer)."
        ),
    )
    recorded_by: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=_IDENTIFIER,
        description="The staff account that entered it (desk, phone, paper), if any.",
    )
    evidence_ref: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=_SINGLE_LINE,
        description="Reference to the evidence (e.g. a signed form's archive id).",
    )
    photo_ids: tuple[str, ...] = Field(
        (),
        max_length=100,
        description="For photo purposes: the photos it covers (empty: every photo).",
    )
    applied: bool = Field(
        default=True,
        description=(
            "Whether it changed the current state (false: a consent expressed before the "
            "purpose's last change arrived late; a late consent never overrides a later stop)."
        ),
    )
    command_id: UUID = Field(description="The event_id of the command that caused it.")
    recorded_at: datetime = Field(description="When consent stored it (UTC).")


class ObjectionRecorded(Event):
    """An objection (GDPR Art 21), appended to the history; it suppresses until lifted."""

    type: Literal["ObjectionRecorded"] = Field("ObjectionRecorded", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    customer_id: CustomerId
    producer: Literal["consent"] = Field("consent", description="Always the consent service.")
    version: int = Field(ge=1, description="The customer's consent version after this change.")
    objection: ObjectionKind = Field(description="What is objected to.")
    purposes: tuple[Purpose, ...] = Field(description="The purposes the objection suppresses.")
    absolute: bool = Field(
        description="An objection that can never be refused (direct marketing, research)."
    )
    channel: ConsentChannel = Field(description="desk, web, kiosk, phone or paper.")
    actor: Actor = Field(description="Who objected: customer, guardian or staff for them.")
    actor_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=_IDENTIFIER,
        description="The guardian's customer number or the staff account (null: customer).",
    )
    recorded_by: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=_IDENTIFIER,
        description="The staff account that entered it, if any.",
    )
    evidence_ref: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=_SINGLE_LINE,
        description="Reference to the evidence.",
    )
    command_id: UUID = Field(description="The event_id of the command that caused it.")
    recorded_at: datetime = Field(description="When consent stored it (UTC).")


class ObjectionLiftedRecorded(Event):
    """The customer explicitly lifted an objection, appended to the history."""

    type: Literal["ObjectionLiftedRecorded"] = Field(
        "ObjectionLiftedRecorded", description="Event type name."
    )
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    customer_id: CustomerId
    producer: Literal["consent"] = Field("consent", description="Always the consent service.")
    version: int = Field(ge=1, description="The customer's consent version after this change.")
    objection: ObjectionKind = Field(description="The objection lifted.")
    purposes: tuple[Purpose, ...] = Field(description="The purposes no longer suppressed by it.")
    channel: ConsentChannel = Field(description="desk, web, kiosk, phone or paper.")
    actor: Literal["customer", "guardian"] = Field(
        description="Who lifted it: only the customer or their guardian, never staff alone."
    )
    applied: bool = Field(
        default=True,
        description=(
            "Whether it lifted an active objection (false: none was active, or the lift was "
            "expressed before the objection it would lift; the suppression stays)."
        ),
    )
    actor_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=_IDENTIFIER,
        description="The guardian's customer number (null: the customer).",
    )
    recorded_by: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=_IDENTIFIER,
        description="The staff account that entered it, if any.",
    )
    evidence_ref: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=_SINGLE_LINE,
        description="Reference to the evidence.",
    )
    command_id: UUID = Field(description="The event_id of the command that caused it.")
    recorded_at: datetime = Field(description="When consent stored it (UTC).")


class ConsentHeld(Event):
    """Consent failed closed for a customer, or released that hold (history).

    A command for the customer could not be applied (it was dead-lettered): until that same
    command is applied (replayed from the dead-letter topic after a fix), every purpose is
    suppressed for the customer, since the lost command may have been a withdrawal.
    """

    type: Literal["ConsentHeld"] = Field("ConsentHeld", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    customer_id: CustomerId
    producer: Literal["consent"] = Field("consent", description="Always the consent service.")
    version: int = Field(ge=1, description="The customer's consent version after this change.")
    held: bool = Field(description="True: the hold is set; false: it was released.")
    command_id: UUID = Field(description="The event_id of the command that failed.")
    reason: str = Field(
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_.:-]*$",
        description="Machine-readable reason the command failed (or `applied` on release).",
    )
    recorded_at: datetime = Field(description="When consent stored it (UTC).")


HISTORY_TYPES: Final = (ConsentRecorded, ObjectionRecorded, ObjectionLiftedRecorded, ConsentHeld)
"""The event types of `consent.events.v1`."""


# --- Current state: consent.state.v1 -------------------------------------------------------


class PurposeState(WireModel):
    """The current consent for one purpose."""

    status: ConsentStatus | None = Field(
        None, description="The last recorded status (null: nothing recorded)."
    )
    allowed: bool = Field(
        description="Whether processing for the purpose is allowed now (see `effective`)."
    )
    version: int | None = Field(
        None, ge=1, description="The customer's consent version when it last changed."
    )
    notice_version: str | None = Field(
        None,
        min_length=1,
        max_length=32,
        pattern=_IDENTIFIER,
        description="The notice version the last `given`/`refused` was under.",
    )
    photo_ids: tuple[str, ...] = Field(
        (), max_length=100, description="For photo purposes: the photos covered (empty: all)."
    )
    changed_at: datetime | None = Field(None, description="When it last changed (UTC).")


class ConsentState(Event):
    """A customer's whole current consent (`consent.state.v1`, compacted, by customer_id).

    Apply only when `version` is higher than the version held (versions decide, not arrival
    order). A purpose missing from `purposes` has nothing recorded.
    """

    type: Literal["ConsentState"] = Field("ConsentState", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    customer_id: CustomerId
    producer: Literal["consent"] = Field("consent", description="Always the consent service.")
    version: int = Field(ge=1, description="The customer's consent version (rises every change).")
    purposes: dict[Purpose, PurposeState] = Field(
        description="The current consent per purpose (every purpose of the catalogue)."
    )
    suppressions: tuple[ObjectionKind, ...] = Field(
        description="Active objections, sorted; each suppresses its purposes until lifted."
    )
    suppressed: tuple[Purpose, ...] = Field(
        (), description="The purposes the active objections suppress, sorted (derived)."
    )
    held: bool = Field(
        default=False,
        description=(
            "Consent failed closed for the customer (a command could not be applied): nothing "
            "is allowed until the hold is released (see `ConsentHeld`)."
        ),
    )


def purpose_allowed(
    purpose: Purpose,
    status: ConsentStatus | None,
    suppressions: Iterable[ObjectionKind],
) -> bool:
    """Whether `purpose` is allowed under `status` and the active objections.

    Never allowed while an objection suppresses it. A consent-based purpose (opt-in) is allowed
    only when its status is `given`; a legitimate-interest purpose (opt-out: post, phone,
    research, analytics) is allowed unless it was refused, withdrawn, revoked or expired.
    """
    if any(purpose in SUPPRESSES[kind] for kind in suppressions):
        return False
    if CATALOGUE[purpose].opt_out:
        return status not in STOPPING_STATUSES
    return status is ConsentStatus.GIVEN


def effective(state: ConsentState | None, purpose: Purpose, photo_id: str | None = None) -> bool:
    """Whether processing for `purpose` is allowed for the customer of `state`.

    Fail closed: no state (an unknown customer) allows nothing, not even an opt-out purpose,
    and neither does a held state.
    For a photo purpose whose consent covers some photos only, `photo_id` must be one of them
    (None then means "no particular photo" and is refused).
    """
    if state is None or state.held:
        return False
    current = state.purposes.get(purpose)
    status = current.status if current is not None else None
    if not purpose_allowed(purpose, status, state.suppressions):
        return False
    if current is not None and current.photo_ids:
        return photo_id is not None and photo_id in current.photo_ids
    return True


# --- The fan-out: privacy.directives.v1 and privacy.acks.v1 --------------------------------


class ProcessingStopRequested(Event):
    """A stop order: every named service must stop the purposes for the customer and answer.

    A service answers with `ProcessingStopped` once the stop is durable. A directive whose
    `consent_version` is not higher than the version a service holds changes nothing there,
    but is still answered (acks are idempotent).
    """

    type: Literal["ProcessingStopRequested"] = Field(
        "ProcessingStopRequested", description="Event type name."
    )
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    customer_id: CustomerId
    directive_id: UUID = Field(description="The directive's id; every answer names it.")
    purposes: tuple[Purpose, ...] = Field(min_length=1, description="The purposes to stop.")
    reason: StopReason = Field(description="withdrawal, objection or erasure.")
    consent_version: int = Field(
        ge=1, description="The customer's consent version that made the stop."
    )
    services: tuple[str, ...] = Field(
        min_length=1, description="The services that must answer (see `affected_services`)."
    )
    photo_ids: tuple[str, ...] = Field(
        (), max_length=100, description="For photo purposes: only these photos (empty: all)."
    )


class ProcessingStopped(Event):
    """A service's answer to a directive: its stop is durable."""

    type: Literal["ProcessingStopped"] = Field("ProcessingStopped", description="Event type name.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's schema.")
    customer_id: CustomerId
    directive_id: UUID = Field(description="The directive answered.")
    service: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="The answering service (also the event's producer).",
    )
    consent_version: int = Field(ge=1, description="The directive's consent version.")
