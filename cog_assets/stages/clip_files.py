"""clip_files: every accepted clip of the finished dataset cut out of its source as a file.

For the trainers that read video files (VideoX-Fun, CogVideo's finetune when its cache
misses). A clip file is content-addressed like every artefact: its key
hashes its source's bytes, the segment and the encoding (`core.keys.clip_file_key`), never the
caption, so an edited source is cut again for its own clips only and an edited caption cuts
nothing. The clips of one source are cut by one task in a worker process (the source is hashed
once and must still be the bytes its dataset was made from), within `decode_timeout_s` per
minute of footage; a clip that cannot be cut is reported with its reason and nothing else
stops.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.keys import clip_file_key
from cog_assets.core.reasons import RejectReason
from cog_assets.media.clip_cut import (
    ClipEncoding,
    CutClip,
    CutTask,
    Segment,
    cut_source,
    end_pictures,
)
from cog_assets.runtime.worker_pool import default_workers, prefetch_map
from cog_assets.stages.common import Reuse, worker_failure
from cog_assets.store.clip_files import (
    StoredClip,
    add_pictures,
    check_clip,
    put_clip,
    quarantine_clip,
    temporary_path,
)
from cog_assets.store.content_store import ContentStore

KnownHashes = Mapping[str, tuple[int, int, str]]


@dataclass(frozen=True)
class ClipSource:
    """Where one clip comes from: its source video (relative to the data root), the bytes
    the dataset was made from, and the stretch of it the clip is."""

    clip_id: str
    source_video: str
    content_hash: str
    start_s: float
    end_s: float | None  # None: to the end of the data (a whole file of unknown duration)

    @property
    def footage_s(self) -> float:
        """How long it is, as far as is known before cutting (a minute if unknown)."""
        return 60.0 if self.end_s is None else self.end_s - self.start_s


@dataclass
class ClipFiles:
    """The clip file of each clip that has one, and why the others have none."""

    files: dict[str, StoredClip] = field(default_factory=dict)
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)  # (reason, message)
    stats: Reuse = field(default_factory=Reuse)

    def keys(self) -> list[str]:
        return sorted({clip.key for clip in self.files.values()})


def clip_key(clip: ClipSource, encoding: ClipEncoding) -> str:
    return clip_file_key(clip.content_hash, clip.start_s, clip.end_s, encoding.key_parts())


def cut_time_limit(decode_timeout_s: float | None, footage_s: float) -> float | None:
    """A task may take `decode_timeout_s` per started minute of the footage it cuts."""
    if decode_timeout_s is None:
        return None
    return decode_timeout_s * max(1.0, footage_s / 60.0)


@dataclass
class _Job:
    """One source's task and, per segment, the key and the clips it is for."""

    task: CutTask
    keys: list[str]
    clips: list[list[ClipSource]]


def cut_clip_files(clips: Iterable[ClipSource], data_root: str | Path, store: ContentStore,
                   encoding: ClipEncoding, *, keyframes: bool = False,
                   decode_timeout_s: float | None = None, known: KnownHashes | None = None,
                   workers: int | None = None,
                   hold: Callable[[dict[str, list[str]]], None] | None = None) -> ClipFiles:
    """The clip file of every clip: reused from the store, or cut now and stored.

    `keyframes`: every clip file also has its first and last frame as PNGs (made for reused
    clips that lack them). `known`: (size, mtime_ns, sha256) of sources already hashed (the
    upload sensor's), so an unchanged source is not read just to hash it. `workers`: cutting
    processes (default one per core; 0: here, without time limits). `hold({kind: keys})` is
    called with the keys before they are relied on (a lease)."""
    started = time.perf_counter()
    root = Path(data_root)
    result = ClipFiles()
    stats = result.stats
    clips = list(clips)
    keys = {clip.clip_id: clip_key(clip, encoding) for clip in clips}
    if hold is not None:
        hold({ArtifactKind.clip_file: list(keys.values())})
    todo: dict[str, list[ClipSource]] = {}  # key -> the clips it is for
    for clip in clips:
        key = keys[clip.clip_id]
        if key in todo:
            todo[key].append(clip)
            continue
        stored = _reusable(store, key, stats)
        if stored is not None:
            if keyframes and not stored.pictures:
                first, last = end_pictures(str(stored.path))
                stored = add_pictures(store, stored, {"first": first, "last": last})
            result.files[clip.clip_id] = stored
            stats.reused += 1
        else:
            todo[key] = [clip]
    jobs = _jobs(todo, root, store, encoding, keyframes, known or {}, workers)
    workers = min(default_workers() if workers is None else workers, len(jobs))
    footage = {"stream_copy": 0.0, "re_encode": 0.0}
    counts = {"stream_copy": 0, "re_encode": 0}
    outcomes = prefetch_map(cut_source, [job.task for job in jobs], workers=workers,
                            ordered=False, preload=(cut_source.__module__,),
                            timeout_s=lambda task: cut_time_limit(
                                decode_timeout_s, sum(60.0 if s.end_s is None
                                                      else s.end_s - s.start_s
                                                      for s in task.segments)))
    for outcome in outcomes:
        job = jobs[outcome.index]
        results = (outcome.value.results if outcome.ok
                   else [_failure(outcome.error, job.task.path)]
                   * len(job.keys))
        for segment, key, same, cut in zip(job.task.segments, job.keys, job.clips, results):
            if isinstance(cut, CutClip):
                stored = _store(store, key, same[0], segment, cut)
                method = str(cut.method)
                counts[method] += len(same)
                footage[method] += stored.end_s - stored.start_s
                stats.computed += 1
                stats.reused += len(same) - 1
                for clip in same:
                    result.files[clip.clip_id] = stored
            else:
                Path(segment.out).unlink(missing_ok=True)
                for clip in same:
                    result.failed[clip.clip_id] = (cut[0], f"{clip.clip_id}: {cut[1]}")
                    stats.rejected += 1
        outcome.value = None
    stats.seconds = time.perf_counter() - started
    stats.extra.update(stream_copied=counts["stream_copy"], re_encoded=counts["re_encode"],
                       footage_copied_s=round(footage["stream_copy"], 3),
                       footage_re_encoded_s=round(footage["re_encode"], 3))
    return result


