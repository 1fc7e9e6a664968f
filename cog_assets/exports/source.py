"""Reading a finished dataset for an export: exactly the shards its catalog lists.

Every file an export reads is checked against the size and digest recorded when its shard was
published (a damaged or stale file is refused, naming it, before anything is written); shapes
are then read from the safetensors headers first and tensors loaded only when written; each
tensor file is opened once.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from cog_assets.core.buckets import Bucket
from cog_assets.core.clip_row import CLIP_COLUMNS
from cog_assets.loader import check_file, open_shard
from cog_assets.store.catalog import DatasetError, load_catalog

SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
                      "F64": torch.float64}


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
    has_image_latent: bool
    files: tuple[tuple[str, str], ...] = ()  # (index column, tensor file name) of the shard
    first_frame_png: Path | None = None  # I2V: the clean first frame the latents were made of
    extra: tuple[tuple[str, Any], ...] = ()  # the index's CLIP_COLUMNS the shard has
    content_hash: str | None = None  # sha256 of the source video's bytes the clip was made of

    @property
    def source_video(self) -> str:
        """The video file the clip was cut from (itself unless it is a scene of a longer one)."""
        return dict(self.extra).get("source_video") or self.clip_id

    @property
    def segment(self) -> tuple[float | None, float | None]:
        """(start_s, end_s) of the clip in its source video (a whole file: 0 to its end)."""
        extra = dict(self.extra)
        return extra.get("start_s"), extra.get("end_s")

    def file(self, column: str) -> Path:
        return self.shard_dir / dict(self.files)[column]

    @property
    def bucket(self) -> str:
        return Bucket(self.num_frames, self.height, self.width).key

    def where(self) -> str:
        return f"clip {self.clip_id!r} ({self.shard_dir.name})"


def read_clips(dataset_dir: str | Path) -> list[ClipRecord]:
    """Every clip of the catalog's shards, ordered by shard then clip id, each file checked
    against its published digest; a clip id in two shards is an error naming both."""
    root = Path(dataset_dir)
    catalog = load_catalog(root)
    clips: list[ClipRecord] = []
    seen: dict[str, str] = {}
    for shard, entry in sorted(catalog.shards.items()):
        shard_dir = root / shard
        index = open_shard(shard_dir, entry, verify=True).sort("clip_id")
        for png in entry.first_frames:
            check_file(shard_dir / png.name, png, verify=True)
        columns = [c for c in ("latents_file", "embeds_file", "image_latents_file")
                   if c in index.columns]
        for row in index.iter_rows(named=True):
            clip_id = row["clip_id"]
            if clip_id in seen:
                raise DatasetError(f"clip {clip_id!r} is listed in both {seen[clip_id]} and "
                                   f"{shard} of {root}")
            seen[clip_id] = shard
            clips.append(ClipRecord(
                clip_id=clip_id, caption=row["caption"], caption_sha256=row["caption_sha256"],
                num_frames=int(row["num_frames"]), height=int(row["height"]),
                width=int(row["width"]), shard_dir=shard_dir,
                has_image_latent=bool(row.get("has_image_latent")),
                files=tuple((c, row[c]) for c in columns if row[c]),
                first_frame_png=(shard_dir / row["first_frame_png"]
                                 if row.get("first_frame_png") else None),
                extra=tuple((c, row[c]) for c in CLIP_COLUMNS if c in row),
                content_hash=row.get("content_hash"),
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

    def dtype(self, path: Path, key: str) -> torch.dtype:
        opened = self._open(path)
        if opened is None or key not in opened[1]:
            raise KeyError(f"{key!r} not in {path}")
        return SAFETENSORS_DTYPES[opened[0].get_slice(key).get_dtype()]

    def tensor(self, path: Path, key: str) -> torch.Tensor:
        opened = self._open(path)
        if opened is None or key not in opened[1]:
            raise KeyError(f"{key!r} not in {path}")
        return opened[0].get_tensor(key)

    # the three tensor files of a shard, addressed by clip
    def moments_shape(self, clip: ClipRecord) -> tuple[int, ...] | None:
        return self.shape(clip.file("latents_file"), clip.clip_id)

    def moments_dtype(self, clip: ClipRecord) -> torch.dtype:
        return self.dtype(clip.file("latents_file"), clip.clip_id)

    def moments(self, clip: ClipRecord) -> torch.Tensor:
        return self.tensor(clip.file("latents_file"), clip.clip_id)

    def embedding_shape(self, clip: ClipRecord) -> tuple[int, ...] | None:
        return self.shape(clip.file("embeds_file"), clip.caption_sha256)

    def embedding(self, clip: ClipRecord) -> torch.Tensor:
        return self.tensor(clip.file("embeds_file"), clip.caption_sha256)

    def image_latent_shape(self, clip: ClipRecord) -> tuple[int, ...] | None:
        if not clip.has_image_latent:
            return None
        return self.shape(clip.file("image_latents_file"), clip.clip_id)

    def image_latent(self, clip: ClipRecord) -> torch.Tensor:
        return self.tensor(clip.file("image_latents_file"), clip.clip_id)
