"""Where the VAE step keeps torch.compile's cache: under the Dagster instance.

The instance directory (DAGSTER_HOME) is what a backfill, the UI, the sensor's runs and a
CI job that keeps its run history all share on one machine, so a compilation made by one
run is loaded, not redone, by the next (cog_assets.models.vae_compile).
"""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance

COMPILE_CACHE = ("cog-assets", "compile-cache")


def compile_cache_dir(instance: DagsterInstance) -> Path:
    """`<instance root>/cog-assets/compile-cache` (an ephemeral instance's is temporary)."""
    return Path(instance.root_directory).joinpath(*COMPILE_CACHE)
