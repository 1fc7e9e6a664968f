"""The catalog of live shards: published after each shard, re-sharding and emptied shards
retire the old folders, concurrent publications all land, a garbage collector finds every key."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import polars as pl

from cog_assets.stages.dataset import finish_shard
from cog_assets.store import catalog
from cog_assets.store.catalog import load_catalog
from cog_assets.store.layout import CATALOG_ENTRIES_DIR
from cog_assets_tests.fixtures.datasets import build_dataset, cas_store

CLIP = ("clips/a.mp4", "a red ball", 9, 64, 96)


def _clips(assignment: dict[str, str]) -> list[tuple]:
    return [(shard, clip_id, f"caption of {clip_id}", 9, 64, 96)
            for clip_id, shard in assignment.items()]


def test_each_publication_lists_the_live_shards_with_versions_and_counts(tmp_path):
    build_dataset(tmp_path / "ds")
    listed = load_catalog(tmp_path / "ds")
    assert sorted(listed.shards) == ["shard-00000", "shard-00001"]
    assert {s: e.clips for s, e in listed.shards.items()} == {"shard-00000": 2,
                                                              "shard-00001": 3}
    for shard, entry in listed.shards.items():
        assert (tmp_path / "ds" / shard / entry.index.name).is_file()
        assert entry.index.name == f"index.{entry.version}.parquet"
        index = pl.read_parquet(tmp_path / "ds" / shard / entry.index.name)
        assert len(index) == entry.clips
        assert set(index["latents_file"]) == {entry.files["latents_file"].name}


def test_a_garbage_collector_finds_every_key_a_live_shard_references(tmp_path):
    build_dataset(tmp_path / "ds")
    store = cas_store(tmp_path / "ds")
    referenced = set()
    for shard, entry in load_catalog(tmp_path / "ds").shards.items():
        index = pl.read_parquet(tmp_path / "ds" / shard / entry.index.name)
        referenced |= set(index["latent_key"]) | set(index["embedding_key"])
    stored = {p.stem for p in Path(store.root, "cas").rglob("*.safetensors")}
    assert referenced == stored


def test_resharding_retires_the_folders_of_the_old_shard_count(tmp_path):
    four = {f"clips/{i}.mp4": f"shard-0000{i % 4}" for i in range(8)}
    build_dataset(tmp_path / "ds", _clips(four))  # published as 2 shards by the fixture...
    store = cas_store(tmp_path / "ds")
    store_dir = str(tmp_path / "ds")
    catalog.reconcile(store, store_dir, "tiny", set(four.values()), 2)
    assert sorted(load_catalog(tmp_path / "ds").shards) == sorted(set(four.values()))
    # ...now the same clips in 3 shards: one publication of the new count retires the rest
    entry = load_catalog(tmp_path / "ds").shards["shard-00000"]
    index = pl.read_parquet(tmp_path / "ds" / "shard-00000" / entry.index.name).drop(
        "has_image_latent", "first_frame_png", "latents_file", "embeds_file",
        "image_latents_file")
    finish_shard(store, store_dir, "tiny", "shard-00000", 3, {"shard-00000", "shard-00001",
                                                                "shard-00002"}, index,
                 pl.DataFrame(schema={c: pl.String for c in ("clip_id", "source", "reason",
                                                             "message", "stage")}))
    listed = load_catalog(tmp_path / "ds")
    assert list(listed.shards) == ["shard-00000"] and listed.shard_count == 3
    assert not (tmp_path / "ds" / "shard-00003").exists()  # not a shard of the new count
    assert (tmp_path / "ds" / "shard-00001").exists()  # a live name keeps its folder...
    assert "shard-00001" in listed.retired  # ...but is not served until it is published again
    assert sorted(p.stem for p in (tmp_path / "ds" / CATALOG_ENTRIES_DIR).iterdir()) == [
        "shard-00000"]


def test_a_shard_without_clips_is_retired_and_its_folder_removed(tmp_path):
    build_dataset(tmp_path / "ds")
    store = cas_store(tmp_path / "ds")
    finish_shard(store, str(tmp_path / "ds"), "tiny", "shard-00001", 2, {"shard-00000"},
                 pl.DataFrame(), pl.DataFrame())
    listed = load_catalog(tmp_path / "ds")
    assert list(listed.shards) == ["shard-00000"]
    assert "no clip" in listed.retired["shard-00001"]
    assert not (tmp_path / "ds" / "shard-00001").exists()


def test_the_catalog_is_one_json_file_a_reader_gets_whole(tmp_path):
    build_dataset(tmp_path / "ds")
    raw = json.loads((tmp_path / "ds" / "catalog.json").read_text())
    assert raw["format"] == catalog.CATALOG_FORMAT and raw["clips"] == 5
    assert not [p for p in (tmp_path / "ds").rglob("*") if ".tmp-" in p.name]


def test_a_publication_waits_while_another_rebuilds_the_catalog(tmp_path):
    """Shards finishing at once (a parallel backfill) must not overwrite each other's catalog:
    while one publisher holds the catalog, another writes its files but publishes only after."""
    live = {"shard-00000", "shard-00001"}
    build_dataset(tmp_path / "ds", [("shard-00000", "clips/a.mp4", "a", 9, 64, 96)], live=live)
    store = cas_store(tmp_path / "ds")
    second = threading.Thread(target=build_dataset, args=(
        tmp_path / "ds", [("shard-00001", "clips/b.mp4", "b", 9, 64, 96)]),
        kwargs={"seed": 2, "live": live})
    with catalog._locked(store, str(tmp_path / "ds")):  # another run is rebuilding it
        second.start()
        deadline = time.monotonic() + 120
        while not list((tmp_path / "ds").glob("shard-00001/index.*.parquet")):
            assert time.monotonic() < deadline and second.is_alive()
            time.sleep(0.01)
        time.sleep(0.5)  # its files are written: it now waits for the catalog
        assert second.is_alive()
        assert not (tmp_path / "ds" / CATALOG_ENTRIES_DIR / "shard-00001.json").exists()
        assert list(load_catalog(tmp_path / "ds").shards) == ["shard-00000"]
    second.join(120)
    assert sorted(load_catalog(tmp_path / "ds").shards) == sorted(live)
