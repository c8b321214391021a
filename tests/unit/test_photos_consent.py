"""Photos' consent side: refuse new photos without consent, restrict or delete stored ones on stop.

The selection rules are pure; the store runs against PostgreSQL in an isolated schema owned by
the photos role (marked `real`): a photo-storage stop restricts patient-record photos and
deletes marketing ones, a photo-marketing-use stop ends marketing use (per photo when the
directive names photos), versions decide, fail closed refuses without destroying anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest

from contracts.consent import Purpose
from services.common.kafka import RetryPolicy
from services.consentview.feed import ConsentFeed, Outcome, apply_directive, apply_state
from services.photos.app import MIGRATIONS
from services.photos.domain import (
    Photo,
    PhotoClass,
    PhotoStatus,
    affected,
    check_photo_id,
    status_after_storage_stop,
)
from services.photos.handlers import PROCESSOR
from services.photos.repository import (
    PhotosStore,
    accept_new_photo,
    allow_marketing_use,
    load_photo_consent,
    load_photos,
    record_photo,
)
from tests.support.infra import Infra
from tests.unit.test_marketing import (
    DeadLetters,
    acks,
    audits,
    consent_state,
    customer_id,
    directive,
    isolated_schema,
    no_sleep,
    outbox_events,
    record,
    state_record,
)

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from contracts.consent import ConsentState
    from services.common.db import Pool
    from services.consentview.feed import ViewStore

STORAGE = Purpose.PHOTO_STORAGE
MARKETING_USE = Purpose.PHOTO_MARKETING_USE


def photo(
    photo_id: str,
    data_class: PhotoClass = PhotoClass.PATIENT_RECORD,
    *,
    status: PhotoStatus = PhotoStatus.STORED,
    marketing_use: bool = False,
) -> Photo:
    return Photo(photo_id, "TC-1", data_class, status, marketing_use, 1)


# --- Pure ------------------------------------------------------------------------------------


def test_a_storage_stop_restricts_patient_records_and_deletes_marketing_photos() -> None:
    assert status_after_storage_stop(photo("p1")) is PhotoStatus.RESTRICTED
    assert status_after_storage_stop(photo("p2", PhotoClass.MARKETING)) is PhotoStatus.DELETED


def test_a_stop_affects_the_photos_named_and_not_allowed() -> None:
    photos = [
        photo("p1"),
        photo("p2", marketing_use=True),
        photo("p3", status=PhotoStatus.RESTRICTED),
    ]
    assert [p.photo_id for p in affected(photos, STORAGE, state=None)] == ["p1", "p2"]
    assert [p.photo_id for p in affected(photos, STORAGE, state=None, only=("p2",))] == ["p2"]
    assert [p.photo_id for p in affected(photos, MARKETING_USE, state=None)] == ["p2"]
    limited = consent_state("TC-1", 3, given=[STORAGE], photo_ids={STORAGE: ("p1",)})
    assert [p.photo_id for p in affected(photos, STORAGE, state=limited)] == ["p2"]
    everything = consent_state("TC-1", 3, given=[STORAGE])
    assert affected(photos, STORAGE, state=everything) == []


def test_photo_ids_are_opaque_codes() -> None:
    assert check_photo_id("ph_01J9.front") == "ph_01J9.front"
    with pytest.raises(ValueError, match="opaque"):
        check_photo_id("Matti's smile.jpg")


# --- The store (PostgreSQL) ------------------------------------------------------------------


class Photos:
    """The photos use cases on the isolated schema."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def unit(self) -> AbstractAsyncContextManager[ViewStore]:
        @asynccontextmanager
        async def opened() -> AsyncIterator[ViewStore]:
            async with self.pool.acquire() as conn, conn.transaction():
                yield PhotosStore(conn)

        return opened()

    async def state(self, s: ConsentState) -> Outcome:
        async with self.pool.acquire() as conn, conn.transaction():
            return await apply_state(PhotosStore(conn), PROCESSOR, s.customer_id, s)

    async def stop(
        self, cid: str, version: int, purposes: Sequence[Purpose], photo_ids: tuple[str, ...] = ()
    ) -> Outcome:
        d = directive(cid, version, purposes, photo_ids=photo_ids)
        async with self.pool.acquire() as conn, conn.transaction():
            return await apply_directive(PhotosStore(conn), PROCESSOR, d)

    async def store(self, cid: str, photo_id: str, data_class: PhotoClass) -> bool:
        async with self.pool.acquire() as conn:
            return await record_photo(
                conn, photo_id=photo_id, customer_id=cid, data_class=data_class
            )

    async def accepts(self, cid: str) -> bool:
        async with self.pool.acquire() as conn:
            return await accept_new_photo(conn, cid)

    async def photos(self, cid: str) -> dict[str, tuple[PhotoStatus, bool]]:
        async with self.pool.acquire() as conn:
            return {p.photo_id: (p.status, p.marketing_use) for p in await load_photos(conn, cid)}


