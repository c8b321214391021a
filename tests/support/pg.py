"""Scratch PostgreSQL schemas: isolated, owned by a service role, then dropped."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING
from uuid import uuid4

import asyncpg

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.support.infra import Infra


@contextlib.asynccontextmanager
async def scratch_schema(infra: Infra, service: str = "records") -> AsyncIterator[str]:
    """A new schema `t_<random>` owned by `svc_<service>`, dropped (with its contents) after."""
    name = f"t_{uuid4().hex[:16]}"
    admin = await asyncpg.connect(infra.pg_admin_dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {name} AUTHORIZATION svc_{service}")
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(infra.pg_admin_dsn)
        try:
            await admin.execute(f"DROP SCHEMA {name} CASCADE")
        finally:
            await admin.close()
