"""encode_latents streams: the next batch is read while the VAE encodes, within two batches,
and the moments are bit-identical to encoding each batch with encode_moments."""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest
import torch

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.keys import VaeIdentity
from cog_assets.core.profiles import get_profile
from cog_assets.models.vae import load_vae, vae_input_on_device
from cog_assets.models.weights import WeightsSource
from cog_assets.stages.latents import (
    BatchStream,
    MissingFrames,
    _Target,
    encode_latents,
)
from cog_assets.store.content_store import ContentStore
from cog_assets_tests.fixtures.reference import encode_moments

CPU = torch.device("cpu")
TINY = WeightsSource(get_profile("tiny"))
BUCKETS = {"9x64x96": (9, 64, 96), "5x64x64": (5, 64, 64)}


def clips_in_store(store: ContentStore, count: int) -> pl.DataFrame:
    """`count` random clips, alternating between two buckets, as frame_tensors rows."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        bucket = list(BUCKETS)[i % 2]
        frames = rng.integers(0, 256, (*BUCKETS[bucket], 3), dtype=np.uint8)
        store.put_tensors(ArtifactKind.frames, f"f{i}", {"frames": torch.from_numpy(frames)})
        rows.append({"clip_id": f"c{i}", "frames_key": f"f{i}", "bucket": bucket,
                     "status": "computed"})
    return pl.DataFrame(rows)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_streamed_moments_are_bit_identical_to_encode_moments(tmp_path, batch_size):
    store = ContentStore(str(tmp_path))
    table = clips_in_store(store, 5)
    identity = VaeIdentity(TINY.identity("vae"), "float32", False)
    result, stats = encode_latents(table, store, identity,
                                   lambda: load_vae(TINY, CPU, torch.float32), batch_size)
    assert stats.computed == 5 and result["clip_id"].to_list() == table["clip_id"].to_list()

    vae = load_vae(TINY, CPU, torch.float32)
    by_bucket: dict[str, list[dict]] = {}
    for row in table.iter_rows(named=True):
        by_bucket.setdefault(row["bucket"], []).append(row)
    for rows in by_bucket.values():  # the batches encode_latents makes: per bucket, in order
        for i in range(0, len(rows), batch_size):
            batch = rows[i:i + batch_size]
            frames = torch.stack([store.get_tensors(ArtifactKind.frames, r["frames_key"])["frames"]
                                  for r in batch])
            expected = encode_moments(vae, frames)
            for j, row in enumerate(batch):
                key = identity.key(row["frames_key"])
                got = store.get_tensors(ArtifactKind.latents, key)["moments"]
                assert torch.equal(got, expected[j])


def test_reader_stays_within_one_batch_ahead(tmp_path):
    store = ContentStore(str(tmp_path))
    table = clips_in_store(store, 6)
    batches = [[row] for row in table.iter_rows(named=True)]
    target = _Target()
    target.set(load_vae(TINY, CPU, torch.float32))
    seen, most = 0, 0
    with BatchStream(store, batches, target, ahead=1) as stream:
        for batch, inputs in stream:
            time.sleep(0.2)  # a slow encode: the reader has all the time it wants
            assert stream.buffered <= 1, "the reader ran more than one batch ahead"
            assert inputs["frames"].dtype == torch.float32
            assert inputs["frames"].shape[:2] == (1, 3)
            seen += 1
            most = max(most, stream.buffered)
            del inputs
    assert seen == 6 and most == 1  # it did read ahead


def test_for_a_vae_off_the_cpu_frames_cross_as_uint8_and_are_normalised_there(tmp_path):
    """A GPU's feed is bound by the CPU: the reader leaves normalising to the VAE's device
    (4x fewer bytes over the bus than float32), where it gives the CPU reader's input."""
    store = ContentStore(str(tmp_path))
    table = clips_in_store(store, 2)
    batches = [[row] for row in table.iter_rows(named=True)]
    for dtype in (torch.float32, torch.bfloat16):
        elsewhere, here = _Target(), _Target()
        elsewhere.set(torch.nn.Linear(1, 1, device="meta", dtype=dtype))  # not the CPU
        here.set(torch.nn.Linear(1, 1, dtype=dtype))
        with BatchStream(store, batches, elsewhere, ahead=0) as off_cpu, \
                BatchStream(store, batches, here, ahead=0) as on_cpu:
            for (batch, crossing), (_, cpu_input) in zip(off_cpu, on_cpu, strict=True):
                frames = crossing["frames"]
                assert frames.dtype == torch.uint8 and frames.shape[-1] == 3
                stored = store.get_tensors(ArtifactKind.frames, batch[0]["frames_key"])
                assert torch.equal(frames[0], stored["frames"])
                finished = vae_input_on_device(frames, torch.device("cpu"), dtype)
                assert finished.dtype == dtype
                assert torch.equal(finished, cpu_input["frames"])


