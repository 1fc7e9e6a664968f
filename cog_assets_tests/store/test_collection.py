"""`cog-assets gc`: what no live shard references goes, what a live shard or a running step
needs stays, `--dry-run` changes nothing, and every removal is judged again just before."""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from cog_assets.cli import main
from cog_assets.core.choices import ArtifactKind
from cog_assets.core.keys import artifact_key
from cog_assets.exports.atomic import symlink
from cog_assets.loader import CogVideoXLatentDataset
from cog_assets.media.contact_sheet import thumbnail_png
from cog_assets.store import layout
from cog_assets.store.catalog import load_catalog
from cog_assets.store.collection import GcError, collect, plan_gc
from cog_assets.store.content_store import ContentStore
from cog_assets.store.leases import Lease
from cog_assets.store.verify import verify_store
from cog_assets_tests.fixtures.datasets import build_dataset

HOUR = 3600.0
PICTURE = thumbnail_png(np.zeros((64, 96, 3), dtype=np.uint8))


def _age(path: Path, seconds: float = 2 * HOUR) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def _write(path: Path, data: bytes = b"x" * 100, age: float = 2 * HOUR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return _age(path, age)


def _put(store: ContentStore, kind: str, key: str, age: float = 2 * HOUR) -> Path:
    path = Path(store.put_tensors(kind, key, {"t": torch.zeros(64)}))
    return _age(path, age)


@pytest.fixture
def store(tmp_path):
    """A published dataset in a store (shard-00000 keeps its frames, shard-00001 drops them)
    and, beside it, one example of every kind of garbage, all written two hours ago."""
    store = ContentStore(str(tmp_path / "store"))
    root = tmp_path / "store" / "datasets" / "tiny"
    clips = [("shard-00000", "clips/a.mp4", "a", 9, 64, 96),
             ("shard-00000", "clips/b.mp4", "b", 9, 64, 96),
             ("shard-00001", "clips/c.mp4", "c", 9, 64, 96)]
    build_dataset(root, clips[:2], store=store, live={"shard-00000", "shard-00001"},
                  frames_retention="keep")
    build_dataset(root, clips[2:], store=store, live={"shard-00000", "shard-00001"},
                  frames_retention="until_published")
    for shard in ("shard-00000", "shard-00001"):
        index = pl.read_parquet(root / shard / load_catalog(root).shards[shard].index.name)
        for key in index["frames_key"]:  # frames and thumbnails of live clips
            _put(store, ArtifactKind.frames, key)
            _write(Path(store.path(layout.thumbnail_png(key))), PICTURE)
    s = Path(store.root)
    _write(s / "contact_sheets" / "shard-00000.jpg", PICTURE)
    garbage = {
        "latents": _put(store, ArtifactKind.latents, "0" * 64),
        "embeddings": _put(store, ArtifactKind.embeddings, "1" * 64),
        "frames": _put(store, ArtifactKind.frames, "2" * 64),
        "thumbnails": _write(Path(store.path(layout.thumbnail_png("2" * 64))), PICTURE),
        "scene_scans": _put(store, ArtifactKind.scene_scan, "3" * 64),
        "old_versions": _write(root / "shard-00000" / "latents.0123456789abcdef.safetensors"),
        "retired_shards": _write(root / "shard-00007" / "index.0123456789abcdef.parquet"),
        "tables": _write(s / "tables" / "frame_tensors" / "shard-00007.parquet"),
        "contact_sheets": _write(s / "contact_sheets" / "shard-00007.jpg", PICTURE),
        "quarantine": _write(s / "quarantine" / "frames" / f"{'4' * 64}.20200101T000000-abcd"
                                                           "ef01.corrupt"),
        "temporaries": _write(s / "cas" / "frames" / "55" / f"{'5' * 64}.safetensors.tmp-9f"),
    }
    return store, root, garbage


def _plan(store, grace_s=HOUR, **kwargs):
    return plan_gc(store, grace_s=grace_s, **kwargs)


def _live_frames(store: ContentStore, root: Path, shard: str) -> list[str]:
    entry = load_catalog(root).shards[shard]
    return pl.read_parquet(root / shard / entry.index.name)["frames_key"].to_list()


def test_gc_removes_every_kind_of_garbage_and_nothing_live(store):
    store, root, garbage = store
    plan = _plan(store)
    planned = {Path(g.path): g.category for g in plan.garbage}
    for category, path in garbage.items():
        assert planned.get(path) == category, (category, path, planned)
    dropped = [k for k in _live_frames(store, root, "shard-00001")]
    for key in dropped:  # published with until_published: the frames may go
        assert planned[Path(store.artifact_path(ArtifactKind.frames, key))] == "frames"
    expected = set(garbage.values()) | {Path(store.artifact_path(ArtifactKind.frames, k))
                                        for k in dropped}
    assert set(planned) == expected, set(planned) ^ expected
    assert plan.bytes == sum(p.stat().st_size for p in expected)

    result = collect(store, plan, grace_s=HOUR)
    assert {Path(g.path) for g in result.removed} == expected
    assert not any(p.exists() for p in expected)
    assert not (root / "shard-00007").exists()  # emptied folders go too
    assert (Path(store.root) / "contact_sheets" / "shard-00000.jpg").exists()  # a live shard's stays
    for key in _live_frames(store, root, "shard-00000"):  # published with keep: kept
        assert store.has(ArtifactKind.frames, key)
        assert Path(store.path(layout.thumbnail_png(key))).exists()
    for key in dropped:  # thumbnails stay for the contact sheet
        assert Path(store.path(layout.thumbnail_png(key))).exists()
    assert verify_store(store).ok
    assert len(CogVideoXLatentDataset(root, "tiny", verify=True)) == 3
    assert not _plan(store).garbage  # nothing left to collect


def test_nothing_younger_than_the_grace_period_is_removed(store):
    store, root, garbage = store
    for path in garbage.values():
        if "quarantine" not in str(path):  # a quarantined file is as old as its name says
            _age(path, 60)
    plan = _plan(store)
    assert {Path(g.path) for g in plan.garbage} == {garbage["quarantine"]} | {
        Path(store.artifact_path(ArtifactKind.frames, k))
        for k in _live_frames(store, root, "shard-00001")}
    assert plan.kept_recent == len(garbage) - 1


def test_what_a_running_step_holds_stays_even_when_it_leased_it_after_the_plan(store):
    store, root, garbage = store
    plan = _plan(store, grace_s=0)
    with Lease(store, "run-1.frame_tensors", paths=["tables/*/shard-00007.parquet"]) as lease:
        lease.hold(ArtifactKind.latents, ["0" * 64])
        lease.hold(ArtifactKind.frames, ["2" * 64])  # its frames and its thumbnail
        result = collect(store, plan, grace_s=0)
        assert _plan(store, grace_s=0).kept_held == 4
    for name in ("latents", "frames", "thumbnails", "tables"):
        assert garbage[name].exists(), name
    assert result.kept_now == 4
    assert not garbage["embeddings"].exists()


def test_dry_run_lists_what_would_go_with_its_bytes_and_changes_nothing(store, tmp_path):
    store, root, garbage = store
    before = sorted(p for p in Path(store.root).rglob("*"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["gc", "--store", store.root, "--dry-run"])
    assert code == 0
    assert sorted(p for p in Path(store.root).rglob("*")) == before
    text = out.getvalue()
    for category, path in garbage.items():
        assert f"{category:<14} {path.stat().st_size:>12} {path}" in text
    plan = _plan(store)
    assert f"would remove {plan.files} files, " in text
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["gc", "--store", store.root]) == 0
    assert f"removed {plan.files} files" in out.getvalue()
    assert not any(p.exists() for p in garbage.values())


def test_a_copy_beside_its_shard_file_and_a_reference_to_a_gone_file_are_repaired(store):
    store, root, _ = store
    index = pl.read_parquet(root / "shard-00000" / load_catalog(root).shards[
        "shard-00000"].index.name)
    copied, moved = index.row(0, named=True), index.row(1, named=True)
    good = {r["latent_key"]: store.get_tensors(ArtifactKind.latents, r["latent_key"])
            for r in (copied, moved)}
    store.put_tensors(ArtifactKind.latents, copied["latent_key"], good[copied["latent_key"]])
    ref = Path(store.path(layout.ref_path(ArtifactKind.latents, moved["latent_key"])))
    elsewhere = root / "shard-00009" / copied["latents_file"]  # as if from a retired shard
    elsewhere.parent.mkdir()
    elsewhere.write_bytes((root / "shard-00000" / copied["latents_file"]).read_bytes())
    ref.write_text(ref.read_text().replace("/shard-00000/", "/shard-00009/"))
    for path in (elsewhere, Path(store.artifact_path(ArtifactKind.latents,
                                                     copied["latent_key"]))):
        _age(path)

    plan = _plan(store)
    assert {(r.key, bool(r.copy_bytes)) for r in plan.repairs} == {
        (copied["latent_key"], True), (moved["latent_key"], False)}
    result = collect(store, plan, grace_s=HOUR)
    assert result.repaired == 2
    assert not Path(store.artifact_path(ArtifactKind.latents, copied["latent_key"])).exists()
    assert not elsewhere.exists() and "/shard-00000/" in ref.read_text()
    for key, tensors in good.items():
        assert torch.equal(store.get_tensors(ArtifactKind.latents, key)["moments"],
                           tensors["moments"])
    assert verify_store(store).ok


def test_a_shard_republished_between_plan_and_collect_is_not_repaired_from_old_files(store):
    """gc plans a repair against shard-00000's files; a run republishes the shard before gc
    collects (its old index and files are gone): nothing fails, nothing points at them."""
    store, root, _ = store
    entry = load_catalog(root).shards["shard-00000"]
    row = pl.read_parquet(root / "shard-00000" / entry.index.name).row(0, named=True)
    store.put_tensors(ArtifactKind.latents, row["latent_key"],
                      store.get_tensors(ArtifactKind.latents, row["latent_key"]))
    plan = _plan(store)
    assert [r.key for r in plan.repairs] == [row["latent_key"]]
    build_dataset(root, [("shard-00000", "clips/a.mp4", "a", 9, 64, 96),
                         ("shard-00000", "clips/d.mp4", "d", 9, 64, 96)], store=store,
                  live={"shard-00000", "shard-00001"}, frames_retention="keep")  # a new version
    assert load_catalog(root).shards["shard-00000"].version != entry.version
    assert not (root / "shard-00000" / entry.index.name).exists()
    result = collect(store, plan, grace_s=HOUR)
    assert result.repaired == 0
    assert verify_store(store).ok


def test_a_retired_shard_file_a_running_step_reads_through_is_written_back_first(store):
    """A re-shard's run holds a key whose only copy is in a retired shard's file (its
    reference points there): gc removes the retired folder, and the key stays readable."""
    store, root, _ = store
    entry = load_catalog(root).shards["shard-00000"]
    row = pl.read_parquet(root / "shard-00000" / entry.index.name).row(0, named=True)
    key = row["latent_key"]
    expected = store.get_tensors(ArtifactKind.latents, key)["moments"]
    retired = root / "shard-00009"
    retired.mkdir()
    for name in (row["latents_file"], entry.index.name):
        (retired / name).write_bytes((root / "shard-00000" / name).read_bytes())
        _age(retired / name)
    ref = Path(store.path(layout.ref_path(ArtifactKind.latents, key)))
    ref.write_text(ref.read_text().replace("/shard-00000/", "/shard-00009/"))
    with Lease(store, "run-new.vae_latents") as lease:
        lease.hold(ArtifactKind.latents, [key])
        result = collect(store, _plan(store), grace_s=HOUR)
        assert {"retired_shards"} <= {g.category for g in result.removed}
        assert not retired.exists()
        assert torch.equal(store.get_tensors(ArtifactKind.latents, key)["moments"], expected)


def test_stale_export_versions_go_and_every_export_with_exports(store):
    store, root, _ = store
    exports = Path(store.root) / "exports" / "tiny"
    current, killed = exports / ".cogvideox-factory.v2", exports / ".cogvideox-factory.v1"
    for folder in (current, killed):
        _write(folder / "videos.txt")
        _age(folder)
    symlink(exports / "cogvideox-factory", Path(current.name))
    plan = _plan(store)
    assert [(Path(g.path), g.category) for g in plan.garbage if g.category == "exports"] == [
        (killed, "exports")]
    collect(store, plan, grace_s=HOUR)
    assert current.exists() and not killed.exists()
    with Lease(store, "run-1.cogvideox_factory_export", paths=["exports/tiny/*"], handover_s=0):
        held = _plan(store, exports=True).garbage
        assert not [g for g in held if g.category == "exports"]  # one being written stays
    assert not Path(store.path(layout.lease_path("run-1.cogvideox_factory_export"))).exists()
    collect(store, _plan(store, exports=True), grace_s=HOUR)
    assert not exports.exists()  # emptied: pruned


def test_an_unreadable_catalog_stops_gc_before_it_removes_anything(store):
    store, root, garbage = store
    (root / "catalog.json").write_text("{ not json")
    with pytest.raises(GcError, match="cannot tell what is live"):
        _plan(store)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["gc", "--store", store.root]) == 1
    assert "nothing removed" in err.getvalue()
    assert all(p.exists() for p in garbage.values())


