"""Runs from the command line: register the shards, record their uploads, materialize them
in the persistent instance and summarise what happened.

Shared by `cog-assets demo` and `cog-assets backfill`. A shard run is the `prepare_shards`
job the UI and the sensor launch, from the same settings, on the same executor; the summary
per shard (counts, computed vs reused, rejects by reason, output paths) is what a CI job reads.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, execute_job

from cog_assets.core.config import Settings, SettingsError
from cog_assets.defs.assets.store_usage import report_store_usage
from cog_assets.defs.build import build_definitions, reconstructable_job
from cog_assets.defs.dead_runs import run_process_tags
from cog_assets.defs.freshness import (
    DATASET_KEY,
    ShardFreshness,
    record_uploads,
    shard_freshness,
)
from cog_assets.defs.partitions import SHARDS_PARTITION
from cog_assets.defs.versions import settings_identity
from cog_assets.models import vae_process
from cog_assets.models.runtime import ModelRuntime, import_model_code_in_background
from cog_assets.runtime.json_file import write_json
from cog_assets.sources.sharding import is_shard_key, shard_key
from cog_assets.sources.uploads import UploadState, scan_uploads
from cog_assets.stages.decode_ahead import DecodeAhead
from cog_assets.stages.frames import take_decoded_ahead
from cog_assets.stages.manifest import discover_shards
from cog_assets.store import catalog, layout
from cog_assets.store.content_store import ContentStore

EXPORT_JOB = "export_datasets"
SEGMENTS_KEY = AssetKey("scene_segments")
CAPTIONS_KEY = AssetKey("clip_captions")
log = logging.getLogger(__name__)


def observe_uploads(instance: DagsterInstance, settings: Settings) -> dict[str, str]:
    """Scan the data root as the upload sensor does (saving the upload state it starts from)
    and record each shard's fingerprint that moved as an observation of `uploads`, so the
    UI's staleness compares against what was actually run."""
    state = UploadState(ContentStore(settings.store.url), settings.sources,
                        settings.model.profile)
    tick = scan_uploads(state, state.latest_generation(), settings.sources)
    record_uploads(instance, tick.fingerprints)
    return tick.fingerprints


def register_shards(instance: DagsterInstance, settings: Settings) -> list[str]:
    """Add every shard of the data root as a partition; return all of them, sorted."""
    found = discover_shards(settings.sources)
    known = set(instance.get_dynamic_partitions(SHARDS_PARTITION))
    new = [key for key in found if key not in known]
    if new:
        instance.add_dynamic_partitions(SHARDS_PARTITION, new)
    return found


@dataclass
class ShardSummary:
    shard: str
    success: bool
    run_id: str
    clips: int = 0
    accepted: int = 0
    rejected: int = 0
    computed: int = 0
    reused: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    deferred: int = 0  # rows still being written: the shard is not done until they are read
    index_path: str | None = None
    rejects_path: str | None = None
    failure: str | None = None
    failed_checks: list[str] = field(default_factory=list)
    fingerprint: str | None = None  # of the shard's uploads when it ran
    resumed: bool = False  # skipped: done by the run this one resumed
    corrupt: list[str] = field(default_factory=list)  # damaged artefacts found and replaced
    up_to_date: bool = False  # skipped: its last materialization matches (no run started)
    decoded_ahead: int = 0  # of `computed`: frames decoded while the previous shard ran
    why: list[str] = field(default_factory=list)  # why it ran (the freshness rule's reasons)
    footage_dropped_s: float | None = None  # source footage in no kept clip (split_scenes)
    captions_by_source: dict[str, int] = field(default_factory=dict)  # of the trained clips
    captions_inherited_shared: int = 0  # trained clips sharing their source's one caption
    captions_written: int = 0  # captions generated or polished by this run (models asked)
    caption_requests: int = 0  # requests sent to caption_endpoint by this run (retries too)
    needs_captions: int = 0  # clips listed for a person to caption
    needs_captions_path: str | None = None
    seconds: float = 0.0  # its run, launch to end (0 for a shard not run)
    step_seconds: dict[str, float] = field(default_factory=dict)  # per step that succeeded
    vae: dict[str, Any] = field(default_factory=dict)  # where vae_latents' seconds went

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _metadata_value(value: Any) -> Any:
    return getattr(value, "value", value)


