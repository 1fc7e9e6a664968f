"""A content-addressed artefact store on any fsspec filesystem.

Expensive artefacts (frames, latents, embeddings) are stored under a key that hashes
everything that determines their bytes, so a re-run, a re-shard or a second machine finds the
work already done. Every write is atomic, so a reader never sees half a file:

- on local disk (and other filesystems with a real rename) the bytes go to a unique temporary
  sibling that is then renamed into place (`os.replace`); a killed run leaves only `.tmp-`
  garbage it can ignore;
- on object stores (S3, GCS, Azure) a rename is a copy plus a delete, not atomic, so the object
  is written in one request directly at its final key: a PUT (or, above 100 MiB on S3, a
  multipart upload, which becomes visible only when completed) is atomic there, and a killed
  run leaves nothing.

Concurrent writers are safe: an artefact's key hashes everything that determines its bytes, so
two machines that write the same key write identical bytes and whichever lands last wins with
the same content; different keys never collide. Plain files by path (a shard's finished dataset,
its tables) are written by that shard's run; each file is replaced whole, never seen half-written.
Reads fetch a file in one request (`cat_file`), so a reader gets one version of it.

Every artefact carries the digest of its data (`cog_assets.store.sealed_tensors`), recorded when it is
written. `get_tensors` checks it on every read; `check_artifact` is what reuse asks: by default
the size and header only (no data read), everything with `verify_reuse` (the per-run
`verify_artifacts` setting) or `full=True`. A damaged artefact is moved to `quarantine/` (its key
is then free to be computed again) and reported with its key and path, never handed out.

Latents and embeddings of a published shard live in the shard's own files; the store then
keeps a reference under their key instead of a second copy (`cog_assets.store.references`).
`has`, `get_tensors`, `check_artifact` and `quarantine` follow a reference wherever the full
copy is missing, so callers see one artefact either way.

Filesystem options (endpoint, credentials) come from `ContentStore(url, **storage_options)` or,
for code that only has the URL (the Dagster resources), from fsspec's own configuration: e.g.
`FSSPEC_S3_ENDPOINT_URL=http://minio:9000` or `FSSPEC_S3='{"endpoint_url": "..."}'`, and the
usual AWS credential chain.
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
import polars as pl
import torch
from fsspec.implementations.local import LocalFileSystem

from cog_assets.store import layout, references
from cog_assets.store.sealed_tensors import (
    HEAD_READ,
    DamagedTensors,
    HeaderIncomplete,
    parse_header,
    seal,
    unseal,
)

log = logging.getLogger(__name__)

# fsspec protocols whose "rename" is a copy and a delete; an object written in one request is
# atomic there.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})


class CorruptArtifact(Exception):
    """An artefact's bytes are not what was written; it has been moved to quarantine."""

    def __init__(self, kind: str, key: str, path: str, reason: str, moved_to: str | None):
        self.kind, self.key, self.path, self.reason, self.moved_to = (kind, key, path, reason,
                                                                       moved_to)
        where = f"; moved to {moved_to}" if moved_to else ""
        super().__init__(f"{kind} artefact {key} at {path} is corrupt: {reason}{where}; "
                         "the next run computes it again")


@dataclass(frozen=True)
class StoredFile:
    """A file found by `ContentStore.walk`."""

    path: str  # as ContentStore.path gives it
    size: int
    mtime: float  # seconds since the epoch, when it was last written


