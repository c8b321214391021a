"""The consent service's FastStream app: the one place it is wired.

`create_app(settings)` builds the app (nothing connects until it runs): the shared runtime opens
the pool, migrates the `consent` schema (the common outbox/inbox, then `migrations/`), and
starts the outbox relay; the subscribers of `handlers` apply `consent.commands.v1` and record
the answers on `privacy.acks.v1`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from services.common.runtime import ServiceContext, create_service_app
from services.consent import handlers

if TYPE_CHECKING:
    from faststream import FastStream
    from faststream.kafka import KafkaBroker

    from services.consent.settings import ConsentSettings

MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
"""Consent's forward-only migrations."""


def build(settings: ConsentSettings) -> tuple[FastStream, ServiceContext]:
    """The app and the context its handlers use (tests read the pool from it)."""
    transit = handlers.TransitKey(settings.topic_keys)

    def register(broker: KafkaBroker, ctx: ServiceContext) -> None:
        handlers.register(broker, ctx, settings, transit)

    app, ctx = create_service_app(
        settings,
        service=handlers.SERVICE,
        migrations=MIGRATIONS,
        register=register,
        description=(
            "The single writer of consent and objections: keeps the history and current state, "
            "publishes stop directives and records when every processor has stopped."
        ),
    )

    @app.on_startup
    def check_transit_key() -> None:
        # Refuse to start without a usable key, rather than dead-letter (and hold) everything.
        _ = transit.key

    return app, ctx


def create_app(settings: ConsentSettings) -> FastStream:
    """The consent app, built from its settings; nothing connects until it runs."""
    app, _ = build(settings)
    return app
