"""Fixtures: small datasets of generated videos, so the suite runs anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_MEDIA_ENV = "COG_ASSETS_MEDIA"


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """The real-world corpus in ../shared/media, when CI points COG_ASSETS_MEDIA at it: the one
    way tests find it (they skip, saying how to run them, without it)."""
    value = os.environ.get(SHARED_MEDIA_ENV)
    if not value:
        pytest.skip(f"{SHARED_MEDIA_ENV} is unset: set it to ../shared/media to run the "
                    "real-media tests (.ci/run does)")
    return Path(value)
