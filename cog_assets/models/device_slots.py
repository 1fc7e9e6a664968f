"""One GPU per concurrent GPU step on a multi-GPU host.

The `gpu` pool caps how many GPU steps run at once (set its limit to the number of GPUs);
this decides *where* each one runs. A step claims a free device index by taking an exclusive
`flock` on the file `gpu-<index>.lock` in a directory every process of the host shares, and
holds it until the step ends. The kernel drops the lock when its process dies (kill -9
included), so a crashed step never leaves a GPU claimed. Knows nothing of torch or Dagster.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POLL_S = 0.2

log = logging.getLogger(__name__)


def default_lock_dir() -> Path:
    """Shared by every user's processes on the host, as the GPUs are."""
    return Path(tempfile.gettempdir()) / "cog-assets-gpus"


def needs_claim(device: str, visible_gpus: int) -> bool:
    """Whether a step on the `device` setting picks its GPU here: `auto` and `cuda` leave the
    choice to us, `cuda:N` and `cpu` do not; with one GPU there is nothing to choose."""
    return device in ("auto", "cuda") and visible_gpus > 1


def _lock_file(lock_dir: Path, index: int) -> int:
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:  # any user's step may lock here, as they share the GPUs
        os.chmod(lock_dir, 0o1777)
    except PermissionError:
        pass
    old = os.umask(0)
    try:
        return os.open(lock_dir / f"gpu-{index}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    finally:
        os.umask(old)


def _try_claim(lock_dir: Path, index: int) -> int | None:
    fd = _lock_file(lock_dir, index)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
    return fd


@contextmanager
def claim_gpu(count: int, lock_dir: str | os.PathLike | None = None,
              prefer: int | None = None) -> Iterator[int]:
    """Hold a free GPU index in [0, count) for the `with` block; `prefer` (the one this
    process's models are already on) is tried first. With every index taken, wait for one."""
    if count < 1:
        raise ValueError(f"no GPU to claim among {count}")
    folder = Path(lock_dir) if lock_dir else default_lock_dir()
    start = os.getpid() % count  # processes starting together try different GPUs first
    order = [(start + i) % count for i in range(count)]
    if prefer is not None and 0 <= prefer < count:
        order.remove(prefer)
        order.insert(0, prefer)
    waited = False
    while True:
        for index in order:
            fd = _try_claim(folder, index)
            if fd is not None:
                break
        else:
            if not waited:
                log.warning("all %d GPUs are claimed by other steps (see %s); waiting for one. "
                            "Set the gpu pool's limit to %d.", count, folder, count)
                waited = True
            time.sleep(POLL_S)
            continue
        break
    try:
        yield index
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
