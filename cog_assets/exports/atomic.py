"""Writes that either land whole or not at all.

Trainers take a file's existence as proof it is complete (CogVideo's cache is consulted by
`path.exists()`), so every file is written to a hidden temporary name in the same directory,
flushed to disk and only then renamed over its final name.

A whole export is written into a fresh folder and swapped in at once (`fresh_folder`): the
export's path is a link to its current version, replaced by one rename, so no file of an
earlier export (an old manifest, a stem that no longer exists) survives a new one.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import torch


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A hidden temporary name beside `path`, renamed over it in one step if the block
    finishes and removed if it does not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary handle whose content appears at `path` only if the block finishes."""
    with _replacing(path) as tmp, open(tmp, "xb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


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
    with _replacing(path) as tmp:
        os.symlink(target, tmp)
    return path


def link_or_copy(path: Path, target: Path) -> Path:
    """Make `path` a hard link to the file `target` (the same bytes, no more space, a real
    file wherever the export is copied or moved), replacing whatever was there in one rename;
    a copy where the filesystem cannot link (another device, no hard links)."""
    try:
        with _replacing(path) as tmp:
            os.link(target, tmp)
    except OSError:
        copy_file(path, target)
    return path


def copy_file(path: Path, source: Path) -> Path:
    """A copy of the file `source` at `path`, landing whole or not at all."""
    with atomic_file(path) as handle, open(source, "rb") as original:
        shutil.copyfileobj(original, handle)
    return path


def _version_prefix(out: Path) -> str:
    return f".{out.name}."


def _own_version(out: Path) -> Path | None:
    """The folder the link `out` points at, if it is one of our versions beside it; a link
    the user made to a folder of their own (say a bigger disk) is replaced, never emptied."""
    target = out.parent / os.readlink(out)
    ours = target.parent == out.parent and target.name.startswith(_version_prefix(out))
    return target if ours else None


@contextmanager
def fresh_folder(out: Path) -> Iterator[Path]:
    """An empty folder to write a new version of `out` into. If the block finishes, `out`
    becomes a link to it in one rename and the previous version is removed; if not, the new
    folder is removed and `out` is as it was. `out` must not be a path inside the folder."""
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    version = out.parent / f"{_version_prefix(out)}{stamp}"
    version.mkdir()
    try:
        yield version
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    previous = _own_version(out) if out.is_symlink() else None
    if out.exists() and not out.is_symlink():  # a plain folder from an older cog-assets
        previous = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:8]}"
        os.replace(out, previous)
    symlink(out, Path(version.name))  # relative: the store can move
    if previous is not None and previous.resolve() != version.resolve():
        shutil.rmtree(previous, ignore_errors=True)
