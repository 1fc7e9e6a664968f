"""The upload sensor on a real directory, evaluated with Dagster's own sensor context."""

import os

import pytest
from dagster import AssetKey, build_sensor_context, instance_for_test

from cog_assets.core.config import Settings, SourceSettings
from cog_assets.defs.build import build_definitions
from cog_assets.defs.runs import materialize_shards
from cog_assets.defs.sensors import upload_sensor
from cog_assets.media.synthetic import write_test_dataset, write_test_video
from cog_assets.sources.sharding import shard_for

SHARDS = 8


class Ticker:
    """Evaluates the sensor tick after tick, carrying the cursor as the daemon would, with the
    definitions (resources, asset graph and code versions) of `settings`."""

    def __init__(self, instance, settings: Settings):
        self.instance, self.cursor, self.settings = instance, None, settings
        self.definitions = build_definitions(settings)

    def tick(self):
        resources = {k: v for k, v in self.definitions.resources.items()
                     if k in ("sources", "model", "store")}
        context = build_sensor_context(instance=self.instance, cursor=self.cursor,
                                       definitions=self.definitions, resources=resources)
        result = upload_sensor(context)
        self.cursor = context.cursor
        return result

    def shards_requested(self):
        result = self.tick()
        return sorted(r.partition_key for r in getattr(result, "run_requests", None) or [])


def _settings(root, store, shards=SHARDS) -> Settings:
    return Settings.of(data_root=str(root), store=str(store), shards=shards, device="cpu")


@pytest.fixture
def ticker(tmp_path):
    root = write_test_dataset(tmp_path / "data", 4, broken=False)
    with instance_for_test() as instance:
        yield Ticker(instance, _settings(root, tmp_path / "store")), root


def _shard(i: int) -> str:
    return shard_for(f"clips/clip_{i:02d}.mp4", SHARDS)


def test_new_files_become_shards_and_runs_once(ticker):
    t, root = ticker
    first = t.tick()
    expected = sorted({_shard(i) for i in range(4)})
    assert sorted(r.partition_key for r in first.run_requests) == expected
    assert all("raw_manifest never materialized" in r.tags["cog_assets/why"]
               for r in first.run_requests)
    assert sorted(t.instance.get_dynamic_partitions("shards")) == expected
    for shard in expected:  # uploads observed: the UI compares against these
        assert t.instance.get_latest_data_version_record(AssetKey("uploads"), True, shard)
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


def test_a_shard_that_lost_its_only_clip_before_it_ever_ran_needs_nothing(ticker):
    t, root = ticker
    t.tick()
    videos = (root / "videos.txt").read_text().splitlines()
    prompts = (root / "prompts.txt").read_text().splitlines()
    (root / "videos.txt").write_text("\n".join(videos[:1] + videos[2:]) + "\n")
    (root / "prompts.txt").write_text("\n".join(prompts[:1] + prompts[2:]) + "\n")
    (root / "clips/clip_01.mp4").unlink()
    assert t.shards_requested() == []  # clip_01 was alone in its shard, never materialized


def test_hashing_spreads_over_ticks_when_the_budget_runs_out(tmp_path):
    from cog_assets.sources.uploads import UploadState, scan_uploads
    from cog_assets.store.content_store import ContentStore

    root = write_test_dataset(tmp_path / "data", 4, broken=False)
    sources = SourceSettings(data_root=str(root), shard_count=SHARDS)
    state = UploadState(ContentStore(str(tmp_path / "store")), sources, "tiny")
    first = scan_uploads(state, None, sources, hash_budget_s=0.0)
    assert first.pending > 0 and first.changed == []  # nothing reported half-hashed
    second = scan_uploads(state, first.generation, sources)
    assert second.pending == 0
    assert second.changed == sorted({_shard(i) for i in range(4)})
    third = scan_uploads(state, second.generation, sources)
    assert third.changed == [] and third.hashed == 0


# -- after a demo or a backfill: the sensor's first tick ----------------------------------------

@pytest.fixture
def materialized(tmp_path):
    """6 clips over 2 shards materialized as `cog-assets backfill` does (which saves the upload
    state and records the fingerprints), then a sensor with no cursor: just turned on."""
    root = write_test_dataset(tmp_path / "data", 6, broken=False)
    settings = _settings(root, tmp_path / "store", shards=2)
    with instance_for_test() as instance:
        assert all(s.success for s in materialize_shards(settings, instance).values())
        yield Ticker(instance, settings), root


@pytest.mark.slow
def test_first_tick_after_a_backfill_requests_nothing_when_nothing_changed(materialized):
    t, _root = materialized
    assert t.shards_requested() == []
    assert t.shards_requested() == []


@pytest.mark.slow
def test_first_tick_after_a_backfill_requests_exactly_the_changed_shard(materialized):
    t, root = materialized
    write_test_video(root / "clips/clip_02.mp4", width=128, height=96, seconds=1.5, seed=99)
    result = t.tick()
    [request] = result.run_requests
    assert request.partition_key == shard_for("clips/clip_02.mp4", 2)
    assert "raw_manifest has a new dependency data version (uploads)" in request.tags[
        "cog_assets/why"]
    assert t.shards_requested() == []  # the same state again: no second run


@pytest.mark.slow
def test_changed_settings_make_the_sensor_run_every_shard_once(materialized):
    """A setting that shapes outputs (here the dtype) changes the assets' code versions: the
    next tick judges every shard and requests each once; batch size changes nothing."""
    t, _root = materialized
    assert t.shards_requested() == []
    t.definitions = build_definitions(t.settings.with_(batch_size=4))
    assert t.shards_requested() == []
    t.definitions = build_definitions(t.settings.with_(dtype="bfloat16"))
    result = t.tick()
    assert sorted(r.partition_key for r in result.run_requests) == ["shard-00000",
                                                                    "shard-00001"]
    assert all("has a new code version" in r.tags["cog_assets/why"] for r in result.run_requests)
    assert t.shards_requested() == []


@pytest.mark.slow
def test_a_materialized_shard_that_lost_every_clip_is_run_to_retire_it(materialized):
    t, root = materialized
    gone = {"clips/clip_00.mp4", "clips/clip_02.mp4"}  # all of shard-00000 (2 shards)
    assert {shard_for(v, 2) for v in gone} == {"shard-00000"}
    videos = (root / "videos.txt").read_text().splitlines()
    prompts = (root / "prompts.txt").read_text().splitlines()
    kept = [(v, p) for v, p in zip(videos, prompts) if v not in gone]
    (root / "videos.txt").write_text("".join(f"{v}\n" for v, _ in kept))
    (root / "prompts.txt").write_text("".join(f"{p}\n" for _, p in kept))
    assert t.shards_requested() == ["shard-00000"]


def test_the_sensor_says_what_it_does_in_the_ui():
    """The *Automation* page shows a sensor's description; it had none."""
    sensor = build_definitions(Settings()).get_sensor_def("upload_sensor")
    assert sensor.description and "shards that need it" in sensor.description