def error_text(error) -> str:
    """A step error with its causes (Dagster wraps the user's exception in its own), so the
    summary says what actually went wrong: the OSError and path, not just "error in op"."""
    parts = []
    while error is not None:
        message = error.message.strip()
        if message and message not in parts:
            parts.append(message)
        error = error.cause or getattr(error, "context", None)
    return " <- caused by: ".join(parts)


def _read_dataset_metadata(summary: ShardSummary, metadata) -> None:
    meta = {k: _metadata_value(v) for k, v in metadata.items()}
    summary.clips = int(meta["clips"])
    summary.accepted = int(meta["accepted"])
    summary.rejected = int(meta["rejected"])
    summary.rejects_by_reason = dict(meta.get("rejects_by_reason") or {})
    summary.deferred = int(summary.rejects_by_reason.get("deferred", 0))
    summary.captions_by_source = dict(meta.get("captions_by_source") or {})
    summary.captions_inherited_shared = int(meta.get("captions_inherited_shared") or 0)
    summary.index_path = str(meta["index_path"]) if "index_path" in meta else None
    summary.rejects_path = str(meta["rejects_path"]) if "rejects_path" in meta else None


# vae_latents' metadata on where its seconds went (cog_assets.stages.latents), in the summary
VAE_TIMINGS = ("computed", "vae_load_s", "encode_s", "read_wait_s", "write_s",
               "encode_s_per_clip", "vae_compile", "compiled_graphs")


def summarise(shard: str, result) -> ShardSummary:
    """Counts from the run's materialization metadata, seconds per step from its events; the
    failing step's error if it failed."""
    summary = ShardSummary(shard=shard, success=result.success, run_id=result.run_id)
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        meta = {k: _metadata_value(v) for k, v in materialization.metadata.items()}
        ahead = int(meta.get("decoded_ahead", 0))  # frames: computed, by the backfill
        summary.computed += int(meta.get("computed", 0)) + ahead
        summary.reused += int(meta.get("reused", 0))
        summary.decoded_ahead += ahead
        summary.corrupt += [line for line in str(meta.get("corrupt_artifacts") or "").split("\n")
                            if line]
        if materialization.asset_key == DATASET_KEY:
            _read_dataset_metadata(summary, materialization.metadata)
        elif materialization.asset_key.path[-1] == "vae_latents":
            summary.vae = {k: meta[k] for k in VAE_TIMINGS if k in meta}
        elif materialization.asset_key == SEGMENTS_KEY and "footage_dropped_s" in meta:
            summary.footage_dropped_s = float(meta["footage_dropped_s"])
        elif materialization.asset_key == CAPTIONS_KEY:
            summary.captions_written = int(meta.get("computed", 0))
            summary.caption_requests = int(meta.get("requests", 0))
            summary.needs_captions = int(meta.get("needs_captions", 0))
            summary.needs_captions_path = (str(meta["needs_captions_path"])
                                           if "needs_captions_path" in meta else None)
    summary.step_seconds = {event.step_key: round(event.event_specific_data.duration_ms / 1000, 3)
                            for event in result.all_events if event.is_step_success}
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            summary.failed_checks.append(evaluation.asset_check_key.to_user_string())
    if not result.success:
        failures = [f"{e.step_key}: {error_text(e.event_specific_data.error)}"
                    for e in result.all_events if e.is_step_failure]
        summary.failure = "\n".join(failures) or "run failed"
    return summary


