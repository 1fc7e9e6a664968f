"""Reading (video, caption) pairs from the manifests under a data root.

Two layouts are read, all of them if several are present: the two-file layout of the CogVideoX
fine-tuning guides (`prompts.txt` or `prompt.txt` beside `videos.txt`, optional `images.txt`)
and tables (`*.csv`, `*.jsonl`, `*.parquet`, or the `manifests` globs) with caption and video
columns.

Every manifest is treated as written by someone hostile:

- a problem with one row stays with that row: an undecodable line (`not_utf8`), a broken
  JSONL line or CSV record (`malformed_row`), an empty or null path (`null_path`), a NUL in a
  path (`invalid_path`), a path that leaves the root, names nothing or names no regular file;
  the row is recorded with its `file:line` and rejected later with that reason;
- only what makes a whole manifest ambiguous raises `ManifestError` and stops the run: the two
  lists of the two-file layout disagreeing in length, or one of them missing or unreadable;
- a table found by the default globs that is not a manifest (no caption or video column, not
  a table at all) is skipped with a warning; a file the `manifests` setting names must be one;
- a manifest is read only when it is a regular file inside the root (a symlink pointing out
  of it, a FIFO or a directory is never read).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from cog_assets.core.config import SourceSettings
from cog_assets.core.reasons import RejectReason
from cog_assets.media.errors import MediaError
from cog_assets.media.safe_open import open_regular_file

VIDEO_LIST = "videos.txt"
PROMPT_LISTS = ("prompts.txt", "prompt.txt")
IMAGE_LIST = "images.txt"
TABLE_GLOBS = ("*.csv", "*.jsonl", "*.parquet")
DEFAULT_CAPTION_COLUMNS = ("caption", "prompt", "text")
DEFAULT_VIDEO_COLUMNS = ("video", "video_path", "path", "file_name")

log = logging.getLogger(__name__)


class ManifestError(ValueError):
    """The manifest itself is wrong (not one row): nothing is guessed, the run stops here."""


class NotAManifest(Exception):
    """A table that is not a manifest: skipped with a warning unless the settings name it."""


@dataclass(frozen=True)
class ManifestRow:
    """One (video, caption) pair as a manifest lists it."""

    clip_id: str  # the video path relative to the data root, posix form
    caption: str
    source: str  # "<manifest file>:<line>" so every message can point at the line
    image_path: str | None = None
    issue_reason: RejectReason | None = None  # set when the row can already be seen to be unusable
    issue_message: str | None = None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


class RootGuard:
    """Normalises manifest paths and refuses those that leave the data root.

    A path may not be absolute, may not climb out with `..` (`sub/../a.mp4` is `a.mp4`, inside),
    and may not be (or sit under) a symlink that resolves outside the root: the pipeline reads
    only what the dataset owner put there. Directory resolutions are cached, so checking 100k
    rows costs ~one stat each.
    """

    def __init__(self, data_root: Path):
        self.root = os.path.realpath(data_root)
        self._dirs: dict[str, str] = {}

    def _real_dir(self, rel_dir: str) -> str:
        if rel_dir not in self._dirs:
            self._dirs[rel_dir] = os.path.realpath(os.path.join(self.root, rel_dir))
        return self._dirs[rel_dir]

    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def check(self, rel: str | None, source: str, must_exist: bool = True
              ) -> tuple[str, RejectReason | None, str | None]:
        """(clip id, None, None) of a usable path, or (a printable id, reason, why not)."""
        if rel is None or not rel.strip():
            return f"<no path at {source}>", RejectReason.null_path, "the row names no video"
        rel = rel.strip().replace("\\", "/")
        if "\x00" in rel:
            shown = rel.replace("\x00", "\\x00")
            return shown, RejectReason.invalid_path, f"path {shown!r} holds a NUL byte"
        if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
            return rel, RejectReason.path_outside_root, (
                f"absolute path {rel!r} is outside the data root")
        clean = posixpath.normpath(rel)
        if clean == ".." or clean.startswith("../"):
            return rel, RejectReason.path_outside_root, (
                f"path {rel!r} climbs out of the data root with '..'")
        if clean == ".":
            return rel, RejectReason.not_a_file, f"path {rel!r} names the data root itself"
        parent, _, name = clean.rpartition("/")
        real_parent = self._real_dir(parent)
        target = os.path.join(real_parent, name)
        if os.path.islink(target):
            target = os.path.realpath(target)
        if not self._inside(real_parent) or not self._inside(target):
            return clean, RejectReason.path_outside_root, (
                f"path {rel!r} resolves to {target}, outside the data root (symlink?)")
        if must_exist:
            try:
                mode = os.stat(target).st_mode  # stat never blocks, even on a FIFO
            except OSError as exc:
                return clean, RejectReason.missing_file, (
                    f"video {clean!r} does not exist" if isinstance(exc, FileNotFoundError)
                    else f"video {clean!r} cannot be found: {exc.strerror}")
            if not stat.S_ISREG(mode):
                return clean, RejectReason.not_a_file, (
                    f"{clean!r} is {_kind(mode)}, not a video file")
        return clean, None, None


# -- reading a manifest file's bytes -----------------------------------------------------------

def _manifest_bytes(path: Path, root: Path) -> bytes:
    """The bytes of a manifest that is a regular file inside the root (MediaError if not)."""
    with os.fdopen(open_regular_file(path, root), "rb") as handle:
        data = handle.read()
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def _printable(text: str) -> str:
    """Text decoded with surrogateescape, with undecodable bytes shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class _Record:
    """One record of a manifest: its first line, its values, or why it cannot be read."""

    line: int
    values: dict[str, Any]
    problem: tuple[RejectReason, str] | None = None


