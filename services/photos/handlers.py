"""Photos' Kafka entry points: consent states and stop directives, through the shared feed.

A state updates the photo-consent view (only when newer) and stops what it no longer allows; a
stop directive fences the photo purposes it names, restricts (patient record) or deletes
(marketing) the stored photos a photo-storage stop affects, ends marketing use on a
photo-marketing-use stop, and is answered on `privacy.acks.v1` in the same transaction; a record
that cannot be applied stops new photos for its customer, is dead-lettered and raises an alert
(fail closed, without destroying anything). The rules are in `consent_view`, the consumer in
`consent_feed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from services.common.kafka import RetryPolicy
from services.consentview.feed import (
    ConsentFeed,
    Processor,
    make_dead_letter,
    register_feed,
    transactions,
)
from services.photos.domain import SERVICE
from services.photos.repository import STOP_RESOURCE, PhotosStore

if TYPE_CHECKING:
    from faststream.kafka import KafkaBroker

    from services.common.runtime import ServiceContext
    from services.photos.settings import PhotosSettings

__all__ = ["PROCESSOR", "SERVICE", "register"]

PROCESSOR: Final = Processor(SERVICE, STOP_RESOURCE)
"""Photos as a consent-driven processor: photo storage and photo marketing use."""


def register(broker: KafkaBroker, ctx: ServiceContext, settings: PhotosSettings) -> None:
    """Attach the consent subscribers to the broker (called once, when the app is built)."""
    feed = ConsentFeed(
        PROCESSOR,
        transactions(ctx, PhotosStore),
        make_dead_letter(broker, SERVICE),
        RetryPolicy.from_settings(settings),
    )
    register_feed(broker, feed, group_suffix=settings.consumer_group_suffix)
