"""The Dagster layer: thin wrappers that read like the asset graph in DESIGN §2."""

import warnings

import dagster

# Two Dagster features this layer relies on are marked preview/beta in 1.13: checks partitioned
# per shard and assets reporting their own data version. Say so once here, not on every run.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                        category=dagster.PreviewWarning)
warnings.filterwarnings("ignore", message="Parameter `data_version` of initializer",
                        category=dagster.BetaWarning)
warnings.filterwarnings("ignore", message="Function `observable_source_asset` is currently in beta",
                        category=dagster.BetaWarning)
