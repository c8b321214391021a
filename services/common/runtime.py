"""The runtime every service shares: one place that wires settings, Kafka, Postgres and health.

A service's `app.py` calls `create_service_app(...)` with a `register` function that attaches
its subscribers to the broker. At start-up, before the broker consumes anything, the runtime
opens the service's pool, applies its migrations (common outbox/inbox first), opens the key
store when the service holds customer keys, starts the outbox relay with an idempotent
producer, and serves `/health` and `/ready`. On shutdown it stops them in reverse order, so
rows already committed to the outbox are published before the producer closes.

Handlers reach these resources through the `ServiceContext` they are registered with, never
through globals, so tests can build a context around fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from faststream import FastStream
from faststream.specification import AsyncAPI

from services.common import crypto
from services.common.db import create_pool
from services.common.health import HealthServer
from services.common.kafka import aiokafka_client_args, broker_ready, create_broker
from services.common.logs import configure_logging
from services.common.migrate import migrate
from services.common.outbox import OutboxRelay

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from faststream.kafka import KafkaBroker

    from services.common.db import Pool
    from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """What a running service's handlers use; filled in at start-up.

    Attributes:
        service: The service name (also its schema, Kafka principal and consumer group).
        settings: The service's settings.
        pool: The service's Postgres pool (search_path = its schema).
        keys: The customer key store, for services that hold customer data keys.
        relay: The outbox relay (tests read its counters).
    """

    service: str
    settings: ServiceSettings
    pool_: Pool | None = None
    keys_: crypto.KeyStore | None = None
    relay: OutboxRelay | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def pool(self) -> Pool:
        """The pool; only after start-up."""
        if self.pool_ is None:
            raise RuntimeError("the service has not started")
        return self.pool_

    @property
    def keys(self) -> crypto.KeyStore:
        """The key store; only for services created with `uses_customer_keys=True`."""
        if self.keys_ is None:
            raise RuntimeError("this service holds no customer keys")
        return self.keys_


@dataclass
class _Resources:
    producer: AIOKafkaProducer | None = None
    relay_task: asyncio.Task[None] | None = None
    health: HealthServer | None = None


def create_service_app(  # noqa: PLR0913 - the service's whole wiring, keyword-only
    settings: ServiceSettings,
    *,
    service: str,
    migrations: Path | None,
    register: Callable[[KafkaBroker, ServiceContext], None],
    uses_customer_keys: bool = False,
    description: str = "",
) -> tuple[FastStream, ServiceContext]:
    """Build a service's FastStream app; nothing connects until the app runs.

    Args:
        settings: The service's settings.
        service: The service name, which is also its schema and Kafka principal.
        migrations: The service's own `migrations/` folder (after the common ones).
        register: Attaches the service's subscribers (and publishers) to the broker.
        uses_customer_keys: Open the per-customer key store (`ctx.keys`); its table is
            migrated with the service's schema.
        description: One line for the AsyncAPI document.

    Returns:
        The app, and the context its handlers use.
    """
    broker = create_broker(settings, service=service)
    ctx = ServiceContext(service=service, settings=settings)
    register(broker, ctx)
    res = _Resources()

    async def startup() -> None:
        ctx.pool_ = await create_pool(settings, schema=service)
        applied = await migrate(ctx.pool_, schema=service, directory=migrations)
        if uses_customer_keys:
            applied += await migrate(
                ctx.pool_,
                schema=service,
                directory=crypto.MIGRATIONS_DIR,
                include_common=False,
                prefix="crypto/",
            )
            ctx.keys_ = crypto.KeyStore(ctx.pool_, settings.kek_bytes())
        if applied:
            log.info("migrations applied", extra={"count": len(applied)})
        res.producer = AIOKafkaProducer(
            **aiokafka_client_args(settings),
            client_id=f"rekisteri-{service}-outbox",
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=512 * 1024,
        )
        await res.producer.start()
        ctx.relay = OutboxRelay(ctx.pool_, res.producer, schema=service, name=service)
        res.relay_task = asyncio.create_task(ctx.relay.run(), name=f"{service}-outbox-relay")
        res.relay_task.add_done_callback(_relay_died)
        res.health = HealthServer(
            settings.health_port,
            {"kafka": broker_ready(broker), "postgres": _pool_ready(ctx)},
            host="0.0.0.0" if settings.environment == "production" else "127.0.0.1",  # noqa: S104
        )
        await res.health.start()

    async def shutdown() -> None:
        if res.health is not None:
            await res.health.stop()
        if ctx.relay is not None and res.relay_task is not None:
            ctx.relay.stop()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(res.relay_task, timeout=10)
        if res.producer is not None:
            await res.producer.stop()
        if ctx.pool_ is not None:
            await ctx.pool_.close()

    app = FastStream(
        broker,
        on_startup=[startup],
        after_shutdown=[shutdown],
        specification=AsyncAPI(
            title=f"Rekisteri {service}",
            version="1.0.0",
            description=description or f"The {service} service of Rekisteri.",
        ),
    )
    return app, ctx


def _relay_died(task: asyncio.Task[None]) -> None:
    """A relay that fails for good must not leave the service running without its outbox."""
    if task.cancelled() or task.exception() is None:
        return
    log.critical(
        "outbox relay failed; stopping the service",
        extra={"reason": type(task.exception()).__name__},
    )
    signal.raise_signal(signal.SIGTERM)


def _pool_ready(ctx: ServiceContext) -> Callable[[], Any]:
    async def check() -> bool:
        if ctx.pool_ is None:
            return False
        async with ctx.pool_.acquire() as conn:
            return bool(await conn.fetchval("SELECT 1"))

    return check


def run(app: FastStream, settings: ServiceSettings, *, service: str) -> None:
    """Run a service until SIGINT/SIGTERM (the body of every `__main__`)."""
    configure_logging(service, settings.log_level)
    asyncio.run(app.run(log_level=logging.getLevelName(settings.log_level)))
