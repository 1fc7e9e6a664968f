"""Reading (video, caption) pairs from the manifests under a data root.

Two layouts are read, all of them if several are present: the two-file layout of the CogVideoX
fine-tuning guides (`prompts.txt` or `prompt.txt` beside `videos.txt`, optional `images.txt`)
and tables (`*.csv`, `*.jsonl`, `*.parquet`) with caption and video columns. Problems with one
row become a row-level issue (recorded, later rejected with its reason); problems that make the
whole manifest ambiguous raise `ManifestError` naming the file(s) and line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cog_assets.config import SourceSettings
from cog_assets.reasons import RejectReason

VIDEO_LIST = "videos.txt"
PROMPT_LISTS = ("prompts.txt", "prompt.txt")
IMAGE_LIST = "images.txt"
TABLE_GLOBS = ("*.csv", "*.jsonl", "*.parquet")
DEFAULT_CAPTION_COLUMNS = ("caption", "prompt", "text")
DEFAULT_VIDEO_COLUMNS = ("video", "video_path", "path", "file_name")


class ManifestError(ValueError):
    """The manifest itself is wrong (not one row): nothing is guessed, the run stops here."""


@dataclass(frozen=True)
class ManifestRow:
    """One (video, caption) pair as a manifest lists it."""

    clip_id: str  # the video path relative to the data root, posix form
    caption: str
    source: str  # "<manifest file>:<line>" so every message can point at the line
    image_path: str | None = None
    issue_reason: RejectReason | None = None  # set when the row can already be seen to be unusable
    issue_message: str | None = None


class RootGuard:
    """Normalises manifest paths and refuses those that leave the data root.

    A path may not be absolute, may not climb out with `..`, and may not be (or sit under) a
    symlink that resolves outside the root: the pipeline reads only what the dataset owner put
    there. Directory resolutions are cached, so checking 100k rows costs ~one lstat each.
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

    def resolve(self, rel: str) -> tuple[str | None, str | None]:
        """(clip_id, None), or (None, why the path is refused)."""
        rel = rel.strip().replace("\\", "/")
        if not rel:
            return None, "empty path"
        if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
            return None, f"absolute path {rel!r} is outside the data root"
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            return None, f"path {rel!r} climbs out of the data root with '..'"
        if not parts:
            return None, f"path {rel!r} names no file"
        clean = "/".join(parts)
        real_parent = self._real_dir("/".join(parts[:-1]))
        target = os.path.join(real_parent, parts[-1])
        if os.path.islink(target):
            target = os.path.realpath(target)
        if not self._inside(real_parent) or not self._inside(target):
            return None, f"path {rel!r} resolves to {target}, outside the data root (symlink?)"
        return clean, None


