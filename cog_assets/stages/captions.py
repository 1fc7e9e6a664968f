"""clip_captions: each clip's final caption and where it came from, between scene_segments and
validated_clips (whose token count and T5 read this caption).

`caption_mode` says which clips get a caption written for them: none (manifest, the default:
every caption passes through as before), those with none (fill), also every segment of a
source cut into two or more (segments), or all (replace). A written caption is a content-
addressed artefact (`cas/caption/`) whose key hashes the frames the captioner saw (the video's
bytes, the clip's window, how many frames and how large), the captioner, the prompt and the
generation settings; polishing (`caption_polish`) is a second artefact keyed by the caption it
rewrote and the polishing LLM, its system prompt and settings. So a rerun with nothing changed
asks nothing of any model, an edited clip is captioned again alone, a changed prompt captions
again exactly what it wrote, and a clip whose captioner failed (`caption_failed`) has no
artefact and is asked again on the next run, alone.

Written captions are cleaned (boilerplate openings) and checked: a degenerate one is
`degenerate_caption`, one over the T5 limit is flagged, rejected (`caption_too_long`) or
polished by `caption_over_limit`. While the step is on, every caption must be in
`caption_language` (`non_english` otherwise, unless polishing translated it). Clips that still
need a person's caption (a caption inherited by two or more scenes of a source, none at all,
a degenerate or foreign one) are listed, with a thumbnail, in the `segment_captions` format.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from cog_assets.captions.captioner import CaptionJob, CaptionResult
from cog_assets.captions.checks import (
    degeneracy,
    language_of,
    load_in_background,
    strip_boilerplate,
)
from cog_assets.captions.frames import CaptionFramesTask, decode_caption_frames
from cog_assets.captions.tools import CaptionTools
from cog_assets.core.choices import ArtifactKind, CaptionMode, CaptionOverLimit, CaptionSource
from cog_assets.core.clip_row import columns
from cog_assets.core.keys import (
    caption_frames_recipe,
    caption_sha256,
    thumbnail_key,
)
from cog_assets.core.reasons import RejectReason
from cog_assets.media.contact_sheet import thumbnail_png
from cog_assets.runtime.worker_pool import default_workers, prefetch_map
from cog_assets.stages.common import Reuse, worker_failure
from cog_assets.stages.manifest import with_id_token
from cog_assets.stages.scene_segments import SEGMENTS_SCHEMA
from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore, CorruptArtifact

STAGE = "captions"
CAPTIONS_SCHEMA = {**SEGMENTS_SCHEMA, **columns("original_caption", "caption_model",
                                                "caption_key", "polish_key", "thumbnail_key")}
# One row per clip that needs a person's caption: the segment_captions table's columns (video,
# start_s, end_s, caption: empty, to fill in), then what helps to write it.
NEEDS_SCHEMA = {"video": pl.String, "start_s": pl.Float64, "end_s": pl.Float64,
                "caption": pl.String, "clip_id": pl.String, "source": pl.String,
                "thumbnail": pl.String, "why": pl.String}
NO_CAPTION = (RejectReason.no_caption, RejectReason.caption_empty)
HAND_CAPTION = (*NO_CAPTION, RejectReason.degenerate_caption, RejectReason.non_english)
WRITTEN = (CaptionSource.generated, CaptionSource.polished)
THUMBNAIL_SIDE = 256


@dataclass(frozen=True)
class CaptionedShard:
    table: pl.DataFrame  # one row per clip: CAPTIONS_SCHEMA
    stats: Reuse
    needs: pl.DataFrame  # NEEDS_SCHEMA
    shared: dict[str, int]  # source video -> scenes sharing its one inherited caption


def caption_clips(segments: pl.DataFrame, data_root: str | Path, store: ContentStore,
                  tools: CaptionTools, *, decode_timeout_s: float | None,
                  workers: int | None = None,
                  hold: Callable[[dict[str, list[str]]], None] | None = None) -> CaptionedShard:
    """Every clip of `segments` (a scene_segments table) with its final caption.

    `workers`: decoding processes (default one per core; 0: here, no timeout); `hold({kind:
    keys})` is called before keys are relied on (the step's lease)."""
    started = time.perf_counter()
    stats = Reuse()
    stats.extra.update(requests=0, captions_generated=0, captions_polished=0,
                       caption_failures=0, boilerplate_stripped=0)
    rows = segments.to_dicts()
    scenes = _scenes_per_source(rows)
    for row in rows:
        row.update(original_caption=row["caption"] or None, caption_model=None,
                   caption_key=None, polish_key=None, thumbnail_key=None)
        if row["caption_source"] == CaptionSource.inherited and \
                scenes.get(row["source_video"]) == 1:  # a source left whole: its own caption
            row["caption_source"] = CaptionSource.manifest
    run = _Run(rows, Path(data_root), store, tools, stats, decode_timeout_s,
               default_workers() if workers is None else workers, hold or (lambda keys: None))
    settings = tools.settings
    if settings.active and settings.caption_language != "any":
        load_in_background()  # while the captioners work
    if settings.captions_written:
        run.write(_to_write(rows, settings.caption_mode))
    if settings.active:
        run.polish([i for i, row in enumerate(rows) if _kept(row) and row["caption"]]
                   if settings.caption_polish else run.over_limit())
        run.judge()
    for row in rows:
        row["caption_sha256"] = caption_sha256(row["caption"] or "")
    shared = _shared_inheritance(rows)
    needs = run.needs_captions(shared)
    stats.rejected = sum(row["issue_stage"] == STAGE for row in rows)
    stats.seconds = time.perf_counter() - started
    stats.extra.update(captions_inherited_shared=sum(shared.values()),
                       sources_sharing_a_caption=len(shared), needs_captions=len(needs))
    return CaptionedShard(pl.DataFrame(rows, schema=CAPTIONS_SCHEMA), stats,
                          pl.DataFrame(needs, schema=NEEDS_SCHEMA), shared)


def _kept(row: dict) -> bool:
    return row["issue_reason"] is None


def _segment(row: dict) -> tuple[float, float] | None:
    return None if row["start_s"] is None else (row["start_s"], row["end_s"])


def _scenes_per_source(rows: list[dict]) -> dict[str, int]:
    """Source video -> the segments it was cut into (kept or not; whole files: none)."""
    scenes: dict[str, int] = {}
    for row in rows:
        if row["start_s"] is not None:
            scenes[row["source_video"]] = scenes.get(row["source_video"], 0) + 1
    return scenes


def _to_write(rows: list[dict], mode: CaptionMode) -> list[int]:
    """The rows the mode captions: only clips otherwise kept or kept for want of a caption,
    whose bytes are known (content_hash: their frames can be keyed)."""
    scenes = _scenes_per_source(rows)
    chosen = []
    for i, row in enumerate(rows):
        if row["content_hash"] is None or row["issue_reason"] not in (None, *NO_CAPTION):
            continue
        missing = row["issue_reason"] in NO_CAPTION or not row["caption"]
        cut = row["caption_source"] == CaptionSource.inherited and scenes.get(
            row["source_video"], 0) >= 2
        if (mode == CaptionMode.replace or missing
                or (mode == CaptionMode.segments and cut)):
            chosen.append(i)
    return chosen


def _without_token(caption: str, id_token: str | None) -> str:
    """What a model is given to rewrite: the caption without the trigger word."""
    if id_token and caption.startswith(id_token + " "):
        return caption[len(id_token) + 1:]
    return caption


def _shared_inheritance(rows: list[dict]) -> dict[str, int]:
    """Source video -> how many kept scenes inherit its one caption, where two or more do."""
    counts: dict[str, int] = {}
    for row in rows:
        if _kept(row) and row["caption_source"] == CaptionSource.inherited:
            counts[row["source_video"]] = counts.get(row["source_video"], 0) + 1
    return {source: n for source, n in sorted(counts.items()) if n >= 2}


class _Run:
    """One shard's captioning: the rows, and what writing, polishing and judging need."""

    def __init__(self, rows: list[dict], root: Path, store: ContentStore, tools: CaptionTools,
                 stats: Reuse, decode_timeout_s: float | None, workers: int,
                 hold: Callable[[dict[str, list[str]]], None]):
        self.rows, self.root, self.store, self.tools = rows, root, store, tools
        self.stats, self.decode_timeout_s, self.workers, self.hold = (
            stats, decode_timeout_s, workers, hold)
        self.settings = tools.settings

    # -- the artefacts ----------------------------------------------------------------------

    def _stored(self, key: str) -> str | None:
        """A written caption from the store, or None (missing, or damaged: quarantined, noted
        in the stats and written again). One read, digest-checked."""
        try:
            data = self.store.get_tensors(ArtifactKind.caption, key)["text"]
        except (FileNotFoundError, KeyError):
            return None
        except CorruptArtifact as exc:  # quarantined by the read
            self.stats.corrupt.append(f"{exc}; written again")
            return None
        return bytes(data.numpy().tobytes()).decode("utf-8")

    def _store(self, key: str, text: str, step: str, model: str) -> None:
        data = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)
        self.store.put_tensors(ArtifactKind.caption, key, {"text": data},
                               {"step": step, "model": model})

    def _reuse(self, keys: list[str]) -> dict[str, str]:
        """Hold `keys` (the step's lease), and the written captions the store has under them."""
        self.hold({ArtifactKind.caption: keys})
        texts = {}
        for key in keys:
            text = self._stored(key)
            if text is not None:
                texts[key] = text
                self.stats.reused += 1
        return texts

    def _gather(self, results: Iterator[CaptionResult], step: str, model: str,
                texts: dict[str, str], failures: dict[str, tuple[RejectReason, str]],
                why: str) -> None:
        """Store each caption written (`step`: caption or polish), note each failure."""
        counter = "captions_generated" if step == "caption" else "captions_polished"
        for result in results:
            self.stats.extra["requests"] += result.requests
            if result.ok:
                self._store(result.tag, result.text, step, model)
                texts[result.tag] = result.text
                self.stats.computed += 1
                self.stats.extra[counter] += 1
            else:
                failures[result.tag] = (RejectReason.caption_failed, f"{why}: {result.error}")

    def _fail(self, row: dict, reason: RejectReason, message: str) -> None:
        row.update(issue_reason=reason, issue_message=f"{row['clip_id']}: {message}",
                   issue_stage=STAGE)

    def _source_task(self, row: dict, count: int, side: int) -> CaptionFramesTask:
        video = row["source_video"] or row["clip_id"]
        return CaptionFramesTask(str(self.root / video), count, side, _segment(row),
                                 str(self.root), row.get("file_stamp"))

    def _decode_failure(self, exc: BaseException) -> tuple[RejectReason, str]:
        return worker_failure(exc, None, doing="decoding its frames for the captioner",
                              limit_s=self.decode_timeout_s, setting="decode_timeout_s",
                              timeout=RejectReason.decode_timeout,
                              crash=RejectReason.decode_crash,
                              crashed="the decoder crashed ({exit}) while reading this clip for "
                                      "the captioner")

    # -- writing -------------------------------------------------------------------------

    def write(self, chosen: list[int]) -> None:
        """Give the chosen rows a generated caption: stored ones reused, the rest written
        (frames decoded in workers while the captioner works) and stored."""
        identity, settings = self.tools.captioner, self.settings
        by_key: dict[str, list[int]] = {}
        for i in chosen:
            row = self.rows[i]
            recipe = caption_frames_recipe(row["content_hash"], _segment(row),
                                           settings.caption_frames, settings.caption_frame_size)
            row["caption_key"] = identity.caption_key(recipe)
            by_key.setdefault(row["caption_key"], []).append(i)
        texts, failures = self._reuse(list(by_key)), {}
        missing = [key for key in by_key if key not in texts]
        if missing:
            tasks = [self._source_task(self.rows[by_key[key][0]], settings.caption_frames,
                                       settings.caption_frame_size) for key in missing]
            # Decoded ahead by as many clips as requests may be in flight (a few MB each), so
            # a freed slot never waits for a decode.
            workers = min(self.workers, len(tasks))
            outcomes = prefetch_map(decode_caption_frames, tasks, workers=workers,
                                    depth=2 * workers + settings.caption_concurrency,
                                    timeout_s=self.decode_timeout_s, ordered=False,
                                    preload=(decode_caption_frames.__module__,))

            def jobs() -> Iterator[CaptionJob]:
                for outcome in outcomes:
                    key = missing[outcome.index]
                    if outcome.ok:
                        yield CaptionJob(key, frames=outcome.value)
                    else:
                        failures[key] = self._decode_failure(outcome.error)
                    outcome.value = None

            with closing(outcomes):
                self._gather(self.tools.make_captioner().run(jobs()), "caption", identity.model,
                             texts, failures, f"the captioner {identity.model} failed")
        for key, indices in by_key.items():
            for i in indices:
                row = self.rows[i]
                if key in texts:
                    cleaned = strip_boilerplate(texts[key])
                    self.stats.extra["boilerplate_stripped"] += cleaned != texts[key].strip()
                    row.update(caption=cleaned, caption_source=CaptionSource.generated,
                               caption_model=identity.model, issue_reason=None,
                               issue_message=None, issue_stage=None)
                    problem = degeneracy(cleaned)  # judged as written: polishing would hide it
                    if problem is not None:
                        self._fail(row, RejectReason.degenerate_caption,
                                   f"the caption {identity.model} wrote is degenerate: "
                                   f"{problem}")
                else:
                    self.stats.extra["caption_failures"] += 1
                    self._fail(row, *failures[key])

    # -- polishing -------------------------------------------------------------------------

    def over_limit(self) -> list[int]:
        """Written captions over T5's limit, when caption_over_limit sends them to polishing."""
        if self.settings.caption_over_limit != CaptionOverLimit.polish:
            return []
        written = [i for i, row in enumerate(self.rows)
                   if _kept(row) and row["caption_source"] in WRITTEN]
        counts = self._tokens([with_id_token(self.rows[i]["caption"], self.tools.id_token)
                               for i in written])
        return [i for i, n in zip(written, counts) if n is not None and n > self.tools.token_limit]

    def polish(self, chosen: list[int]) -> None:
        """Rewrite the chosen rows' captions with the polishing LLM (stored ones reused)."""
        if not chosen:
            return
        identity = self.tools.polisher
        inputs: dict[str, str] = {}
        by_key: dict[str, list[int]] = {}
        for i in chosen:
            row = self.rows[i]
            text = (row["caption"] if row["caption_source"] in WRITTEN
                    else _without_token(row["caption"], self.tools.id_token))
            row["polish_key"] = identity.polish_key(caption_sha256(text))
            inputs[row["polish_key"]] = text
            by_key.setdefault(row["polish_key"], []).append(i)
        texts, failures = self._reuse(list(by_key)), {}
        missing = [CaptionJob(key, text=inputs[key]) for key in by_key if key not in texts]
        if missing:
            self._gather(self.tools.make_polisher().run(missing), "polish", identity.model,
                         texts, failures, f"polishing by {identity.model} failed")
        for key, indices in by_key.items():
            for i in indices:
                row = self.rows[i]
                if key not in texts:
                    self.stats.extra["caption_failures"] += 1
                    self._fail(row, *failures[key])
                    continue
                cleaned = strip_boilerplate(texts[key])
                self.stats.extra["boilerplate_stripped"] += cleaned != texts[key].strip()
                model = (f"{row['caption_model']} + polished by {identity.model}"
                         if row["caption_model"] else f"polished by {identity.model}")
                row.update(caption=cleaned, caption_source=CaptionSource.polished,
                           caption_model=model)

    # -- judging ---------------------------------------------------------------------------

    def _tokens(self, captions: list[str]) -> list[int | None]:
        if not captions or self.tools.count_tokens is None:
            return [None] * len(captions)
        return self.tools.count_tokens(captions)

    def judge(self) -> None:
        """The checks: written captions must not be degenerate; every caption must be in the
        wanted language; written ones get the trigger word, and over T5's limit are
        rejected where caption_over_limit says so."""
        settings, written = self.settings, []
        for i, row in enumerate(self.rows):
            if not _kept(row) or not row["caption"]:
                continue
            is_written = row["caption_source"] in WRITTEN
            problem = degeneracy(row["caption"]) if is_written else None
            if problem is not None:
                self._fail(row, RejectReason.degenerate_caption,
                           f"the caption {row['caption_model']} wrote is degenerate: {problem}")
                continue
            verdict = language_of(row["caption"], settings.caption_language)
            if not verdict.ok:
                hint = ("" if row["caption_source"] == CaptionSource.polished else
                        "; caption_polish translates captions, caption_language any keeps them")
                self._fail(row, RejectReason.non_english,
                           f"the caption is not in {settings.caption_language}: "
                           f"{verdict.reason}{hint}")
                continue
            if is_written:
                row["caption"] = with_id_token(row["caption"], self.tools.id_token)
                written.append(i)
        if settings.caption_over_limit != CaptionOverLimit.reject:
            return
        counts = self._tokens([self.rows[i]["caption"] for i in written])
        for i, n in zip(written, counts):
            if n is not None and n > self.tools.token_limit:
                self._fail(self.rows[i], RejectReason.caption_too_long,
                           f"the written caption has {n} T5 tokens; the model reads "
                           f"{self.tools.token_limit} (caption_over_limit reject)")

    # -- what still needs a person -------------------------------------------------------------

    def needs_captions(self, shared: dict[str, int]) -> list[dict]:
        """The clips a person should caption, each with a thumbnail of its middle frame."""
        chosen = []
        for i, row in enumerate(self.rows):
            if row["content_hash"] is None:
                continue
            if row["issue_reason"] in HAND_CAPTION:
                chosen.append((i, str(row["issue_reason"])))
            elif _kept(row) and row["caption_source"] == CaptionSource.inherited \
                    and row["source_video"] in shared:
                chosen.append((i, f"inherits the caption of {row['source_video']} with "
                                  f"{shared[row['source_video']] - 1} other scenes"))
        self._thumbnails([i for i, _ in chosen])
        needs = []
        for i, why in chosen:
            row = self.rows[i]
            thumb = row["thumbnail_key"]
            needs.append({
                "video": row["source_video"] or row["clip_id"], "start_s": row["start_s"],
                "end_s": row["end_s"], "caption": "", "clip_id": row["clip_id"],
                "source": row["source"], "why": why,
                "thumbnail": None if thumb is None else self.store.local_path(
                    self.store.path(layout.thumbnail_png(thumb)))})
        return needs

    def _thumbnails(self, chosen: list[int]) -> None:
        """A small PNG of each chosen clip's middle frame (reused when stored); a clip whose
        frame cannot be decoded gets none."""
        wanted: dict[str, int] = {}
        for i in chosen:
            row = self.rows[i]
            key = thumbnail_key(caption_frames_recipe(row["content_hash"], _segment(row), 1,
                                                      THUMBNAIL_SIDE))
            row["thumbnail_key"] = key
            wanted.setdefault(key, i)
        self.hold({ArtifactKind.frames: list(wanted)})  # gc holds thumbnails by frames kind
        missing = [key for key in wanted
                   if not self.store.exists(self.store.path(layout.thumbnail_png(key)))]
        if not missing:
            return
        tasks = [self._source_task(self.rows[wanted[key]], 1, THUMBNAIL_SIDE) for key in missing]
        outcomes = prefetch_map(decode_caption_frames, tasks,
                                workers=min(self.workers, len(tasks)),
                                timeout_s=self.decode_timeout_s, ordered=False,
                                preload=(decode_caption_frames.__module__,))
        failed = set()
        with closing(outcomes):
            for outcome in outcomes:
                key = missing[outcome.index]
                if outcome.ok:
                    self.store.write_bytes(self.store.path(layout.thumbnail_png(key)),
                                           thumbnail_png(outcome.value[0]))
                    self.stats.extra["thumbnails_computed"] = (
                        self.stats.extra.get("thumbnails_computed", 0) + 1)
                else:
                    failed.add(key)
        for i in chosen:
            if self.rows[i]["thumbnail_key"] in failed:
                self.rows[i]["thumbnail_key"] = None


def captions_by_source(table: pl.DataFrame) -> dict[str, int]:
    """How many kept clips have a caption of each source (manifest, inherited, ...)."""
    kept = table.filter(pl.col("issue_reason").is_null() & pl.col("caption_source").is_not_null())
    return {str(k): int(n) for k, n in kept.group_by("caption_source").len().sort(
        "caption_source").iter_rows()}
