"""The audit event every service writes to `audit.events.v1` (PATTERNS.md §6).

An audit event records who did what to which customer's data, for which purpose, under which
legal basis and with what outcome. It never carries the personal data itself: the customer is
named only by `customer_id`, and every other text field is a machine-readable code constrained
by a pattern, so free text (and with it, personal data) cannot slip in. Compliance sequences
these events into the tamper-evident ledger.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import Field

from contracts.envelope import Event

AUDIT_TOPIC: Final = "audit.events.v1"
"""The topic every service writes its audit events to, keyed by customer_id."""

_CODE: Final = r"^[a-z][a-z0-9_]*$"
_DOTTED_CODE: Final = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"


class AuditAction(StrEnum):
    """What was done to a customer's data (a closed list; additions are schema changes)."""

    READ = "read"
    SEARCH = "search"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    EXPORT = "export"
    RESTRICT = "restrict"
    UNRESTRICT = "unrestrict"
    CONSENT_CHANGE = "consent_change"
    OBJECT = "object"
    STOP = "stop"
    ERASE = "erase"
    SHRED = "shred"
    REJECT = "reject"


class AuditOutcome(StrEnum):
    """How the action ended."""

    SUCCESS = "success"
    DENIED = "denied"
    FAILED = "failed"


class LegalBasis(StrEnum):
    """The GDPR Art 6(1) lawful basis the processing relied on."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTERESTS = "legitimate_interests"


class AuditEvent(Event):
    """Someone (staff or a service) acted on a customer's data; PII-free by construction."""

    type: Literal["AuditEvent"] = Field("AuditEvent", description="The event type name.")
    schema_version: Literal[1] = Field(1, description="Version of the AuditEvent schema.")
    actor: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$",
        description=(
            "Who acted: the staff account id used in the CLI, or the name of the service that "
            "acted on its own (e.g. records)."
        ),
    )
    actor_role: str = Field(
        min_length=1,
        max_length=32,
        pattern=_CODE,
        description=(
            "The role the actor acted in: a staff role (reception, clinician, privacy_officer, "
            "marketing), `service` for a service acting on its own, or `customer`."
        ),
    )
    action: AuditAction = Field(description="What was done, from a closed list.")
    resource: str = Field(
        min_length=1,
        max_length=64,
        pattern=_DOTTED_CODE,
        description="What kind of data was touched, as `<service>.<thing>` (records.customer).",
    )
    outcome: AuditOutcome = Field(description="Whether it succeeded, was denied or failed.")
    purpose: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=_CODE,
        description="The processing purpose it served (e.g. care, marketing_email), if any.",
    )
    legal_basis: LegalBasis | None = Field(
        None, description="The GDPR Art 6(1) lawful basis the processing relied on, if any."
    )
    reason_code: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=_DOTTED_CODE,
        description=(
            "Machine-readable reason for a denial, failure or rejection (e.g. "
            "consent_missing); never free text."
        ),
    )