# -- the two-file layout -------------------------------------------------------------------

def _text_lines(path: Path, root: Path, keep_blank: bool = False) -> list[str]:
    """Lines of a text manifest (undecodable bytes kept as surrogates, for the row to report):
    BOM and CRLF tolerated, trailing blank lines dropped (only the final newline's with
    `keep_blank`, where a blank line means "none")."""
    try:
        raw = _manifest_bytes(path, root)
    except MediaError as exc:
        raise ManifestError(f"{path} cannot be read: {exc.message}") from None
    lines = [line.rstrip("\r") for line in raw.decode("utf-8", "surrogateescape").split("\n")]
    if keep_blank:
        if lines and lines[-1] == "":
            lines.pop()
        return lines
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _present(path: Path) -> bool:
    return os.path.lexists(path)  # a symlink out of the root is present, and refused


def read_two_file_layout(data_root: Path) -> list[ManifestRow]:
    """prompts.txt (or prompt.txt) + videos.txt [+ images.txt], matched line by line."""
    videos_file = data_root / VIDEO_LIST
    prompt_files = [data_root / name for name in PROMPT_LISTS if _present(data_root / name)]
    if not _present(videos_file) and not prompt_files:
        return []
    if not _present(videos_file):
        raise ManifestError(f"{prompt_files[0]} exists but {videos_file} does not")
    if not prompt_files:
        raise ManifestError(f"{videos_file} exists but neither prompts.txt nor prompt.txt does")
    if len(prompt_files) > 1:
        raise ManifestError(f"both {prompt_files[0]} and {prompt_files[1]} exist: keep one")
    prompts_file = prompt_files[0]
    videos, prompts = _text_lines(videos_file, data_root), _text_lines(prompts_file, data_root)
    if len(videos) != len(prompts):
        raise ManifestError(
            f"{prompts_file} has {len(prompts)} lines but {videos_file} has {len(videos)}: "
            "they must match line for line"
        )
    images: list[str | None] = [None] * len(videos)
    images_file = data_root / IMAGE_LIST
    if _present(images_file):
        listed = _text_lines(images_file, data_root, keep_blank=True)
        if len(listed) != len(videos):
            raise ManifestError(
                f"{images_file} has {len(listed)} lines but {videos_file} has {len(videos)}"
            )
        images = list(listed)
    guard = RootGuard(data_root)
    return [
        _row(guard, f"{VIDEO_LIST}:{n}", video, prompt, image,
             caption_at=f"{prompts_file.name}:{n}")
        for n, (video, prompt, image) in enumerate(zip(videos, prompts, images), start=1)
    ]


# -- tables --------------------------------------------------------------------------------

