import polars as pl
import pytest
import torch

from cog_assets.core.keys import artifact_key, file_sha256
from cog_assets.store.content_store import ContentStore


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


# -- every artefact carries the digest of its data -------------------------------------------

def _flip(path, offset_from_end=5):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x04
    path.write_bytes(bytes(data))


def test_the_digest_is_recorded_in_the_file_and_other_readers_still_load_it(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from cog_assets.store.sealed_tensors import DIGEST_KEY

    store = ContentStore(str(tmp_path))
    path = store.put_tensors("t", "k" * 64, {"x": torch.randn(4, 5)}, {"clip_id": "a"})
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["clip_id"] == "a" and len(metadata[DIGEST_KEY]) == 64
    assert torch.equal(load_file(path)["x"], store.get_tensors("t", "k" * 64)["x"])


def test_a_flipped_byte_is_found_by_a_read_quarantined_and_named(tmp_path):
    from cog_assets.store.content_store import CorruptArtifact

    store = ContentStore(str(tmp_path))
    path = store.put_tensors("vae_moments", "a" * 64, {"moments": torch.randn(32, 3, 8, 12)})
    _flip(tmp_path / path)
    with pytest.raises(CorruptArtifact, match=rf"vae_moments artefact a{{64}} at {path} is "
                       "corrupt: the data's blake3"):
        store.get_tensors("vae_moments", "a" * 64)
    assert not store.has("vae_moments", "a" * 64)  # its key is free to be computed again
    assert len(list((tmp_path / "quarantine" / "vae_moments").glob("a*.corrupt"))) == 1


def test_reuse_checks_size_and_header_without_reading_the_data_and_everything_on_request(
        tmp_path):
    store = ContentStore(str(tmp_path))
    path = tmp_path / store.put_tensors("frames", "b" * 64, {"frames": torch.zeros(9, 8, 8, 3)})
    assert store.check_artifact("frames", "b" * 64).ok
    _flip(path)  # inside the data: the header check cannot see it, the full check does
    assert store.check_artifact("frames", "b" * 64).ok
    assert "blake3" in store.check_artifact("frames", "b" * 64, full=True).problem
    assert "blake3" in ContentStore(str(tmp_path), verify_reuse=True).check_artifact(
        "frames", "b" * 64).problem
    path.write_bytes(path.read_bytes()[:-10])  # truncated: the header check sees it
    assert "bytes, but the header describes" in store.check_artifact("frames", "b" * 64).problem
    path.write_bytes(b"\x00" * 100)
    assert not store.check_artifact("frames", "b" * 64).ok
    assert store.check_artifact("frames", "c" * 64).missing


def test_an_artefact_without_a_recorded_digest_is_not_trusted(tmp_path):
    from safetensors.torch import save

    store = ContentStore(str(tmp_path))
    store.write_bytes(store.artifact_path("t", "d" * 64), save({"x": torch.ones(3)}))
    assert "no digest recorded" in store.check_artifact("t", "d" * 64).problem


def test_a_damaged_latent_is_replaced_by_the_stage_and_reported(tmp_path):
    """What a run does with a cached latent whose bytes changed: computed again, the old one
    quarantined and described with its key and path."""
    import polars as pl

    from cog_assets.core.keys import VaeIdentity
    from cog_assets.core.profiles import get_profile
    from cog_assets.models.vae import load_vae
    from cog_assets.models.weights import WeightsSource
    from cog_assets.stages.latents import encode_latents

    weights = WeightsSource(get_profile("tiny"))
    store = ContentStore(str(tmp_path))
    store.put_tensors("frames", "f" * 64, {"frames": torch.zeros(9, 64, 96, 3, dtype=torch.uint8)})
    table = pl.DataFrame({"clip_id": ["a"], "frames_key": ["f" * 64], "bucket": ["9x64x96"],
                          "status": ["computed"]})
    identity = VaeIdentity(weights.identity("vae"), "float32", False)

    def vae():
        return load_vae(weights, torch.device("cpu"), torch.float32)

    first, _ = encode_latents(table, store, identity, vae, 1)
    path = tmp_path / store.artifact_path("vae_moments", first["latent_key"][0])
    good = store.get_tensors("vae_moments", first["latent_key"][0])["moments"]
    _flip(path, 40)
    _, stats = encode_latents(table, store, identity, vae, 1)
    assert (stats.computed, stats.reused) == (1, 0)
    assert len(stats.corrupt) == 1 and str(path) in stats.corrupt[0]
    assert "corrupt_artifacts" in stats.as_metadata()
    assert torch.equal(store.get_tensors("vae_moments", first["latent_key"][0])["moments"], good)


def test_a_damaged_first_frame_png_is_quarantined_and_named(tmp_path):
    """The I2V first frame is a PNG: its chunk CRCs and zlib checksum are its digest."""
    import numpy as np

    from cog_assets.stages.dataset import first_frame_png
    from cog_assets.stages.frames import png_bytes
    from cog_assets.store import layout
    from cog_assets.store.content_store import CorruptArtifact

    store = ContentStore(str(tmp_path))
    path = store.path(layout.first_frame_png("e" * 64))
    data = png_bytes(np.arange(64 * 96 * 3, dtype=np.uint8).reshape(64, 96, 3))
    store.write_bytes(path, data)
    assert first_frame_png(store, "e" * 64) == data
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x01
    store.write_bytes(path, bytes(damaged))
    with pytest.raises(CorruptArtifact, match=rf"first_frame artefact e{{64}} at {path}"):
        first_frame_png(store, "e" * 64)
    assert not store.exists(path)  # the frames step decodes the clip again on the next run


def test_verify_artifacts_makes_frames_reuse_read_and_check_them(tmp_path):
    """By default a frames artefact whose data changed is reused (nothing reads it while its
    latents exist); with verify_artifacts the reuse check reads it and it is decoded again."""
    from cog_assets.stages.common import Reuse
    from cog_assets.stages.frames import _frames_reusable

    store = ContentStore(str(tmp_path))
    path = tmp_path / store.put_tensors("frames", "f" * 64,
                                        {"frames": torch.zeros(9, 8, 8, 3, dtype=torch.uint8)})
    _flip(path)
    stats = Reuse()
    assert _frames_reusable(store, "f" * 64, False, stats) and not stats.corrupt
    assert not _frames_reusable(ContentStore(str(tmp_path), verify_reuse=True), "f" * 64, False,
                                stats)
    assert len(stats.corrupt) == 1 and str(path) in stats.corrupt[0]
    assert not store.has("frames", "f" * 64)


def test_a_file_of_no_tensors_is_sealed_and_read_back():
    """A shard whose every clip was rejected (or deferred) still publishes its tensor files."""
    from cog_assets.store.sealed_tensors import seal, unseal

    assert unseal(seal({})) == {}
    assert unseal(seal({}, {"k": "v"})) == {}
