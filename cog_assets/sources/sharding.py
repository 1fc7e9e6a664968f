"""Which shard a clip belongs to: a pure function of its id, so anyone can compute it."""

from __future__ import annotations

import hashlib
import re

SHARD_PREFIX = "shard-"


def shard_index(clip_id: str, shard_count: int) -> int:
    """Stable across processes and Python versions (unlike hash()): sha256 of the id, mod N."""
    if shard_count < 1:
        raise ValueError(f"shard_count must be >= 1, got {shard_count}")
    digest = hashlib.sha256(clip_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shard_count


def shard_key(index: int) -> str:
    return f"{SHARD_PREFIX}{index:05d}"


def is_shard_key(text: str) -> bool:
    """Whether `text` is a partition key `shard_key` gives (shard-00000...)."""
    return re.fullmatch(rf"{SHARD_PREFIX}\d{{5,}}", text) is not None


def shard_for(clip_id: str, shard_count: int) -> str:
    """The partition key of the shard that holds `clip_id` (its path relative to the data root)."""
    return shard_key(shard_index(clip_id, shard_count))
