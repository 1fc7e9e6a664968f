"""`cog-assets backfill` as CI calls it: a persistent instance, a summary JSON, exit codes."""

import json

import pytest

from cog_assets.cli import main
from cog_assets.media.synthetic import write_test_dataset


@pytest.fixture
def data_root(tmp_path):
    return write_test_dataset(tmp_path / "data", 3)


@pytest.mark.slow
def test_backfill_writes_summary_and_exits_zero(tmp_path, data_root, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    summary_path = tmp_path / "summary.json"
    code = main(["backfill", "--data-root", str(data_root), "--store", str(tmp_path / "store"),
                 "--shards", "2", "--device", "cpu", "--summary-json", str(summary_path)])
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["success"] is True
    shards = summary["shards"]
    assert sum(s["clips"] for s in shards.values()) == 4
    assert sum(s["accepted"] for s in shards.values()) == 3
    assert sum(s["rejected"] for s in shards.values()) == 1
    for s in shards.values():
        assert {"clips", "accepted", "rejected", "computed", "reused", "index_path",
                "rejects_path"} <= set(s)
        assert (tmp_path / "store").as_posix() in s["index_path"]
        # where the time went: the shard's run and each of its steps, the VAE's parts
        assert s["seconds"] > 0
        assert {"frame_tensors", "vae_latents", "training_dataset"} <= set(s["step_seconds"])
        assert s["seconds"] >= s["step_seconds"]["vae_latents"] > 0
        assert s["vae"]["encode_s_per_clip"] > 0 and "eager" in s["vae"]["vae_compile"]
    assert summary["seconds"] >= sum(s["seconds"] for s in shards.values())
    assert summary["totals"] == {
        "shards": 2, "shards_run": 2, "shards_failed": 0, "clips": 4, "accepted": 3,
        "rejected": 1, "computed": sum(s["computed"] for s in shards.values()), "reused": 0,
        "rejects_by_reason": {"unreadable": 1},
        "run_seconds": pytest.approx(sum(s["seconds"] for s in shards.values()), abs=0.01)}
    printed = capsys.readouterr().out
    for key, s in shards.items():  # each shard's line: counts, reasons, its seconds, steps
        [line] = [line for line in printed.splitlines() if f" {key}: " in line]
        assert line.startswith("ok ") and f"{s['computed']} computed" in line
        assert line.rstrip().endswith(" s") and ", in " in line
        assert ("(unreadable 1)" in line) == (s["rejected"] == 1)
    assert printed.count("\n       steps: ") == 2  # the seconds of every step, per shard
    assert "total  2 shards (2 run, 0 not needed): 4 clips, 3 accepted, 1 rejected " \
        "(unreadable 1)" in printed
    # The runs are in the persistent instance under DAGSTER_HOME, as the UI would show them.
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        assert len(instance.get_runs()) == len(shards)


@pytest.mark.slow
def test_backfill_export_prints_the_trainer_arguments_it_wrote(tmp_path, data_root, monkeypatch,
                                                               capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    code = main(["backfill", "--data-root", str(data_root), "--store", str(tmp_path / "store"),
                 "--shards", "1", "--device", "cpu", "--export"])
    assert code == 0
    printed = capsys.readouterr().out
    for trainer in ("cogvideox-factory", "cogvideo-finetune", "videox-fun"):
        written = (tmp_path / "store" / "exports" / "tiny" / trainer / "trainer_args.txt")
        assert f"{trainer}: trainer arguments" in printed
        assert written.read_text() in printed
    assert "--frame_buckets 9 --height_buckets 64 --width_buckets 96" in printed
    assert "--mixed_precision no" in printed
    videox = tmp_path / "store" / "exports" / "tiny" / "videox-fun"
    assert f"--train_data_meta {videox / 'metadata.json'}" in printed


def test_backfill_exits_non_zero_and_names_the_failure(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    store = tmp_path / "store"
    store.write_text("a file where the store directory should be")
    summary_path = tmp_path / "summary.json"
    code = main(["backfill", "--data-root", str(data_root), "--store", str(store),
                 "--shards", "2", "--device", "cpu", "--summary-json", str(summary_path)])
    assert code == 1
    summary = json.loads(summary_path.read_text())
    assert summary["success"] is False
    for s in summary["shards"].values():
        assert s["success"] is False and s["failure"]


def test_backfill_refuses_a_bucket_the_model_cannot_take_before_any_work(
        tmp_path, data_root, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    code = main(["backfill", "--data-root", str(data_root), "--store", str(tmp_path / "store"),
                 "--profile", "cogvideox-5b-i2v", "--buckets", "49x768x768"])
    assert code == 2
    assert "cogvideox-5b-i2v only takes 480x720" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


@pytest.mark.slow
def test_parallel_backfill_of_a_range_then_resume_skips_finished_shards(
        tmp_path, monkeypatch):
    data_root = write_test_dataset(tmp_path / "data", 6, broken=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    summary_path = tmp_path / "summary.json"
    common = ["backfill", "--data-root", str(data_root), "--store", str(tmp_path / "store"),
              "--shards", "4", "--device", "cpu", "--summary-json", str(summary_path)]
    # 6 clips over 4 shards fill shard-00000, -00001 and -00003.
    assert main([*common, "--shard-range", "0:1", "--parallel", "2"]) == 0
    first = json.loads(summary_path.read_text())["shards"]
    assert sorted(first) == ["shard-00000", "shard-00001"]
    assert all(s["success"] and not s["resumed"] for s in first.values())

    assert main([*common, "--resume"]) == 0
    second = json.loads(summary_path.read_text())["shards"]
    assert sorted(second) == ["shard-00000", "shard-00001", "shard-00003"]
    assert [k for k, s in second.items() if s["resumed"]] == ["shard-00000", "shard-00001"]
    assert second["shard-00003"]["success"] and second["shard-00003"]["computed"] > 0


@pytest.mark.slow
def test_a_shard_whose_every_clip_is_rejected_is_published_empty(tmp_path, monkeypatch,
                                                                  capsys):
    """Nothing to train on is a result, not a crash: the shard publishes no clips and its
    rejects, and the loader serves the empty dataset."""
    from cog_assets.loader import CogVideoXLatentDataset

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    data = write_test_dataset(tmp_path / "data", 0)  # only a file that is not a video
    summary_path = tmp_path / "summary.json"
    code = main(["backfill", "--data-root", str(data), "--store", str(tmp_path / "store"),
                 "--shards", "1", "--device", "cpu", "--summary-json", str(summary_path)])
    assert code == 0
    [shard] = json.loads(summary_path.read_text())["shards"].values()
    assert (shard["accepted"], shard["rejected"]) == (0, 1)
    line = next(line for line in capsys.readouterr().out.splitlines() if "shard-00000:" in line)
    assert line.startswith("EMPTY ")  # accepted nothing: not printed as "ok"
    assert len(CogVideoXLatentDataset(tmp_path / "store/datasets/tiny", "tiny")) == 0


@pytest.mark.slow
def test_one_failing_shard_fails_the_backfill_and_is_named(tmp_path, monkeypatch):
    data_root = write_test_dataset(tmp_path / "data", 6, broken=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    store = tmp_path / "store"
    # shard-00001's finished-dataset folder is blocked by a file: only that shard can fail.
    (store / "datasets" / "tiny").mkdir(parents=True)
    (store / "datasets" / "tiny" / "shard-00001").write_text("in the way")
    summary_path = tmp_path / "summary.json"
    code = main(["backfill", "--data-root", str(data_root), "--store", str(store),
                 "--shards", "4", "--device", "cpu", "--summary-json", str(summary_path)])
    assert code == 1
    summary = json.loads(summary_path.read_text())
    assert summary["success"] is False
    shards = summary["shards"]
    assert [k for k, s in shards.items() if not s["success"]] == ["shard-00001"]
    failure = shards["shard-00001"]["failure"]
    assert failure.startswith("training_dataset:") and "shard-00001" in failure
    assert all(s["success"] and s["index_path"] for k, s in shards.items() if k != "shard-00001")


def test_the_demo_prints_the_ui_command_the_readme_gives():
    import sys
    from pathlib import Path

    from cog_assets.cli import build_parser, ui_command

    venv_bin = Path(sys.executable).parent
    plain = ui_command("cog-assets-demo", build_parser().parse_args(["demo"]))
    assert plain == f"{venv_bin / 'cog-assets'} ui"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "```bash\n.venv/bin/cog-assets ui\n```" in readme
    flags = ui_command("/tmp/elsewhere", build_parser().parse_args(
        ["demo", "--profile", "tiny-i2v", "--buckets", "9x64x96", "--vae-tiling"]))
    assert flags == (f"{venv_bin / 'cog-assets'} ui --dir /tmp/elsewhere --profile tiny-i2v "
                     "--buckets 9x64x96 --vae-tiling")
    again = build_parser().parse_args(flags.split()[1:])
    assert (again.dir, again.setting__profile, again.setting__vae_tiling) == (
        "/tmp/elsewhere", "tiny-i2v", True)


def test_ui_on_a_dataset_without_an_instance_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    code = main(["ui", "--data-root", str(tmp_path)])
    assert code == 2
    assert "set DAGSTER_HOME or --dagster-home" in capsys.readouterr().err


def test_a_backfill_of_another_data_root_without_a_store_writes_nothing_to_the_demos(
        tmp_path, data_root, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COG_ASSETS_STORE", raising=False)
    code = main(["backfill", "--data-root", str(data_root), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "backfill needs the store to write to: pass --store" in err
    assert "cog-assets-demo/store" in err
    assert not (tmp_path / "cog-assets-demo").exists()


def test_gc_without_a_store_collects_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COG_ASSETS_STORE", raising=False)
    leftover = tmp_path / "cog-assets-demo" / "store" / "quarantine" / "frames" / "k.corrupt"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"x")
    code = main(["gc", "--gc-grace-s", "0"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "gc needs the store to collect: pass --store" in err
    assert leftover.exists()
    monkeypatch.setenv("COG_ASSETS_STORE", str(tmp_path / "cog-assets-demo" / "store"))
    assert main(["gc", "--gc-grace-s", "0"]) == 0  # named: collected
    assert not leftover.exists()


@pytest.mark.slow
def test_resume_with_another_setting_or_store_runs_as_a_plain_backfill(tmp_path, monkeypatch,
                                                                        capsys):
    data_root = write_test_dataset(tmp_path / "data", 2, broken=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    summary_path = tmp_path / "summary.json"
    common = ["backfill", "--data-root", str(data_root), "--shards", "1", "--device", "cpu",
              "--summary-json", str(summary_path)]
    assert main([*common, "--store", str(tmp_path / "store")]) == 0
    written = json.loads(summary_path.read_text())
    assert written["store"] == str(tmp_path / "store") and written["identity"]

    assert main([*common, "--store", str(tmp_path / "other"), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "not resuming" in err and "running as a plain backfill" in err
    assert f"store {str(tmp_path / 'store')!r}, now {str(tmp_path / 'other')!r}" in err
    [shard] = json.loads(summary_path.read_text())["shards"].values()
    assert not shard["resumed"] and shard["success"]
    assert shard["index_path"].startswith(str(tmp_path / "other"))

    assert main([*common, "--store", str(tmp_path / "other"), "--resize", "stretch",
                 "--resume"]) == 0
    assert "identity" in capsys.readouterr().err
    [shard] = json.loads(summary_path.read_text())["shards"].values()
    assert not shard["resumed"] and shard["computed"] > 0  # the stretched frames and latents

    assert main([*common, "--store", str(tmp_path / "other"), "--resize", "stretch",
                 "--resume"]) == 0
    assert "not resuming" not in capsys.readouterr().err
    [shard] = json.loads(summary_path.read_text())["shards"].values()
    assert shard["resumed"]


@pytest.mark.parametrize("command", ["backfill", "demo", "ui"])
def test_help_leads_with_what_it_does_and_an_example(command, capsys):
    """The settings list is 300 lines long: a description and an example come first."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    head = text.split("\n\n")
    assert head[0].startswith(f"usage: cog-assets {command} ") and head[0].count("\n") == 0
    assert head[2].startswith("example:\n  ") and f"cog-assets {command} " in head[2]
    assert text.index("example:") < text.index("settings:")


@pytest.mark.parametrize("command", ["gc", "verify"])
def test_gc_and_verify_state_their_exit_codes(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 " in text and ", 1 " in text and ", 2 bad settings" in text
