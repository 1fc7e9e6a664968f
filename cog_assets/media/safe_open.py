"""Opening an uploaded file as an attacker cannot steer it: the one way media is opened.

Every upload is treated as hostile. Probe, decode, the I2V image reader and the hashing of
videos all open files here, so that:

- only a **regular file** is ever opened: its type is checked with `stat` before any `open`
  (a FIFO, device, socket or directory is refused without blocking on it), and the file is
  opened with `O_NOFOLLOW | O_NONBLOCK` and checked again with `fstat`;
- nothing is read through a symlink that **leaves the data root**: the path is resolved and
  checked, and after opening, the descriptor itself (`/proc/self/fd/N`) is resolved and checked
  again, so swapping a directory for a symlink between the check and the open gains nothing;
- FFmpeg reads that very descriptor (`/proc/self/fd/N`: no extension for it to pick a
  demuxer by) with its **protocol whitelist limited to `file`** and a **format whitelist of
  single-file media containers** (`ALLOWED_DEMUXERS`): playlists, concat lists, image
  sequences, HLS/DASH and any demuxer that opens other files are refused before their header
  is read, as `unsupported_container` naming the detected format;
- a file that changed since it was hashed (its `FileStamp` differs), when it is opened or
  after it was read, is `deferred`: the bytes read are always the bytes hashed.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import av
import av.logging

from cog_assets.core.reasons import RejectReason

from .errors import MediaError

__all__ = ["ALLOWED_DEMUXERS", "FileStamp", "open_regular_file", "open_media",
           "hash_at_rest", "display_rotation_ccw"]

# FFmpeg demuxers of single-file media containers (names as FFmpeg matches them against a
# demuxer's comma-separated names: "mov" is mov,mp4,m4a,3gp,3g2,mj2; "matroska" is
# matroska,webm). None of them opens another file: mov's external data references are off
# (`enable_drefs` 0, also set explicitly). The audio-only ones are here so that an audio file
# is called what it is (no video stream), not an unknown container.
ALLOWED_DEMUXERS = ("mov", "matroska", "avi", "mpegts", "flv", "ogg", "asf", "mpeg", "mxf",
                    "ivf", "nut", "wav", "mp3", "flac", "aac")
_OPEN_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": ",".join(ALLOWED_DEMUXERS)}
_CONTAINER_OPTIONS = {"enable_drefs": "0"}
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a file's bytes without reading them: the inode, size,
    and modification and change times. `ctime` cannot be set by the writer (`touch -d` moves
    it to now), so bytes rewritten under a restored mtime still change the stamp."""

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "FileStamp":
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def text(self) -> str:
        return f"{self.inode}:{self.size}:{self.mtime_ns}:{self.ctime_ns}"

    @classmethod
    def parse(cls, text: str | None) -> "FileStamp | None":
        return cls(*map(int, text.split(":"))) if text else None

    def age_s(self, now_ns: int | None = None) -> float:
        """Seconds since the file's bytes or inode last changed."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        return (now_ns - max(self.mtime_ns, self.ctime_ns)) / 1e9

    def differences(self, other: "FileStamp") -> str:
        """What moved between `self` (before) and `other` (after), for messages."""
        parts = []
        if self.inode != other.inode:
            parts.append("replaced by another file")
        if self.size != other.size:
            parts.append(f"size {self.size} -> {other.size} bytes")
        if self.mtime_ns != other.mtime_ns or self.ctime_ns != other.ctime_ns:
            parts.append("modified")
        return ", ".join(parts) or "unchanged"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _descriptor_path(fd: int) -> str | None:
    """A path naming exactly this open file, for FFmpeg's `file` protocol to open."""
    for base in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(base):
            return f"{base}/{fd}"
    return None


