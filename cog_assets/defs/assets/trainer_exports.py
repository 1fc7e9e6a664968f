"""What the export assets share: where an export is written, the lease that keeps gc off it
while it is written, the clip files of the dataset's clips, and the metadata it reports.

The exports are unpartitioned, downstream of every shard of `training_dataset`; no model is
loaded. Each reads the shards the dataset's catalog lists and writes `trainer_args.txt`
beside its files.
"""

from collections.abc import Callable
from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult

from cog_assets.defs.resources import (
    ClipsResource,
    LimitsResource,
    ModelResource,
    SourcesResource,
    StoreResource,
)
from cog_assets.exports import ExportReport
from cog_assets.exports.source import read_clips
from cog_assets.media.clip_cut import ClipEncoding
from cog_assets.sources.uploads import UploadState
from cog_assets.stages.clip_files import ClipFiles, ClipSource, cut_clip_files
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


def dataset_clip_files(store: StoreResource, model: ModelResource, sources: SourcesResource,
                       limits: LimitsResource, clips: ClipsResource,
                       hold: Callable[[dict[str, list[str]]], None]) -> ClipFiles:
    """The clip file of every clip the dataset's catalog lists: found in the store, or cut
    now (what clip_files does; an export that runs alone cuts what is missing itself)."""
    dataset_dir, _ = export_dirs(store, model, "clips")
    content = store.open()
    settings = sources.settings()
    wanted = []
    for clip in read_clips(dataset_dir):
        start_s, end_s = clip.segment  # no end: a whole file whose headers give no duration
        if clip.content_hash is None:
            raise ValueError(f"{clip.where()}: its shard was published without the source's "
                             "content hash; materialize it again")
        wanted.append(ClipSource(clip.clip_id, clip.source_video, clip.content_hash,
                                 float(start_s or 0.0), None if end_s is None else float(end_s)))
    return cut_clip_files(wanted, settings.data_root, content,
                          ClipEncoding(crf=clips.clip_crf), keyframes=clips.export_keyframes,
                          decode_timeout_s=limits.decode_timeout_s,
                          known=UploadState(content, settings, model.profile).known_hashes(),
                          hold=hold)


def require_all(files: ClipFiles) -> None:
    """Refuse an export some clips of which have no clip file, naming them and why."""
    if files.failed:
        lines = [message for _, message in list(files.failed.values())[:5]]
        more = len(files.failed) - len(lines)
        raise ValueError(f"{len(files.failed)} clips could not be cut out of their sources:\n"
                         + "\n".join(lines) + (f"\n... and {more} more" if more > 0 else ""))


def export_with_clip_files(context: AssetExecutionContext, trainer: str, model: ModelResource,
                           sources: SourcesResource, limits: LimitsResource,
                           clips: ClipsResource, store: StoreResource,
                           write: Callable[[Path, Path, dict], ExportReport]
                           ) -> MaterializeResult:
    """An export that links clip files: under the exports' lease, every clip's file found or
    cut (all of them, or refused), then `write(dataset_dir, out_dir, clip_files)`."""
    dataset_dir, out_dir = export_dirs(store, model, trainer)
    with export_lease(context, store, model) as lease:
        files = dataset_clip_files(store, model, sources, limits, clips, lease.hold_all)
        require_all(files)
        return export_result(write(dataset_dir, out_dir, files.files), files)


def export_result(report: ExportReport, files: ClipFiles | None = None) -> MaterializeResult:
    metadata = {
        "clips": report.clips, "files": len(report.files), "out_dir": str(report.out_dir),
        "trainer_args": report.args_text(),
        "trainer_args_file": str(report.args_file),
    }
    if files is not None:  # the clip files it links: computed here when clip_files had not
        metadata.update({f"clip_files_{k}": v for k, v in files.stats.as_metadata().items()})
    return MaterializeResult(metadata=metadata)

