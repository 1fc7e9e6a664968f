"""The upload sensor on a real directory, evaluated with Dagster's own sensor context."""

import os

import pytest
from dagster import build_sensor_context, instance_for_test

from cog_assets.config import SourceSettings
from cog_assets.defs.resources import SourcesResource, StoreResource
from cog_assets.defs.sensors import upload_sensor
from cog_assets.media.synthetic import write_test_video
from cog_assets.sharding import shard_for
from cog_assets_tests.conftest import make_dataset

SHARDS = 8


class Ticker:
    """Evaluates the sensor tick after tick, carrying the cursor as the daemon would."""

    def __init__(self, instance, root, store):
        self.instance, self.cursor = instance, None
        self.resources = {"sources": SourcesResource(data_root=str(root), shard_count=SHARDS),
                          "store": StoreResource(url=str(store))}

    def tick(self):
        context = build_sensor_context(instance=self.instance, cursor=self.cursor,
                                       resources=self.resources)
        result = upload_sensor(context)
        self.cursor = context.cursor
        for request in getattr(result, "dynamic_partitions_requests", None) or []:
            self.instance.add_dynamic_partitions("shards", list(request.partition_keys))
        return result

    def shards_requested(self):
        result = self.tick()
        return sorted(r.partition_key for r in getattr(result, "run_requests", None) or [])


@pytest.fixture
def ticker(tmp_path):
    root = make_dataset(tmp_path / "data", 4, broken=False)
    with instance_for_test() as instance:
        yield Ticker(instance, root, tmp_path / "store"), root


def _shard(i: int) -> str:
    return shard_for(f"clips/clip_{i:02d}.mp4", SHARDS)


def test_new_files_become_shards_and_runs_once(ticker):
    t, root = ticker
    first = t.tick()
    expected = sorted({_shard(i) for i in range(4)})
    assert sorted(r.partition_key for r in first.run_requests) == expected
    assert sorted(first.dynamic_partitions_requests[0].partition_keys) == expected
    assert {e.partition for e in first.asset_events} == set(expected)  # uploads observed
    assert t.shards_requested() == []  # nothing changed: no run


def test_touch_without_change_requests_nothing(ticker):
    t, root = ticker
    t.tick()
    video = root / "clips/clip_01.mp4"
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 5_000_000_000))
    assert t.shards_requested() == []


def test_changed_bytes_run_only_that_shard_with_a_new_run_key(ticker):
    t, root = ticker
    first = {r.partition_key: r.run_key for r in t.tick().run_requests}
    write_test_video(root / "clips/clip_02.mp4", seconds=1.5, seed=99)
    result = t.tick()
    [request] = result.run_requests
    assert request.partition_key == _shard(2)
    assert request.run_key != first[_shard(2)]


def test_changed_caption_runs_its_shard(ticker):
    t, root = ticker
    t.tick()
    lines = (root / "prompts.txt").read_text().splitlines()
    lines[3] = "an entirely new caption"
    (root / "prompts.txt").write_text("\n".join(lines) + "\n")
    assert t.shards_requested() == [_shard(3)]


def test_deleted_video_runs_its_shard(ticker):
    t, root = ticker
    t.tick()
    videos = (root / "videos.txt").read_text().splitlines()
    prompts = (root / "prompts.txt").read_text().splitlines()
    (root / "videos.txt").write_text("\n".join(videos[:1] + videos[2:]) + "\n")
    (root / "prompts.txt").write_text("\n".join(prompts[:1] + prompts[2:]) + "\n")
    (root / "clips/clip_01.mp4").unlink()
    assert t.shards_requested() == [_shard(1)]


def test_hashing_spreads_over_ticks_when_the_budget_runs_out(tmp_path):
    from cog_assets.store import ContentStore
    from cog_assets.uploads import UploadState, scan_uploads

    root = make_dataset(tmp_path / "data", 4, broken=False)
    sources = SourceSettings(data_root=str(root), shard_count=SHARDS)
    state = UploadState(ContentStore(str(tmp_path / "store")), sources)
    first = scan_uploads(state, None, sources, hash_budget_s=0.0)
    assert first.pending > 0 and first.changed == []  # nothing reported half-hashed
    second = scan_uploads(state, first.generation, sources)
    assert second.pending == 0
    assert second.changed == sorted({_shard(i) for i in range(4)})
    third = scan_uploads(state, second.generation, sources)
    assert third.changed == [] and third.hashed == 0
