"""Reading a finished dataset (one or more `shard-*` folders) for an export.

Exports check every clip before writing anything, so shapes are read from the safetensors
headers first and tensors are loaded only when written; each tensor file is opened once.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from safetensors import safe_open

from cog_assets.buckets import Bucket
from cog_assets.layout import CLIP_COLUMNS, DEFAULT_FILES, INDEX_FILE, SHARD_GLOB, shard_file


@dataclass(frozen=True)
class ClipRecord:
    """One row of a shard's index, with the shard it lives in."""

    clip_id: str
    caption: str
    caption_sha256: str
    num_frames: int
    height: int
    width: int
    shard_dir: Path
    has_image_latent: bool | None  # None: an older shard without the column
    files: tuple[tuple[str, str], ...] = ()  # (index column, tensor file name) of the shard
    extra: tuple[tuple[str, Any], ...] = ()  # the index's CLIP_COLUMNS the shard has

    @property
    def source_video(self) -> str:
        """The video file the clip was cut from (itself unless it is a scene of a longer one)."""
        return dict(self.extra).get("source_video") or self.clip_id

    def file(self, column: str) -> Path:
        return self.shard_dir / dict(self.files).get(column, DEFAULT_FILES[column])

    @property
    def bucket(self) -> str:
        return Bucket(self.num_frames, self.height, self.width).key

    def where(self) -> str:
        return f"clip {self.clip_id!r} ({self.shard_dir.name})"


def shard_dirs(dataset_dir: str | Path) -> list[Path]:
    """The shard folders of a dataset directory, or the folder itself if it is one shard."""
    root = Path(dataset_dir)
    if (root / INDEX_FILE).is_file():
        return [root]
    dirs = sorted(p for p in root.glob(SHARD_GLOB) if (p / INDEX_FILE).is_file())
    if not dirs:
        raise FileNotFoundError(f"no shard-*/{INDEX_FILE} under {root}")
    return dirs


def read_clips(dataset_dir: str | Path) -> list[ClipRecord]:
    """Every clip of the dataset, ordered by shard then clip id; a clip id twice is an error."""
    clips: list[ClipRecord] = []
    seen: dict[str, Path] = {}
    for shard in shard_dirs(dataset_dir):
        index = pl.read_parquet(shard / INDEX_FILE).sort("clip_id")
        flagged = "has_image_latent" in index.columns
        for row in index.iter_rows(named=True):
            clip_id = row["clip_id"]
            if clip_id in seen:
                raise ValueError(f"clip {clip_id!r} is listed in both {seen[clip_id].name} "
                                 f"and {shard.name}")
            seen[clip_id] = shard
            clips.append(ClipRecord(
                clip_id=clip_id, caption=row["caption"], caption_sha256=row["caption_sha256"],
                num_frames=int(row["num_frames"]), height=int(row["height"]),
                width=int(row["width"]), shard_dir=shard,
                has_image_latent=(bool(row["has_image_latent"]) if flagged else None),
                files=tuple((c, shard_file(row, c)) for c in DEFAULT_FILES),
                extra=tuple((c, row[c]) for c in CLIP_COLUMNS if c in row),
            ))
    return clips


class ShardTensors:
    """Lazily opened safetensors handles of every shard, closed together on exit."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._handles: dict[Path, tuple[Any, set[str]] | None] = {}

    def __enter__(self) -> ShardTensors:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open(self, path: Path) -> tuple[Any, set[str]] | None:
        if path not in self._handles:
            if path.is_file():
                handle = self._stack.enter_context(safe_open(str(path), framework="pt"))
                self._handles[path] = (handle, set(handle.keys()))
            else:
                self._handles[path] = None
        return self._handles[path]

    def shape(self, path: Path, key: str) -> tuple[int, ...] | None:
        """The stored shape of `key`, or None when the file or the key is missing."""
        opened = self._open(path)
        if opened is None or key not in opened[1]:
            return None
        return tuple(opened[0].get_slice(key).get_shape())

    def tensor(self, path: Path, key: str) -> torch.Tensor:
        opened = self._open(path)
        if opened is None or key not in opened[1]:
            raise KeyError(f"{key!r} not in {path}")
        return opened[0].get_tensor(key)

    # the three tensor files of a shard, addressed by clip
    def moments_shape(self, clip: ClipRecord) -> tuple[int, ...] | None:
        return self.shape(clip.file("latents_file"), clip.clip_id)

    def moments(self, clip: ClipRecord) -> torch.Tensor:
        return self.tensor(clip.file("latents_file"), clip.clip_id)

    def embedding_shape(self, clip: ClipRecord) -> tuple[int, ...] | None:
        return self.shape(clip.file("embeds_file"), clip.caption_sha256)

    def embedding(self, clip: ClipRecord) -> torch.Tensor:
        return self.tensor(clip.file("embeds_file"), clip.caption_sha256)

    def image_latent_shape(self, clip: ClipRecord) -> tuple[int, ...] | None:
        if clip.has_image_latent is False:
            return None
        return self.shape(clip.file("image_latents_file"), clip.clip_id)

    def image_latent(self, clip: ClipRecord) -> torch.Tensor:
        return self.tensor(clip.file("image_latents_file"), clip.clip_id)
