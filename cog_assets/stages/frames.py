"""frame_tensors: sample, resize and crop each accepted clip to uint8 [F, H, W, 3] in the store.

Frames are a cache the latents are made from (`frames_retention`): where they may be dropped,
a clip whose latents (for this run's VAE) are already in the store is neither decoded
nor read, so a run after the frames were dropped recomputes nothing; one whose latents are
missing (a new VAE, dtype, tiling) decodes its frames again. Every decoded clip also leaves a
small thumbnail of its middle frame, which the contact sheet shows whatever was dropped.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image

from cog_assets.core.choices import ArtifactKind, Status
from cog_assets.core.clip_row import columns
from cog_assets.core.keys import frames_key
from cog_assets.core.reasons import RejectReason
from cog_assets.media.contact_sheet import thumbnail_png
from cog_assets.media.decode import ClipTask, decode_clip_task
from cog_assets.media.errors import MediaError
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.media.safe_open import hash_at_rest
from cog_assets.runtime.progress import Progress
from cog_assets.runtime.worker_pool import (
    default_workers,
    prefetch_map,
)
from cog_assets.stages.common import Reuse, reusable, worker_failure
from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore, CorruptArtifact

# what decoding the clip again takes (its frames are a cache, see decode_again)
RECIPE_COLUMNS = ("source_video", "start_s", "end_s", "image_path", "file_stamp")
FRAMES_SCHEMA = columns(
    "clip_id", "source", "content_hash", "caption_sha256", "frames_key", "bucket",
    "num_frames", "height", "width", "status", "reason", "message", *RECIPE_COLUMNS)



def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_hash(root: Path, row: dict) -> str | None:
    """The supplied first-frame image's content hash (I2V with images.txt), else None."""
    if not row.get("image_path"):
        return None
    try:
        return hash_at_rest(root / row["image_path"], root)[1]
    except MediaError as exc:
        raise MediaError(exc.reason, f"first-frame image: {exc.message}") from None


def _failure(exc: BaseException, clip_id: str, timeout_s: float | None
             ) -> tuple[RejectReason, str]:
    """(reason, message) of a clip whose decode failed in a way that rejects only that clip."""
    return worker_failure(exc, clip_id, doing="decoding", limit_s=timeout_s,
                          setting="decode_timeout_s", timeout=RejectReason.decode_timeout,
                          crash=RejectReason.decode_crash,
                          crashed="the decoder crashed ({exit}) while reading this clip")


