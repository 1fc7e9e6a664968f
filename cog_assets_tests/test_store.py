import polars as pl
import pytest
import torch

from cog_assets.keys import artifact_key, file_sha256
from cog_assets.store import ContentStore


def test_key_depends_on_every_part_and_not_on_order():
    base = artifact_key("frames", content="abc", fps=8, height=64)
    assert base == artifact_key("frames", height=64, fps=8, content="abc")
    assert base != artifact_key("frames", content="abd", fps=8, height=64)
    assert base != artifact_key("frames", content="abc", fps=16, height=64)
    assert base != artifact_key("latents", content="abc", fps=8, height=64)


def test_tensors_round_trip_and_leave_no_temporary_files(tmp_path):
    store = ContentStore(str(tmp_path))
    key = artifact_key("t", x=1)
    assert not store.has("t", key)
    tensor = torch.arange(12, dtype=torch.uint8).reshape(3, 4)
    store.put_tensors("t", key, {"frames": tensor}, {"clip_id": "a"})
    assert store.has("t", key)
    assert torch.equal(store.get_tensors("t", key)["frames"], tensor)
    assert [p.name for p in tmp_path.rglob("*") if ".tmp-" in p.name] == []


def test_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    store = ContentStore(str(tmp_path))
    path = store.path("x", "y.bin")
    with pytest.raises(TypeError):
        store.write_bytes(path, 12345)  # not bytes: the write itself fails half-way
    assert not store.exists(path)
    assert [p.name for p in tmp_path.rglob("*") if ".tmp-" in p.name] == []


def test_tables_and_file_hash(tmp_path):
    store = ContentStore(str(tmp_path))
    frame = pl.DataFrame({"a": [1, 2]})
    store.write_table(store.path("tables", "t.parquet"), frame)
    assert store.read_table(store.path("tables", "t.parquet")).equals(frame)
    (tmp_path / "f").write_bytes(b"abc")
    assert file_sha256(str(tmp_path / "f")) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
