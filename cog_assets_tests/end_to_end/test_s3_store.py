"""The content store on a real S3 API: moto's server on 127.0.0.1, s3fs as the fsspec filesystem.

On S3 a rename is a copy plus a delete, so the store writes each object with one PUT at its final
key (atomic there). These tests watch the S3 calls s3fs makes, check that no temporary object is
ever left, race two OS processes writing the same shard, and run a whole shard into the bucket.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import multiprocessing
import time
import uuid

import fsspec
import polars as pl
import pytest
import torch
from safetensors.torch import load as load_safetensors

from cog_assets.core.keys import artifact_key
from cog_assets.store.content_store import ContentStore

REGION = "us-east-1"
CREDENTIALS = {"key": "testing", "secret": "testing"}  # moto accepts any


# -- the server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 API in a thread of this process, on a free loopback port; stopped afterwards."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def storage_options(endpoint: str) -> dict:
    return {**CREDENTIALS, "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION}}


def s3_client(endpoint: str):
    """A plain boto3 client, independent of s3fs, to look at the bucket as it really is."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=CREDENTIALS["key"],
                        aws_secret_access_key=CREDENTIALS["secret"])


@pytest.fixture
def bucket(s3_endpoint):
    name = f"cog-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


def all_keys(endpoint: str, bucket: str) -> list[str]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@contextlib.contextmanager
def s3_calls(store: ContentStore):
    """The S3 operations (name, key) that the store's s3fs client makes inside the block."""
    calls: list[tuple[str, str | None]] = []

    def record(params, model, **_):
        calls.append((model.name, params.get("Key")))

    events = store.fs.s3.meta.events
    events.register("before-parameter-build.s3", record)
    try:
        yield calls
    finally:
        events.unregister("before-parameter-build.s3", record)


# -- put/get ---------------------------------------------------------------------------------


def test_tensors_and_tables_round_trip_each_written_with_one_put(s3_endpoint, bucket):
    store = ContentStore(f"s3://{bucket}/prefix", **storage_options(s3_endpoint))
    assert store.is_object_store
    key = artifact_key("latents", content="abc", dtype="float32")
    tensors = {"moments": torch.randn(32, 2, 4, 4), "ids": torch.arange(7, dtype=torch.int64)}
    assert not store.has("latents", key)

    with s3_calls(store) as calls:
        path = store.put_tensors("latents", key, tensors, {"clip_id": "clips/a.mp4"})
    final_key = path.split("/", 1)[1]
    assert final_key == f"prefix/cas/latents/{key[:2]}/{key}.safetensors"
    # one PUT at the final key: no temporary object, no copy, no delete
    assert calls == [("PutObject", final_key)]

    assert store.has("latents", key)
    back = store.get_tensors("latents", key)
    assert back.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert torch.equal(back[name], tensor)

    frame = pl.DataFrame({"clip_id": ["a", "b"], "num_frames": [49, 13]})
    table = store.path("tables", "frame_tensors", "shard-00000.parquet")
    with s3_calls(store) as calls:
        store.write_table(table, frame)
        store.write_json(store.path("datasets", "meta.json"), {"shards": 1})
    assert [name for name, _ in calls] == ["PutObject", "PutObject"]
    assert store.read_table(table).equals(frame)
    assert store.local_path(table) == (
        f"s3://{bucket}/prefix/tables/frame_tensors/shard-00000.parquet")

    assert all_keys(s3_endpoint, bucket) == sorted([
        final_key, "prefix/tables/frame_tensors/shard-00000.parquet", "prefix/datasets/meta.json"])


def test_failed_write_leaves_no_object(s3_endpoint, bucket):
    store = ContentStore(f"s3://{bucket}/prefix", **storage_options(s3_endpoint))
    with pytest.raises(TypeError):
        store.write_bytes(store.path("x", "y.bin"), 12345)  # not bytes
    assert not store.exists(store.path("x", "y.bin"))
    assert all_keys(s3_endpoint, bucket) == []


# -- two processes, one shard ----------------------------------------------------------------

SHARED = [f"clip_{i:02d}" for i in range(6)]  # both writers compute these: same keys, same bytes
OWN = {0: [f"only0_{i}" for i in range(4)], 1: [f"only1_{i}" for i in range(4)]}
SHARD_FILE = "datasets/tiny/shard-00000/latents.safetensors"


