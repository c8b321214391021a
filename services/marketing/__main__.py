"""`python -m services.marketing`: run the marketing service until SIGINT/SIGTERM.

Settings come from the environment (`MARKETING_*`); migrations run at start-up, before the
subscribers consume anything.
"""

from __future__ import annotations

from services.common.runtime import run
from services.marketing.app import create_app
from services.marketing.handlers import SERVICE
from services.marketing.settings import MarketingSettings


def main() -> None:
    """Read the settings, build the app and run it."""
    settings = MarketingSettings()  # required fields come from the environment
    run(create_app(settings), settings, service=SERVICE)


if __name__ == "__main__":
    main()
