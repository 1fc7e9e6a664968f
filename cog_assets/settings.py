"""The few settings a deployment chooses, read from the environment with demo defaults.

`dagster dev` with nothing set shows the embedded demo (`cog-assets demo` writes it under
./cog-assets-demo); a real deployment points the variables at its data root and store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

DEMO_DIR = Path("cog-assets-demo")


@dataclass(frozen=True)
class Settings:
    data_root: str
    store_url: str
    profile: str = "tiny"
    weights: str | None = None
    revision: str | None = None
    shard_count: int = 4
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 1
    buckets: tuple[str, ...] = ()  # "FxHxW" shapes; empty: the profile's own
    token_budget: int | None = None
    sample_start: str = "start"
    resize: str = "cover"
    short_clips: str = "reject"
    automation: bool = False  # Declarative Automation on data-version changes

    @classmethod
    def for_demo(cls, demo_dir: Path = DEMO_DIR) -> "Settings":
        demo_dir = demo_dir.absolute()
        return cls(data_root=str(demo_dir / "data"), store_url=str(demo_dir / "store"))

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        demo = cls.for_demo()
        return cls(
            data_root=_absolute(env.get("COG_ASSETS_DATA_ROOT", demo.data_root)),
            store_url=_absolute(env.get("COG_ASSETS_STORE", demo.store_url)),
            profile=env.get("COG_ASSETS_PROFILE", "tiny"),
            weights=env.get("COG_ASSETS_WEIGHTS") or None,
            revision=env.get("COG_ASSETS_REVISION") or None,
            shard_count=int(env.get("COG_ASSETS_SHARDS", "4")),
            device=env.get("COG_ASSETS_DEVICE", "auto"),
            dtype=env.get("COG_ASSETS_DTYPE", "auto"),
            batch_size=int(env.get("COG_ASSETS_BATCH_SIZE", "1")),
            buckets=tuple(b for b in env.get("COG_ASSETS_BUCKETS", "").split(",") if b),
            token_budget=int(env["COG_ASSETS_TOKEN_BUDGET"])
            if env.get("COG_ASSETS_TOKEN_BUDGET") else None,
            sample_start=env.get("COG_ASSETS_SAMPLE_START", "start"),
            resize=env.get("COG_ASSETS_RESIZE", "cover"),
            short_clips=env.get("COG_ASSETS_SHORT_CLIPS", "reject"),
            automation=env.get("COG_ASSETS_AUTOMATION", "").lower() in ("1", "true", "yes"),
        )

    def to_env(self) -> dict[str, str]:
        """The variables that make `Settings.from_env()` return these settings."""
        env = {
            "COG_ASSETS_DATA_ROOT": self.data_root, "COG_ASSETS_STORE": self.store_url,
            "COG_ASSETS_PROFILE": self.profile, "COG_ASSETS_SHARDS": str(self.shard_count),
            "COG_ASSETS_DEVICE": self.device, "COG_ASSETS_DTYPE": self.dtype,
            "COG_ASSETS_BATCH_SIZE": str(self.batch_size),
        }
        optional = {"COG_ASSETS_WEIGHTS": self.weights, "COG_ASSETS_REVISION": self.revision,
                    "COG_ASSETS_BUCKETS": ",".join(self.buckets),
                    "COG_ASSETS_TOKEN_BUDGET": str(self.token_budget or ""),
                    "COG_ASSETS_SAMPLE_START": self.sample_start,
                    "COG_ASSETS_RESIZE": self.resize, "COG_ASSETS_SHORT_CLIPS": self.short_clips}
        defaults = {"COG_ASSETS_SAMPLE_START": "start", "COG_ASSETS_RESIZE": "cover",
                    "COG_ASSETS_SHORT_CLIPS": "reject"}
        env.update({k: v for k, v in optional.items() if v and v != defaults.get(k)})
        if self.automation:
            env["COG_ASSETS_AUTOMATION"] = "1"
        return env

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)


def _absolute(path_or_url: str) -> str:
    """Local paths are made absolute so runs in other working directories agree; URLs stay."""
    if "://" in path_or_url:
        return path_or_url
    return str(Path(path_or_url).expanduser().absolute())
