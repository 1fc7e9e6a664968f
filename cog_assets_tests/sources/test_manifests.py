import polars as pl
import pytest

from cog_assets.core.config import SourceSettings
from cog_assets.sources.manifests import ManifestError, read_manifests


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


def test_a_caption_problem_names_the_prompts_line_not_the_videos_line(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4", "c.mp4")
    (tmp_path / "videos.txt").write_text("a.mp4\nb.mp4\nc.mp4\n")
    (tmp_path / "prompts.txt").write_bytes(b"ok\n   \t \nfine\n")
    row = _read(tmp_path)[1]
    assert (row.source, row.issue_reason) == ("videos.txt:2", "caption_empty")
    assert row.issue_message == "prompts.txt:2: caption is empty"
    (tmp_path / "prompts.txt").write_bytes(b"ok\nbad \xff byte\nfine\n")
    assert _read(tmp_path)[1].issue_message == "prompts.txt:2: the caption is not valid UTF-8"


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


# -- hostile manifests: row-level errors stay row-level (issue 12) ----------------------------

def _reasons(rows):
    return [(r.source, r.issue_reason) for r in rows]


def test_invalid_utf8_rejects_only_its_row(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4", "c.mp4")
    (tmp_path / "videos.txt").write_bytes(b"a.mp4\nb\xff.mp4\nc.mp4\n")
    (tmp_path / "prompts.txt").write_bytes(b"fine\ncaf\xe9 latin-1\nalso fine\n")
    rows = _read(tmp_path)
    assert _reasons(rows) == [("videos.txt:1", None), ("videos.txt:2", "not_utf8"),
                              ("videos.txt:3", None)]
    assert "videos.txt:2" in rows[1].issue_message and "UTF-8" in rows[1].issue_message


def test_invalid_utf8_caption_in_a_csv_rejects_only_its_row(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4")
    (tmp_path / "m.csv").write_bytes(b"video,caption\na.mp4,caf\xe9\nb.mp4,fine\n")
    assert _reasons(_read(tmp_path)) == [("m.csv:2", "not_utf8"), ("m.csv:3", None)]


def test_a_malformed_jsonl_line_rejects_only_that_line(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4", "c.mp4")
    (tmp_path / "m.jsonl").write_bytes(
        b'{"video": "a.mp4", "caption": "one"}\n'
        b'{"video": "b.mp4", "caption": \n'
        b'["not", "an", "object"]\n'
        b'\n'
        b'{"video": ["c.mp4"], "caption": "a list is no path"}\n'
        b'{"video": null, "caption": "no video"}\n'
        b'{"video": "c.mp4", "caption": 42}\n')
    rows = _read(tmp_path)
    assert _reasons(rows) == [
        ("m.jsonl:1", None), ("m.jsonl:2", "malformed_row"), ("m.jsonl:3", "malformed_row"),
        ("m.jsonl:5", "malformed_row"), ("m.jsonl:6", "null_path"), ("m.jsonl:7", None)]
    assert rows[-1].caption == "42"


def test_csv_line_numbers_count_the_lines_of_multi_line_captions(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4", "c.mp4")
    (tmp_path / "m.csv").write_text(
        'video,caption\n'
        'a.mp4,"a caption\nover three\nlines"\n'
        'b.mp4,"then ""quoted"""\n'
        '\n'
        'c.mp4,after a blank line\n')
    rows = _read(tmp_path)
    assert [(r.clip_id, r.source) for r in rows] == [
        ("a.mp4", "m.csv:2"), ("b.mp4", "m.csv:5"), ("c.mp4", "m.csv:7")]
    assert rows[0].caption == "a caption\nover three\nlines" and rows[1].caption == 'then "quoted"'


def test_a_broken_csv_record_rejects_its_lines_only(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4", "c.mp4")
    (tmp_path / "m.csv").write_text('video,caption\na.mp4,"ok"x\nb.mp4,two,extra\nc.mp4,fine\n')
    assert _reasons(_read(tmp_path)) == [("m.csv:2", "malformed_row"),
                                         ("m.csv:3", "malformed_row"), ("m.csv:4", None)]


def test_null_empty_nul_and_non_file_paths_say_what_is_true(tmp_path):
    import os

    _touch(tmp_path, "a.mp4", "sub/b.mp4")
    (tmp_path / "folder.mp4").mkdir()
    os.mkfifo(tmp_path / "pipe.mp4")
    (tmp_path / "m.csv").write_bytes(
        b"video,caption\n"
        b",empty cell\n"
        b"sub\x00dir/a.mp4,a NUL in a directory part\n"
        b"folder.mp4,a directory\n"
        b"pipe.mp4,a FIFO\n"
        b"sub/../a.mp4,inside the root after all\n"
        b"sub/../../a.mp4,out of it\n"
        b"a.mp4,the same file again\n")
    rows = _read(tmp_path)
    assert _reasons(rows) == [
        ("m.csv:2", "null_path"), ("m.csv:3", "invalid_path"), ("m.csv:4", "not_a_file"),
        ("m.csv:5", "not_a_file"), ("m.csv:6", None), ("m.csv:7", "path_outside_root"),
        ("m.csv:8", "duplicate_path")]
    assert rows[4].clip_id == "a.mp4"
    assert "FIFO" in rows[3].issue_message and "directory" in rows[2].issue_message
    assert "climbs out" in rows[5].issue_message


def test_a_table_that_is_not_a_manifest_is_skipped_with_a_warning(tmp_path, caplog):
    _touch(tmp_path, "a.mp4")
    (tmp_path / "videos.txt").write_text("a.mp4\n")
    (tmp_path / "prompts.txt").write_text("a caption\n")
    (tmp_path / "scores.csv").write_text("clip,score\na.mp4,0.9\n")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with caplog.at_level("WARNING", logger="cog_assets.sources.manifests"):
        rows = _read(tmp_path)
    assert [r.clip_id for r in rows] == ["a.mp4"]
    warned = caplog.text
    assert "scores.csv" in warned and "no caption column" in warned
    assert "broken.parquet" in warned


def test_the_manifests_setting_selects_tables_and_refuses_a_named_non_manifest(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "clips.csv").write_text("path,text\nb.mp4,bee\n")
    (tmp_path / "top.csv").write_text("video,caption\na.mp4,ay\n")
    rows = _read(tmp_path, manifests=["meta/*.csv"])
    assert [(r.clip_id, r.source) for r in rows] == [("b.mp4", "meta/clips.csv:2")]
    (tmp_path / "meta" / "scores.csv").write_text("clip,score\nb.mp4,1\n")
    with pytest.raises(ManifestError, match=r"scores.csv \(named by the manifests setting\)"):
        _read(tmp_path, manifests=["meta/*.csv"])
    with pytest.raises(ValueError, match="climb out"):
        SourceSettings(data_root=str(tmp_path), manifests=["../*.csv"])


def test_manifests_are_never_read_through_a_symlink_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _touch(root, "a.mp4")
    _touch(outside, "x.mp4")
    (outside / "prompts.txt").write_text("a secret caption\n")
    (outside / "m.csv").write_text("video,caption\na.mp4,read from outside\n")
    (root / "videos.txt").write_text("a.mp4\n")
    (root / "prompts.txt").symlink_to(outside / "prompts.txt")
    with pytest.raises(ManifestError, match="prompts.txt cannot be read.*outside the data root"):
        _read(root)
    (root / "prompts.txt").unlink()
    (root / "prompts.txt").write_text("the real caption\n")
    (root / "linked.csv").symlink_to(outside / "m.csv")
    rows = _read(root)
    assert [(r.clip_id, r.caption) for r in rows] == [("a.mp4", "the real caption")]


def test_a_fifo_named_like_a_manifest_is_not_read(tmp_path):
    import os

    _touch(tmp_path, "a.mp4")
    os.mkfifo(tmp_path / "videos.txt")  # reading it would block forever
    (tmp_path / "prompts.txt").write_text("a caption\n")
    with pytest.raises(ManifestError, match="FIFO"):
        _read(tmp_path)
    (tmp_path / "videos.txt").unlink()
    (tmp_path / "videos.txt").write_text("a.mp4\n")
    os.mkfifo(tmp_path / "pipe.csv")
    assert [r.clip_id for r in _read(tmp_path)] == ["a.mp4"]
