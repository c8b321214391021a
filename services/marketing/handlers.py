"""Marketing's Kafka entry points: consent states and stop directives, through the shared feed.

A state updates the consent view (only when newer); a stop directive adds suppressions for the
marketing purposes it names and is answered on `privacy.acks.v1` in the same transaction; a
record that cannot be applied suppresses its customer on every channel, is dead-lettered and
raises an alert (fail closed). The rules are in `consent_view`, the consumer in `consent_feed`.
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
from services.marketing.domain import SERVICE
from services.marketing.repository import STOP_RESOURCE, MarketingStore

if TYPE_CHECKING:
    from faststream.kafka import KafkaBroker

    from services.common.runtime import ServiceContext
    from services.marketing.settings import MarketingSettings

__all__ = ["PROCESSOR", "SERVICE", "register"]

PROCESSOR: Final = Processor(SERVICE, STOP_RESOURCE)
"""Marketing as a consent-driven processor: e-mail, SMS, post, phone and research."""


def register(broker: KafkaBroker, ctx: ServiceContext, settings: MarketingSettings) -> None:
    """Attach the consent subscribers to the broker (called once, when the app is built)."""
    feed = ConsentFeed(
        PROCESSOR,
        transactions(ctx, MarketingStore),
        make_dead_letter(broker, SERVICE),
        RetryPolicy.from_settings(settings),
    )
    register_feed(broker, feed, group_suffix=settings.consumer_group_suffix)