def extract_frames(validated: pl.DataFrame, data_root: str | os.PathLike,
                   store: ContentStore, policy: FramePolicy, *, decode_timeout_s: float | None,
                   workers: int | None = None, prefetch: int | None = None,
                   decode: Callable[[ClipTask], dict[str, np.ndarray]] = decode_clip_task,
                   decoder_threads: int | None = None,
                   latent_keys: Callable[[str], list[str]] | None = None,
                   hold: Callable[[dict[str, list[str]]], None] | None = None,
                   progress: str | None = None
                   ) -> tuple[pl.DataFrame, Reuse]:
    """Decode what the store lacks; a clip that fails to decode becomes a rejected row.

    `latent_keys` (frames that may be dropped: frames_retention other than keep): the keys
    the run's VAE may give a frames key; a clip whose latents are in the store under one
    of them (for I2V, with its first-frame PNG) needs no frames, so they are neither decoded
    nor read (counted as reused and as `frames_not_needed`). `hold({kind: keys})` is called
    with each clip's keys before they are relied on (the step's lease: nothing removes them
    meanwhile).

    The clips to decode go through a pool of `workers` processes (default os.cpu_count(); 0:
    in this process, with no timeout) that decode at most `prefetch` clips ahead (default 2
    per worker); each result is written to the store as it arrives and then dropped, so memory
    is bounded by `prefetch` clips, not by the shard. A clip that takes longer than
    `decode_timeout_s` is rejected as `decode_timeout` (its worker is killed and replaced), one
    whose worker dies as `decode_crash`; the shard goes on. `decode` is the worker-side
    function (module-level, picklable). `decoder_threads`: each decoder's threads; default 1
    when the workers are as many as the cores, else 0 (FFmpeg's choice). With `progress` (a
    label) the clips decoded are shown as they finish (runtime.progress)."""
    root = Path(data_root)
    stats = Reuse()
    started = time.perf_counter()
    workers = default_workers() if workers is None else workers
    if decoder_threads is None:  # a thread per core in all: no oversubscription
        decoder_threads = 1 if workers >= default_workers() else 0
    records: list[dict] = []
    pending: dict[str, _Pending] = {}  # frames key -> the rows waiting for its decode
    keys: list[str] = []  # the key of each task given to the pool, by task index
    meter = Progress(progress, validated.filter(pl.col("accepted")).height)

    def scan():
        """Rows in order; yields a task for each key the store lacks. Read lazily by the
        pool, so decoding starts while the rest of the shard is still being checked."""
        for row in validated.filter(pl.col("accepted")).iter_rows(named=True):
            spec = policy.spec(row["bucket"])
            record = {k: row[k] for k in ("clip_id", "source", "content_hash", "caption_sha256")}
            record.update(bucket=row["bucket"], num_frames=spec.num_frames, height=spec.height,
                          width=spec.width, reason=None, message=None,
                          **{c: row.get(c) for c in RECIPE_COLUMNS})
            records.append(record)
            segment = None if row.get("start_s") is None else (row["start_s"], row["end_s"])
            try:
                key = frames_key(asdict(spec), row["content_hash"], _image_hash(root, row)
                                 if policy.profile.i2v else None, segment)
            except MediaError as exc:
                _reject(record, stats, exc.reason, f"{row['clip_id']}: {exc.message}")
                meter.advance(work=False)
                continue
            record["frames_key"] = key
            latents = latent_keys(key) if latent_keys is not None else []
            if hold is not None:
                hold({ArtifactKind.frames: [key], ArtifactKind.latents: latents})
            if key in pending:  # the same bytes again: decoded once, found in the store after
                pending[key].add(record, stats, decode_timeout_s)
            elif latents and _latents_ready(store, key, latents, policy.profile.i2v, stats):
                record["status"] = Status.reused
                stats.reused += 1
                stats.extra["frames_not_needed"] = stats.extra.get("frames_not_needed", 0) + 1
                meter.advance(work=False)
            elif _frames_reusable(store, key, policy.profile.i2v, stats):
                record["status"] = Status.reused
                stats.reused += 1
                meter.advance(work=False)
            else:
                pending[key] = _Pending([record])
                keys.append(key)
                image = row.get("image_path")
                video = row.get("source_video") or row["clip_id"]
                yield ClipTask(str(root / video), spec, str(root / image) if image else None,
                               decoder_threads, segment, root=str(root),
                               stamp=row.get("file_stamp"))

    outcomes = prefetch_map(decode, scan(), workers=workers, depth=prefetch,
                            timeout_s=decode_timeout_s, ordered=False,
                            preload=(decode.__module__,))
    with closing(outcomes), meter:  # no worker is started when there is nothing to decode
        for outcome in outcomes:
            key = keys[outcome.index]
            if outcome.ok:
                _store_frames(store, key, outcome.value, pending[key].records[0]["clip_id"])
            pending[key].finish(outcome.error, stats, decode_timeout_s)
            outcome.value = None
            meter.advance(len(pending[key].records))
    stats.seconds = time.perf_counter() - started
    return pl.DataFrame(records, schema=FRAMES_SCHEMA), stats


def note_decoded_ahead(store: ContentStore, profile: str, shard: str, table: pl.DataFrame
                       ) -> None:
    """Record the frames decoded for `shard` before its run (see take_decoded_ahead)."""
    keys = table.filter(pl.col("status") == Status.computed)["frames_key"].to_list()
    if keys:
        store.write_json(store.path(layout.decoded_ahead_path(profile, shard)),
                         {"frames_keys": keys})


