"""The code location `dagster dev` loads (see workspace.yaml): settings from the environment."""

from cog_assets.core.config import load_settings
from cog_assets.defs.build import build_definitions

defs = build_definitions(load_settings())