def test_on_the_cpu_the_reader_waits_for_the_vae_by_default(tmp_path, monkeypatch):
    """The CPU's VAE keeps every core busy: nothing is gained by reading ahead there, and a
    batch more would be held at the peak. The first batch is still read while it loads."""
    store = ContentStore(str(tmp_path))
    table = clips_in_store(store, 4)
    identity = VaeIdentity(TINY.identity("vae"), "float32", False)
    buffered = []
    original = BatchStream.__iter__

    def watched(stream):
        for item in original(stream):
            time.sleep(0.2)  # a slow encode: the reader could run ahead if it were let
            buffered.append(stream.buffered)
            yield item

    monkeypatch.setattr(BatchStream, "__iter__", watched)
    encode_latents(table, store, identity, lambda: load_vae(TINY, CPU, torch.float32), 1)
    assert buffered == [0, 0, 0, 0]
    encode_latents(table, store, VaeIdentity(TINY.identity("vae"), "float32", True),
                   lambda: load_vae(TINY, CPU, torch.float32, tiling=True), 1,
                   prefetch_batches=1)
    assert max(buffered[4:]) == 1  # asked for: one batch ahead


def test_a_missing_frames_file_is_raised_to_the_caller(tmp_path):
    store = ContentStore(str(tmp_path))
    table = clips_in_store(store, 2).with_columns(pl.lit("nope").alias("frames_key"))
    identity = VaeIdentity(TINY.identity("vae"), "float32", False)
    with pytest.raises(MissingFrames, match=r"c0: its frames \(nope\) are not in the "
                       "store"):
        encode_latents(table, store, identity, lambda: load_vae(TINY, CPU, torch.float32), 1)


def test_a_damaged_frames_file_is_decoded_again_and_reported_as_replaced(tmp_path):
    store = ContentStore(str(tmp_path))
    table = clips_in_store(store, 4)
    good = store.get_tensors(ArtifactKind.frames, "f2")
    path = store.artifact_path(ArtifactKind.frames, "f2")
    data = bytearray(open(path, "rb").read())
    data[-100] ^= 0x01  # a flipped bit in the pixels: same size, the header still parses
    open(path, "wb").write(bytes(data))
    decoded_again = []

    def redecode(rows: pl.DataFrame) -> None:  # what decode_again does: the same frames
        decoded_again.extend(rows["clip_id"])
        store.put_tensors(ArtifactKind.frames, "f2", good)

    identity = VaeIdentity(TINY.identity("vae"), "float32", False)
    result, stats = encode_latents(table, store, identity,
                                   lambda: load_vae(TINY, CPU, torch.float32), 1,
                                   redecode=redecode)
    assert decoded_again == ["c2"]
    assert stats.computed == 4 and set(result["status"]) == {"computed"}
    [line] = stats.corrupt
    assert line.startswith(f"frames artefact f2 at {path}: ") and "decoded again" in line
    assert stats.as_metadata()["corrupt_replaced"] == 1
    assert list((tmp_path / "quarantine" / "frames").glob("f2.*.corrupt"))
    expected = encode_moments(load_vae(TINY, CPU, torch.float32), good["frames"])[0]
    key = identity.key("f2")
    assert torch.equal(store.get_tensors(ArtifactKind.latents, key)["moments"], expected)
