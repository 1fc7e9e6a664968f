"""How exports read a finished dataset: only what its catalog lists, checked, stems and prompt
lines that survive the trainers' plain-text manifests, and atomic writes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cog_assets.exports.atomic import atomic_file, fresh_folder, write_bytes
from cog_assets.exports.naming import clip_stems, one_line
from cog_assets.exports.source import read_clips
from cog_assets.store.catalog import DatasetError
from cog_assets_tests.fixtures.datasets import build_dataset, leftover_temp_files


def test_read_clips_lists_every_clip_of_every_shard(tmp_path):
    expected = build_dataset(tmp_path / "ds")
    clips = read_clips(tmp_path / "ds")
    assert sorted(c.clip_id for c in clips) == sorted(expected)
    assert {c.shard_dir.name for c in clips} == {"shard-00000", "shard-00001"}
    assert not any(c.has_image_latent for c in clips)


def test_a_clip_id_in_two_shards_is_refused(tmp_path):
    clips = [("shard-00000", "clips/a.mp4", "one", 9, 64, 96),
             ("shard-00001", "clips/a.mp4", "two", 9, 64, 96)]
    build_dataset(tmp_path / "ds", clips)
    with pytest.raises(DatasetError, match="'clips/a.mp4'.*shard-00000.*shard-00001"):
        read_clips(tmp_path / "ds")


def test_stems_of_clashing_ids_are_distinct_and_order_free():
    ids = ["clips/x_y.mp4", "clips/x/y.mp4", "clips/x.y.mp4", "clips/a.mp4", "CLIPS/A.mp4"]
    stems = clip_stems(ids)
    assert stems == clip_stems(reversed(ids))
    assert len({s.lower() for s in stems.values()}) == len(ids)
    assert all(stems[i].startswith("clips_x_y-") for i in ids[:3])
    assert all(len(stems[i]) == len("clips_x_y-") + 8 for i in ids[:3])  # a short suffix
    assert clip_stems(["clips/a.mp4", "clips/b.mp4"]) == {"clips/a.mp4": "clips_a",
                                                          "clips/b.mp4": "clips_b"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=30), min_size=1, max_size=8))
def test_stems_survive_both_trainers_stem_rules(ids):
    stems = clip_stems(ids)
    assert len({s.lower() for s in stems.values()}) == len(set(ids))
    for stem in stems.values():
        name = f"videos/{stem}.mp4"
        assert stem and Path(name).name.split(".")[0] == stem == Path(name).stem
        assert Path(name).parent == Path("videos")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_one_line_reads_back_as_one_stripped_line(caption):
    line = one_line(caption)
    text = io.TextIOWrapper(io.BytesIO(f"{line}\n".encode()), encoding="utf-8")
    read = [x.strip() for x in text.readlines() if len(x.strip()) > 0]
    assert read == ([line] if line else [])
    assert line.split() == caption.split()


def test_an_interrupted_write_leaves_neither_the_file_nor_a_temp(tmp_path):
    target = tmp_path / "video_latents" / "a.pt"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as handle:
            handle.write(b"half of a tensor")
            raise RuntimeError("killed")
    assert not target.exists() and not leftover_temp_files(tmp_path)
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as handle:
            handle.write(b"new but partial")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and not leftover_temp_files(tmp_path)


def test_a_shard_folder_the_catalog_does_not_list_is_not_read(tmp_path):
    build_dataset(tmp_path / "ds")
    stale = tmp_path / "old" 
    build_dataset(stale, [("shard-00007", "clips/deleted.mp4", "gone", 9, 64, 96)])
    (stale / "shard-00007").rename(tmp_path / "ds" / "shard-00007")  # a leftover folder
    assert "clips/deleted.mp4" not in {c.clip_id for c in read_clips(tmp_path / "ds")}


def test_a_tensor_file_changed_after_publication_is_refused_naming_it(tmp_path):
    build_dataset(tmp_path / "ds")
    latents = next((tmp_path / "ds" / "shard-00001").glob("latents.*.safetensors"))
    data = bytearray(latents.read_bytes())
    data[-7] ^= 0x01  # one bit inside the tensor data: same size, still parses
    latents.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=rf"{latents}.*differs from what was published"):
        read_clips(tmp_path / "ds")


def test_a_failed_export_leaves_the_previous_version_whole(tmp_path):
    out = tmp_path / "export"
    with fresh_folder(out) as folder:
        (folder / "videos.txt").write_text("old\n")
    with pytest.raises(RuntimeError):
        with fresh_folder(out) as folder:
            (folder / "videos.txt").write_text("half of the new one\n")
            raise RuntimeError("killed")
    assert (out / "videos.txt").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir() if p.name != "export"] == [
        Path(out.readlink()).name]  # only the live version: the failed one is gone


def test_a_link_the_user_made_to_their_own_folder_is_replaced_not_emptied(tmp_path):
    theirs = tmp_path / "big-disk" / "cache"
    theirs.mkdir(parents=True)
    (theirs / "keep.txt").write_text("mine\n")
    out = tmp_path / "exports" / "cogvideo-finetune"
    out.parent.mkdir()
    out.symlink_to(theirs)
    with fresh_folder(out) as folder:
        (folder / "videos.txt").write_text("new\n")
    assert (out / "videos.txt").read_text() == "new\n"
    assert (theirs / "keep.txt").read_text() == "mine\n"
