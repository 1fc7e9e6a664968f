"""The code location `dagster dev` loads (see workspace.yaml): settings from the environment."""

from cog_assets.defs.definitions import build_definitions
from cog_assets.settings import Settings

defs = build_definitions(Settings.from_env())
