"""The one door to Dagster's private API (`dagster._…`).

Three things this package needs have no public name in Dagster 1.13: staleness as the UI and
*Materialize stale* compute it (freshness), the run statuses that are final (dead_runs), and
the type of a job rebuilt in another process (build). They are imported here and nowhere
else, so a Dagster release that moves one breaks this module alone, with a message that names
the Dagster version; `cog_assets_tests/defs/test_dagster_internals.py` checks each still
behaves as relied on.
"""

from __future__ import annotations

import dagster
from dagster import DagsterInstance

try:
    from dagster._core.asset_graph_view.asset_graph_view import (
        AssetGraphView,
        TemporalContext,
    )
    from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
    from dagster._core.definitions.data_version import (
        CachingStaleStatusResolver,
        StaleStatus,
    )
    from dagster._core.definitions.reconstruct import ReconstructableJob
    from dagster._core.storage.dagster_run import FINISHED_STATUSES
    from dagster._time import get_current_datetime
except ImportError as exc:  # pragma: no cover - only on a Dagster that moved them
    raise ImportError(
        f"cog-assets relies on Dagster internals that dagster {dagster.__version__} no longer "
        f"has where 1.13 kept them ({exc}); install the dagster version pyproject.toml pins, "
        "or update cog_assets/defs/dagster_internals.py") from exc

__all__ = ["BaseAssetGraph", "CachingStaleStatusResolver", "FINISHED_STATUSES",
           "ReconstructableJob", "StaleStatus", "stale_status_resolver"]


def stale_status_resolver(instance: DagsterInstance, asset_graph: BaseAssetGraph
                          ) -> CachingStaleStatusResolver:
    """What the UI asks for an asset partition's stale status, as of now."""
    view = AssetGraphView(temporal_context=TemporalContext(
        effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance, asset_graph=asset_graph)
    return CachingStaleStatusResolver(instance=instance, asset_graph=asset_graph,
                                      loading_context=view)
