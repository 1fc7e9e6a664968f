"""Where steps keep their caches: under the Dagster instance.

The instance directory (DAGSTER_HOME) is what a backfill, the UI, the sensor's runs and a
CI job that keeps its run history all share on one machine, so what one run computed is
loaded, not redone, by the next: torch.compile's kernels (cog_assets.models.vae_compile) and
caption token counts (cog_assets.models.token_counts). Neither decides an artefact's bytes;
losing them costs time only.
"""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance

COMPILE_CACHE = ("cog-assets", "compile-cache")
TOKEN_COUNTS = ("cog-assets", "token-counts")


def compile_cache_dir(instance: DagsterInstance) -> Path:
    """`<instance root>/cog-assets/compile-cache` (an ephemeral instance's is temporary)."""
    return Path(instance.root_directory).joinpath(*COMPILE_CACHE)


def token_counts_dir(instance: DagsterInstance) -> Path:
    """`<instance root>/cog-assets/token-counts`."""
    return Path(instance.root_directory).joinpath(*TOKEN_COUNTS)
