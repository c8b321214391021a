"""The records service's FastStream app: the one place it is wired.

`create_app(settings)` builds the app (nothing connects until it runs): the shared runtime opens
the pool, migrates the `records` schema (the common outbox/inbox, the key table, then
`migrations/`), opens the key store and the outbox relay, and the command subscriber of
`handlers` applies `records.commands.v1` in batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from services.common.runtime import ServiceContext, create_service_app
from services.records import handlers

if TYPE_CHECKING:
    from faststream import FastStream
    from faststream.kafka import KafkaBroker

    from services.records.settings import RecordsSettings

MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
"""The register's forward-only migrations."""


def build(settings: RecordsSettings) -> tuple[FastStream, ServiceContext]:
    """The app and the context its handlers use (tests read the pool and key store from it)."""
    transit = handlers.TransitKey(settings.topic_keys)

    def register(broker: KafkaBroker, ctx: ServiceContext) -> None:
        handlers.register(broker, ctx, settings, transit)

    app, ctx = create_service_app(
        settings,
        service=handlers.SERVICE,
        migrations=MIGRATIONS,
        register=register,
        uses_customer_keys=True,
        description=(
            "The customer register: applies validated commands and publishes each customer's "
            "current entry, personal fields encrypted with the customer's key."
        ),
    )

    @app.on_startup
    def check_transit_key() -> None:
        # Refuse to start without a usable key, rather than dead-letter every command.
        _ = transit.key

    return app, ctx


def create_app(settings: RecordsSettings) -> FastStream:
    """The records app, built from its settings; nothing connects until it runs."""
    app, _ = build(settings)
    return app