def _reusable(store: ContentStore, key: str, stats: Reuse) -> StoredClip | None:
    stored, check = check_clip(store, key)
    if stored is None and not check.missing:
        moved = quarantine_clip(store, key)
        stats.corrupt.append(f"{check.describe()}; moved to {moved}, cut again")
    return stored


def _jobs(todo: Mapping[str, list[ClipSource]], root: Path, store: ContentStore,
          encoding: ClipEncoding, keyframes: bool, known: KnownHashes,
          workers: int | None) -> list[_Job]:
    """One task per source (and content hash), its segments in time order."""
    by_source: dict[tuple[str, str], list[tuple[str, list[ClipSource]]]] = {}
    for key, same in todo.items():
        first = same[0]
        by_source.setdefault((first.source_video, first.content_hash), []).append((key, same))
    running = min(default_workers() if workers is None else workers, len(by_source))
    threads = 1 if running >= default_workers() else 0  # a thread per core in all
    jobs = []
    for (video, content_hash), members in sorted(by_source.items()):
        members.sort(key=lambda item: (item[1][0].start_s, item[1][0].footage_s))
        token = uuid.uuid4().hex
        segments = tuple(Segment(same[0].start_s, same[0].end_s,
                                 str(temporary_path(store, key, token)))
                         for key, same in members)
        task = CutTask(str(root / video), content_hash, segments, encoding,
                       keyframes=keyframes, threads=threads, root=str(root),
                       known=known.get(video))
        jobs.append(_Job(task, [key for key, _ in members], [same for _, same in members]))
    return jobs


def _store(store: ContentStore, key: str, clip: ClipSource, segment: Segment, cut: CutClip
           ) -> StoredClip:
    stored = StoredClip(key=key, path=Path(segment.out), method=str(cut.method),
                        frames=cut.frames, rate=cut.rate, width=cut.width, height=cut.height,
                        bytes=cut.bytes, digest=cut.digest, start_s=clip.start_s,
                        end_s=clip.end_s if clip.end_s is not None
                        else clip.start_s + cut.duration_s,
                        pictures=cut.first_png is not None,
                        skipped_packets=cut.skipped_packets)
    pictures = ({"first": cut.first_png, "last": cut.last_png}
                if cut.first_png is not None else None)
    return put_clip(store, stored, Path(segment.out), pictures)


def _failure(error: BaseException, path: str) -> tuple[str, str]:
    """(reason, message) of a task whose worker timed out or crashed."""
    reason, message = worker_failure(
        error, Path(path).name, doing="cutting its clips",
        limit_s=getattr(error, "limit_s", 0.0),
        setting="decode_timeout_s per minute of footage", timeout=RejectReason.decode_timeout,
        crash=RejectReason.decode_crash,
        crashed="the decoder crashed ({exit}) while cutting clips of this video")
    return str(reason), message