def select_shards(all_shards: list[str], keys: Iterable[str] | None = None,
                  shard_range: str | None = None) -> list[str]:
    """All shards, or those named, or those in FIRST:LAST (keys or indices, inclusive).
    Raises SettingsError for a shard without clips and for an empty or inverted range."""
    chosen = list(all_shards)
    if keys:
        wanted = set(keys)
        unknown = wanted - set(all_shards)
        if unknown:
            raise SettingsError(f"--shard: no clips in shard(s) {', '.join(sorted(unknown))}; "
                                f"the data root has {', '.join(all_shards)}")
        chosen = [s for s in chosen if s in wanted]
    if shard_range:
        first, colon, last = shard_range.partition(":")
        bounds = [shard_key(int(b)) if b.isdigit() else b for b in (first, last)]
        if not colon or not all(map(is_shard_key, bounds)):
            raise SettingsError(f"--shard-range {shard_range!r} is invalid: expected FIRST:LAST, "
                                "by index (2:5) or key (shard-00002:shard-00005)")
        low, high = bounds
        if low > high:
            raise SettingsError(f"--shard-range {shard_range!r} is inverted: {low} comes after "
                                f"{high}")
        chosen = [s for s in chosen if low <= s <= high]
        if not chosen:
            raise SettingsError(f"--shard-range {shard_range!r} holds no shard with clips; the "
                                f"data root has {', '.join(all_shards)}")
    return chosen


def run_shard(settings: Settings, instance: DagsterInstance, shard: str,
              run_config: dict) -> ShardSummary:
    """One shard's `prepare_shards` run on the settings' executor, recorded in `instance`."""
    started = time.perf_counter()
    with execute_job(reconstructable_job(settings), instance=instance, run_config=run_config,
                     tags={"dagster/partition": shard, **run_process_tags()},
                     raise_on_error=False) as result:
        summary = summarise(shard, result)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _run_shard_in_worker(settings: Settings, shard: str, run_config: dict) -> ShardSummary:
    """run_shard in a worker process, on the instance under DAGSTER_HOME (execute_job is not
    thread-safe, so parallel shards run in processes)."""
    with DagsterInstance.get() as instance:
        return run_shard(settings, instance, shard, run_config)


def up_to_date_summary(instance: DagsterInstance, state: ShardFreshness) -> ShardSummary:
    """A skipped shard's summary: what its last materialization of training_dataset holds."""
    record = state.last
    if record is None:
        [record] = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=DATASET_KEY, asset_partitions=[state.shard]), limit=1
        ).records
    summary = ShardSummary(shard=state.shard, success=True, run_id=record.run_id,
                           fingerprint=state.fingerprint, up_to_date=True)
    _read_dataset_metadata(summary, record.asset_materialization.metadata)
    return summary


def judge_shards(settings: Settings, instance: DagsterInstance, shards: list[str],
                 fingerprints: dict[str, str]) -> dict[str, ShardFreshness]:
    """The freshness rule for `shards` (those whose fingerprint is known); an unreadable
    store or instance judges nothing, so every shard runs and meets the error itself."""
    known = {s: fingerprints[s] for s in shards if s in fingerprints}
    try:
        graph = build_definitions(settings).resolve_asset_graph()
        return shard_freshness(instance, graph, known, ContentStore(settings.store.url),
                               settings.model.profile)
    except OSError as exc:
        log.warning("could not tell which shards are up to date, running all: %s", exc)
        return {}


def run_in_sequence(settings: Settings, instance: DagsterInstance, shards: list[str],
                    run_config: dict, decode_ahead: bool = True,
                    on_done: Callable[[str, ShardSummary], None] | None = None
                    ) -> dict[str, ShardSummary]:
    """One run per shard in this process; the next shard's frames decode meanwhile.
    `on_done(shard, summary)` is called as each shard ends. Where the steps run in this
    process on the CPU, the VAE runs in a child process (models/vae_process.py)."""
    child = settings.orchestration.steps_run_in_process and shards
    with vae_process.serving() if child else nullcontext():
        return _run_in_sequence(settings, instance, shards, run_config, decode_ahead, on_done)


