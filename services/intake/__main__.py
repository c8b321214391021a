"""`python -m services.intake`: run the intake service with settings from `INTAKE_*` variables.

Migrations (the common outbox and inbox) are applied at start-up, before anything is consumed.
"""

from __future__ import annotations

from services.common.runtime import run
from services.intake.app import SERVICE, create_app
from services.intake.settings import IntakeSettings


def main() -> None:
    """Read the settings from the environment and run until SIGINT/SIGTERM."""
    settings = IntakeSettings()
    run(create_app(settings), settings, service=SERVICE)


if __name__ == "__main__":
    main()
