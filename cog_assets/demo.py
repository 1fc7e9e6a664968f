"""The embedded demo dataset: a dozen short synthetic clips with captions, made with PyAV."""

from __future__ import annotations

from pathlib import Path

from cog_assets.media.synthetic import write_test_video

DEMO_CLIPS = [
    # (file name, width, height, seconds, caption)
    ("clips/sunrise_pan.mp4", 160, 96, 2.0, "a bright square moving slowly across a warm sky"),
    ("clips/ocean_drift.mp4", 128, 128, 1.5, "a small square drifting over blue water"),
    ("clips/city_night.mp4", 192, 108, 2.0, "a light moving across a dark city street at night"),
    ("clips/forest_walk.mp4", 96, 160, 2.0, "a camera walking through a green forest, portrait"),
    ("clips/red_ball.mp4", 160, 120, 1.5, "a red ball rolling quickly from left to right"),
    ("clips/yellow_kite.mp4", 176, 96, 2.0, "a yellow kite rising over a field"),
    ("clips/snow_fall.mp4", 144, 96, 1.5, "white snow falling in front of a dark window"),
    ("clips/desert_road.mp4", 240, 96, 2.0, "a car driving along a straight desert road"),
    ("clips/lantern.mp4", 112, 112, 1.5, "an orange lantern swaying in the wind"),
    ("clips/river_bend.mp4", 160, 90, 2.0, "a river bending through a valley, seen from above"),
    ("clips/night_sky.mp4", 128, 96, 1.5, "stars moving slowly across a purple night sky"),
    ("clips/too_short.mp4", 160, 96, 0.4, "a clip far too short for the model's frame window"),
]


def write_demo_dataset(data_root: Path) -> Path:
    """Writes videos plus prompts.txt / videos.txt (the CogVideoX guides' layout)."""
    data_root.mkdir(parents=True, exist_ok=True)
    for seed, (name, width, height, seconds, _) in enumerate(DEMO_CLIPS):
        path = data_root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            write_test_video(path, width=width, height=height, fps=24, seconds=seconds, seed=seed)
    (data_root / "videos.txt").write_text("".join(f"{c[0]}\n" for c in DEMO_CLIPS))
    (data_root / "prompts.txt").write_text("".join(f"{c[4]}\n" for c in DEMO_CLIPS))
    return data_root