def _csv_records(data: bytes) -> tuple[list[str], list[_Record]]:
    """Header and records of a CSV; a record's line is where it starts, also after fields
    holding newlines. Undecodable bytes stay as surrogates for the row to report."""
    text = data.decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    records: list[_Record] = []
    end = 0  # the last line the reader has consumed
    while True:
        start = end + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            end = reader.line_num
            if header is None:
                raise NotAManifest(f"its header line cannot be parsed as CSV ({exc})") from None
            records.append(_Record(start, {}, (RejectReason.malformed_row, (
                f"lines {start}-{end} are not a valid CSV record ({exc})" if end > start
                else f"not a valid CSV record ({exc})"))))
            continue
        end = reader.line_num
        if not fields:  # a blank line
            continue
        if header is None:
            header = [_printable(name).strip() for name in fields]
            continue
        if len(fields) != len(header):
            records.append(_Record(start, {}, (RejectReason.malformed_row, (
                f"the record has {len(fields)} fields, the header {len(header)}"))))
            continue
        records.append(_Record(start, dict(zip(header, fields))))
    if header is None:
        raise NotAManifest("it is empty")
    return header, records


def _jsonl_records(data: bytes) -> tuple[list[str], list[_Record]]:
    """Keys (in order of first use) and records of a JSONL file, one JSON object a line."""
    columns: dict[str, None] = {}
    records: list[_Record] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            records.append(_Record(number, {}, (RejectReason.not_utf8,
                                                f"the line is not valid UTF-8 ({exc.reason})")))
            continue
        except ValueError as exc:
            records.append(_Record(number, {}, (RejectReason.malformed_row,
                                                f"the line is not valid JSON ({exc})")))
            continue
        if not isinstance(value, dict):
            records.append(_Record(number, {}, (RejectReason.malformed_row, (
                f"the line holds a JSON {type(value).__name__}, not an object"))))
            continue
        columns.update(dict.fromkeys(value))
        records.append(_Record(number, value))
    if not columns and not records:
        raise NotAManifest("it is empty")
    return list(columns), records


def _parquet_records(data: bytes) -> tuple[list[str], list[_Record]]:
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except Exception as exc:  # polars raises several exception types for malformed files
        raise NotAManifest(f"it cannot be read as parquet ({exc})") from None
    return frame.columns, [_Record(i, row) for i, row in enumerate(frame.iter_rows(named=True),
                                                                  start=1)]


_TABLE_READERS = {".csv": _csv_records, ".jsonl": _jsonl_records, ".parquet": _parquet_records}


