"""A run may not change what the assets write: a run config (the launchpad, `dagster asset
materialize --config-json`) that overrides a setting shaping outputs is refused before any
step writes, naming the setting, both values and how to change it; settings that change how,
not what, stay overridable."""

from __future__ import annotations

import pytest
from dagster import execute_job, instance_for_test

from cog_assets.core.config import RESOURCE_GROUPS, Settings, SettingsError, setting_fields
from cog_assets.defs.build import reconstructable_job
from cog_assets.defs.runs import materialize_shards, register_shards
from cog_assets.defs.versions import SHARD_ASSETS, code_versions
from cog_assets.media.synthetic import write_test_dataset

# another valid value of each launchpad setting, where the type alone does not give one
OTHER = {"data_root": "/elsewhere", "buckets": ["9x32x48"], "token_budget": 13312,
         "profile": "tiny-i2v", "device": "cpu", "store": "/another/store",
         "segment_captions": "segments.jsonl", "manifests": ["meta/*.csv"],
         "aesthetic_weights": "/weights/aesthetic", "min_aesthetic": 5.0,
         "gpu_lock_dir": "/tmp/locks", "weights": "org/other-cogvideox",
         "caption_endpoint": "http://127.0.0.1:8000/v1",
         "revision": "v2", "id_token": "TOK"}


# captions written through an endpoint: the endpoint may change per run (another server of the
# same model), never the model
CAPTIONING = Settings.of(caption_mode="fill", caption_model="org/vlm",
                         caption_endpoint="http://127.0.0.1:9000/v1")


def _other(field):
    if field.flat in OTHER:
        return OTHER[field.flat]
    value = field.default
    if field.choices:
        return next(c for c in field.choices if c != str(value))
    if field.is_bool:
        return not value
    if field.kind is int:
        return (value or 1) + 1
    if field.kind is float:
        return (value or 0.5) * 2
    return "other"


def test_a_run_is_refused_exactly_the_settings_that_move_a_code_version():
    from cog_assets.defs.run_settings import HOW_NOT_WHAT, output_shaping

    moving = set()
    for field in setting_fields():
        if field.group not in RESOURCE_GROUPS:
            continue
        # hub weights (a named profile's): the tiny profile's seeded ones have no revision
        defined = Settings.of(profile="cogvideox-2b") if field.flat in ("revision", "weights") \
            else CAPTIONING if field.flat == "caption_endpoint" else Settings()
        change = [(field.flat, field.default, _other(field))]
        try:
            moved = code_versions(defined.with_(**{field.flat: _other(field)})) != \
                code_versions(defined)
        except (SettingsError, ValueError):  # ProfileError: weights that are not there
            moved = True  # not even valid with the others
        assert (output_shaping(defined, change) == change) is moved, field.flat
        assert not (moved and field.flat in HOW_NOT_WHAT), field.flat
        moving |= {field.flat} if moved else set()
    assert {"data_root", "shards", "buckets", "resize", "max_pixels", "split_scenes",
            "profile", "weights", "revision", "dtype", "vae_tiling", "store"} <= moving
    assert not moving & set(HOW_NOT_WHAT)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("overrides")
    root = write_test_dataset(tmp / "data", 2, broken=False)
    settings = Settings.of(data_root=str(root), store=str(tmp / "store"), shards=1,
                           device="cpu")
    return tmp, settings


def _run(settings, instance, resources: dict):
    [shard] = register_shards(instance, settings)
    with execute_job(reconstructable_job(settings), instance=instance,
                     run_config={"resources": resources},
                     tags={"dagster/partition": shard}, raise_on_error=False) as result:
        failures = [e.event_specific_data.error for e in result.all_events
                    if e.is_step_failure]
        written = [str(m.metadata["table_path"].value)
                   for e in result.get_asset_materialization_events()
                   for m in [e.event_specific_data.materialization]
                   if "table_path" in m.metadata]
        return result.success, [f"{f.message} {f.cause.message if f.cause else ''}"
                                for f in failures], written


@pytest.mark.slow
def test_a_run_config_overriding_the_buckets_is_refused_and_writes_nothing(dataset):
    tmp, settings = dataset
    with instance_for_test() as instance:
        success, failures, _ = _run(settings, instance,
                                    {"frames": {"config": {"buckets": ["9x32x48"]}}})
        assert not success
        [message] = failures
        assert "buckets (resource frames) is '9x32x48' in this run's config but unset in the " \
            "code location's settings" in message
        assert "COG_ASSETS_BUCKETS=9x32x48" in message and "--buckets 9x32x48" in message
        assert "batch_size" in message  # what a run may change
        assert not (tmp / "store" / "tables").exists()  # the first step refused: nothing
        assert not (tmp / "store" / "datasets").exists()
        # the next backfill runs the shard: nothing was recorded as materialized
        [summary] = materialize_shards(settings, instance).values()
        assert not summary.up_to_date and summary.success
        assert summary.why == [f"{name} never materialized" for name in SHARD_ASSETS]


@pytest.mark.slow
def test_overriding_the_store_or_the_tables_store_is_refused_too(dataset):
    tmp, settings = dataset
    with instance_for_test() as instance:
        success, [message], _ = _run(settings, instance,
                                     {"store": {"config": {"url": str(tmp / "elsewhere")}}})
        assert not success and "store (resource store) is" in message
        success, [message], _ = _run(settings, instance, {
            "io_manager": {"config": {"store_url": str(tmp / "elsewhere")}}})
        assert not success and "store (io_manager's store_url) is" in message
    assert not (tmp / "elsewhere").exists()


@pytest.mark.slow
def test_settings_that_change_how_not_what_stay_overridable(dataset):
    tmp, settings = dataset
    with instance_for_test() as instance:
        success, failures, written = _run(settings, instance, {
            "device": {"config": {"batch_size": 2, "text_batch_size": 1,
                                  "vae_slicing": True}},
            "store": {"config": {"verify_artifacts": True, "frames_retention": "keep"}}})
        assert success, failures
        # the fields the config left out keep the code location's values (the store's url)
        assert written and all(path.startswith(str(tmp / "store")) for path in written)
        # written under the code location's versions, which they are: the backfill agrees
        [summary] = materialize_shards(settings, instance).values()
        assert summary.up_to_date


def test_the_launchpad_offers_the_code_locations_values_and_keeps_those_not_given():
    """Dagster makes a resource's run config schema from its class: the defaults there are
    what the launchpad scaffolds and what a partial run config falls back to."""
    from cog_assets.defs.resources import build_resources

    settings = Settings.of(store="/data/cog-store", data_root="/data/clips",
                           buckets=["9x32x48"], batch_size=3)
    for key, values in (("store", {"url": "/data/cog-store"}),
                        ("frames", {"buckets": ["9x32x48"]}),
                        ("sources", {"data_root": "/data/clips"}),
                        ("device", {"batch_size": 3}),
                        ("io_manager", {"store_url": "/data/cog-store"})):
        schema = build_resources(settings)[key].get_resource_definition().config_schema
        fields = schema.as_field().config_type.fields
        assert {name: fields[name].default_value for name in values} == values, key
