"""Each latent and embedding is stored once: a published shard's files are its home and the
content-addressed store keeps a reference there, which reads, checks, quarantine and verify
follow; removing a shard's files never loses an artefact that only they held."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.clip_row import REJECT_COLUMNS
from cog_assets.stages.dataset import finish_shard
from cog_assets.store.catalog import load_catalog
from cog_assets.store.collection import collect, plan_gc
from cog_assets.store.content_store import ContentStore, CorruptArtifact
from cog_assets.store.leases import Lease
from cog_assets.store.verify import verify_store
from cog_assets_tests.fixtures.datasets import build_dataset

FILE_COLUMNS = ("has_image_latent", "first_frame_png", "latents_file", "embeds_file",
                "image_latents_file")
NO_REJECTS = pl.DataFrame(schema={c: pl.String for c in REJECT_COLUMNS})


def _published(tmp_path: Path, **kwargs):
    """A dataset published into a store the way the pipeline does: under its datasets/."""
    store = ContentStore(str(tmp_path / "store"))
    root = tmp_path / "store" / "datasets" / "tiny"
    return store, root, build_dataset(root, store=store, **kwargs)


def _index(root: Path, shard: str) -> pl.DataFrame:
    entry = load_catalog(root).shards[shard]
    return pl.read_parquet(root / shard / entry.index.name)


def _files(store_dir: Path, kind: str, pattern: str) -> list[Path]:
    return sorted((store_dir / "cas" / kind).rglob(pattern))


def test_published_latents_and_embeddings_live_once_in_the_shard_files(tmp_path):
    store, root, expected = _published(tmp_path)
    store_dir = tmp_path / "store"
    assert not _files(store_dir, "vae_moments", "*.safetensors")
    assert not _files(store_dir, "t5_embedding", "*.safetensors")
    refs = _files(store_dir, "vae_moments", "*.ref.json")
    assert len(refs) == len(expected)
    for shard in ("shard-00000", "shard-00001"):
        for row in _index(root, shard).iter_rows(named=True):
            clip = expected[row["clip_id"]]
            for full in (True, False):
                assert store.check_artifact(ArtifactKind.latents, row["latent_key"], full).ok
            assert torch.equal(store.get_tensors(ArtifactKind.latents, row["latent_key"])[
                "moments"], clip.moments)
            assert torch.equal(store.get_tensors(ArtifactKind.embeddings, row["embedding_key"])[
                "prompt_embedding"], clip.embedding)
    home = json.loads(refs[0].read_text())["tensors"]["moments"]
    assert home["file"].startswith("datasets/tiny/shard-0000")  # relative: the store can move
    in_shards = sum(p.stat().st_size for p in root.glob("shard-*/latents.*.safetensors"))
    assert sum(p.stat().st_size for p in refs) < in_shards / 20
    assert verify_store(store).ok


def test_a_damaged_tensor_in_a_shard_file_is_found_through_its_reference(tmp_path):
    store, root, expected = _published(tmp_path)
    index = _index(root, "shard-00001")
    damaged, intact = index.row(0, named=True), index.row(1, named=True)
    path = root / "shard-00001" / damaged["latents_file"]
    data = bytearray(path.read_bytes())
    length = int.from_bytes(data[:8], "little")
    start = 8 + length + json.loads(data[8:8 + length])[damaged["clip_id"]]["data_offsets"][0]
    data[start + 17] ^= 0x40
    path.write_bytes(bytes(data))

    check = store.check_artifact(ArtifactKind.latents, damaged["latent_key"], full=True)
    assert not check.ok and "the blake3 of tensor" in check.problem
    report = verify_store(store)
    assert any(damaged["latent_key"] in f.detail and "blake3 of tensor" in f.detail
               for f in report.findings), report.findings
    with pytest.raises(CorruptArtifact, match=rf"{damaged['latent_key']} at .*\.ref\.json is "
                       "corrupt: .*blake3 of tensor"):
        store.get_tensors(ArtifactKind.latents, damaged["latent_key"])
    assert not store.has(ArtifactKind.latents, damaged["latent_key"])  # free to be computed
    assert list((tmp_path / "store" / "quarantine" / "vae_moments").glob(
        f"{damaged['latent_key']}.*.corrupt"))
    assert torch.equal(store.get_tensors(ArtifactKind.latents, intact["latent_key"])[
        "moments"], expected[intact["clip_id"]].moments)


def test_a_new_version_of_a_shard_keeps_what_only_the_old_one_held(tmp_path):
    """A clip leaves the shard: the new version is the home of the others; the old version's
    files stay (readers that opened them finish), and the leaving clip's latent stays
    readable through them; when gc removes them, the latent, still wanted by a run that holds
    it, is written back to the store in full first."""
    store, root, expected = _published(tmp_path)
    index = _index(root, "shard-00001")
    leaving = index.row(0, named=True)
    old_files = sorted(p.name for p in (root / "shard-00001").iterdir())
    finish_shard(store, str(root), "tiny", "shard-00001", 2, {"shard-00000", "shard-00001"},
                 index.slice(1).drop(FILE_COLUMNS), NO_REJECTS)
    new_files = sorted(p.name for p in (root / "shard-00001").iterdir())
    assert set(old_files) < set(new_files)  # nothing removed at publication
    version = load_catalog(root).shards["shard-00001"].version
    for row in index.slice(1).iter_rows(named=True):
        ref = json.loads(Path(store.path(f"cas/vae_moments/{row['latent_key'][:2]}/"
                                         f"{row['latent_key']}.ref.json")).read_text())
        assert ref["tensors"]["moments"]["file"].endswith(f"latents.{version}.safetensors")
        assert torch.equal(store.get_tensors(ArtifactKind.latents, row["latent_key"])[
            "moments"], expected[row["clip_id"]].moments)
    assert torch.equal(store.get_tensors(ArtifactKind.latents, leaving["latent_key"])[
        "moments"], expected[leaving["clip_id"]].moments)  # through the old version's file
    assert verify_store(store).ok

    with Lease(store, "run-elsewhere.vae_latents") as lease:  # e.g. the clip's new shard
        lease.hold(ArtifactKind.latents, [leaving["latent_key"]])
        removed = collect(store, plan_gc(store, grace_s=0), grace_s=0).removed
    assert {g.category for g in removed} >= {"old_versions"}
    assert sorted(p.name for p in (root / "shard-00001").iterdir()) == sorted(
        set(new_files) - set(old_files) | {"index.parquet", "rejects.parquet"})
    copy = Path(store.artifact_path(ArtifactKind.latents, leaving["latent_key"]))
    assert copy.is_file()  # written back: a full copy again
    assert torch.equal(store.get_tensors(ArtifactKind.latents, leaving["latent_key"])[
        "moments"], expected[leaving["clip_id"]].moments)
    assert verify_store(store).ok


def test_publishing_the_same_version_again_keeps_every_reference_whole(tmp_path):
    store, root, expected = _published(tmp_path)
    index = _index(root, "shard-00000")
    finish_shard(store, str(root), "tiny", "shard-00000", 2, {"shard-00000", "shard-00001"},
                 index.drop(FILE_COLUMNS), NO_REJECTS)
    for row in index.iter_rows(named=True):
        assert torch.equal(store.get_tensors(ArtifactKind.latents, row["latent_key"])[
            "moments"], expected[row["clip_id"]].moments)
    assert verify_store(store).ok


def test_a_retired_shard_gives_its_artefacts_back_to_the_store(tmp_path):
    """Re-sharding retires shard folders before the new shards have gathered their clips:
    what a retired folder held stays readable (its folder stays until gc), and what gc finds
    still wanted there (held by the runs gathering them) goes back to cas before the folder
    goes, so a re-shard encodes nothing again."""
    store, root, expected = _published(tmp_path)
    index = _index(root, "shard-00001")
    finish_shard(store, str(root), "tiny", "shard-00001", 2, {"shard-00000"}, pl.DataFrame(),
                 pl.DataFrame())
    assert (root / "shard-00001").exists() and "shard-00001" in load_catalog(root).retired
    with Lease(store, "run-reshard.t5_embeddings") as lease:
        lease.hold_all({ArtifactKind.latents: index["latent_key"],
                        ArtifactKind.embeddings: index["embedding_key"]})
        collect(store, plan_gc(store, grace_s=0), grace_s=0)
    assert not (root / "shard-00001").exists()
    for row in index.iter_rows(named=True):
        assert Path(store.artifact_path(ArtifactKind.latents, row["latent_key"])).is_file()
        assert torch.equal(store.get_tensors(ArtifactKind.latents, row["latent_key"])[
            "moments"], expected[row["clip_id"]].moments)
        assert torch.equal(store.get_tensors(ArtifactKind.embeddings, row["embedding_key"])[
            "prompt_embedding"], expected[row["clip_id"]].embedding)
    # ...and the next publication that holds them adopts them again
    finish_shard(store, str(root), "tiny", "shard-00000", 2, {"shard-00000"},
                 pl.concat([_index(root, "shard-00000"), index]).drop(FILE_COLUMNS),
                 NO_REJECTS)
    assert not _files(tmp_path / "store", "vae_moments", "*.safetensors")
    assert verify_store(store).ok


def test_a_retired_shards_artefacts_go_back_to_the_store_before_any_run_holds_them(tmp_path):
    """A long re-shard: gc removes a retired folder (its grace passed) while the new shards
    that will take its clips have not started, so no run holds them and no catalog lists
    them yet. Everything the folder was home to goes back to cas (a later gc collects what
    no shard takes), so the re-shard still encodes nothing again."""
    store, root, expected = _published(tmp_path)
    index = _index(root, "shard-00001")
    finish_shard(store, str(root), "tiny", "shard-00001", 2, {"shard-00000"}, pl.DataFrame(),
                 pl.DataFrame())
    collect(store, plan_gc(store, grace_s=0), grace_s=0)
    assert not (root / "shard-00001").exists()
    for row in index.iter_rows(named=True):
        assert torch.equal(store.get_tensors(ArtifactKind.latents, row["latent_key"])[
            "moments"], expected[row["clip_id"]].moments)
        assert torch.equal(store.get_tensors(ArtifactKind.embeddings, row["embedding_key"])[
            "prompt_embedding"], expected[row["clip_id"]].embedding)


def test_i2v_image_moments_live_in_the_image_latents_file(tmp_path):
    store, root, expected = _published(tmp_path, image_latents=True)
    for shard in ("shard-00000", "shard-00001"):
        for row in _index(root, shard).iter_rows(named=True):
            stored = store.get_tensors(ArtifactKind.latents, row["latent_key"])
            assert torch.equal(stored["image_moments"], expected[row["clip_id"]].image_latent)
            ref = json.loads(Path(store.path(f"cas/vae_moments/{row['latent_key'][:2]}/"
                                             f"{row['latent_key']}.ref.json")).read_text())
            assert ref["tensors"]["image_moments"]["file"].split("/")[-1].startswith(
                "image_latents.")
