"""The service pool and the migrations runner against the real PostgreSQL, as role svc_records."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
import pytest
from pydantic import SecretStr

from services.common.db import create_pool, open_pool
from services.common.migrate import MigrationError, migrate
from services.common.settings import ServiceSettings
from tests.support.infra import Infra, find_infra
from tests.support.pg import scratch_schema

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from services.common.db import Pool

pytestmark = pytest.mark.real

SERVICE = "records"


@pytest.fixture(scope="module")
def infra() -> Infra:
    return find_infra()


@pytest.fixture
async def schema(infra: Infra) -> AsyncIterator[str]:
    async with scratch_schema(infra, SERVICE) as name:
        yield name


@pytest.fixture
async def pool(infra: Infra, schema: str) -> AsyncIterator[Pool]:
    pool = await open_pool(infra.pg_dsn(SERVICE), schema=schema, max_size=5)
    yield pool
    await pool.close()


def migrations_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "0001_customers.sql").write_text(
        "CREATE TABLE customers (customer_id text PRIMARY KEY, profile jsonb NOT NULL);\n"
    )
    (directory / "0002_customer_version.sql").write_text(
        "ALTER TABLE customers ADD COLUMN version int NOT NULL DEFAULT 0;\n"
    )
    return directory


async def test_pool_from_settings_writes_and_reads_as_the_service_role(
    infra: Infra, schema: str
) -> None:
    settings = ServiceSettings(
        kafka_username=SERVICE,
        kafka_password=SecretStr("unused"),
        pg_dsn=SecretStr(infra.pg_dsn(SERVICE)),
        pg_pool_size=1,
    )
    pool = await create_pool(settings, schema=schema)
    try:
        async with pool.acquire() as conn:
            who = await conn.fetchrow("SELECT current_user AS role, current_schema() AS schema")
            assert who is not None
            assert (who["role"], who["schema"]) == (f"svc_{SERVICE}", schema)
            await conn.execute("CREATE TABLE things (id int PRIMARY KEY, doc jsonb NOT NULL)")
            await conn.execute(
                "INSERT INTO things VALUES ($1, $2)", 1, {"purposes": ["a"], "version": 3}
            )
            # A session that changes its search_path gets it back when returned to the pool.
            await conn.execute("SET search_path TO public")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_schema()") == schema
            doc = await conn.fetchval("SELECT doc FROM things WHERE id = 1")
            assert doc == {"purposes": ["a"], "version": 3}
            assert await conn.fetchval(f"SELECT count(*) FROM {schema}.things") == 1
    finally:
        await pool.close()


async def test_migrations_apply_once_and_rerun_is_a_no_op(
    pool: Pool, schema: str, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path)

    first = await migrate(pool, schema=schema, directory=directory)
    again = await migrate(pool, schema=schema, directory=directory)

    assert first == ["common/0001_outbox_inbox", "0001_customers", "0002_customer_version"]
    assert again == []
    async with pool.acquire() as conn:
        recorded = await conn.fetch(
            "SELECT version, name, length(checksum) AS n FROM schema_migrations ORDER BY version"
        )
        assert [(r["version"], r["name"], r["n"]) for r in recorded] == [
            ("0001", "customers", 64),
            ("0002", "customer_version", 64),
            ("common/0001", "outbox_inbox", 64),
        ]
        for table in ("outbox", "inbox", "customers"):
            assert await conn.fetchval("SELECT to_regclass($1)", f"{schema}.{table}") is not None
        await conn.execute("INSERT INTO customers VALUES ('C1', '{}', 2)")

    (directory / "0003_customer_note.sql").write_text("ALTER TABLE customers ADD note text;\n")
    assert await migrate(pool, schema=schema, directory=directory) == ["0003_customer_note"]


async def test_a_prefixed_set_is_tracked_apart_from_the_service_own(
    pool: Pool, schema: str, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "0001_subject_keys.sql").write_text("CREATE TABLE subject_keys (id text);\n")

    assert len(await migrate(pool, schema=schema, directory=directory)) == 3
    assert await migrate(
        pool, schema=schema, directory=keys, include_common=False, prefix="crypto/"
    ) == ["crypto/0001_subject_keys"]
    assert await migrate(pool, schema=schema, directory=directory) == []
    assert (
        await migrate(pool, schema=schema, directory=keys, include_common=False, prefix="crypto/")
        == []
    )


async def test_a_changed_migration_is_refused_and_nothing_more_is_applied(
    pool: Pool, schema: str, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path)
    await migrate(pool, schema=schema, directory=directory)
    (directory / "0001_customers.sql").write_text(
        "CREATE TABLE customers (customer_id text PRIMARY KEY, name text);\n"
    )
    (directory / "0003_later.sql").write_text("CREATE TABLE later (id int);\n")

    with pytest.raises(MigrationError, match="0001_customers was changed after it was applied"):
        await migrate(pool, schema=schema, directory=directory)

    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT to_regclass($1)", f"{schema}.later") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 3


async def test_a_tampered_recorded_checksum_is_refused(
    pool: Pool, schema: str, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path)
    await migrate(pool, schema=schema, directory=directory)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = '0002'"
        )

    with pytest.raises(MigrationError, match="0002_customer_version was changed"):
        await migrate(pool, schema=schema, directory=directory)


async def test_a_failing_migration_rolls_back_alone(
    pool: Pool, schema: str, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path)
    (directory / "0003_broken.sql").write_text(
        "CREATE TABLE half (id int);\nSELECT no_such_function();\n"
    )

    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(pool, schema=schema, directory=directory)

    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT to_regclass($1)", f"{schema}.half") is None
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == ["0001", "0002", "common/0001"]


async def test_concurrent_runners_apply_each_migration_once(
    pool: Pool, schema: str, tmp_path: Path
) -> None:
    directory = migrations_dir(tmp_path)

    results = await asyncio.gather(
        *(migrate(pool, schema=schema, directory=directory) for _ in range(4))
    )

    applied = [ident for result in results for ident in result]
    assert sorted(applied) == [
        "0001_customers",
        "0002_customer_version",
        "common/0001_outbox_inbox",
    ]
    assert sum(1 for result in results if result) == 1