def test_expired_leases_go_and_live_ones_stay(store):
    store, _, _ = store
    with Lease(store, "run-live.training_dataset"):
        dead = Path(store.path(layout.lease_path("run-dead.frame_tensors")))
        dead.write_text('{"holder": "run-dead.frame_tensors", "expires_at": 0, "keys": {}}')
        plan = _plan(store)
        assert [Path(g.path) for g in plan.garbage if g.category == "leases"] == [dead]


def test_scans_and_embeddings_a_live_shards_step_tables_name_stay(store):
    """A live shard's scene scans, and the embedding of a caption whose clip failed to decode
    (t5_embeddings encodes every accepted caption: its next run would encode it again)."""
    store, root, garbage = store
    live_scan = artifact_key(ArtifactKind.scene_scan, source="x")
    _put(store, ArtifactKind.scene_scan, live_scan)
    store.write_table(store.path(layout.table_path("scene_segments", "shard-00000")),
                      pl.DataFrame({"scan_key": [live_scan, None]}))
    store.write_table(store.path(layout.table_path("t5_embeddings", "shard-00001")),
                      pl.DataFrame({"embedding_key": ["1" * 64]}))
    planned = {Path(g.path) for g in _plan(store).garbage}
    assert Path(store.artifact_path(ArtifactKind.scene_scan, live_scan)) not in planned
    assert garbage["embeddings"] not in planned
    assert garbage["scene_scans"] in planned


