"""Where photos keeps its data: the photo-consent view, its stops, and the photos' metadata.

`PhotosStore` is the service's `ViewStore`; its stop effects restrict or delete the customer's
stored photos (photo storage) or take them out of marketing use (photo marketing use), with one
audit event per photo changed, in the transaction of the stop. The API the upload pipeline
uses:

- `accept_new_photo(conn, customer_id)`: whether a new photo may be stored now (photo storage
  allowed by the customer's latest consent and not stopped); the view row stays locked
  `FOR SHARE` until the caller's transaction ends, so a stop being applied waits or wins.
- `record_photo(conn, ...)`: store a photo's metadata, only if `accept_new_photo` says so, in
  one transaction.
- `load_photos`, `load_photo_consent`: what is held on a customer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from contracts.audit import AUDIT_TOPIC, AuditAction, AuditEvent, AuditOutcome
from contracts.consent import LEGAL_BASIS, ConsentState, Purpose, effective
from services.common.audit import SERVICE_ROLE
from services.consentview.store import SqlViewStore, ViewSql, parse_purposes
from services.consentview.view import ViewRow
from services.photos.domain import (
    MARKETING_USE,
    SERVICE,
    STORAGE,
    Photo,
    PhotoClass,
    PhotoStatus,
    affected,
    check_photo_id,
)

if TYPE_CHECKING:
    import asyncpg

    from services.common.db import Connection

INBOX_CONSUMER: Final = "photos.directives"
"""The inbox consumer name of the directive handler."""
STOP_RESOURCE: Final = "photos.consent"
"""The audited resource of a stop."""
PHOTO_RESOURCE: Final = "photos.photo"
"""The audited resource of a photo restricted, deleted or taken out of marketing use."""

ACCEPT_SQL: Final = """
SELECT v.version,
       'photo_storage' = ANY (v.allowed)
       AND NOT EXISTS (
           SELECT 1 FROM photo_stops s
           WHERE s.customer_id = v.customer_id AND s.purpose = 'photo_storage'
       ) AS accepted
FROM photo_consent v
WHERE v.customer_id = $1
FOR SHARE
"""
INSERT_PHOTO_SQL: Final = """
INSERT INTO photos (photo_id, customer_id, data_class, consent_version) VALUES ($1, $2, $3, $4)
"""
PHOTOS_SQL: Final = """
SELECT photo_id, customer_id, data_class, status, marketing_use, consent_version
FROM photos WHERE customer_id = $1 ORDER BY photo_id
"""
STOP_STORAGE_SQL: Final = """
UPDATE photos
SET status = CASE WHEN data_class = 'patient_record' THEN 'restricted' ELSE 'deleted' END,
    marketing_use = false,
    status_changed_at = now()
WHERE customer_id = $1 AND photo_id = ANY ($2::text[]) AND status = 'stored'
RETURNING photo_id, status
"""
STOP_MARKETING_USE_SQL: Final = """
UPDATE photos SET marketing_use = false, status_changed_at = now()
WHERE customer_id = $1 AND photo_id = ANY ($2::text[]) AND marketing_use
RETURNING photo_id
"""
VIEW_SQL: Final = "SELECT version, state, allowed FROM photo_consent WHERE customer_id = $1"
LOCK_VIEW_SQL: Final = """
SELECT v.state,
       EXISTS (
           SELECT 1 FROM photo_stops s
           WHERE s.customer_id = v.customer_id AND s.purpose = 'photo_marketing_use'
       ) AS stopped
