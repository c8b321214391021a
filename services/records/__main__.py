"""`python -m services.records`: run the records service until SIGINT/SIGTERM.

Settings come from the environment (`RECORDS_*`); migrations run at start-up, before the
subscriber consumes anything.
"""

from __future__ import annotations

from services.common.runtime import run
from services.records.app import create_app
from services.records.handlers import SERVICE
from services.records.settings import RecordsSettings


def main() -> None:
    """Read the settings, build the app and run it."""
    settings = RecordsSettings()  # required fields come from the environment
    run(create_app(settings), settings, service=SERVICE)


if __name__ == "__main__":
    main()
