"""The photos service's FastStream app: the one place it is wired.

`create_app(settings)` builds the app (nothing connects until it runs): the shared runtime opens
the pool, migrates the `photos` schema (the common outbox/inbox, then `migrations/`), starts
the outbox relay, and the consent subscribers of `handlers` keep the photo-consent view, stop
stored photos when told to, and answer stop directives.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from services.common.runtime import ServiceContext, create_service_app
from services.photos import handlers

if TYPE_CHECKING:
    from faststream import FastStream
    from faststream.kafka import KafkaBroker

    from services.photos.settings import PhotosSettings

MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
"""Photos' forward-only migrations."""


def build(settings: PhotosSettings) -> tuple[FastStream, ServiceContext]:
    """The app and the context its handlers use (tests read the pool from it)."""

    def register(broker: KafkaBroker, ctx: ServiceContext) -> None:
        handlers.register(broker, ctx, settings)

    return create_service_app(
        settings,
        service=handlers.SERVICE,
        migrations=MIGRATIONS,
        register=register,
        description=(
            "Photo storage's consent side: refuses new photos without consent, restricts or "
            "deletes stored photos on a stop directive, and answers once that is durable."
        ),
    )


def create_app(settings: PhotosSettings) -> FastStream:
    """The photos app, built from its settings; nothing connects until it runs."""
    app, _ = build(settings)
    return app
