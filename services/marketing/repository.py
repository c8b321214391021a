"""Where marketing keeps its data: the consent view, the suppression list, audience exports.

`MarketingStore` is the service's `ViewStore` (the shared consent rules need nothing more:
marketing's stop *is* the suppression). The read API:

- `audience(conn, campaign, channel)`: who may be contacted for a campaign on a channel, in
  one statement at the moment of use: customers whose view allows the channel's purpose and
  who have no suppression for it, their view rows locked `FOR SHARE`, so a directive being
  applied at that moment is waited for and wins. The export is recorded with each customer's
  consent version and audited (one `export` audit event per customer).
- `may_contact(conn, customer_id, channel)`: the same check for one customer, the final one
  before each send.
- `load_view`, `load_suppressions`: what is held on a customer (tests and the CLI).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from contracts.audit import AUDIT_TOPIC, AuditAction, AuditEvent, AuditOutcome
from contracts.consent import LEGAL_BASIS, ConsentState, Purpose
from contracts.envelope import new_event_id
from services.common import outbox
from services.common.audit import SERVICE_ROLE
from services.consentview.store import SqlViewStore, ViewSql, parse_purposes
from services.consentview.view import ViewRow
from services.marketing.domain import SERVICE, check_campaign, check_channel

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    from contracts.envelope import Event
    from services.common.db import Connection

INBOX_CONSUMER: Final = "marketing.directives"
"""The inbox consumer name of the directive handler."""
AUDIENCE_RESOURCE: Final = "marketing.audience"
"""The audited resource of an audience export."""
STOP_RESOURCE: Final = "marketing.suppression"
"""The audited resource of a stop."""

AUDIENCE_SQL: Final = """
SELECT v.customer_id, v.version
FROM consent_view v
WHERE $1::text = ANY (v.allowed)
  AND NOT EXISTS (
      SELECT 1 FROM suppressions s WHERE s.customer_id = v.customer_id AND s.purpose = $1::text
  )
ORDER BY v.customer_id
FOR SHARE OF v
"""
"""The audience of a purpose, its view rows locked until the export's transaction ends."""
MAY_CONTACT_SQL: Final = """
SELECT $2::text = ANY (v.allowed)
       AND NOT EXISTS (
           SELECT 1 FROM suppressions s
           WHERE s.customer_id = v.customer_id AND s.purpose = $2::text
       )
FROM consent_view v
WHERE v.customer_id = $1
FOR SHARE
"""
RECORD_EXPORT_SQL: Final = """
INSERT INTO audience_exports (export_id, campaign, purpose, size, actor) VALUES ($1, $2, $3, $4, $5)
"""
RECORD_MEMBERS_SQL: Final = """
INSERT INTO audience_members (export_id, customer_id, consent_version)
SELECT $1, c, v FROM unnest($2::text[], $3::bigint[]) AS t(c, v)
"""
VIEW_SQL: Final = "SELECT version, state, allowed FROM consent_view WHERE customer_id = $1"
SUPPRESSIONS_SQL: Final = """
SELECT purpose, consent_version, reason, directive_id, created_at
FROM suppressions WHERE customer_id = $1 ORDER BY purpose
"""


class MarketingStore(SqlViewStore):
    """Marketing's consent view and suppression list (a stop needs no other effect)."""

    SQL = ViewSql.of(view="consent_view", stops="suppressions", key="customer_id")
    INBOX_CONSUMER = INBOX_CONSUMER


@dataclass(frozen=True, slots=True)
class Suppression:
    """One suppression of a customer.

    Attributes:
        purpose: The purpose (channel) suppressed.
        consent_version: The consent version it fences.
        reason: withdrawal, objection, erasure or fail_closed.
        directive_id: The directive that made it, if any.
        created_at: When it was first recorded.
    """

    purpose: Purpose
    consent_version: int
    reason: str
    directive_id: UUID | None
    created_at: datetime


