"""The unit tier runs on fakes only: no variable of a real deployment may leak into it.

pydantic-settings reads (and deep-merges) environment variables into settings objects, so a
shell that sourced `.rekisteri/env` would change what a unit test builds. Every service's and
the platform's variables are removed for each unit test.
"""

from __future__ import annotations

import os

import pytest

from contracts.topics import SERVICES

_PREFIXES = (*(f"{s.upper()}_" for s in SERVICES), "REKISTERI_")


@pytest.fixture(autouse=True)
def _no_deployment_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(_PREFIXES):
            monkeypatch.delenv(name)