def mtime_of(info: Mapping[str, Any]) -> float:
    """When a file was last written, from an fsspec info dict (local: mtime; S3: LastModified)."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(name)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return 0.0


@dataclass(frozen=True)
class ArtifactCheck:
    """What a check found: `problem` None means whole; `missing` that there is no file."""

    kind: str
    key: str
    path: str
    problem: str | None = None
    missing: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        return f"{self.kind} artefact {self.key} at {self.path}: {self.problem}"


class ContentStore:
    """Artefacts by (kind, key) plus plain files by path, under one fsspec URL."""

    def __init__(self, url: str, *, verify_reuse: bool = False, **storage_options: Any):
        """`verify_reuse`: reuse checks read and digest-check an artefact's data (the
        `verify_artifacts` setting), not only its size and header. `storage_options` go to
        the fsspec filesystem (for S3 via s3fs: `key`, `secret`, `endpoint_url`,
        `client_kwargs`, ...), on top of fsspec's configuration."""
        self.url = url
        self.verify_reuse = verify_reuse
        self.storage_options = dict(storage_options)
        self.fs, self.root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = self.root.rstrip("/")

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def artifact_path(self, kind: str, key: str, suffix: str = ".safetensors") -> str:
        return self.path(layout.artifact_path(kind, key, suffix))

    def holds(self, path: str) -> bool:
        """Whether `path` is under the store's root (only such files can be referenced)."""
        return path.startswith(self.root + "/")

    def relative(self, path: str) -> str:
        """A path under the store's root as the layout names it (what references record)."""
        prefix = self.root + "/"
        if not path.startswith(prefix):
            raise ValueError(f"{path} is not under the store's root {self.root}")
        return path[len(prefix):]

    # -- atomic primitives -------------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes) -> None:
        """Readers see all or nothing: one PUT at the final key on an object store; elsewhere a
        unique temporary sibling renamed into place."""
        if self.is_object_store:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"write_bytes needs bytes, not {type(data).__name__}")
            self.fs.pipe_file(path, bytes(data))
            return
        parent = path.rsplit("/", 1)[0]
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            for attempt in range(3):  # gc may remove a folder it just emptied: make it again
                self.fs.makedirs(parent, exist_ok=True)
                try:
                    handle = self.fs.open(tmp, "wb")
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
            with handle:
                handle.write(data)
            self._rename(tmp, path)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise

    @property
    def is_object_store(self) -> bool:
        """True where rename is copy + delete (S3, GCS, Azure): write in one request instead."""
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else self.fs.protocol
        return any(p in OBJECT_STORE_PROTOCOLS for p in protocols)

    def _rename(self, src: str, dst: str) -> None:
        """os.replace on local disk (atomic, replaces a file); the filesystem's move elsewhere."""
        if isinstance(self.fs, LocalFileSystem):
            os.replace(src, dst)
        else:
            self.fs.mv(src, dst)

    def read_bytes(self, path: str) -> bytes:
        """The whole file in one request (one GET on an object store: one version of it)."""
        return self.fs.cat_file(path)

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def walk(self, relative: str = "") -> Iterator[StoredFile]:
        """Every file under a folder of the store, with its size and time; symbolic links
        (an export's current version is one) are neither followed nor listed."""
        top = self.path(relative) if relative else self.root
        if isinstance(self.fs, LocalFileSystem):
            for folder, _, names in os.walk(top):
                for name in names:
                    path = f"{folder}/{name}"
                    try:
                        stat = os.lstat(path)
                    except FileNotFoundError:
                        continue
                    if not os.path.islink(path):
                        yield StoredFile(path, stat.st_size, stat.st_mtime)
            return
        try:
            found = self.fs.find(top, detail=True)
        except FileNotFoundError:
            return
        for path, info in sorted(found.items()):
            if info.get("type", "file") == "file":
                yield StoredFile(path, int(info.get("size") or 0), mtime_of(info))

    # -- tensors -----------------------------------------------------------------------------

    def has(self, kind: str, key: str) -> bool:
        """Whether the artefact or a reference to its home is there (says nothing of its
        content: see check_artifact)."""
        return (self.fs.exists(self.artifact_path(kind, key))
                or self.fs.exists(self.path(layout.ref_path(kind, key))))

    def put_tensors(self, kind: str, key: str, tensors: Mapping[str, torch.Tensor],
                    metadata: Mapping[str, str] | None = None) -> str:
        """Write an artefact with the digest of its data recorded in its header."""
        path = self.artifact_path(kind, key)
        self.write_bytes(path, seal(tensors, metadata))
        return path

    def get_tensors(self, kind: str, key: str) -> dict[str, torch.Tensor]:
        """The artefact's tensors, digest-checked. A damaged one is quarantined and raised as
        CorruptArtifact (naming key and path); a missing one is FileNotFoundError."""
        path = self.artifact_path(kind, key)
        try:
            data = self.read_bytes(path)
        except FileNotFoundError:
            return self._get_by_ref(kind, key)
        try:
            return unseal(data)
        except DamagedTensors as exc:
            raise CorruptArtifact(kind, key, path, exc.reason,
                                  self.quarantine(kind, key)) from None

    def _get_by_ref(self, kind: str, key: str, attempts: int = 3) -> dict[str, torch.Tensor]:
        """The tensors of an artefact whose home is a shard file. A home that vanished is a
        shard replaced meanwhile (its artefacts were evicted or re-homed first): look again."""
        ref = self.path(layout.ref_path(kind, key))
        for attempt in range(attempts):
            try:
                homes = references.read_ref(self, kind, key)
                if homes is not None:
                    return references.resolve(self, homes)
                data = self.read_bytes(self.artifact_path(kind, key))  # evicted meanwhile?
            except FileNotFoundError:
                if attempt == attempts - 1:
                    raise
                continue
            except DamagedTensors as exc:
                raise CorruptArtifact(kind, key, ref, exc.reason,
                                      self.quarantine(kind, key)) from None
            try:
                return unseal(data)
            except DamagedTensors as exc:
                raise CorruptArtifact(kind, key, self.artifact_path(kind, key), exc.reason,
                                      self.quarantine(kind, key)) from None
        raise AssertionError("unreachable")

    def check_artifact(self, kind: str, key: str, full: bool | None = None) -> ArtifactCheck:
        """Is the artefact there and whole? `full` (default: `verify_reuse`) reads the data
        and compares its digest; otherwise only the header is read and the file's size
        compared with the size the header describes."""
        path = self.artifact_path(kind, key)
        full = self.verify_reuse if full is None else full
        try:
            if full:
                unseal(self.read_bytes(path))
            else:
                self._check_header(path)
        except FileNotFoundError:
            return self._check_ref(kind, key, full, path)
        except DamagedTensors as exc:
            return ArtifactCheck(kind, key, path, exc.reason)
        return ArtifactCheck(kind, key, path)

    def _check_ref(self, kind: str, key: str, full: bool, copy_path: str) -> ArtifactCheck:
        path = self.path(layout.ref_path(kind, key))
        try:
            homes = references.read_ref(self, kind, key)
            if homes is None:
                return ArtifactCheck(kind, key, copy_path, "missing", missing=True)
            if full:
                references.resolve(self, homes)
            else:
                references.check_homes(self, homes)
        except FileNotFoundError:
            return ArtifactCheck(kind, key, path, "missing: the shard file it lives in is "
                                 "gone", missing=True)
        except DamagedTensors as exc:
            return ArtifactCheck(kind, key, path, exc.reason)
        return ArtifactCheck(kind, key, path)

    def _check_header(self, path: str) -> None:
        size = self.fs.size(path)
        head = self.fs.cat_file(path, start=0, end=min(size, HEAD_READ))
        try:
            parse_header(head, size)
        except HeaderIncomplete as more:
            parse_header(self.fs.cat_file(path, start=0, end=more.needed), size)

    def quarantine(self, kind: str, key: str, suffix: str = ".safetensors") -> str | None:
        """Move a damaged artefact (or, where the store keeps only a reference to its home,
        that reference) out of its key's place; returns where it went (None if another
        process moved or replaced it first)."""
        source = self.artifact_path(kind, key, suffix)
        if suffix == ".safetensors" and not self.fs.exists(source):
            source = self.path(layout.ref_path(kind, key))
        target = self.path(layout.quarantine_path(kind, key))
        try:
            if isinstance(self.fs, LocalFileSystem):
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                os.replace(source, target)
            else:
                self.fs.mv(source, target)
        except FileNotFoundError:
            return None
        log.warning("quarantined damaged %s artefact %s: %s -> %s", kind, key, source, target)
        return target

    # -- tables ------------------------------------------------------------------------------

    def write_table(self, path: str, frame: pl.DataFrame) -> bytes:
        """Write `frame` as parquet; returns the bytes written (to digest them)."""
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        data = buffer.getvalue()
        self.write_bytes(path, data)
        return data

    def read_table(self, path: str) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.read_bytes(path)))

    def write_json(self, path: str, value: Any) -> None:
        self.write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))

    def local_path(self, path: str) -> str:
        """A path a user can open: the plain path on local disk, the URL elsewhere."""
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return path if protocol in ("file", "local") else f"{protocol}://{path}"
