"""`python -m services.consent`: run the consent service until SIGINT/SIGTERM.

Settings come from the environment (`CONSENT_*`); migrations run at start-up, before the
subscribers consume anything.
"""

from __future__ import annotations

from services.common.runtime import run
from services.consent.app import create_app
from services.consent.handlers import SERVICE
from services.consent.settings import ConsentSettings


def main() -> None:
    """Read the settings, build the app and run it."""
    settings = ConsentSettings()  # required fields come from the environment
    run(create_app(settings), settings, service=SERVICE)


if __name__ == "__main__":
    main()
