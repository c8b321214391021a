"""Photos' consent rules: which stored photos a stop affects, and what it does to each.

Pure code, no I/O. A photo-storage stop deletes a marketing photo but only restricts a
patient-record (clinical) photo, which has statutory retention (DOMAIN.md P5); either way the
photo leaves marketing use. A photo-marketing-use stop takes photos out of marketing use.
A stop affects the photos it names (all of the customer's when it names none) and, when it is
checked against a state (a superseded directive, or a state itself), only those the state does
not allow (`effective(state, purpose, photo_id)`): a consent limited to some photos keeps them.

The consent rules (versions decide, stops, fail closed) are the shared ones of
`services.consentview.view`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from contracts.consent import ConsentState, Purpose, effective

if TYPE_CHECKING:
    from collections.abc import Iterable

SERVICE: Final = "photos"
"""The service name: schema, Kafka principal, consumer group, audit producer, ack service."""
STORAGE: Final = Purpose.PHOTO_STORAGE
"""Storing the customer's photos (consent)."""
MARKETING_USE: Final = Purpose.PHOTO_MARKETING_USE
"""Using the customer's photos in marketing (explicit consent)."""

_PHOTO_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class PhotoClass(StrEnum):
    """The data class of a stored photo."""

    PATIENT_RECORD = "patient_record"
    """A clinical photo: part of the patient record, statutory retention."""
    MARKETING = "marketing"
    """A marketing (before-and-after) photo: consent-based only."""


class PhotoStatus(StrEnum):
    """Where a stored photo stands."""

    STORED = "stored"
    RESTRICTED = "restricted"
    """Kept for the retention period only; no use but the patient record's."""
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Photo:
    """A stored photo's metadata.

    Attributes:
        photo_id: The photo's opaque id.
        customer_id: Whose photo it is.
        data_class: Patient record or marketing.
        status: Stored, restricted or deleted.
        marketing_use: Whether it may be used in marketing.
        consent_version: The consent version it was accepted under.
    """

    photo_id: str
    customer_id: str
    data_class: PhotoClass
    status: PhotoStatus
    marketing_use: bool
    consent_version: int


def check_photo_id(photo_id: str) -> str:
    """The photo id, when it is an opaque code (never a name or personal data).

    Raises:
        ValueError: It is not letters, digits and `_.:-`, 1-64 characters.
    """
    if not _PHOTO_ID.fullmatch(photo_id):
        raise ValueError("photo_id must be an opaque code: letters, digits and _.:- (1-64)")
    return photo_id


def affected(
    photos: Iterable[Photo],
    purpose: Purpose,
    *,
    state: ConsentState | None,
    only: tuple[str, ...] = (),
) -> list[Photo]:
    """The photos a stop of `purpose` affects.

    Args:
        photos: The customer's photos.
        purpose: `photo_storage` or `photo_marketing_use`.
        state: When given, a photo is affected only if this state does not allow it; None:
            every photo named is affected.
        only: Only these photo ids (empty: all).
    """
    out: list[Photo] = []
    for photo in photos:
        if only and photo.photo_id not in only:
            continue
        if state is not None and effective(state, purpose, photo.photo_id):
            continue
        if purpose is STORAGE and photo.status is not PhotoStatus.STORED:
            continue
        if purpose is MARKETING_USE and not photo.marketing_use:
            continue
        out.append(photo)
    return out


def status_after_storage_stop(photo: Photo) -> PhotoStatus:
    """A photo-storage stop restricts a patient-record photo and deletes a marketing one."""
    if photo.data_class is PhotoClass.PATIENT_RECORD:
        return PhotoStatus.RESTRICTED
    return PhotoStatus.DELETED