def pick_column(columns: list[str], wanted: str | None, candidates: tuple[str, ...],
                 what: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise NotAManifest(f"no {what} column {wanted!r}; columns: {columns}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise NotAManifest(f"no {what} column (looked for {', '.join(candidates)}); columns: "
                       f"{columns}; set caption_column / video_column")


def table_records(path: Path, data_root: Path) -> tuple[list[str], list[_Record]]:
    """The columns and records of a CSV / JSONL / parquet table under the data root, each
    record with its first line (or why it cannot be read). Raises NotAManifest for a file
    that is no table (its format, unreadable, not a regular file inside the root)."""
    reader = _TABLE_READERS.get(path.suffix.lower())
    if reader is None:
        raise NotAManifest(f"{path.suffix or 'no suffix'} is not a table format (.csv, "
                           ".jsonl, .parquet)")
    try:
        data = _manifest_bytes(path, data_root)
    except MediaError as exc:
        raise NotAManifest(exc.message) from None
    return reader(data)


def read_table(path: Path, sources: SourceSettings) -> list[ManifestRow]:
    """A CSV / JSONL / parquet manifest with one row per clip. Raises NotAManifest for a file
    that is not one (unreadable, no caption or video column)."""
    data_root = Path(sources.data_root)
    columns, records = table_records(path, data_root)
    caption_col = pick_column(columns, sources.caption_column, DEFAULT_CAPTION_COLUMNS,
                              "caption")
    video_col = pick_column(columns, sources.video_column, DEFAULT_VIDEO_COLUMNS, "video")
    image_col = sources.image_column if sources.image_column in columns else None
    name = path.relative_to(data_root).as_posix()
    guard = RootGuard(data_root)
    rows = []
    for record in records:
        source = f"{name}:{record.line}"
        if record.problem is not None:
            reason, why = record.problem
            rows.append(ManifestRow(f"<unreadable row at {source}>", "", source, None, reason,
                                    f"{source}: {why}"))
            continue
        cells = record.values
        rows.append(_row(guard, source, cells.get(video_col), cells.get(caption_col),
                         cells.get(image_col) if image_col else None))
    return rows


def segment_captions_path(sources: SourceSettings) -> Path | None:
    """The segment-caption table (`segment_captions`): a caption source, not a manifest."""
    if not sources.segment_captions:
        return None
    return Path(sources.data_root) / sources.segment_captions


def _row(guard: RootGuard, source: str, video: Any, caption: Any, image: Any = None, *,
         caption_at: str | None = None) -> ManifestRow:
    """A manifest row from its cells (str, or None where a table has no value), with the
    first problem that makes it unusable. `caption_at`: where the caption is, when that is
    another file's line than `source` (prompts.txt beside videos.txt); a problem of the
    caption names it."""
    problems: list[tuple[RejectReason, str, str]] = []  # (reason, why, where)
    for what, value in (("video path", video), ("caption", caption), ("image path", image)):
        where = caption_at if what == "caption" and caption_at else source
        if value is not None and not isinstance(value, str):
            if what == "caption" and isinstance(value, (int, float)) and not isinstance(value,
                                                                                        bool):
                continue
            problems.append((RejectReason.malformed_row,
                             f"the {what} is a {type(value).__name__}, not text", where))
        elif isinstance(value, str) and not _is_utf8(value):
            problems.append((RejectReason.not_utf8, f"the {what} is not valid UTF-8", where))
    video_text = _printable(video) if isinstance(video, str) else None
    clip_id, reason, why = guard.check(video_text, source)
    caption_text = "" if caption is None else _printable(str(caption)).strip()
    where = source
    if problems:
        reason, why, where = problems[0]
    elif reason is None and not caption_text:
        reason, why, where = RejectReason.caption_empty, "caption is empty", caption_at or source
    image_id = None
    if isinstance(image, str) and image.strip() and not problems:
        image_id, image_reason, image_why = guard.check(_printable(image), source,
                                                        must_exist=False)
        if image_reason is not None:
            image_id = None
            if reason is None:
                reason, why = image_reason, f"image {image_why}"
    return ManifestRow(clip_id, caption_text, source, image_id, reason,
                       None if reason is None else f"{where}: {why}")


# -- all manifests of a data root ------------------------------------------------------------

def _tables(root: Path, sources: SourceSettings) -> Iterator[tuple[Path, bool]]:
    """(table, named by the `manifests` setting), sorted."""
    if sources.manifests:
        for path in sorted({p for glob in sources.manifests for p in root.glob(glob)}):
            yield path, True
    else:
        for path in sorted({p for glob in TABLE_GLOBS for p in root.glob(glob)}):
            yield path, False


def read_manifests(sources: SourceSettings) -> list[ManifestRow]:
    """Every row of every manifest under the data root; later duplicates of a path are flagged.
    Tables that are not manifests are skipped with a warning (refused when named by the
    `manifests` setting)."""
    root = Path(sources.data_root)
    if not root.is_dir():
        raise ManifestError(f"data root {root} is not a directory (data_root)")
    rows = read_two_file_layout(root)
    skipped = []
    captions = segment_captions_path(sources)
    for table, named in _tables(root, sources):
        if table == captions:  # a caption source for segments, never a manifest
            continue
        try:
            rows.extend(read_table(table, sources))
        except NotAManifest as exc:
            if named:
                raise ManifestError(f"{table} (named by the manifests setting) is not a "
                                    f"manifest: {exc}") from None
            skipped.append(f"{table.name}: {exc}")
            log.warning("skipped %s: not a manifest: %s", table, exc)
    if not rows:
        also = f" (skipped: {'; '.join(skipped)})" if skipped else ""
        raise ManifestError(
            f"no manifest in {root}: expected prompts.txt + videos.txt, or a "
            f"{'/'.join(TABLE_GLOBS)} table with caption and video columns{also}"
        )
    seen: dict[str, str] = {}
    out = []
    for row in rows:
        if row.issue_reason is None and row.clip_id in seen:
            row = ManifestRow(row.clip_id, row.caption, row.source, row.image_path,
                              RejectReason.duplicate_path,
                              f"{row.source}: {row.clip_id!r} is already listed at "
                              f"{seen[row.clip_id]}")
        elif row.issue_reason is None:
            seen[row.clip_id] = row.source
        out.append(row)
    return out