def open_regular_file(path: str | os.PathLike, root: str | os.PathLike | None = None) -> int:
    """A read-only descriptor of `path`, which must be a regular file (inside `root` when
    given, after every symlink). Raises MediaError: missing_file, not_a_file,
    path_outside_root, invalid_path or unreadable. The caller closes the descriptor."""
    name = os.fspath(path)
    if "\x00" in name:
        raise MediaError(RejectReason.invalid_path, f"{name!r} holds a NUL byte")
    real = os.path.realpath(name)
    real_root = os.path.realpath(root) if root is not None else None
    if real_root is not None and not _inside(real, real_root):
        raise MediaError(RejectReason.path_outside_root,
                         f"{name} resolves to {real}, outside the data root {real_root}")
    try:
        before = os.stat(real)  # never blocks, whatever the file is
    except FileNotFoundError:
        raise MediaError(RejectReason.missing_file, f"{name} does not exist") from None
    except OSError as exc:
        raise MediaError(RejectReason.unreadable, f"cannot stat {name}: {exc.strerror}") from None
    if not stat.S_ISREG(before.st_mode):
        raise MediaError(RejectReason.not_a_file,
                         f"{name} is {_kind(before.st_mode)}, not a regular file")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                     | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MediaError(RejectReason.missing_file, f"{name} does not exist") from None
    except OSError as exc:  # ELOOP: it became a symlink since the check
        raise MediaError(RejectReason.unreadable, f"cannot open {name}: {exc.strerror}") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
                before.st_dev, before.st_ino):
            raise MediaError(RejectReason.deferred,
                             f"{name} was replaced while being opened; retried later")
        if real_root is not None:
            where = _descriptor_path(fd)
            actual = os.path.realpath(where) if where and where.startswith("/proc") else real
            if not _inside(actual, real_root):
                raise MediaError(RejectReason.path_outside_root,
                                 f"{name} was opened as {actual}, outside the data root "
                                 f"{real_root} (a directory on its path was swapped)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_unchanged(name: str, fd: int, expect: FileStamp | None, when: str) -> FileStamp:
    now = FileStamp.of(os.fstat(fd))
    if expect is not None and now != expect:
        raise MediaError(RejectReason.deferred,
                         f"{name} changed {when} ({expect.differences(now)}); it is still being "
                         "written or was replaced: retried on a later run")
    return now


def hash_at_rest(path: str | os.PathLike, root: str | os.PathLike | None = None,
                 settle_s: float = 0.0, known: tuple[int, int, str] | None = None
                 ) -> tuple[FileStamp, str]:
    """(stamp, sha256) of a file that is not being written: younger than `settle_s`, or
    changed while it was being hashed, is `deferred` (MediaError). `known` is (size,
    mtime_ns, sha256) hashed earlier (by the upload sensor): used when size and mtime match."""
    name = os.fspath(path)
    fd = open_regular_file(path, root)
    try:
        before = FileStamp.of(os.fstat(fd))
        age = before.age_s()
        if age < settle_s:
            raise MediaError(RejectReason.deferred,
                             f"{name} changed {max(age, 0):.1f} s ago, less than settle_s = "
                             f"{settle_s:g} s: it may still be being written; retried later")
        if known is not None and tuple(known[:2]) == (before.size, before.mtime_ns):
            return before, known[2]
        digest = hashlib.sha256()
        while chunk := os.read(fd, HASH_CHUNK):
            digest.update(chunk)
        _check_unchanged(name, fd, before, "while it was being hashed")
        return before, digest.hexdigest()
    finally:
        os.close(fd)


@contextmanager
def _ffmpeg_logs(level: int) -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg's log lines of this thread at `level` and above, in (level, context, message)
    form (the context of a demuxer's lines is its format name); PyAV's settings restored."""
    previous, repeated = av.logging.get_level(), av.logging.get_skip_repeated()
    if previous is None or previous < level:
        av.logging.set_level(level)
    av.logging.set_skip_repeated(False)  # two files in a row refused alike: name both
    try:
        with av.logging.Capture() as logs:
            yield logs
    finally:
        av.logging.set_skip_repeated(repeated)
        av.logging.set_level(previous)


_NOT_ON_WHITELIST = "not on whitelist"
_HLS_BY_CONTENT = "Not detecting m3u8/hls"


def _refused_format(logs: list[tuple[int, str, str]]) -> str | None:
    """The detected format FFmpeg refused, from its log (None: it detected none)."""
    for _, context, message in logs:
        if _NOT_ON_WHITELIST in message:
            return context or "unknown"
        if _HLS_BY_CONTENT in message:  # an HLS playlist under another name
            return "hls"
    return None


@contextmanager
def open_media(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
               expect: FileStamp | None = None, headers_only: bool = False
               ) -> Iterator[av.container.InputContainer]:
    """The PyAV container of a regular file inside `root`, read by FFmpeg through its own
    descriptor, restricted to local single-file containers. `expect`: the stamp the file had
    when hashed; a file that differs when opened or once the caller is done is `deferred`.
    `headers_only`: FFmpeg's stream analysis decodes no frame (`skip_frame=all`; it otherwise
    decodes the first frames, at full size, to complete what the headers leave out, such as
    the pixel format), for a first look at a file's size and duration.

    Raises MediaError: the reasons of `open_regular_file`, empty_file, unsupported_container
    (the detected format named), unreadable or deferred."""
    name = os.fspath(path)
    fd = open_regular_file(path, root)
    try:
        stamp = _check_unchanged(name, fd, expect, "since it was hashed")
        if stamp.size == 0:
            raise MediaError(RejectReason.empty_file, f"{name} has zero bytes")
        source = _descriptor_path(fd) or os.path.realpath(name)
        with _ffmpeg_logs(av.logging.ERROR) as logs:
            try:
                options = {**_OPEN_OPTIONS, **({"skip_frame": "all"} if headers_only else {})}
                container = av.open(source, options=options,
                                    container_options=dict(_CONTAINER_OPTIONS))
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                refused = _refused_format(logs)
                if refused is not None:
                    raise MediaError(RejectReason.unsupported_container, (
                        f"{name} is {refused!r}, not a single-file media container (allowed: "
                        f"{', '.join(ALLOWED_DEMUXERS)}); FFmpeg was not let read it")) from None
                reason = getattr(exc, "strerror", None) or str(exc)
                raise MediaError(RejectReason.unreadable,
                                 f"FFmpeg cannot open {name}: {reason}") from None
        with container:
            yield container
        _check_unchanged(name, fd, stamp, "while it was being read")
    finally:
        os.close(fd)


_STREAM = re.compile(r"Stream #\d+:(\d+)")
_DISPLAY_MATRIX = re.compile(r"display ?matrix", re.IGNORECASE)
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")


def display_rotation_ccw(container: av.container.InputContainer, stream_index: int
                         ) -> float | None:
    """The counter-clockwise angle of the stream's display matrix, read from its headers
    (FFmpeg's stream side data, as `av_dump_format` prints it), without decoding a frame.
    0.0 when the stream has no display matrix; None when it cannot be read."""
    with _ffmpeg_logs(av.logging.INFO):
        dump = container.dumps_format()
    current, seen = None, False
    for line in dump.splitlines():
        found = _STREAM.search(line)
        if found:
            current = int(found.group(1))
            seen = seen or current == stream_index
            continue
        if current == stream_index and _DISPLAY_MATRIX.search(line):
            angle = _ROTATION.search(line)
            return float(angle.group(1)) if angle else None
    return 0.0 if seen else None
