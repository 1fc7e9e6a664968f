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
from cog_assets.store.content_store import ContentStore
from cog_assets.store.dataset_lock import dataset_lock
from cog_assets.store.layout import CATALOG_ENTRIES_DIR
from cog_assets.store.verify import verify_store
from cog_assets_tests.fixtures.datasets import (
    SHARD_COUNT,
    build_dataset,
    cas_store,
    publish_two_runs_at_once,
)

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
    # not served, each with the time it was retired; its folder stays for the readers that
    # opened it until gc removes it gc_grace_s later (test_collection)
    assert set(listed.retired) == set(listed.retired_at) == {
        "shard-00001", "shard-00002", "shard-00003"}
    assert (tmp_path / "ds" / "shard-00003").exists()
    assert sorted(p.stem for p in (tmp_path / "ds" / CATALOG_ENTRIES_DIR).iterdir()) == [
        "shard-00000"]
    # the same clips: the same version, its files written again with the same bytes
    assert listed.shards["shard-00000"].version == entry.version
    assert listed.shards["shard-00000"].superseded == {}


def test_a_shard_without_clips_is_retired_and_its_folder_left_for_gc(tmp_path):
    build_dataset(tmp_path / "ds")
    store = cas_store(tmp_path / "ds")
    finish_shard(store, str(tmp_path / "ds"), "tiny", "shard-00001", 2, {"shard-00000"},
                 pl.DataFrame(), pl.DataFrame())
    listed = load_catalog(tmp_path / "ds")
    assert list(listed.shards) == ["shard-00000"]
    assert "no clip" in listed.retired["shard-00001"] and listed.retired_at["shard-00001"]
    assert (tmp_path / "ds" / "shard-00001").exists()  # a reader that opened it finishes


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
    with dataset_lock(store, str(tmp_path / "ds")):  # another run is rebuilding it
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


def _served_files_exist(root: Path) -> None:
    for shard, entry in load_catalog(root).shards.items():
        for published in [*entry.served(), entry.rejects]:
            path = root / shard / published.name
            assert path.is_file() and path.stat().st_size == published.bytes, path


def test_two_runs_of_one_shard_publishing_at_once_never_list_a_gone_file(tmp_path,
                                                                         monkeypatch):
    """Two runs of one shard with different content (another instance with other buckets):
    run A publishes, then, before A's publication has returned, run B writes and publishes
    its own version; then A goes on. Publication removes nothing, so the catalog lists B's
    files, all there, and A's stay (superseded) for gc. Deterministic: A is held by events
    right after its publication, where it used to remove "every other version"."""
    store = ContentStore(str(tmp_path / "store"))
    root = tmp_path / "store" / "datasets" / "tiny"
    first, second = publish_two_runs_at_once(root, store, monkeypatch)
    entry = load_catalog(root).shards["shard-00000"]
    assert entry.version == second != first
    _served_files_exist(root)
    assert (root / "shard-00000" / f"index.{first}.parquet").is_file()  # superseded, kept
    assert set(entry.superseded) == {first}
    assert verify_store(store).ok


def test_gc_removing_an_old_version_waits_for_a_publication_of_it(tmp_path, monkeypatch):
    """A shard goes back to a version it had before (v1, superseded long ago) while gc, with
    no grace, is removing v1's files: gc removes only under the dataset's lock and judges v1
    there again, after the publication listed it, so it keeps it. Interleaved with events:
    the publication is held right after checking its files, inside the lock, until gc is
    waiting for the lock."""
    from cog_assets.store import collection

    store = ContentStore(str(tmp_path / "store"))
    root = tmp_path / "store" / "datasets" / "tiny"
    v1 = [("shard-00000", "clips/a.mp4", "a", 9, 64, 96)]
    v2 = [("shard-00000", "clips/a.mp4", "a", 17, 64, 64)]
    build_dataset(root, v1, store=store, seed=1)
    build_dataset(root, v2, store=store, seed=2)
    plan = collection.plan_gc(store, grace_s=0)
    assert {g.category for g in plan.garbage} >= {"old_versions"}  # v1's files

    checked, gc_waiting = threading.Event(), threading.Event()
    real_problems, real_lock = catalog.served_problems, collection.dataset_lock

    def served_problems(*args):
        problems = real_problems(*args)
        checked.set()
        assert gc_waiting.wait(60)  # hold the lock until gc wants it
        return problems

    def lock(*args):
        gc_waiting.set()
        return real_lock(*args)

    monkeypatch.setattr(catalog, "served_problems", served_problems)
    monkeypatch.setattr(collection, "dataset_lock", lock)
    republish = threading.Thread(target=build_dataset, args=(root, v1),
                                 kwargs={"store": store, "seed": 1})
    republish.start()
    assert checked.wait(60)
    result = collection.collect(store, plan, grace_s=0)
    republish.join(60)
    entry = load_catalog(root).shards["shard-00000"]
    assert entry.index.name in {p.name for p in (root / "shard-00000").iterdir()}
    _served_files_exist(root)
    assert not any(g.path.endswith(entry.index.name) for g in result.removed)
    assert verify_store(store).ok


def test_a_damaged_catalog_entry_does_not_unpublish_its_shard(tmp_path, caplog):
    """A catalog.d entry that cannot be read (a torn copy, a bad disk) while another shard
    publishes: the shard stays served as the catalog had it (not retired, so gc keeps its
    files and readers keep reading), its entry is written back, and the log names the file."""
    store = ContentStore(str(tmp_path / "store"))
    root = tmp_path / "store" / "datasets" / "tiny"
    build_dataset(root, store=store)
    before = load_catalog(root)
    damaged = root / CATALOG_ENTRIES_DIR / "shard-00001.json"
    damaged.write_text('{"shard": "shard-00001", "vers')
    with caplog.at_level("WARNING"):
        after = catalog.reconcile(store, str(root), "tiny", {"shard-00000", "shard-00001"},
                                  SHARD_COUNT)
    assert after.shards["shard-00001"] == before.shards["shard-00001"]
    assert "shard-00001" not in after.retired
    assert str(damaged) in caplog.text
    assert catalog.published_entries(store, str(root))["shard-00001"] == before.shards[
        "shard-00001"]
    assert verify_store(store).ok
