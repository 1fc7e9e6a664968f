"""raw_manifest: every (video, caption) row of one shard with its size, mtime and content hash.

A video is hashed only at rest: one changed more recently than `settle_s`, or that changes
while it is hashed, is `deferred` (a reject row saying so; it is retried on a later run, and
the upload sensor, which hashes the same way, only counts it once it has settled). The file's
stamp (inode, size, mtime, ctime) is kept with the hash, so that the stages reading the file
later refuse bytes other than those hashed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from cog_assets.core.clip_row import columns
from cog_assets.core.config import SourceSettings
from cog_assets.core.keys import caption_sha256
from cog_assets.core.reasons import RejectReason
from cog_assets.media.errors import MediaError
from cog_assets.media.safe_open import hash_at_rest
from cog_assets.sources.manifests import ManifestRow, read_manifests
from cog_assets.sources.sharding import shard_for

MANIFEST_SCHEMA = columns(
    "clip_id", "source", "caption", "caption_sha256", "image_path", "size_bytes", "mtime_ns",
    "content_hash", "file_stamp", "issue_reason", "issue_message")


def discover_shards(sources: SourceSettings) -> list[str]:
    """The shard keys that hold at least one manifest row."""
    return sorted({shard_for(row.clip_id, sources.shard_count)
                   for row in read_manifests(sources)})


# path -> (size, mtime_ns, sha256) of files already hashed (by the upload sensor)
KnownHashes = Mapping[str, tuple[int, int, str]]


def with_id_token(caption: str, id_token: str | None) -> str:
    """The caption T5 encodes and the exports write: the trigger word, a space, the caption."""
    return f"{id_token} {caption}" if id_token and caption.strip() else caption


def _describe(root: Path, row: ManifestRow, known: KnownHashes, sources: SourceSettings
              ) -> dict:
    caption = with_id_token(row.caption, sources.id_token)
    record = {
        "clip_id": row.clip_id, "source": row.source, "caption": caption,
        "caption_sha256": caption_sha256(caption), "image_path": row.image_path,
        "size_bytes": None, "mtime_ns": None, "content_hash": None, "file_stamp": None,
        "issue_reason": row.issue_reason, "issue_message": row.issue_message,
    }
    # A video without a caption is hashed too: its scenes may get captions of their own (the
    # segment table, or a caption the caption step writes), and its frames need a key.
    if row.issue_reason in (None, RejectReason.caption_empty):
        try:
            stamp, digest = hash_at_rest(root / row.clip_id, root, sources.settle_s,
                                         known.get(row.clip_id))
            record.update(size_bytes=stamp.size, mtime_ns=stamp.mtime_ns, content_hash=digest,
                          file_stamp=stamp.text())
        except MediaError as exc:
            record.update(issue_reason=exc.reason,
                          issue_message=f"{row.source}: {row.clip_id}: {exc.message}")
    return record


def build_manifest(sources: SourceSettings, shard: str, known: KnownHashes | None = None
                   ) -> pl.DataFrame:
    """The rows of `shard`, hashed. Only this shard's videos are read, and not even those
    whose size and mtime match a hash in `known` (what the upload sensor already hashed)."""
    rows = [r for r in read_manifests(sources)
            if shard_for(r.clip_id, sources.shard_count) == shard]
    root = Path(sources.data_root)
    return pl.DataFrame([_describe(root, r, known or {}, sources) for r in rows],
                        schema=MANIFEST_SCHEMA)
