"""`python -m services.analytics`: run the analytics service until SIGINT/SIGTERM.

Settings come from the environment (`ANALYTICS_*`); migrations run at start-up, before the
subscribers consume anything.
"""

from __future__ import annotations

from services.analytics.app import create_app
from services.analytics.handlers import SERVICE
from services.analytics.settings import AnalyticsSettings
from services.common.runtime import run


def main() -> None:
    """Read the settings, build the app and run it."""
    settings = AnalyticsSettings()  # required fields come from the environment
    run(create_app(settings), settings, service=SERVICE)


if __name__ == "__main__":
    main()