def _run_in_sequence(settings: Settings, instance: DagsterInstance, shards: list[str],
                     run_config: dict, decode_ahead: bool,
                     on_done: Callable[[str, ShardSummary], None] | None
                     ) -> dict[str, ShardSummary]:
    if shards:
        if not ModelRuntime(settings.model, settings.device).vae_in_a_child():
            vae_process.discard_warm()  # started by the CLI for a CPU it did not get
            import_model_code_in_background()  # else: this process imports what it uses
        store = ContentStore(settings.store.url)
        try:  # records a killed backfill left: frames this one did not decode
            for shard in shards:
                take_decoded_ahead(store, settings.model.profile, shard)
        except OSError:  # an unusable store: each shard's run meets the error and names it
            pass
    ahead = DecodeAhead(settings) if decode_ahead and len(shards) > 1 else None
    summaries = {}
    try:
        for position, shard in enumerate(shards):
            decoded = ahead.finish(shard) if ahead else None
            if ahead and position + 1 < len(shards):
                ahead.start(shards[position + 1])
            summary = run_shard(settings, instance, shard, run_config)
            if decoded is not None:  # scene scans computed ahead: its run found them
                scans = int(decoded.extra.get("scans_computed", 0))  # (frames: frame_tensors)
                summary.decoded_ahead += scans
                summary.computed += scans
                summary.reused = max(0, summary.reused - scans)
            summaries[shard] = summary
            if on_done is not None:
                on_done(shard, summary)
    finally:
        if ahead:
            ahead.close()
    return summaries


def materialize_shards(settings: Settings, instance: DagsterInstance,
                       shards: Iterable[str] | None = None, log_level: str = "WARNING",
                       parallel: int = 1, resume_from: dict[str, dict] | None = None,
                       force: bool = False, decode_ahead: bool = True,
                       on_shard: Callable[[dict[str, ShardSummary]], None] | None = None
                       ) -> dict[str, ShardSummary]:
    """Run the whole asset graph for each shard that needs it (all of the data root's by
    default).

    A shard whose uploads and output-shaping identity match its last materialization (the
    rule of cog_assets.defs.freshness) is not launched: its summary says `up_to_date` and
    repeats that materialization's counts. `force` runs every shard anyway. `parallel` > 1
    runs that many shards at once in worker processes (the instance must then be the
    persistent one under DAGSTER_HOME, which the workers open too); otherwise the shards run
    one after the other in this process, which loads each model once for all of them, and
    with `decode_ahead` the next shard's frames are decoded while this one's run encodes
    (cog_assets.stages.decode_ahead). `resume_from` (a previous summary's "shards") skips shards
    that succeeded there, with no deferred rows nor failed captions, and whose uploads have not
    changed since.
    `on_shard` is called with the summaries so far each time a shard ends (to write them
    where a killed backfill can resume from). The console shows `log_level` and above; the
    instance keeps every event for the UI.
    """
    all_shards = register_shards(instance, settings)
    try:
        fingerprints = observe_uploads(instance, settings)
    except OSError as exc:  # the runs will meet the same store and fail with their step error
        log.warning("could not record upload fingerprints: %s", exc)
        fingerprints = {}
    wanted = list(all_shards if shards is None else shards)
    done = {}
    for shard, previous in (resume_from or {}).items():
        retried = (previous.get("rejects_by_reason") or {}).get("caption_failed")
        if (shard in wanted and previous.get("success") and not previous.get("deferred")
                and not retried and previous.get("fingerprint") == fingerprints.get(shard)):
            done[shard] = ShardSummary(**{**previous, "resumed": True})
    states = judge_shards(settings, instance, [s for s in wanted if s not in done],
                          fingerprints)
    if not force:
        done.update({s: up_to_date_summary(instance, state) for s, state in states.items()
                     if state.up_to_date and s not in done})
    todo = [s for s in wanted if s not in done]
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    finished = dict(done)

    def record(shard: str, summary: ShardSummary) -> None:
        summary.fingerprint = fingerprints.get(shard)
        state = states.get(shard)
        summary.why = (state.reasons if state else []) or (["forced"] if force else [])
        finished[shard] = summary
        if on_shard is not None:
            on_shard({key: finished[key] for key in wanted if key in finished})

    if parallel > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=parallel,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_run_shard_in_worker, settings, shard, run_config): shard
                       for shard in todo}
            for future in as_completed(futures):
                record(futures[future], future.result())
    else:
        run_in_sequence(settings, instance, todo, run_config, decode_ahead, record)
    reconcile_catalog(settings)
    if todo:  # a backfill that ran nothing changed nothing: no listing of the whole store
        # judged now, so the next backfill (or sensor tick) finds them up to date cheaply
        judge_shards(settings, instance, [s for s in todo if finished[s].success],
                     fingerprints)
        report_store_usage(instance, settings)
    return {shard: finished[shard] for shard in wanted}


