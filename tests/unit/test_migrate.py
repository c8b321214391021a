"""Migration discovery and the checks made before anything is applied (no database)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.common.migrate import (
    COMMON_PREFIX,
    MigrationError,
    checksum,
    discover,
    pending,
    plan,
)

if TYPE_CHECKING:
    from pathlib import Path


def write(directory: Path, name: str, sql: str = "SELECT 1;") -> None:
    (directory / name).write_text(sql, encoding="utf-8")


def test_discover_orders_by_number_and_ignores_other_files(tmp_path: Path) -> None:
    write(tmp_path, "0010_later.sql")
    write(tmp_path, "0002_second.sql")
    write(tmp_path, "0001_first.sql")
    write(tmp_path, "README.md", "not a migration")

    found = discover(tmp_path)

    assert [m.ident for m in found] == ["0001_first", "0002_second", "0010_later"]


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "abcd_x.sql"])
def test_discover_refuses_malformed_names(tmp_path: Path, name: str) -> None:
    write(tmp_path, name)

    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        discover(tmp_path)


def test_discover_refuses_a_repeated_number(tmp_path: Path) -> None:
    write(tmp_path, "0001_one.sql")
    write(tmp_path, "0001_other.sql")

    with pytest.raises(MigrationError, match="used by two files"):
        discover(tmp_path)


def test_checksum_ignores_line_endings_only() -> None:
    assert checksum("SELECT 1;\r\nSELECT 2;\r\n") == checksum("SELECT 1;\nSELECT 2;\n")
    assert checksum("SELECT 1;") != checksum("SELECT 2;")


def test_plan_puts_common_migrations_first(tmp_path: Path) -> None:
    write(tmp_path, "0001_customers.sql")

    idents = [m.ident for m in plan(tmp_path)]

    assert idents[0] == f"{COMMON_PREFIX}0001_outbox_inbox"
    assert idents[-1] == "0001_customers"
    assert [m.ident for m in plan(tmp_path, include_common=False)] == ["0001_customers"]


def test_pending_skips_applied_and_refuses_a_changed_file(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", "CREATE TABLE a ();")
    write(tmp_path, "0002_b.sql", "CREATE TABLE b ();")
    migrations = discover(tmp_path)
    first = migrations[0]

    todo = pending(migrations, {"0001": (first.name, first.checksum)}, schema="s")
    assert [m.ident for m in todo] == ["0002_b"]

    with pytest.raises(MigrationError, match="0001_a was changed after it was applied"):
        pending(migrations, {"0001": (first.name, "0" * 64)}, schema="s")


def test_pending_refuses_a_new_file_numbered_below_an_applied_one(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql")
    write(tmp_path, "0002_b.sql")
    migrations = discover(tmp_path)
    second = migrations[1]

    with pytest.raises(MigrationError, match="0002 is already applied"):
        pending(migrations, {"0002": (second.name, second.checksum)}, schema="s")


def test_common_and_service_numbers_do_not_collide(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql")
    migrations = plan(tmp_path)
    common = migrations[0]

    todo = pending(migrations, {common.version: (common.name, common.checksum)}, schema="s")

    assert [m.ident for m in todo] == ["0001_a"]


def test_prefixed_sets_are_numbered_apart(tmp_path: Path) -> None:
    write(tmp_path, "0001_subject_keys.sql")

    idents = [m.ident for m in plan(tmp_path, include_common=False, prefix="crypto/")]

    assert idents == ["crypto/0001_subject_keys"]
    with pytest.raises(ValueError, match="invalid migration prefix"):
        plan(tmp_path, prefix="../")


def test_pending_warns_only_about_unknown_versions_of_its_own_sets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "0001_a.sql")
    migrations = plan(tmp_path)
    applied = {m.version: (m.name, m.checksum) for m in migrations}

    assert pending(migrations, applied | {"crypto/0001": ("keys", "x")}, schema="s") == []
    assert "does not know" not in caplog.text

    assert pending(migrations, applied | {"0002": ("b", "x")}, schema="s") == []
    assert "migration 0002 that this code does not know" in caplog.text
