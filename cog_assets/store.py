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

Filesystem options (endpoint, credentials) come from `ContentStore(url, **storage_options)` or,
for code that only has the URL (the Dagster resources), from fsspec's own configuration: e.g.
`FSSPEC_S3_ENDPOINT_URL=http://minio:9000` or `FSSPEC_S3='{"endpoint_url": "..."}'`, and the
usual AWS credential chain.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Mapping
from typing import Any

import fsspec
import polars as pl
import torch
from fsspec.implementations.local import LocalFileSystem
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from cog_assets import layout

# fsspec protocols whose "rename" is a copy and a delete; an object written in one request is
# atomic there.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})


class ContentStore:
    """Artefacts by (kind, key) plus plain files by path, under one fsspec URL."""

    def __init__(self, url: str, **storage_options: Any):
        """`storage_options` go to the fsspec filesystem (for S3 via s3fs: `key`, `secret`,
        `endpoint_url`, `client_kwargs`, ...), on top of fsspec's configuration."""
        self.url = url
        self.storage_options = dict(storage_options)
        self.fs, self.root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = self.root.rstrip("/")

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def artifact_path(self, kind: str, key: str, suffix: str = ".safetensors") -> str:
        return self.path(layout.artifact_path(kind, key, suffix))

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
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open(tmp, "wb") as handle:
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

    # -- tensors -----------------------------------------------------------------------------

    def has(self, kind: str, key: str) -> bool:
        return self.fs.exists(self.artifact_path(kind, key))

    def put_tensors(self, kind: str, key: str, tensors: Mapping[str, torch.Tensor],
                    metadata: Mapping[str, str] | None = None) -> str:
        data = save_safetensors({k: v.contiguous() for k, v in tensors.items()},
                                metadata=dict(metadata or {}))
        path = self.artifact_path(kind, key)
        self.write_bytes(path, data)
        return path

    def get_tensors(self, kind: str, key: str) -> dict[str, torch.Tensor]:
        return load_safetensors(self.read_bytes(self.artifact_path(kind, key)))

    # -- tables ------------------------------------------------------------------------------

    def write_table(self, path: str, frame: pl.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        self.write_bytes(path, buffer.getvalue())

    def read_table(self, path: str) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.read_bytes(path)))

    def write_json(self, path: str, value: Any) -> None:
        self.write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))

    def local_path(self, path: str) -> str:
        """A path a user can open: the plain path on local disk, the URL elsewhere."""
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return path if protocol in ("file", "local") else f"{protocol}://{path}"
