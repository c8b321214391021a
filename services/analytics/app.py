"""The analytics service's FastStream app: the one place it is wired.

`create_app(settings)` builds the app (nothing connects until it runs): the shared runtime opens
the pool, migrates the `analytics` schema (the common outbox/inbox, then `migrations/`), starts
the outbox relay, and the subscribers of `handlers` ingest register entries as pseudonymised
contributions, keep the consent view and exclusions, and answer stop directives.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from services.analytics import handlers
from services.common.runtime import ServiceContext, create_service_app

if TYPE_CHECKING:
    from faststream import FastStream
    from faststream.kafka import KafkaBroker

    from services.analytics.settings import AnalyticsSettings

MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
"""Analytics' forward-only migrations."""


def build(settings: AnalyticsSettings) -> tuple[FastStream, ServiceContext]:
    """The app and the context its handlers use (tests read the pool from it)."""
    key = handlers.PseudonymKey(settings)

    def register(broker: KafkaBroker, ctx: ServiceContext) -> None:
        handlers.register(broker, ctx, settings, key)

    app, ctx = create_service_app(
        settings,
        service=handlers.SERVICE,
        migrations=MIGRATIONS,
        register=register,
        description=(
            "Pseudonymised statistics of customers whose consent allows analytics; deletes "
            "and excludes a customer's contributions when told to stop, and answers."
        ),
    )

    @app.on_startup
    def check_pseudonym_key() -> None:
        # Refuse to start without a usable key, rather than dead-letter every record.
        _ = key.key

    return app, ctx


def create_app(settings: AnalyticsSettings) -> FastStream:
    """The analytics app, built from its settings; nothing connects until it runs."""
    app, _ = build(settings)
    return app
