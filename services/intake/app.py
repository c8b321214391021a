"""Intake's app: the one place it is wired (settings, broker, pool, handler, keys).

`build(settings)` returns the FastStream app and its context; `create_app(settings)` just the
app (what `python -m services.intake` and the AsyncAPI generator use). Nothing connects and no
key is read until the app starts, so the documents build without secrets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.common.runtime import ServiceContext, create_service_app
from services.intake import handlers
from services.intake.handlers import Intake, TransitKeys
from services.intake.repository import PostgresIntakeRepository

if TYPE_CHECKING:
    from faststream import FastStream
    from faststream.kafka import KafkaBroker

    from services.intake.settings import IntakeSettings

SERVICE = "intake"


def build(settings: IntakeSettings) -> tuple[FastStream, ServiceContext]:
    """The intake app and its context (`ctx.extras["intake"]` is the `Intake` use case)."""

    def register(broker: KafkaBroker, ctx: ServiceContext) -> None:
        intake = Intake(PostgresIntakeRepository(ctx))
        ctx.extras["intake"] = intake
        handlers.register(broker, intake, settings)

    app, ctx = create_service_app(
        settings,
        service=SERVICE,
        migrations=None,
        register=register,
        description=(
            "The front door: validates sealed submissions from clinic apps, forwards each valid "
            "one sealed to its owner, and answers invalid ones on intake.rejected.v1."
        ),
    )

    async def load_keys() -> None:
        intake: Intake = ctx.extras["intake"]
        intake.use_keys(TransitKeys.from_settings(settings))

    app.on_startup(load_keys)
    return app, ctx


def create_app(settings: IntakeSettings) -> FastStream:
    """The intake app, built from `settings`."""
    return build(settings)[0]