@pytest.fixture
async def photos(infra: Infra) -> AsyncIterator[Photos]:
    async with isolated_schema(infra, "photos", MIGRATIONS) as pool:
        yield Photos(pool)


@pytest.mark.real
async def test_new_photos_need_photo_storage_consent(photos: Photos) -> None:
    cid = customer_id()
    assert not await photos.accepts(cid)  # never heard of
    assert not await photos.store(cid, f"{cid}.front", PhotoClass.PATIENT_RECORD)
    await photos.state(consent_state(cid, 1, given=[Purpose.MARKETING_EMAIL]))
    assert not await photos.accepts(cid)  # consent to other things is not photo consent
    await photos.state(consent_state(cid, 2, given=[STORAGE]))
    assert await photos.accepts(cid)
    assert await photos.store(cid, f"{cid}.front", PhotoClass.PATIENT_RECORD)
    async with photos.pool.acquire() as conn:
        [stored] = await load_photos(conn, cid)
        view = await load_photo_consent(conn, cid)
    assert stored.consent_version == 2
    assert view is not None
    assert view.allowed == {STORAGE}


@pytest.mark.real
async def test_a_storage_stop_restricts_clinical_deletes_marketing_and_refuses_new(
    photos: Photos,
) -> None:
    cid = customer_id()
    await photos.state(consent_state(cid, 1, given=[STORAGE, MARKETING_USE]))
    clinical, before_after = f"{cid}.front", f"{cid}.smile"
    assert await photos.store(cid, clinical, PhotoClass.PATIENT_RECORD)
    assert await photos.store(cid, before_after, PhotoClass.MARKETING)
    async with photos.pool.acquire() as conn:
        assert await allow_marketing_use(conn, cid, before_after)
    assert await photos.stop(cid, 2, [STORAGE, MARKETING_USE]) is Outcome.APPLIED
    assert await photos.photos(cid) == {
        clinical: (PhotoStatus.RESTRICTED, False),
        before_after: (PhotoStatus.DELETED, False),
    }
    assert not await photos.accepts(cid)
    published = await outbox_events(photos.pool)
    [ack] = acks(published, cid)
    assert (ack.service, ack.consent_version) == ("photos", 2)
    actions = sorted((a.resource, a.action) for a in audits(published, cid))
    assert actions == [
        ("photos.consent", "stop"),
        ("photos.consent", "stop"),
        ("photos.photo", "delete"),
        ("photos.photo", "restrict"),
    ]
    # A stale state that still allowed photo storage changes nothing.
    assert await photos.state(consent_state(cid, 1, given=[STORAGE])) is Outcome.STALE
    assert not await photos.accepts(cid)
    # Consent given anew (a newer version) allows new photos; stopped ones stay stopped.
    await photos.state(consent_state(cid, 3, given=[STORAGE]))
    assert await photos.accepts(cid)
    assert (await photos.photos(cid))[clinical] == (PhotoStatus.RESTRICTED, False)