def reconcile_catalog(settings: Settings) -> None:
    """Retire from the dataset's catalog the shards that have no clips in the data root any
    more or belong to another shard count (shards a backfill does not run)."""
    store = ContentStore(settings.store.url)
    dataset_dir = store.path(layout.dataset_dir(settings.model.profile))
    try:
        if store.exists(f"{dataset_dir}/{layout.CATALOG_FILE}"):
            catalog.reconcile(store, dataset_dir, settings.model.profile,
                              discover_shards(settings.sources), settings.sources.shard_count)
    except OSError as exc:
        logging.getLogger(__name__).warning("could not reconcile the catalog: %s", exc)


def summary_work(settings: Settings) -> dict[str, str]:
    """What a summary's shards were done with: the settings identity (the hash of the code
    versions, so every setting that shapes outputs) and the store; `--resume` skips shards
    only of a summary that records the same."""
    return {"identity": settings_identity(settings), "store": settings.store.url}


def resumable(previous: dict[str, Any], settings: Settings) -> str | None:
    """Why a previous summary cannot be resumed with these settings (None: it can)."""
    now = summary_work(settings)
    differ = [f"{name} {previous.get(name)!r}, now {value!r}" for name, value in now.items()
              if previous.get(name) != value]
    if not differ:
        return None
    return "it was written for other work (" + "; ".join(differ) + ")"


def dataset_totals(summaries: dict[str, ShardSummary]) -> dict[str, Any]:
    """The whole dataset's counts over its shards (run or not), and the shards' run seconds."""
    reasons: Counter[str] = Counter()
    for summary in summaries.values():
        reasons.update(summary.rejects_by_reason)
    values = list(summaries.values())
    return {
        "shards": len(values), "shards_run": sum(not (s.up_to_date or s.resumed) for s in values),
        "shards_failed": sum(not s.success for s in values),
        **{name: sum(getattr(s, name) for s in values)
           for name in ("clips", "accepted", "rejected", "computed", "reused")},
        "rejects_by_reason": dict(sorted(reasons.items())),
        "run_seconds": round(sum(s.seconds for s in values), 3),
    }


def write_summary_json(path: str, summaries: dict[str, ShardSummary],
                       pending: Iterable[str] = (), work: dict[str, str] | None = None,
                       seconds: float | None = None) -> None:
    """The machine-readable summary, replaced atomically (a reader, or a `--resume` after a
    kill, never sees half a file). `pending`: shards of this backfill not finished yet;
    `work`: `summary_work` of the settings the shards ran with; `seconds`: the whole
    backfill's so far (process start to now)."""
    pending = list(pending)
    payload = {
        "success": all(s.success for s in summaries.values()) and not pending,
        "pending": pending,
        **(work or {}),
        "seconds": None if seconds is None else round(seconds, 3),
        "totals": dataset_totals(summaries),
        "shards": {key: s.as_dict() for key, s in summaries.items()},
    }
    write_json(path, payload, indent=2, sort_keys=True)


def run_exports(settings: Settings, instance: DagsterInstance, log_level: str = "WARNING"):
    """Materialize the export assets from the finished shards; returns the run's success."""
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    with execute_job(reconstructable_job(settings, EXPORT_JOB), instance=instance,
                     run_config=run_config, raise_on_error=False) as result:
        return result.success
