"""Forward-only SQL migrations, applied by each service to its own schema at start-up.

A migration is a plain file `NNNN_name.sql` (four digits, then a lower-case name). `migrate()`
applies the common migrations of `services/common/migrations/` first (the outbox and inbox
tables every service has), then the service's own directory, each file in its own transaction
with `search_path` set to the schema, and records it in `<schema>.schema_migrations` with the
SHA-256 of its text. Re-running is a no-op; a file changed after it was applied is refused
(add a new file instead); concurrent runners (several replicas starting at once) are
serialised by a session advisory lock per schema. Statements that cannot run inside a
transaction (`CREATE INDEX CONCURRENTLY`) are not supported.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from services.common.db import check_schema

if TYPE_CHECKING:
    from services.common.db import Connection, Pool

log = logging.getLogger(__name__)

COMMON_MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
"""The migrations every service gets first: the outbox and inbox tables."""
COMMON_PREFIX: Final = "common/"
"""Version prefix of the common migrations in `schema_migrations`."""

_FILE_NAME: Final = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

LOCK_KEY_SQL: Final = "hashtextextended('rekisteri.migrate.' || $1::text, 0)"
LOCK_SQL: Final = f"SELECT pg_advisory_lock({LOCK_KEY_SQL})"
UNLOCK_SQL: Final = f"SELECT pg_advisory_unlock({LOCK_KEY_SQL})"
CREATE_TABLE_SQL: Final = """
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
APPLIED_SQL: Final = "SELECT version, name, checksum FROM {schema}.schema_migrations"
SET_PATH_SQL: Final = "SET LOCAL search_path TO {schema}"
RECORD_SQL: Final = """
INSERT INTO {schema}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)
"""


class MigrationError(RuntimeError):
    """The migrations on disk and those recorded in the database disagree."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file.

    Attributes:
        version: `NNNN` for a service's own file, `common/NNNN` for a common one.
        name: The part of the file name after the number, without `.sql`.
        sql: The file's text, executed as one multi-statement script.
        checksum: SHA-256 (hex) of the text with line endings normalised.
    """

    version: str
    name: str
    sql: str
    checksum: str

    @property
    def ident(self) -> str:
        """`<version>_<name>`, as reported by `migrate()` and in logs."""
        return f"{self.version}_{self.name}"


def checksum(sql: str) -> str:
    """The checksum recorded for a migration's text (CRLF and LF give the same value)."""
    return hashlib.sha256(sql.replace("\r\n", "\n").encode()).hexdigest()


def discover(directory: Path, *, prefix: str = "") -> list[Migration]:
    """The migrations in `directory`, in version order.

    Args:
        directory: Folder of `NNNN_name.sql` files; other files are ignored, but a `.sql`
            file with a malformed name or a repeated number is an error.
        prefix: Prepended to each version (`common/` for the common migrations).

    Raises:
        MigrationError: On a malformed name or a duplicate version number.
    """
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        version = prefix + match["version"]
        if version in found:
            raise MigrationError(f"{path}: version {version} is used by two files")
        text = path.read_text(encoding="utf-8")
        found[version] = Migration(version, match["name"], text, checksum(text))
    return [found[v] for v in sorted(found)]


def plan(
    directory: Path | None, *, include_common: bool = True, prefix: str = ""
) -> list[Migration]:
    """Every migration a service applies, in order: the common ones, then `directory`'s.

    Args:
        directory: The service's own migrations, or `None`.
        include_common: Whether the common (outbox, inbox) migrations come first.
        prefix: Version prefix of `directory`'s files (e.g. `crypto/` for a shared set applied
            by some services only), so their numbers never collide with the service's own.
    """
    if prefix and not re.fullmatch(r"[a-z0-9_]+/", prefix):
        raise ValueError(f"invalid migration prefix {prefix!r}: use [a-z0-9_]+/")
    migrations = discover(COMMON_MIGRATIONS, prefix=COMMON_PREFIX) if include_common else []
    if directory is not None:
        migrations += discover(directory, prefix=prefix)
    return migrations


def pending(
    migrations: list[Migration], applied: dict[str, tuple[str, str]], *, schema: str
) -> list[Migration]:
    """The migrations still to apply, after checking the applied ones are unchanged.

    Args:
        migrations: The planned migrations, in order.
        applied: `version -> (name, checksum)` as recorded in `schema_migrations`.
        schema: The schema, for error messages.

    Raises:
        MigrationError: When an applied file changed, or a new file is numbered below one that
            is already applied in the same group (forward-only: number it after the last).
    """
    todo: list[Migration] = []
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is None:
            todo.append(migration)
            continue
        name, digest = recorded
        if digest != migration.checksum:
            raise MigrationError(
                f"migration {migration.ident} was changed after it was applied to schema "
                f"{schema} (recorded {name!r} with checksum {digest[:12]}..., file has "
                f"{migration.checksum[:12]}...); migrations are forward-only: restore the "
                "file and add a new migration instead"
            )
    for migration in todo:
        group, number = migration.version.rpartition("/")[::2]
        later = [v for v in applied if v.rpartition("/")[0] == group and v[-4:] > number]
        if later:
            raise MigrationError(
                f"migration {migration.ident} is new but {max(later)} is already applied to "
                f"schema {schema}; number new migrations after the last applied one"
            )
    known = {m.version for m in migrations}
    groups = {m.version.rpartition("/")[0] for m in migrations}
    for version in sorted(v for v in set(applied) - known if v.rpartition("/")[0] in groups):
        log.warning(
            "schema %s has migration %s that this code does not know (newer code ran here?)",
            schema,
            version,
        )
    return todo


async def _apply(conn: Connection, schema: str, migrations: list[Migration]) -> list[str]:
    await conn.execute(CREATE_TABLE_SQL.format(schema=schema))
    rows = await conn.fetch(APPLIED_SQL.format(schema=schema))
    applied = {r["version"]: (r["name"], r["checksum"]) for r in rows}
    done: list[str] = []
    for migration in pending(migrations, applied, schema=schema):
        async with conn.transaction():
            await conn.execute(SET_PATH_SQL.format(schema=schema))
            await conn.execute(migration.sql)
            await conn.execute(
                RECORD_SQL.format(schema=schema),
                migration.version,
                migration.name,
                migration.checksum,
            )
        log.info("schema %s: applied migration %s", schema, migration.ident)
        done.append(migration.ident)
    return done


async def migrate(
    pool: Pool,
    *,
    schema: str,
    directory: Path | None,
    include_common: bool = True,
    prefix: str = "",
) -> list[str]:
    """Apply the pending migrations to `schema` and return their idents (`[]` when up to date).

    The common migrations (outbox, inbox) come first unless `include_common` is false, then
    the files of `directory` (the service's `migrations/`, or `None` for none), recorded with
    versions `<prefix>NNNN`. Each prefix is its own numbered sequence: call `migrate` once per
    set (e.g. the service's own, then `prefix="crypto/"` for the key table).

    Raises:
        MigrationError: When a file is malformed, an applied file changed, or a new file is
            numbered below an applied one. Nothing is applied in those cases.
    """
    check_schema(schema)
    migrations = plan(directory, include_common=include_common, prefix=prefix)
    async with pool.acquire() as conn:
        await conn.execute(LOCK_SQL, schema)
        try:
            return await _apply(conn, schema, migrations)
        finally:
            if not conn.is_closed():
                await conn.execute(UNLOCK_SQL, schema)
