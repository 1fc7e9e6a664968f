import polars as pl
import pytest

from cog_assets.config import SourceSettings
from cog_assets.sources import ManifestError, read_manifests


def _read(root, **columns):
    return read_manifests(SourceSettings(data_root=str(root), **columns))


def _touch(root, *names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really a video")


def test_two_file_layout_pairs_lines(tmp_path):
    _touch(tmp_path, "videos/a.mp4", "videos/b.mp4")
    (tmp_path / "videos.txt").write_text("videos/a.mp4\nvideos/b.mp4\n")
    (tmp_path / "prompts.txt").write_text("first caption\nsecond caption\n")
    rows = _read(tmp_path)
    assert [(r.clip_id, r.caption, r.source) for r in rows] == [
        ("videos/a.mp4", "first caption", "videos.txt:1"),
        ("videos/b.mp4", "second caption", "videos.txt:2"),
    ]
    assert all(r.issue_reason is None for r in rows)


def test_prompt_txt_bom_and_crlf_are_read(tmp_path):
    _touch(tmp_path, "a.mp4")
    (tmp_path / "videos.txt").write_bytes(b"\xef\xbb\xbfa.mp4\r\n")
    (tmp_path / "prompt.txt").write_bytes("caf\u00e9 scene\r\n".encode())
    [row] = _read(tmp_path)
    assert (row.clip_id, row.caption) == ("a.mp4", "caf\u00e9 scene")


def test_line_count_mismatch_names_both_files_and_counts(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4")
    (tmp_path / "videos.txt").write_text("a.mp4\nb.mp4\n")
    (tmp_path / "prompts.txt").write_text("only one\n")
    with pytest.raises(ManifestError) as err:
        _read(tmp_path)
    message = str(err.value)
    assert "prompts.txt has 1 lines" in message and "videos.txt has 2" in message


def test_row_problems_are_recorded_not_raised(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4")
    (tmp_path.parent / "outside.mp4").write_bytes(b"x")
    (tmp_path / "link.mp4").symlink_to(tmp_path.parent / "outside.mp4")
    (tmp_path / "videos.txt").write_text(
        "a.mp4\n../outside.mp4\n/etc/passwd\nmissing.mp4\nb.mp4\na.mp4\nlink.mp4\n")
    (tmp_path / "prompts.txt").write_text("ok\nescape\nabsolute\nmissing\n \ndup\nsymlink\n")
    reasons = [(r.source, r.issue_reason) for r in _read(tmp_path)]
    assert reasons == [
        ("videos.txt:1", None), ("videos.txt:2", "path_outside_root"),
        ("videos.txt:3", "path_outside_root"), ("videos.txt:4", "missing_file"),
        ("videos.txt:5", "caption_empty"), ("videos.txt:6", "duplicate_path"),
        ("videos.txt:7", "path_outside_root"),
    ]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_tables_with_configurable_columns(tmp_path, suffix):
    _touch(tmp_path, "clips/x.mp4", "clips/y.mp4")
    frame = pl.DataFrame({"file": ["clips/x.mp4", "clips/y.mp4"], "desc": ["ex", "why"]})
    path = tmp_path / f"meta{suffix}"
    {".csv": frame.write_csv, ".jsonl": frame.write_ndjson, ".parquet": frame.write_parquet}[
        suffix](path)
    rows = _read(tmp_path, caption_column="desc", video_column="file")
    assert [(r.clip_id, r.caption) for r in rows] == [("clips/x.mp4", "ex"), ("clips/y.mp4", "why")]
    expected_line = 2 if suffix == ".csv" else 1
    assert rows[0].source == f"meta{suffix}:{expected_line}"


def test_table_without_the_named_column_is_a_clear_error(tmp_path):
    pl.DataFrame({"video": ["a.mp4"], "words": ["x"]}).write_csv(tmp_path / "m.csv")
    with pytest.raises(ManifestError, match=r"m.csv: no caption column"):
        _read(tmp_path)


def test_empty_root_says_what_was_expected(tmp_path):
    with pytest.raises(ManifestError, match="prompts.txt \\+ videos.txt"):
        _read(tmp_path)


def test_manifest_reuses_hashes_the_sensor_already_took(tmp_path):
    import hashlib

    from cog_assets.stages.manifest import build_manifest

    _touch(tmp_path, "a.mp4", "b.mp4")
    (tmp_path / "videos.txt").write_text("a.mp4\nb.mp4\n")
    (tmp_path / "prompts.txt").write_text("one\ntwo\n")
    a, b = (tmp_path / "a.mp4").stat(), (tmp_path / "b.mp4").stat()
    known = {"a.mp4": (a.st_size, a.st_mtime_ns, "hash-from-the-sensor"),
             "b.mp4": (b.st_size, b.st_mtime_ns + 1, "stale")}  # b moved since: re-hashed
    frame = build_manifest(SourceSettings(data_root=str(tmp_path), shard_count=1), "shard-00000",
                           known=known).sort("clip_id")
    assert frame["content_hash"].to_list() == [
        "hash-from-the-sensor", hashlib.sha256(b"not really a video").hexdigest()]
