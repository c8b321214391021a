"""`python -m services.photos`: run the photos service until SIGINT/SIGTERM.

Settings come from the environment (`PHOTOS_*`); migrations run at start-up, before the
subscribers consume anything.
"""

from __future__ import annotations

from services.common.runtime import run
from services.photos.app import create_app
from services.photos.handlers import SERVICE
from services.photos.settings import PhotosSettings


def main() -> None:
    """Read the settings, build the app and run it."""
    settings = PhotosSettings()  # required fields come from the environment
    run(create_app(settings), settings, service=SERVICE)


if __name__ == "__main__":
    main()