def expected_tensors(name: str) -> dict[str, torch.Tensor]:
    """Deterministic content for an artefact name: what any writer of that key produces."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    generator = torch.Generator().manual_seed(seed)
    return {"moments": torch.randn(32, 4, 48, 64, generator=generator)}  # ~1.5 MB


def expected_key(name: str) -> str:
    return artifact_key("latents", clip=name)


def write_shard_artefacts(url: str, options: dict, writer: int, barrier) -> None:
    """One writer process: the shared artefacts, its own ones, and the shard's gathered file."""
    store = ContentStore(url, **options)
    barrier.wait(timeout=60)
    for name in [*SHARED, *OWN[writer]]:
        store.put_tensors("latents", expected_key(name), expected_tensors(name))
    gathered = {n: expected_tensors(n)["moments"] for n in SHARED}
    from safetensors.torch import save as save_safetensors
    store.write_bytes(store.path(SHARD_FILE), save_safetensors(gathered))


@pytest.mark.slow
def test_two_processes_write_the_same_shard_at_once(s3_endpoint, bucket):
    url = f"s3://{bucket}/store"
    options = storage_options(s3_endpoint)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=write_shard_artefacts, args=(url, options, w, barrier))
               for w in (0, 1)]
    for worker in workers:
        worker.start()

    # Meanwhile a reader keeps opening whatever exists: every object it sees must be whole.
    reader = ContentStore(url, **options)
    names = {f"store/cas/latents/{expected_key(n)[:2]}/{expected_key(n)}.safetensors": n
             for n in [*SHARED, *OWN[0], *OWN[1]]}
    seen = set()
    deadline = time.monotonic() + 90
    try:
        while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
            for key in all_keys(s3_endpoint, bucket):
                if key in names and key not in seen:
                    got = load_safetensors(reader.read_bytes(f"{bucket}/{key}"))
                    assert torch.equal(got["moments"], expected_tensors(names[key])["moments"])
                    seen.add(key)
            time.sleep(0.05)
        for worker in workers:
            worker.join(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(5)
    assert [w.exitcode for w in workers] == [0, 0]

    keys = all_keys(s3_endpoint, bucket)
    assert [k for k in keys if ".tmp-" in k] == []
    assert keys == sorted([*names, f"store/{SHARD_FILE}"])
    fresh = ContentStore(url, **options)
    for name in [*SHARED, *OWN[0], *OWN[1]]:
        got = fresh.get_tensors("latents", expected_key(name))
        assert torch.equal(got["moments"], expected_tensors(name)["moments"])
    gathered = load_safetensors(fresh.read_bytes(fresh.path(SHARD_FILE)))
    assert sorted(gathered) == SHARED
    for name in SHARED:
        assert torch.equal(gathered[name], expected_tensors(name)["moments"])


# -- a whole shard ---------------------------------------------------------------------------


@pytest.mark.slow
def test_shard_materializes_into_the_s3_store(s3_endpoint, bucket, tmp_path, monkeypatch):
    """The pipeline only knows the URL; the endpoint comes from fsspec's configuration, as a
    deployment sets it with FSSPEC_S3_* variables."""
    from dagster import instance_for_test

    from cog_assets.core.choices import ArtifactKind
    from cog_assets.core.config import Settings
    from cog_assets.defs.runs import materialize_shards
    from cog_assets.media.synthetic import write_test_dataset
    from cog_assets.store.collection import plan_gc
    from cog_assets.store.verify import verify_store

    monkeypatch.setitem(fsspec.config.conf, "s3", storage_options(s3_endpoint))
    root = write_test_dataset(tmp_path / "data", 3)
    url = f"s3://{bucket}/store"
    settings = Settings.of(data_root=str(root), store=url, shards=1, device="cpu")
    with instance_for_test() as instance:
        [summary] = materialize_shards(settings, instance).values()
        assert summary.success, summary.failure
        assert summary.failed_checks == []
        assert (summary.clips, summary.accepted, summary.rejected) == (4, 3, 1)
        assert summary.computed > 0
        assert summary.index_path == f"{url}/datasets/tiny/shard-00000/index.parquet"

        keys = all_keys(s3_endpoint, bucket)
        assert [k for k in keys if ".tmp-" in k] == []
        shard_dir = "store/datasets/tiny/shard-00000"
        store = ContentStore(url)  # endpoint from fsspec's config, like the pipeline
        index = store.read_table(store.path("datasets", "tiny", "shard-00000", "index.parquet"))
        for name in ("index.parquet", "rejects.parquet", index["latents_file"][0],
                     index["embeds_file"][0]):
            assert f"{shard_dir}/{name}" in keys
        for kind in (ArtifactKind.latents, ArtifactKind.embeddings):  # stored once
            refs = [k for k in keys if k.startswith(f"store/cas/{kind}/")]
            assert refs and all(k.endswith(".ref.json") for k in refs), kind
        assert not [k for k in keys if k.startswith("store/cas/frames/")]  # dropped: published
        assert any(k.startswith("store/cas/thumbnail/") for k in keys)
        assert any(k.startswith("store/tables/") for k in keys)

        assert index.height == 3
        latents = load_safetensors(store.read_bytes(
            store.path("datasets", "tiny", "shard-00000", index["latents_file"][0])))
        assert sorted(latents) == sorted(index["clip_id"].to_list())
        for row in index.iter_rows(named=True):  # through the reference: range GETs, checked
            assert torch.equal(store.get_tensors(ArtifactKind.latents, row["latent_key"])[
                "moments"], latents[row["clip_id"]])
        assert verify_store(store).ok
        rejects = pl.read_parquet(io.BytesIO(store.read_bytes(
            store.path("datasets", "tiny", "shard-00000", "rejects.parquet"))))
        assert rejects["clip_id"].to_list() == ["clips/garbage.mp4"]

        # Nothing changed: the shard is up to date (its index is in the bucket), not run;
        # run anyway, it finds every artefact in the bucket.
        [fresh] = materialize_shards(settings, instance).values()
        assert fresh.up_to_date and fresh.index_path == summary.index_path
        [again] = materialize_shards(settings, instance, force=True).values()
        assert again.success, again.failure
        assert again.computed == 0 and again.reused > 0
        assert not plan_gc(store, grace_s=0).garbage  # gc lists a bucket: nothing is garbage


# -- one publication at a time ---------------------------------------------------------------


def _hold_lock(url: str, options: dict, held, release) -> None:
    """Another machine's publication: holds the dataset's lock until told to let go."""
    from cog_assets.store.dataset_lock import dataset_lock

    store = ContentStore(url, **options)
    with dataset_lock(store, store.path("datasets", "tiny")):
        held.set()
        release.wait(60)


def test_the_dataset_lock_on_s3_keeps_other_processes_out_until_released(s3_endpoint, bucket):
    """Conditional writes (If-None-Match to take it, If-Match to renew, release and take over)
    make one lock object a lock across processes: while another process holds it, no one gets
    it; once released, the next one does; a holder that stopped renewing is taken over, and its
    late release does not remove its successor's lock."""
    from cog_assets.store.dataset_lock import LockTimeout, ObjectLock

    url, options = f"s3://{bucket}/store", storage_options(s3_endpoint)
    store = ContentStore(url, **options)
    path = store.path("datasets", "tiny", ".catalog.lock")
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    other = context.Process(target=_hold_lock, args=(url, options, held, release))
    other.start()
    try:
        assert held.wait(60)
        with pytest.raises(LockTimeout, match="is held by"):
            ObjectLock(store, path, wait_s=1.0).acquire()
        release.set()
        other.join(60)
        assert other.exitcode == 0 and not store.exists(path)  # released with If-Match
        with ObjectLock(store, path, wait_s=5.0):
            assert store.exists(path)
    finally:
        release.set()
        other.join(10)

    stalled = ObjectLock(store, path, expires_s=0.5)
    stalled.acquire()  # and never renews: a frozen holder
    successor = ObjectLock(store, path, wait_s=10.0)
    successor.acquire()  # taken over once expired, with If-Match on the ETag it read
    stalled.release()  # too late: its If-Match fails, the successor's lock stays
    assert store.exists(path) and successor.holder.encode() in store.fs.cat_file(path)
    successor.release()
    assert not store.exists(path)


def test_two_runs_of_one_shard_on_s3_never_list_a_gone_file(s3_endpoint, bucket, monkeypatch):
    """The local interleaving of test_catalog, on S3: run A held right after publishing while
    run B writes and publishes its own version; the catalog lists only files in the bucket."""
    from cog_assets.store.catalog import read_catalog
    from cog_assets.store.verify import verify_store
    from cog_assets_tests.fixtures.datasets import publish_two_runs_at_once

    store = ContentStore(f"s3://{bucket}/store", **storage_options(s3_endpoint))
    root = store.path("datasets", "tiny")
    first, second = publish_two_runs_at_once(root, store, monkeypatch)
    entry = read_catalog(store, root).shards["shard-00000"]
    assert entry.version == second != first
    for published in [*entry.served(), entry.rejects]:
        assert store.fs.size(f"{root}/shard-00000/{published.name}") == published.bytes
    assert verify_store(store).ok
    assert not store.exists(f"{root}/.catalog.lock")  # released
