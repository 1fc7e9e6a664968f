"""One lock per dataset, across processes and machines sharing a store.

Publishing a shard (checking its files, writing its catalog entry, rebuilding the catalog,
pointing the store's references at the new files) and gc's removal of a dataset's shard files
happen under this lock, each judging what is served afresh once it holds it. So a file is
removed only while no publication can be between checking it and listing it, and the catalog
never lists a file that is gone.

- Local disk (and any filesystem with POSIX locks shared by the processes, e.g. one NFS export
  with lockd): `flock` on `datasets/<profile>/.catalog.lock`; the kernel releases it when its
  holder dies.
- S3 (s3fs): an object `datasets/<profile>/.catalog.lock`, created with a conditional PUT
  (`If-None-Match: *`: only one creator wins), holding its holder and an expiry. The holder
  renews it every RENEW_S with `If-Match` on the ETag it wrote, and deletes it on release with
  `If-Match` too, so it never removes a lock another process took over. A lock whose holder
  died (not renewed for EXPIRES_S) is taken over, again with `If-Match` on the ETag that was
  read, so two waiters cannot both take it. This assumes the machines' clocks agree to within
  a few seconds (EXPIRES_S is 120 s) and a holder that stalls (SIGSTOP, a frozen VM) for longer
  than EXPIRES_S can lose the lock while it works: it logs that its lock was taken.
- Other object stores (GCS, Azure): no lock. Publications and gc may then interleave: a
  catalog rebuild can miss a shard published at the same moment (the backfill's final
  reconcile, or the shard's next publication, lists it again), and gc running with no grace
  beside a publication can remove a file that is being published again under the same
  version (the publication then fails, naming the file; the next run writes it again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from cog_assets.store import layout

if TYPE_CHECKING:
    from cog_assets.store.content_store import ContentStore

log = logging.getLogger(__name__)

EXPIRES_S = 120.0  # an object lock not renewed for this long is taken over
RENEW_S = 20.0
WAIT_S = 900.0  # how long a publication or gc waits for the lock before giving up
POLL_S = 0.5


class LockTimeout(TimeoutError):
    """The dataset's lock stayed held by another process for WAIT_S."""


@contextlib.contextmanager
def dataset_lock(store: ContentStore, dataset_dir: str) -> Iterator[None]:
    """Hold the dataset's lock for the `with` block (see the module's note per filesystem)."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(store.fs, LocalFileSystem):
        with _file_lock(store, dataset_dir):
            yield
    elif _is_s3(store):
        with ObjectLock(store, f"{dataset_dir}/{layout.CATALOG_LOCK}"):
            yield
    else:
        yield


@contextlib.contextmanager
def _file_lock(store: ContentStore, dataset_dir: str) -> Iterator[None]:
    import fcntl

    store.fs.makedirs(dataset_dir, exist_ok=True)
    with open(f"{dataset_dir}/{layout.CATALOG_LOCK}", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_s3(store: ContentStore) -> bool:
    protocols = (store.fs.protocol,) if isinstance(store.fs.protocol, str) else store.fs.protocol
    return any(p in ("s3", "s3a") for p in protocols)


def _precondition_failed(exc: BaseException) -> bool:
    """Whether S3 refused a conditional write: HTTP 412, or 409 (a concurrent conditional
    write). s3fs raises them as OSError(EINVAL), as it does every other 400, so the code is
    read from the botocore error it wraps, else from the message."""
    if isinstance(exc, FileExistsError):
        return True
    response = getattr(exc.__cause__, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
        return True
    text = str(exc).lower().replace("-", "")
    return ("precondition" in text or "conditionalrequestconflict" in text
            or "conflicting conditional" in text)


class ObjectLock:
    """The S3 lock object: taken with If-None-Match, renewed and released with If-Match."""

    def __init__(self, store: ContentStore, path: str, *, expires_s: float = EXPIRES_S,
                 renew_s: float = RENEW_S, wait_s: float = WAIT_S):
        self.store, self.path = store, path
        self.expires_s, self.renew_s, self.wait_s = expires_s, renew_s, wait_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"holder": self.holder,
                           "expires_at": time.time() + self.expires_s}).encode()

    def _put(self, **conditions) -> str:
        out = self.store.fs.pipe_file(self.path, self._body(), **conditions)
        self.store.fs.invalidate_cache(self.path)
        return (out or {}).get("ETag") or self.store.fs.info(self.path, refresh=True)["ETag"]

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                self.etag = self._put(mode="create")
                return
            except OSError as exc:
                if not _precondition_failed(exc):
                    raise
            if self._take_over_if_expired():
                return
            if time.monotonic() > deadline:
                raise LockTimeout(f"{self.store.local_path(self.path)} is held by "
                                  f"{self._read().get('holder', 'another process')}; gave up "
                                  f"after {self.wait_s:g} s")
            time.sleep(POLL_S)

    def _read(self) -> dict:
        try:
            return json.loads(self.store.fs.cat_file(self.path))
        except (FileNotFoundError, ValueError):
            return {}

    def _take_over_if_expired(self) -> bool:
        try:
            etag = self.store.fs.info(self.path, refresh=True)["ETag"]
        except FileNotFoundError:
            return False  # released meanwhile: try to create it again
        held = self._read()  # the ETag read first: a newer lock makes If-Match fail below
        if float(held.get("expires_at", 0)) > time.time():
            return False
        try:
            self.etag = self._put(IfMatch=etag)
        except OSError as exc:
            if _precondition_failed(exc):
                return False  # renewed, released or taken by another waiter
            raise
        log.warning("took over the lock %s of %s, which was not renewed in time",
                    self.path, held.get("holder"))
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.etag = self._put(IfMatch=self.etag)
            except OSError as exc:
                if _precondition_failed(exc):
                    self.lost = True
                    log.error("the lock %s was taken by another process while held by %s",
                              self.path, self.holder)
                    return
                log.warning("could not renew the lock %s: %s", self.path, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost or self.etag is None:
            return
        bucket, key, _ = self.store.fs.split_path(self.path)
        try:
            self.store.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=self.etag)
        except OSError as exc:
            if not _precondition_failed(exc):
                log.warning("could not release the lock %s: %s (it expires by itself)",
                            self.path, exc)
        self.store.fs.invalidate_cache(self.path)

    def __enter__(self) -> "ObjectLock":
        self.acquire()
        self._thread = threading.Thread(target=self._renew, name=f"lock-{self.holder}",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
