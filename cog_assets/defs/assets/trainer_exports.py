"""What the export assets share: where an export is written, the lease that keeps gc off it
while it is written, and the metadata it reports.

The exports are unpartitioned, downstream of every shard of `training_dataset`; no model is
loaded. Each reads the shards the dataset's catalog lists and writes `trainer_args.txt`
beside its files.
"""

from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult

from cog_assets.defs.resources import ModelResource, StoreResource
from cog_assets.exports import ExportReport
from cog_assets.store import layout
from cog_assets.store.leases import Lease, run_holder


def export_dirs(store: StoreResource, model: ModelResource, trainer: str) -> tuple[Path, Path]:
    content = store.open()
    if content.local_path(content.root) != content.root:
        raise ValueError(f"exports write trainer files on local disk; the store {store.url} is "
                         "remote: run the export where the dataset is mounted")
    return (Path(content.path(layout.dataset_dir(model.profile))),
            Path(content.path(layout.export_dir(model.profile, trainer))))


def export_lease(context: AssetExecutionContext, store: StoreResource, model: ModelResource
           ) -> Lease:
    """Holds the profile's exports while one is written (gc leaves its fresh folder alone)."""
    return Lease(store.open(), run_holder(context.run.run_id, context.asset_key.path[-1]),
                 paths=[f"{layout.EXPORTS_DIR}/{model.profile}/*"], handover_s=0)


def export_result(report: ExportReport) -> MaterializeResult:
    return MaterializeResult(metadata={
        "clips": report.clips, "files": len(report.files), "out_dir": str(report.out_dir),
        "trainer_args": report.args_text(),
        "trainer_args_file": str(report.args_file),
    })