def _read_lines(path: Path, keep_blank: bool = False) -> list[str]:
    """Lines of a text manifest: BOM and CRLF tolerated, trailing blank lines dropped
    (only the final newline's with `keep_blank`, where a blank line means "none")."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    out: list[str] = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r")
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}:{number}: not valid UTF-8 ({exc.reason})") from None
    if keep_blank:
        if out and out[-1] == "":
            out.pop()
        return out
    while out and not out[-1].strip():
        out.pop()
    return out


def _row(guard: RootGuard, video: str, caption: str, source: str,
         image: str | None = None) -> ManifestRow:
    clip_id, why = guard.resolve(video)
    caption = caption.strip()
    reason = message = None
    if clip_id is None:
        reason, message = RejectReason.path_outside_root, f"{source}: {why}"
        clip_id = video.strip() or f"<empty path at {source}>"
    elif not os.path.isfile(os.path.join(guard.root, clip_id)):
        reason, message = RejectReason.missing_file, f"{source}: video {clip_id!r} does not exist"
    elif not caption:
        reason, message = RejectReason.caption_empty, f"{source}: caption is empty"
    image_id = None
    if image is not None and image.strip():
        image_id, why = guard.resolve(image)
        if image_id is None and reason is None:
            reason, message = RejectReason.path_outside_root, f"{source}: image {why}"
    return ManifestRow(clip_id, caption, source, image_id, reason, message)


def read_two_file_layout(data_root: Path) -> list[ManifestRow]:
    """prompts.txt (or prompt.txt) + videos.txt [+ images.txt], matched line by line."""
    videos_file = data_root / VIDEO_LIST
    prompt_files = [data_root / name for name in PROMPT_LISTS if (data_root / name).is_file()]
    if not videos_file.is_file() and not prompt_files:
        return []
    if not videos_file.is_file():
        raise ManifestError(f"{prompt_files[0]} exists but {videos_file} does not")
    if not prompt_files:
        raise ManifestError(f"{videos_file} exists but neither prompts.txt nor prompt.txt does")
    if len(prompt_files) > 1:
        raise ManifestError(f"both {prompt_files[0]} and {prompt_files[1]} exist: keep one")
    prompts_file = prompt_files[0]
    videos, prompts = _read_lines(videos_file), _read_lines(prompts_file)
    if len(videos) != len(prompts):
        raise ManifestError(
            f"{prompts_file} has {len(prompts)} lines but {videos_file} has {len(videos)}: "
            "they must match line for line"
        )
    images: list[str | None] = [None] * len(videos)
    images_file = data_root / IMAGE_LIST
    if images_file.is_file():
        listed = _read_lines(images_file, keep_blank=True)
        if len(listed) != len(videos):
            raise ManifestError(
                f"{images_file} has {len(listed)} lines but {videos_file} has {len(videos)}"
            )
        images = list(listed)
    guard = RootGuard(data_root)
    return [
        _row(guard, video, prompt, f"{VIDEO_LIST}:{n}", image)
        for n, (video, prompt, image) in enumerate(zip(videos, prompts, images), start=1)
    ]


def _pick_column(frame: pl.DataFrame, wanted: str | None, candidates: tuple[str, ...],
                 what: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in frame.columns:
            raise ManifestError(f"{path}: no {what} column {wanted!r}; columns: {frame.columns}")
        return wanted
    for name in candidates:
        if name in frame.columns:
            return name
    raise ManifestError(
        f"{path}: no {what} column (looked for {', '.join(candidates)}); "
        f"columns: {frame.columns}; set caption_column / video_column"
    )


def read_table(path: Path, sources: SourceSettings) -> list[ManifestRow]:
    """A CSV / JSONL / parquet manifest with one row per clip."""
    data_root = Path(sources.data_root)
    try:
        if path.suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False)
        elif path.suffix == ".jsonl":
            frame = pl.read_ndjson(path)
        else:
            frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several exception types for malformed files
        raise ManifestError(f"{path}: cannot be read as a table: {exc}") from exc
    caption_col = _pick_column(frame, sources.caption_column, DEFAULT_CAPTION_COLUMNS,
                               "caption", path)
    video_col = _pick_column(frame, sources.video_column, DEFAULT_VIDEO_COLUMNS, "video", path)
    image_col = sources.image_column if sources.image_column in frame.columns else None
    first_line = 2 if path.suffix == ".csv" else 1  # CSV line 1 is the header
    rows = []
    guard = RootGuard(data_root)
    for i, record in enumerate(frame.iter_rows(named=True)):
        source = f"{path.relative_to(data_root).as_posix()}:{i + first_line}"
        caption = record[caption_col]
        rows.append(_row(guard, str(record[video_col] or ""),
                         "" if caption is None else str(caption), source,
                         record[image_col] if image_col else None))
    return rows


def segment_captions_path(sources: SourceSettings) -> Path | None:
    """The segment-caption table (`segment_captions`): a caption source, not a manifest."""
    if not sources.segment_captions:
        return None
    return Path(sources.data_root) / sources.segment_captions


def read_manifests(sources: SourceSettings) -> list[ManifestRow]:
    """Every row of every manifest under the data root; later duplicates of a path are flagged."""
    root = Path(sources.data_root)
    if not root.is_dir():
        raise ManifestError(f"data root {root} is not a directory (data_root)")
    rows = read_two_file_layout(root)
    captions = segment_captions_path(sources)
    tables = sorted({p for g in TABLE_GLOBS for p in root.glob(g)
                     if p.is_file() and p != captions})
    for table in tables:
        rows.extend(read_table(table, sources))
    if not rows:
        raise ManifestError(
            f"no manifest in {root}: expected prompts.txt + videos.txt, or a "
            f"{'/'.join(TABLE_GLOBS)} table with caption and video columns"
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
