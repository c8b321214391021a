"""The asyncpg connection pool of a service, bound to the service's own schema.

Every connection of the pool has `search_path` set to the schema (as a startup parameter, so it
survives the `RESET ALL` the pool runs when a connection is released), and decodes `json`/`jsonb`
columns to Python values. Nothing connects at import time: `create_pool` is awaited by the
service's lifespan, with the settings it was given.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Final, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    from services.common.settings import ServiceSettings

    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    """A pool of connections bound to one schema."""
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
    """A single connection, either standalone or borrowed from a pool."""

_SCHEMA_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema(schema: str) -> str:
    """Return `schema` when it is a plain lower-case identifier, else raise `ValueError`.

    Schema names are interpolated into SQL (identifiers cannot be bind parameters), so only
    names that need no quoting are accepted.
    """
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"invalid schema name {schema!r}: use [a-z_][a-z0-9_]*, at most 63")
    return schema


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=json.dumps,
            decoder=json.loads,
            schema="pg_catalog",
        )


async def open_pool(
    dsn: str,
    *,
    schema: str,
    max_size: int = 10,
    min_size: int = 1,
    application_name: str = "rekisteri",
) -> Pool:
    """Open a pool on `dsn` whose connections all use `schema` as their `search_path`.

    Args:
        dsn: PostgreSQL DSN (normally the service's own role).
        schema: The schema every unqualified name resolves to.
        max_size: Maximum connections in the pool.
        min_size: Connections opened eagerly.
        application_name: Shown in `pg_stat_activity`, to tell services apart.
    """
    return await asyncpg.create_pool(
        dsn,
        min_size=min(min_size, max_size),
        max_size=max_size,
        init=_init_connection,
        server_settings={
            "search_path": check_schema(schema),
            "application_name": application_name,
        },
    )


async def create_pool(settings: ServiceSettings, *, schema: str) -> Pool:
    """Open the service's pool from its settings (`pg_dsn`, `pg_pool_size`).

    Args:
        settings: The service's settings.
        schema: The service's own schema (normally the service name).
    """
    return await open_pool(
        settings.pg_dsn.get_secret_value(),
        schema=schema,
        max_size=settings.pg_pool_size,
        application_name=f"rekisteri-{schema}",
    )