def test_written_captions_and_thumbnails_a_live_shards_caption_table_names_stay(store):
    """Captions written for a live shard's clips (generated and polished) and the thumbnails
    of its clips that need a caption stay; those of no live shard go, as does the
    needs_captions list of a shard no longer live."""
    store, _, _ = store
    kept = {"caption_key": artifact_key(ArtifactKind.caption, clip="a"),
            "polish_key": artifact_key(ArtifactKind.caption, clip="a", step="polish"),
            "thumbnail_key": artifact_key(ArtifactKind.thumbnail, clip="b")}
    stale = artifact_key(ArtifactKind.caption, clip="gone")
    for key in (kept["caption_key"], kept["polish_key"], stale):
        _put(store, ArtifactKind.caption, key)
    thumbnail = _write(Path(store.path(layout.thumbnail_png(kept["thumbnail_key"]))), PICTURE)
    store.write_table(store.path(layout.table_path("clip_captions", "shard-00000")),
                      pl.DataFrame({column: [key] for column, key in kept.items()}))
    live_list = _write(Path(store.path(layout.needs_captions_path("shard-00000"))))
    dead_list = _write(Path(store.path(layout.needs_captions_path("shard-00007"))))
    planned = {Path(g.path): g.category for g in _plan(store).garbage}
    for key in (kept["caption_key"], kept["polish_key"]):
        assert Path(store.artifact_path(ArtifactKind.caption, key)) not in planned
    assert thumbnail not in planned and live_list not in planned
    assert planned[Path(store.artifact_path(ArtifactKind.caption, stale))] == "captions"
    assert planned[dead_list] == "tables"


