"""The audit emitter: every service records who did what to which customer's data.

`emit` builds an `AuditEvent` and writes it through the service's transactional outbox to
`audit.events.v1`, keyed by the customer number, in the caller's transaction: the audit record
exists exactly when the audited change does. The event carries no personal data, only the
`customer_id` and machine-readable codes (see `contracts.audit`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts.audit import AUDIT_TOPIC, AuditAction, AuditEvent, AuditOutcome, LegalBasis
from contracts.topics import topic
from services.common import outbox

if TYPE_CHECKING:
    from uuid import UUID

    from services.common.db import Connection

SERVICE_ROLE = "service"
"""The `actor_role` of a service acting on its own (not on a staff member's behalf)."""


async def emit(  # noqa: PLR0913 - one keyword per audit field keeps call sites explicit
    conn: Connection,
    *,
    service: str,
    actor: str,
    action: AuditAction | str,
    customer_id: str | None,
    resource: str,
    outcome: AuditOutcome | str,
    actor_role: str = SERVICE_ROLE,
    purpose: str | None = None,
    legal_basis: LegalBasis | str | None = None,
    reason_code: str | None = None,
    correlation_id: UUID | None = None,
) -> AuditEvent:
    """Write an audit event to the outbox, in the caller's transaction, and return it.

    Args:
        conn: The connection whose transaction also holds the audited change.
        service: The emitting service (the event's `producer`).
        actor: The staff account id, or the service name when the service acted on its own.
        action: What was done (`AuditAction` or its value).
        customer_id: The customer concerned (the Kafka key); None when no single customer is.
        resource: The kind of data touched, `<service>.<thing>`.
        outcome: `success`, `denied` or `failed`.
        actor_role: The staff role acted in, or `service` (the default).
        purpose: The processing purpose, if any.
        legal_basis: The GDPR Art 6(1) basis, if any.
        reason_code: A machine-readable reason for a denial, failure or rejection.
        correlation_id: The id of the request that caused this; a fresh one when None.

    Raises:
        pydantic.ValidationError: A field is not a valid code (e.g. free text slipped in).
    """
    fields: dict[str, object] = {
        "producer": service,
        "actor": actor,
        "actor_role": actor_role,
        "action": action,
        "customer_id": customer_id,
        "resource": resource,
        "outcome": outcome,
        "purpose": purpose,
        "legal_basis": legal_basis,
        "reason_code": reason_code,
    }
    if correlation_id is not None:
        fields["correlation_id"] = correlation_id
    event = AuditEvent.model_validate(fields)
    await outbox.enqueue_event(conn, topic=topic(AUDIT_TOPIC).name, event=event)
    return event