@pytest.mark.real
async def test_the_state_of_a_withdrawal_stops_photos_before_its_directive(photos: Photos) -> None:
    cid = customer_id()
    await photos.state(consent_state(cid, 1, given=[STORAGE]))
    await photos.store(cid, f"{cid}.left", PhotoClass.MARKETING)
    await photos.state(consent_state(cid, 2, withdrawn=[STORAGE]))
    assert await photos.photos(cid) == {f"{cid}.left": (PhotoStatus.DELETED, False)}
    assert await photos.stop(cid, 2, [STORAGE]) is Outcome.SUPERSEDED
    assert len(acks(await outbox_events(photos.pool), cid)) == 1


@pytest.mark.real
async def test_a_directive_naming_photos_stops_only_those(photos: Photos) -> None:
    cid = customer_id()
    await photos.state(consent_state(cid, 1, given=[STORAGE, MARKETING_USE]))
    p1, p2 = f"{cid}.p1", f"{cid}.p2"
    for p in (p1, p2):
        await photos.store(cid, p, PhotoClass.MARKETING)
        async with photos.pool.acquire() as conn:
            assert await allow_marketing_use(conn, cid, p)
    await photos.stop(cid, 2, [MARKETING_USE], photo_ids=(p1,))
    assert await photos.photos(cid) == {
        p1: (PhotoStatus.STORED, False),
        p2: (PhotoStatus.STORED, True),
    }
    assert await photos.accepts(cid)  # a per-photo stop fences nothing else


@pytest.mark.real
async def test_a_consent_limited_to_some_photos_keeps_them_and_refuses_new(
    photos: Photos,
) -> None:
    cid = customer_id()
    await photos.state(consent_state(cid, 1, given=[STORAGE]))
    p1, p2 = f"{cid}.p1", f"{cid}.p2"
    await photos.store(cid, p1, PhotoClass.PATIENT_RECORD)
    await photos.store(cid, p2, PhotoClass.MARKETING)
    await photos.state(consent_state(cid, 2, given=[STORAGE], photo_ids={STORAGE: (p1,)}))
    assert await photos.photos(cid) == {
        p1: (PhotoStatus.STORED, False),
        p2: (PhotoStatus.DELETED, False),
    }
    assert not await photos.accepts(cid)


@pytest.mark.real
async def test_marketing_use_needs_its_own_explicit_consent(photos: Photos) -> None:
    cid = customer_id()
    await photos.state(consent_state(cid, 1, given=[STORAGE]))
    await photos.store(cid, f"{cid}.p1", PhotoClass.MARKETING)
    async with photos.pool.acquire() as conn:
        assert not await allow_marketing_use(conn, cid, f"{cid}.p1")
    await photos.state(
        consent_state(cid, 2, given=[STORAGE, MARKETING_USE], photo_ids={MARKETING_USE: ("x",)})
    )
    async with photos.pool.acquire() as conn:
        assert not await allow_marketing_use(conn, cid, f"{cid}.p1")  # not this photo
        assert not await allow_marketing_use(conn, customer_id(), "x")  # unknown customer


@pytest.mark.real
async def test_failing_closed_refuses_new_photos_and_destroys_nothing(photos: Photos) -> None:
    cid = customer_id()
    await photos.state(consent_state(cid, 1, given=[STORAGE]))
    await photos.store(cid, f"{cid}.front", PhotoClass.PATIENT_RECORD)
    dead = DeadLetters()
    feed = ConsentFeed(
        PROCESSOR, photos.unit, dead, RetryPolicy(max_retries=0, backoff_ms=0), no_sleep
    )
    assert await feed.on_directive(record("privacy.directives.v1", cid, b"[]")) is (
        Outcome.FAILED_CLOSED
    )
    assert not await photos.accepts(cid)
    assert await photos.photos(cid) == {f"{cid}.front": (PhotoStatus.STORED, False)}
    assert [reason for _, reason, _ in dead.records] == ["not_object"]
    await feed.on_state(state_record(consent_state(cid, 2, given=[STORAGE])))
    assert await photos.accepts(cid)
