"""Leases: what a running step holds in the store, so that nothing removes it meanwhile.

Frames are dropped once a shard is published and `cog-assets gc` removes what no live shard
references, but a run in progress uses artefacts no catalog names yet (a shard never
published, new frames and latents, the next version of a shard's files) and artefacts another
shard is about to drop (the same clip in two shards). Each step of a run therefore writes

    state/leases/<run id>.<step>.json
        {"holder", "host", "pid", "expires_at", "keys": {kind: [key, ...]}, "paths": [glob, ...]}

listing the artefact keys it reads or writes and the store paths (globs relative to the
store's root: its shard's dataset folder and tables) it works on, *before* it relies on them.
While the step runs, a thread renews the lease every RENEW_S seconds for ALIVE_S seconds, so a
step killed with SIGKILL holds nothing a few minutes later. A step that ends hands its keys on
to the next steps of its run for HANDOVER_S (a run waits between steps: for a `gpu` pool slot,
a worker); the run's last step, training_dataset, gives back all of its run's leases once its
shard is published. Whoever removes artefacts (gc, frame retention) skips held keys and paths.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cog_assets.store import layout

if TYPE_CHECKING:
    from cog_assets.store.content_store import ContentStore

RENEW_S = 20.0  # how often a running step renews its lease
ALIVE_S = 120.0  # how long a renewal holds: a killed step's lease is gone this long after
HANDOVER_S = 6 * 3600.0  # how long a finished step's keys stay held for the rest of its run


@dataclass(frozen=True)
class HeldSet:
    """Everything the live leases of a store hold."""

    keys: dict[str, set[str]] = field(default_factory=dict)  # kind -> keys
    paths: tuple[str, ...] = ()  # globs relative to the store's root
    holders: tuple[str, ...] = ()

    def holds_key(self, kind: str, key: str) -> bool:
        return key in self.keys.get(str(kind), ())

    def holds_path(self, relative: str) -> bool:
        return any(fnmatch.fnmatchcase(relative, glob) for glob in self.paths)


class Lease:
    """A step's lease: `hold` keys and paths (written at once), renewed in the background
    while the `with` block runs; on leaving it, handed over to the run or `release`d."""

    def __init__(self, store: ContentStore, holder: str, *, paths: Iterable[str] = (),
                 handover_s: float = HANDOVER_S):
        """`handover_s`: how long the lease holds after the block (0: given back at once)."""
        self.store, self.holder, self.handover_s = store, holder, handover_s
        self.path = store.path(layout.lease_path(holder))
        self._keys: dict[str, set[str]] = {}
        self._paths = set(paths)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._expires_at = 0.0

    def hold(self, kind: str, keys: Iterable[str | None]) -> None:
        """Hold `keys` of `kind` from now on (the lease is written before this returns)."""
        self.hold_all({kind: keys})

    def hold_all(self, keys: Mapping[str, Iterable[str | None]]) -> None:
        """Hold keys of several kinds ({kind: keys}) with one write of the lease."""
        new = {str(kind): {k for k in values if k} - self._keys.get(str(kind), set())
               for kind, values in keys.items()}
        if any(new.values()):
            with self._lock:
                for kind, values in new.items():
                    self._keys.setdefault(kind, set()).update(values)
                self._write(time.time() + ALIVE_S)

    def __enter__(self) -> "Lease":
        self._write(time.time() + ALIVE_S)
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.holder}",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            try:
                if self.handover_s > 0:
                    self._write(time.time() + self.handover_s)
                else:
                    self.store.fs.rm(self.path)
            except OSError:  # unreachable store: the lease lapses by itself (ALIVE_S)
                pass

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            with self._lock:
                try:
                    self._write(time.time() + ALIVE_S)
                except OSError:  # a store that is briefly unreachable: try again next time
                    pass

    def _write(self, expires_at: float) -> None:
        self._expires_at = expires_at
        self.store.write_json(self.path, {
            "holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(),
            "expires_at": expires_at, "paths": sorted(self._paths),
            "keys": {kind: sorted(keys) for kind, keys in sorted(self._keys.items())}})


def run_holder(run_id: str, step: str) -> str:
    return f"{run_id}.{step}"


def release_run(store: ContentStore, run_id: str) -> None:
    """Give back every lease of a run (its last step is done)."""
    for path in _lease_files(store):
        if path.rsplit("/", 1)[-1].startswith(f"{run_id}."):
            try:
                store.fs.rm(path)
            except FileNotFoundError:
                pass


def held(store: ContentStore, *, now: float | None = None, excluding_run: str | None = None
         ) -> HeldSet:
    """What the store's live leases hold (those of `excluding_run` left out: a run does not
    keep itself from dropping what it is done with)."""
    now = time.time() if now is None else now
    keys: dict[str, set[str]] = {}
    paths: list[str] = []
    holders: list[str] = []
    for path in _lease_files(store):
        if excluding_run and path.rsplit("/", 1)[-1].startswith(f"{excluding_run}."):
            continue
        lease = _read(store, path)
        if lease is None or float(lease.get("expires_at", 0)) <= now:
            continue
        holders.append(str(lease.get("holder")))
        paths += [str(p) for p in lease.get("paths", [])]
        for kind, values in (lease.get("keys") or {}).items():
            keys.setdefault(kind, set()).update(values)
    return HeldSet(keys, tuple(paths), tuple(holders))


def expired(store: ContentStore, *, now: float | None = None) -> list[str]:
    """Lease files that hold nothing any more (their holder ended or was killed)."""
    now = time.time() if now is None else now
    out = []
    for path in _lease_files(store):
        lease = _read(store, path)
        if lease is not None and float(lease.get("expires_at", 0)) <= now:
            out.append(path)
    return out


def _lease_files(store: ContentStore) -> list[str]:
    folder = store.path(layout.LEASES_DIR)
    try:
        return [p for p in store.fs.ls(folder, detail=False) if p.endswith(".json")]
    except FileNotFoundError:
        return []


def _read(store: ContentStore, path: str) -> dict | None:
    try:
        value = json.loads(store.read_bytes(path))
    except FileNotFoundError:
        return None
    except ValueError:  # written whole, so not a lease of ours: holds nothing
        return {"expires_at": 0}
    return value if isinstance(value, dict) else {"expires_at": 0}
