"""Identities: the hashes that name artefacts, captions, source files and data versions.

An artefact's key hashes everything that determines its bytes, so equal keys mean equal
bytes: that is what lets a re-run, a re-shard or another machine reuse work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import blake3

HASH_CHUNK = 1 << 20


def artifact_key(kind: str, **parts: Any) -> str:
    """sha256 of a canonical JSON of everything that determines an artefact's bytes."""
    payload = json.dumps({"kind": str(kind), **parts}, sort_keys=True, separators=(",", ":"),
                         default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def caption_sha256(caption: str) -> str:
    """A caption's identity; also the file name CogVideo's finetune cache gives its embedding."""
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()


def file_sha256(path: str) -> str:
    """Content hash of a local file, streamed so large videos are never held in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


DIGEST = "blake3"  # the digest every artefact and finished file is checked with


def digest_of(data: bytes | bytearray | memoryview) -> str:
    """The integrity digest of some bytes (blake3: several GB/s, far less than reading them)."""
    return blake3.blake3(data).hexdigest()


def file_digest(path: str | Path) -> str:
    """digest_of a local file's bytes, streamed."""
    hasher = blake3.blake3()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK * 8):
            hasher.update(chunk)
    return hasher.hexdigest()


def data_version_of(keys: Iterable[str | None]) -> str:
    """A shard's data version: a hash of the sorted keys of what it holds.

    Unchanged inputs give the same keys and so the same version, which is what lets Dagster
    tell a re-run that changed nothing from one that did.
    """
    digest = hashlib.sha256()
    for key in sorted(k or "" for k in keys):
        digest.update(key.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:24]