FROM photo_consent v
WHERE v.customer_id = $1
FOR SHARE
"""
ALLOW_MARKETING_USE_SQL: Final = """
UPDATE photos SET marketing_use = true
WHERE customer_id = $1 AND photo_id = $2 AND status = 'stored' AND NOT marketing_use
"""


def _photo(row: asyncpg.Record) -> Photo:
    return Photo(
        photo_id=row["photo_id"],
        customer_id=row["customer_id"],
        data_class=PhotoClass(row["data_class"]),
        status=PhotoStatus(row["status"]),
        marketing_use=row["marketing_use"],
        consent_version=row["consent_version"],
    )


def _audit(customer_id: str, action: AuditAction, purpose: Purpose) -> AuditEvent:
    return AuditEvent(
        producer=SERVICE,
        actor=SERVICE,
        actor_role=SERVICE_ROLE,
        action=action,
        customer_id=customer_id,
        resource=PHOTO_RESOURCE,
        outcome=AuditOutcome.SUCCESS,
        purpose=str(purpose),
        legal_basis=LEGAL_BASIS[purpose],
        reason_code="consent.stopped",
    )


class PhotosStore(SqlViewStore):
    """The photo-consent view and its stops; a stop restricts or deletes stored photos."""

    SQL = ViewSql.of(view="photo_consent", stops="photo_stops", key="customer_id")
    INBOX_CONSUMER = INBOX_CONSUMER

    async def stop(
        self,
        customer_id: str,
        purposes: frozenset[Purpose],
        *,
        state: ConsentState | None,
        photo_ids: tuple[str, ...],
    ) -> None:
        """Restrict or delete the photos a storage stop affects; end their marketing use."""
        photos = [_photo(r) for r in await self.conn.fetch(PHOTOS_SQL, customer_id)]
        if STORAGE in purposes:
            ids = [p.photo_id for p in affected(photos, STORAGE, state=state, only=photo_ids)]
            if ids:
                rows = await self.conn.fetch(STOP_STORAGE_SQL, customer_id, ids)
                for row in rows:
                    action = (
                        AuditAction.RESTRICT
                        if row["status"] == PhotoStatus.RESTRICTED
                        else AuditAction.DELETE
                    )
                    await self.publish(AUDIT_TOPIC, _audit(customer_id, action, STORAGE))
        if MARKETING_USE in purposes:
            photos = [_photo(r) for r in await self.conn.fetch(PHOTOS_SQL, customer_id)]
            ids = [p.photo_id for p in affected(photos, MARKETING_USE, state=state, only=photo_ids)]
            if ids:
                rows = await self.conn.fetch(STOP_MARKETING_USE_SQL, customer_id, ids)
                for _ in rows:
                    await self.publish(
                        AUDIT_TOPIC, _audit(customer_id, AuditAction.UPDATE, MARKETING_USE)
                    )


async def accept_new_photo(conn: Connection, customer_id: str) -> bool:
    """Whether a new photo of the customer may be stored now.

    False for a customer photos has never heard of, when the latest consent does not allow
    photo storage (or allows it for some photos only), and when a stop fences it. Inside a
    transaction the view row stays locked `FOR SHARE` until it ends: store the photo in it.
    """
    row = await conn.fetchrow(ACCEPT_SQL, customer_id)
    return bool(row is not None and row["accepted"])


async def record_photo(
    conn: Connection, *, photo_id: str, customer_id: str, data_class: PhotoClass
) -> bool:
    """Store a new photo's metadata if photo storage is allowed now; False when refused.

    The check and the insert are one transaction (the caller's, or its own), so a stop
    applied meanwhile either came first (refused) or finds the photo and stops it.

    Raises:
        ValueError: The photo id is not an opaque code.
        asyncpg.UniqueViolationError: The photo id is already stored.
    """
    check_photo_id(photo_id)
    async with conn.transaction():
        row = await conn.fetchrow(ACCEPT_SQL, customer_id)
        if row is None or not row["accepted"]:
            return False
        await conn.execute(
            INSERT_PHOTO_SQL, photo_id, customer_id, str(PhotoClass(data_class)), row["version"]
        )
    return True


async def allow_marketing_use(conn: Connection, customer_id: str, photo_id: str) -> bool:
    """Mark a stored photo usable in marketing, if the customer's latest consent allows it.

    The consent must cover this photo explicitly or all photos (`effective(state,
    photo_marketing_use, photo_id)`), with no stop fencing it; the photo must be stored (not
    restricted or deleted). False, changing nothing, otherwise.
    """
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_VIEW_SQL, customer_id)
        if row is None or row["state"] is None or row["stopped"]:
            return False
        state = ConsentState.model_validate(row["state"])
        if not effective(state, MARKETING_USE, photo_id):
            return False
        status = await conn.execute(ALLOW_MARKETING_USE_SQL, customer_id, photo_id)
    return status.endswith(" 1")


async def load_photos(conn: Connection, customer_id: str) -> list[Photo]:
    """The customer's photos' metadata, by photo id."""
    return [_photo(r) for r in await conn.fetch(PHOTOS_SQL, customer_id)]


async def load_photo_consent(conn: Connection, customer_id: str) -> ViewRow | None:
    """The customer's photo-consent view, or None when photos has never heard of them."""
    row = await conn.fetchrow(VIEW_SQL, customer_id)
    if row is None:
        return None
    document = row["state"]
    state = ConsentState.model_validate(document) if document is not None else None
    return ViewRow(version=row["version"], state=state, allowed=parse_purposes(row["allowed"]))
