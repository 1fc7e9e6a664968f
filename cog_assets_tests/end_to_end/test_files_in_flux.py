"""Files still being written are deferred, not accepted wrongly (issue 12).

A video younger than `settle_s`, or whose stamp (inode, size, mtime, ctime) moves while it is
hashed or between hashing and reading, becomes a `deferred` row: retried on a later run, with
the hash of the bytes actually read. The upload scanner hashes the same way: a file in flux
gets no hash yet, and its shard's fingerprint waits for it. Real files, real threads writing.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from cog_assets.core.config import MediaLimits, SourceSettings
from cog_assets.core.profiles import get_profile
from cog_assets.media.errors import MediaError
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.media.safe_open import hash_at_rest
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.sources.uploads import LocalLister, refresh_snapshot, shard_fingerprints
from cog_assets.stages.frames import extract_frames
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.validation import validate_clips
from cog_assets.store.content_store import ContentStore

SHARD = "shard-00000"
POLICY = FramePolicy.build(get_profile("tiny"))


def _sources(root: Path, **more) -> SourceSettings:
    return SourceSettings(data_root=str(root), shard_count=1, **more)


def _row(frame: pl.DataFrame, clip_id: str) -> dict:
    return next(r for r in frame.iter_rows(named=True) if r["clip_id"] == clip_id)


class SlowWriter(threading.Thread):
    """Appends `data` to `path` a chunk at a time, as an upload arriving over the network."""

    def __init__(self, path: Path, data: bytes, chunk: int, pause_s: float):
        super().__init__(daemon=True)
        self.path, self.data, self.chunk, self.pause_s = path, data, chunk, pause_s

    def run(self) -> None:
        with open(self.path, "ab", buffering=0) as handle:
            for start in range(0, len(self.data), self.chunk):
                handle.write(self.data[start:start + self.chunk])
                time.sleep(self.pause_s)


def test_a_file_younger_than_settle_s_is_deferred(tmp_path):
    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    waiting = build_manifest(_sources(root, settle_s=3600.0), SHARD)
    assert set(waiting["issue_reason"]) == {"deferred"}
    assert all("settle_s" in m for m in waiting["issue_message"])
    ready = build_manifest(_sources(root), SHARD)
    assert ready["issue_reason"].is_null().all() and ready["content_hash"].is_not_null().all()


def test_a_file_that_grows_while_it_is_hashed_is_deferred(tmp_path):
    path = tmp_path / "big.mp4"
    path.write_bytes(os.urandom(96 << 20))  # long enough to hash that appends land inside
    writer = SlowWriter(path, b"x" * (4 << 20), chunk=4096, pause_s=0.001)
    writer.start()
    try:
        with pytest.raises(MediaError) as info:
            hash_at_rest(path, tmp_path)
    finally:
        writer.join()
    assert info.value.reason == "deferred" and "while it was being hashed" in info.value.message
    stamp, digest = hash_at_rest(path, tmp_path)  # at rest now: the hash of the final bytes
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert stamp.size == (100 << 20)


def test_a_video_changed_after_hashing_is_deferred_by_the_stage_that_reads_it(tmp_path):
    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    manifest = build_manifest(_sources(root), SHARD)
    validated = validate_clips(manifest, root, POLICY, MediaLimits(), workers=0)
    assert validated["accepted"].all()
    changed = root / "clips" / "clip_01.mp4"
    with open(changed, "ab") as handle:  # the uploader rewrites it after the manifest hashed it
        handle.write(b"\0" * 10)
    frames, stats = extract_frames(validated, root, ContentStore(str(tmp_path / "store")),
                                   POLICY, workers=0, decode_timeout_s=None)
    row = _row(frames, "clips/clip_01.mp4")
    assert (row["status"], row["reason"]) == ("rejected", "deferred")
    assert "changed since it was hashed" in row["message"] and "size" in row["message"]
    assert _row(frames, "clips/clip_00.mp4")["status"] == "computed"
    # probing after the change defers it as well
    again = validate_clips(manifest, root, POLICY, MediaLimits(), workers=0)
    assert _row(again, "clips/clip_01.mp4")["reason"] == "deferred"


def test_a_growing_upload_waits_until_it_settles_and_is_then_hashed_whole(tmp_path):
    """The manifest defers it and the scanner leaves its shard's fingerprint pending while it
    grows; once it has settled, both take the hash of the complete file."""
    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    clip = root / "clips" / "clip_01.mp4"
    final = clip.read_bytes()
    clip.write_bytes(final[:1024])
    sources = _sources(root, settle_s=0.5)
    lister = LocalLister(root, sources.settle_s)
    writer = SlowWriter(clip, final[1024:], chunk=max(1, len(final) // 40), pause_s=0.05)
    writer.start()
    try:
        growing = build_manifest(sources, SHARD)
        scan = refresh_snapshot(None, lister)
    finally:
        writer.join()
    assert _row(growing, "clips/clip_01.mp4")["issue_reason"] == "deferred"
    assert dict(zip(scan.snapshot["path"], scan.snapshot["sha256"]))["clips/clip_01.mp4"] is None
    assert scan.pending >= 1
    assert shard_fingerprints(sources, scan.snapshot) == {SHARD: None}  # not reported yet
    time.sleep(sources.settle_s + 0.1)
    settled = build_manifest(sources, SHARD)
    row = _row(settled, "clips/clip_01.mp4")
    assert row["issue_reason"] is None
    assert row["content_hash"] == hashlib.sha256(final).hexdigest()
    later = refresh_snapshot(scan.snapshot, lister)
    assert later.pending == 0 and "clips/clip_01.mp4" in later.changed_files
    assert shard_fingerprints(sources, later.snapshot)[SHARD] is not None


def test_the_scanner_never_follows_a_symlink_out_of_the_root_or_opens_a_fifo(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_test_dataset(root, 1, broken=False)
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"outside bytes")
    (root / "link_out.mp4").symlink_to(outside / "secret.mp4")
    (root / "link_in.mp4").symlink_to(root / "clips" / "clip_00.mp4")
    os.mkfifo(root / "pipe.mp4")
    scan = refresh_snapshot(None, LocalLister(root))
    listed = dict(zip(scan.snapshot["path"], scan.snapshot["sha256"]))
    assert "link_out.mp4" not in listed and "pipe.mp4" not in listed
    assert listed["link_in.mp4"] == listed["clips/clip_00.mp4"] is not None
