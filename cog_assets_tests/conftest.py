"""Fixtures: small datasets of generated videos, so the suite runs anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cog_assets.media.synthetic import write_test_video

SHARED_MEDIA_ENV = "COG_ASSETS_MEDIA"


def make_dataset(root: Path, count: int, *, seconds: float = 1.5, broken: bool = True) -> Path:
    """`count` generated clips in the two-file layout, plus one file that is not a video."""
    videos, prompts = [], []
    for i in range(count):
        name = f"clips/clip_{i:02d}.mp4"
        write_test_video(root / name, width=128 + 16 * (i % 3), height=96, fps=24,
                         seconds=seconds, seed=i)
        videos.append(name)
        prompts.append(f"a bright square moving across scene number {i}")
    if broken:
        (root / "clips").mkdir(parents=True, exist_ok=True)
        (root / "clips" / "garbage.mp4").write_bytes(b"\x00\x01 this is not a video " * 50)
        videos.append("clips/garbage.mp4")
        prompts.append("a file that cannot be decoded")
    (root / "videos.txt").write_text("\n".join(videos) + "\n")
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return root


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """The real-world corpus in ../shared/media, when CI points COG_ASSETS_MEDIA at it: the one
    way tests find it (they skip, saying how to run them, without it)."""
    value = os.environ.get(SHARED_MEDIA_ENV)
    if not value:
        pytest.skip(f"{SHARED_MEDIA_ENV} is unset: set it to ../shared/media to run the "
                    "real-media tests (.ci/run does)")
    return Path(value)