def take_decoded_ahead(store: ContentStore, profile: str, shard: str) -> set[str]:
    """The frames keys decoded ahead for `shard` (note_decoded_ahead), forgotten once read:
    frame_tensors counts those it finds as `decoded_ahead`, not as reused from earlier."""
    path = store.path(layout.decoded_ahead_path(profile, shard))
    try:
        keys = set(json.loads(store.read_bytes(path))["frames_keys"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return set()
    try:
        store.fs.rm(path)
    except FileNotFoundError:
        pass
    return keys


@dataclass
class _Pending:
    """The rows of one frames key sent to decode; the first is the one that computes it."""

    records: list[dict]
    done: bool = False
    error: BaseException | None = None

    def finish(self, error: BaseException | None, stats: Reuse,
               timeout_s: float | None) -> None:
        self.done, self.error = True, error
        first, *same = self.records
        self.records = [first]
        if error is None:
            first["status"] = Status.computed
            stats.computed += 1
        else:
            _reject(first, stats, *_failure(error, first["clip_id"], timeout_s))
        for record in same:
            self.add(record, stats, timeout_s)

    def add(self, record: dict, stats: Reuse, timeout_s: float | None) -> None:
        if not self.done:
            self.records.append(record)
        elif self.error is None:
            record["status"] = Status.reused
            stats.reused += 1
        else:
            _reject(record, stats, *_failure(self.error, record["clip_id"], timeout_s))


def _frames_reusable(store: ContentStore, key: str, i2v: bool, stats: Reuse) -> bool:
    """Frames are the big artefacts a run with existing latents never reads: reuse checks their
    size and header (everything with verify_artifacts); an I2V clip also needs its PNG."""
    if not reusable(store, ArtifactKind.frames, key, stats):
        return False
    return not i2v or store.exists(store.path(layout.first_frame_png(key)))


def _latents_ready(store: ContentStore, key: str, latent_keys: list[str], i2v: bool,
                   stats: Reuse) -> bool:
    """Whether the clip's latents are in the store under one of `latent_keys` (checked as
    reuse checks frames: header and size, or in full with verify_artifacts; the latents step
    reads them in full and decodes the frames of a damaged one again) and, for I2V, its
    first-frame PNG is there."""
    if not any(reusable(store, ArtifactKind.latents, k, stats) for k in latent_keys):
        return False
    return not i2v or store.exists(store.path(layout.first_frame_png(key)))


class FramesLost(RuntimeError):
    """A clip's frames are needed again, and decoding it again failed or gave other frames."""


def decode_again(frames: pl.DataFrame, data_root: str | os.PathLike, store: ContentStore,
                 policy: FramePolicy, *, decode_timeout_s: float | None,
                 hold: Callable[[dict[str, list[str]]], None] | None = None) -> int:
    """Decode the clips of `frames` (rows of a frame_tensors table) into the store again,
    from the recipe the table keeps: what a step does when the frames it needs were dropped
    after frame_tensors ran. Raises FramesLost naming a clip that cannot be decoded to the
    same frames key any more (its file changed, moved or broke since)."""
    recipe = frames.with_columns(pl.lit(True).alias("accepted"))
    table, _ = extract_frames(recipe, data_root, store, policy,
                              decode_timeout_s=decode_timeout_s, hold=hold)
    wanted = dict(zip(frames["clip_id"], frames["frames_key"]))
    for row in table.iter_rows(named=True):
        if row["status"] == Status.rejected or row["frames_key"] != wanted[row["clip_id"]]:
            why = (f"{row['reason']}: {row['message']}" if row["status"] == Status.rejected
                   else "its file or first-frame image changed since frame_tensors ran")
            raise FramesLost(f"{row['clip_id']}: its frames were dropped from the store and "
                             f"cannot be decoded to the same frames again ({why}); "
                             "materialize the shard from raw_manifest on")
    return int((table["status"] == Status.computed).sum())


def _store_frames(store: ContentStore, key: str, arrays: dict[str, np.ndarray],
                  clip_id: str) -> None:
    """The PNGs first, the frames last: a reader that finds the frames finds the rest."""
    if "first_frame" in arrays:
        store.write_bytes(store.path(layout.first_frame_png(key)),
                          png_bytes(arrays["first_frame"]))
    frames = arrays["frames"]
    store.write_bytes(store.path(layout.thumbnail_png(key)),
                      thumbnail_png(frames[len(frames) // 2]))
    store.put_tensors(ArtifactKind.frames, key, {name: torch.from_numpy(value)
                                         for name, value in arrays.items()},
                      {"clip_id": clip_id})


def stored_thumbnail(store: ContentStore, frames_key: str) -> np.ndarray | None:
    """The clip's middle frame, small, for the contact sheet: its thumbnail, or made from its
    frames where a store written before thumbnails still has them; None when neither is."""
    path = store.path(layout.thumbnail_png(frames_key))
    try:
        with Image.open(io.BytesIO(store.read_bytes(path))) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        pass
    except OSError:  # damaged: made again below where the frames are there
        store.quarantine(ArtifactKind.thumbnail, frames_key, ".png")
    try:
        frames = store.get_tensors(ArtifactKind.frames, frames_key)["frames"]
    except (FileNotFoundError, CorruptArtifact):  # dropped, or quarantined and logged
        return None
    middle = frames[len(frames) // 2].numpy()
    store.write_bytes(path, thumbnail_png(middle))
    return middle


def _reject(record: dict, stats: Reuse, reason: RejectReason, message: str) -> None:
    record.update(status=Status.rejected, reason=reason, message=message, frames_key=None)
    stats.rejected += 1
