"""Shared fixtures: the real infrastructure for the real tier (see tests/support/infra.py)."""

from __future__ import annotations

import pytest

from tests.support.infra import Infra, find_infra


@pytest.fixture(scope="session")
def infra() -> Infra:
    """The running Kafka, PostgreSQL and S3 server (fails under CI when they are missing)."""
    return find_infra()
