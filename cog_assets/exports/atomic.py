"""Writes that either land whole or not at all.

Trainers take a file's existence as proof it is complete (CogVideo's cache is consulted by
`path.exists()`), so every file is written to a hidden temporary name in the same directory,
flushed to disk and only then renamed over its final name.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import torch


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary handle whose content appears at `path` only if the block finishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_file(path) as handle:
        handle.write(data)
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    """One entry per line, utf-8, '\\n' endings: what `open(...).readlines()` reads back."""
    return write_bytes(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))


def save_tensor(path: Path, tensor: torch.Tensor) -> Path:
    """torch.save of a standalone contiguous copy, so no larger shared storage is pickled."""
    buffer = io.BytesIO()
    torch.save(tensor.contiguous().clone(), buffer)
    return write_bytes(path, buffer.getvalue())


def symlink(path: Path, target: Path) -> Path:
    """Point `path` at `target`, replacing whatever was there in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