@pytest.mark.slow
def test_gc_over_and_over_beside_a_running_backfill_takes_nothing_it_needs(tmp_path):
    """The resize policy changes and a backfill runs in its own process while gc, with no
    grace period at all, collects again and again beside it: the run's new frames, latents,
    tables and next shard version are held by its leases, so it succeeds; the old version's
    leftovers go; the store verifies, the dataset loads and a rerun computes nothing."""
    from cog_assets.media.synthetic import write_test_dataset
    from cog_assets.testing import start_backfill
    from cog_assets_tests.fixtures.pipeline import backfill_here

    data = write_test_dataset(tmp_path / "data", 4, broken=False)
    store_dir, home = tmp_path / "store", tmp_path / "home"
    code, _, output = backfill_here(data, store_dir, home, tmp_path / "run-1")
    assert code == 0, output[-3000:]
    store = ContentStore(str(store_dir))
    run = start_backfill(data, store_dir, home, tmp_path / "run-2", "--resize", "stretch")
    removed, rounds = [], 0
    try:
        while run.proc.poll() is None:
            removed += collect(store, plan_gc(store, grace_s=0), grace_s=0).removed
            rounds += 1
            time.sleep(0.05)
        code = run.wait(60)
    finally:
        run.kill()
    assert code == 0, run.output()[-4000:]
    assert rounds >= 5, rounds
    # what only the cover version held was written back to cas when it was replaced (at the
    # run's end, maybe after the last round beside it): garbage
    removed += collect(store, plan_gc(store, grace_s=0), grace_s=0).removed
    assert {"latents", "thumbnails"} <= {g.category for g in removed}, removed
    assert verify_store(store).ok
    assert len(CogVideoXLatentDataset(store_dir / "datasets" / "tiny", "tiny",
                                      verify=True)) == 4
    code, summary, output = backfill_here(data, store_dir, home, tmp_path / "run-3",
                                          "--resize", "stretch")
    assert code == 0 and summary["shards"]["shard-00000"]["computed"] == 0, output[-3000:]


def test_a_lease_a_killed_step_was_writing_is_a_temporary_once_past_the_grace(store):
    store, _, _ = store
    state = Path(store.path("state/leases"))
    old = _write(state / "run-9.frame_tensors.json.tmp-3f2a")
    young = _write(state / "run-9.vae_latents.json.tmp-77c1", age=60)
    planned = {Path(g.path): g.category for g in _plan(store).garbage}
    assert planned.get(old) == "temporaries" and young not in planned


def test_gc_counts_every_kind_it_can_remove():
    """`cog-assets gc` prints its totals by category: a kind missing there went uncounted."""
    from cog_assets.store.collection import CATEGORIES
    from cog_assets.store.footprint import CAS_KINDS

    assert set(CAS_KINDS.values()) <= set(CATEGORIES)
