"""The marketing service's FastStream app: the one place it is wired.

`create_app(settings)` builds the app (nothing connects until it runs): the shared runtime opens
the pool, migrates the `marketing` schema (the common outbox/inbox, then `migrations/`), starts
the outbox relay, and the consent subscribers of `handlers` keep the view and the suppression
list and answer stop directives.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from services.common.runtime import ServiceContext, create_service_app
from services.marketing import handlers

if TYPE_CHECKING:
    from faststream import FastStream
    from faststream.kafka import KafkaBroker

    from services.marketing.settings import MarketingSettings

MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
"""Marketing's forward-only migrations."""


def build(settings: MarketingSettings) -> tuple[FastStream, ServiceContext]:
    """The app and the context its handlers use (tests read the pool from it)."""

    def register(broker: KafkaBroker, ctx: ServiceContext) -> None:
        handlers.register(broker, ctx, settings)

    return create_service_app(
        settings,
        service=handlers.SERVICE,
        migrations=MIGRATIONS,
        register=register,
        description=(
            "Marketing audiences from a materialised consent view and a suppression list; "
            "obeys stop directives and answers them once the suppression is durable."
        ),
    )


def create_app(settings: MarketingSettings) -> FastStream:
    """The marketing app, built from its settings; nothing connects until it runs."""
    app, _ = build(settings)
    return app
