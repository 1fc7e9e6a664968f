"""The one configuration model: every setting reachable from the CLI, the environment and the
Dagster resources, each invalid value refused before any work with a message naming it."""

import subprocess
import sys
from pathlib import Path

import pytest

from cog_assets.cli import build_parser, main
from cog_assets.core.config import (
    GROUPS,
    Settings,
    SettingsError,
    load_settings,
    setting_fields,
    settings_env,
    settings_table,
)
from cog_assets.core.reasons import RejectReason, reasons_table
from cog_assets.defs.resources import RESOURCE_CLASSES, build_resources
from cog_assets.media.synthetic import write_test_dataset

README = Path(__file__).resolve().parents[2] / "README.md"


def _flags(command: str) -> set[str]:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    return {flag for action in sub._actions for flag in action.option_strings}


def test_every_setting_is_a_backfill_flag_a_variable_and_a_resource_field():
    flags = _flags("backfill")
    for field in setting_fields():
        assert field.flag in flags, field.flat
        value = {"shards": "3", "batch_size": "2", "vae_tiling": "1", "profile": "tiny-i2v",
                 "resize": "crop", "max_pixels": "1000", "executor": "multiprocess",
                 "k8s_node_selector": '{"gpu": "l4"}', "store": "s3://bucket/prefix",
                 "celery_backend": "rpc://"}.get(field.flat)
        if value is not None:  # the variable reaches the setting
            settings = load_settings(env={field.env: value})
            assert field.text(getattr(getattr(settings, field.group), field.name)) == value
        if field.group in RESOURCE_CLASSES:  # and the launchpad shows it, documented
            resource_field = RESOURCE_CLASSES[field.group].model_fields[field.name]
            assert resource_field.default == field.default
            assert resource_field.description == field.info.description


def test_resources_are_built_from_the_settings_and_refuse_what_the_settings_refuse():
    settings = Settings.of(shards=3, buckets="9x64x96", batch_size=2, vae_tiling=True)
    resources = build_resources(settings)
    for key in RESOURCE_CLASSES:
        assert resources[key].settings() == getattr(settings, key)
    with pytest.raises(Exception, match="greater than or equal to 1"):
        RESOURCE_CLASSES["sources"](shard_count=0)
    with pytest.raises(Exception, match="unknown device 'gpu'"):
        RESOURCE_CLASSES["device"](device="gpu")


def test_a_flag_beats_the_variable_which_beats_the_default():
    assert Settings().sources.shard_count == 4
    assert load_settings(env={"COG_ASSETS_SHARDS": "6"}).sources.shard_count == 6
    both = load_settings(env={"COG_ASSETS_SHARDS": "6"}, overrides={"shards": 2})
    assert both.sources.shard_count == 2


def test_settings_travel_through_the_environment_unchanged():
    settings = Settings.of(data_root="/data", store="s3://b/p", shards=8, buckets=["9x64x96"],
                           sample_start="random", seed=7, short_clips="pad", vae_slicing=True,
                           executor="celery", celery_broker="redis://h:1/0", max_pixels=10**6)
    assert load_settings(env=settings_env(settings)) == settings
    changed = settings_env(settings, changed_only=True)
    assert "COG_ASSETS_RESIZE" not in changed and changed["COG_ASSETS_SHARDS"] == "8"


def test_setting_names_are_unique_and_every_group_documented():
    flats = [f.flat for f in setting_fields()]
    assert len(flats) == len(set(flats))
    for group in GROUPS.values():
        assert group.__doc__
    assert all(f.info.description for f in setting_fields())


@pytest.mark.parametrize("args, named", [
    (["--shards", "0"], "setting shards (--shards 0)"),
    (["--batch-size", "0"], "setting batch_size (--batch-size 0)"),
    (["--text-batch-size", "-1"], "setting text_batch_size"),
    (["--token-budget", "0"], "setting token_budget (--token-budget 0): Input should be greater"),
    (["--device", "gpu"], "unknown device 'gpu'; use auto, cpu, cuda or cuda:N"),
    (["--profile", "cogvideox-9b"], "unknown model profile 'cogvideox-9b'; known profiles"),
    (["--buckets", "50x64x96"], "frame count 50 is not of the form 4k+1"),
    (["--buckets", "9x64x96", "--token-budget", "100"], "either buckets or token_budget"),
    (["--executor", "celery"], "celery needs celery_broker"),
    (["--k8s-node-selector", "[1]"], "setting k8s_node_selector"),
    (["--shard-range", "3:1"], "--shard-range '3:1' is inverted"),
    (["--shard-range", "7:9"], "--shard-range '7:9' holds no shard"),
    (["--shard-range", "2"], "expected FIRST:LAST"),
    (["--shard-range", "a:b"], "--shard-range 'a:b' is invalid: expected FIRST:LAST"),
    (["--shard-range", "shard-1:shard-2"], "--shard-range 'shard-1:shard-2' is invalid"),
    (["--shard", "shard-00042"], "--shard: no clips in shard(s) shard-00042"),
])
def test_invalid_values_exit_2_naming_the_setting(tmp_path, monkeypatch, capsys, args, named):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    data = write_test_dataset(tmp_path / "data", 2, broken=False)
    code = main(["backfill", "--data-root", str(data), "--store", str(tmp_path / "store"),
                 "--shards", "2", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "store").exists()  # nothing was done


@pytest.mark.parametrize("args, named", [
    (["--dtype", "fp8"], "invalid choice: 'fp8'"),
    (["--resize", "zoom"], "invalid choice: 'zoom'"),
    (["--parallel", "0"], "must be at least 1"),
])
def test_argparse_refuses_unknown_words_with_exit_2(tmp_path, capsys, args, named):
    with pytest.raises(SystemExit) as exited:
        main(["backfill", *args])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


def test_an_unwritable_dagster_home_is_refused_before_any_work(tmp_path, capsys):
    home = tmp_path / "home"
    home.write_text("a file where the instance directory should be")
    data = write_test_dataset(tmp_path / "data", 1, broken=False)
    code = main(["backfill", "--data-root", str(data), "--store", str(tmp_path / "store"),
                 "--dagster-home", str(home)])
    err = capsys.readouterr().err
    assert code == 2 and f"DAGSTER_HOME {home} is not a writable directory" in err
    assert not (tmp_path / "store").exists()


def test_a_bad_variable_is_named_with_its_value():
    with pytest.raises(SettingsError, match=r"setting shards \(COG_ASSETS_SHARDS=many\)"):
        load_settings(env={"COG_ASSETS_SHARDS": "many"})


def test_the_readme_tables_are_the_ones_the_code_renders():
    readme = README.read_text(encoding="utf-8")
    assert settings_table() in readme, "README's settings table is stale:\n" + settings_table()
    assert reasons_table() in readme, "README's reasons table is stale:\n" + reasons_table()


def test_every_reason_has_a_meaning_and_unknown_reasons_are_bugs():
    from cog_assets.media.errors import MediaError

    assert all(reason.meaning for reason in RejectReason)
    assert MediaError("too_short", "x").reason is RejectReason.too_short
    with pytest.raises(ValueError):
        MediaError("not_a_reason", "x")


def test_a_trainer_importing_the_loader_pulls_in_no_media_model_or_dagster_code():
    code = ("import sys, cog_assets.loader; "
            "print(sorted(m for m in ('av', 'diffusers', 'dagster', 'transformers') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