def _outbox_row(event: Event) -> tuple[object, ...]:
    """The arguments of `outbox.ENQUEUE_SQL` for an audit event (as `enqueue_event` makes)."""
    headers = {
        "content-type": "application/json",
        "correlation_id": str(event.correlation_id),
        "event_id": str(event.event_id),
        "event_type": event.type,
    }
    return (
        event.event_id,
        AUDIT_TOPIC,
        event.customer_id,
        json.dumps(headers),
        event.to_bytes(),
        "customer",
        event.type,
    )


async def audience(
    conn: Connection,
    campaign: str,
    channel: Purpose,
    *,
    actor: str = SERVICE,
    actor_role: str = SERVICE_ROLE,
) -> list[str]:
    """Who may be contacted for `campaign` on `channel` now, sorted; the export is recorded.

    One statement decides, at the moment of use: customers whose latest consent allows the
    channel's purpose and who have no suppression for it. Their view rows stay locked
    `FOR SHARE` until the transaction ends, so a stop being applied concurrently either
    committed first (and the customer is left out) or waits for the export. Runs in the
    caller's transaction (or its own), which also records the export with each customer's
    consent version and one `export` audit event per customer.

    Args:
        conn: A connection of the marketing schema.
        campaign: The campaign code (letters, digits, `_.:-`; never free text).
        channel: The purpose contacted for (`marketing_email`, `_sms`, `_post`, `_phone`,
            or `research`).
        actor: Who exports: the staff account, or the service.
        actor_role: The role acted in.

    Raises:
        AudienceError: The channel or the campaign is not valid.
    """
    purpose = check_channel(channel)
    check_campaign(campaign)
    export_id = new_event_id()
    async with conn.transaction():
        rows = await conn.fetch(AUDIENCE_SQL, str(purpose))
        members = [r["customer_id"] for r in rows]
        await conn.execute(RECORD_EXPORT_SQL, export_id, campaign, str(purpose), len(rows), actor)
        if rows:
            await conn.execute(RECORD_MEMBERS_SQL, export_id, members, [r["version"] for r in rows])
            audits = [
                AuditEvent(
                    producer=SERVICE,
                    actor=actor,
                    actor_role=actor_role,
                    action=AuditAction.EXPORT,
                    customer_id=cid,
                    resource=AUDIENCE_RESOURCE,
                    outcome=AuditOutcome.SUCCESS,
                    purpose=str(purpose),
                    legal_basis=LEGAL_BASIS[purpose],
                    correlation_id=export_id,
                )
                for cid in members
            ]
            await conn.executemany(outbox.ENQUEUE_SQL, [_outbox_row(a) for a in audits])
    return members


async def may_contact(conn: Connection, customer_id: str, channel: Purpose) -> bool:
    """Whether the customer may be contacted on `channel` now: the final check before a send.

    False for a customer marketing has never heard of. Inside a transaction, the customer's
    view row stays locked `FOR SHARE` until it ends (record the send in that transaction).

    Raises:
        AudienceError: The channel is not a marketing channel.
    """
    purpose = check_channel(channel)
    return bool(await conn.fetchval(MAY_CONTACT_SQL, customer_id, str(purpose)))


async def load_view(conn: Connection, customer_id: str) -> ViewRow | None:
    """The customer's consent view, or None when marketing has never heard of them."""
    row = await conn.fetchrow(VIEW_SQL, customer_id)
    if row is None:
        return None
    document = row["state"]
    state = ConsentState.model_validate(document) if document is not None else None
    return ViewRow(version=row["version"], state=state, allowed=parse_purposes(row["allowed"]))


async def load_suppressions(conn: Connection, customer_id: str) -> list[Suppression]:
    """The customer's suppressions, by purpose."""
    rows = await conn.fetch(SUPPRESSIONS_SQL, customer_id)
    return [
        Suppression(
            purpose=Purpose(r["purpose"]),
            consent_version=r["consent_version"],
            reason=r["reason"],
            directive_id=r["directive_id"],
            created_at=r["created_at"],
        )
        for r in rows
    ]
