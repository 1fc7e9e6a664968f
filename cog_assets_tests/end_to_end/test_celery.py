"""A backfill through dagster-celery: a real Redis broker and two real Celery workers.

Everything runs on 127.0.0.1 and is started and stopped here: `redis-server` (Debian package;
the test is skipped without it) on a free port as broker and result backend, two workers
started with `dagster-celery worker start` (solo pool: one step at a time each, in the worker's
own process), and one run of `prepare_shards` per shard, all at once, each orchestrated by
its own process with the `celery` executor the settings choose. Workers and runs
share one store directory and one Dagster instance (SQLite under a temporary DAGSTER_HOME with
the `gpu` pool limit of cog_assets/dagster.yaml).

It checks that every shard succeeds with its steps executed by both workers, that the `gpu`
pool holds GPU steps back while its slot is taken (and runs them one at a time after), and
that the finished datasets are bit-for-bit those of a single-process run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    instance_for_test,
)

from cog_assets.core.config import Settings, SettingsError, settings_env
from cog_assets.defs.assets.groups import GPU_POOL
from cog_assets.defs.executors import celery_worker_config, executor_for
from cog_assets.defs.runs import materialize_shards, register_shards
from cog_assets.media.synthetic import write_test_dataset

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKERS = ("cog-w0", "cog-w1")
GPU_STEPS = ("vae_latents", "t5_embeddings")
# tensor files of a finished shard: (index column naming the file, name when it has none)
TENSOR_FILES = (("latents_file", "latents.safetensors"),
                ("embeds_file", "prompt_embeds.safetensors"))
HOLDER_RUN, HOLDER_STEP = "test-holds-the-gpu-slot", "holder"

# One shard's run, orchestrated in its own process (execute_job is not thread-safe): the
# settings come from COG_ASSETS_*, and every worker rebuilds the job from them.
RUN_SHARD = """
import json, sys
from dagster import DagsterInstance, execute_job
from cog_assets.core.config import load_settings
from cog_assets.defs.build import reconstructable_job
shard = sys.argv[1]
job = reconstructable_job(load_settings())
config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
with DagsterInstance.get() as instance, execute_job(
        job, instance=instance, run_config=config, tags={"dagster/partition": shard},
        raise_on_error=False) as result:
    print(json.dumps({"shard": shard, "run_id": result.run_id, "success": result.success}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the process group it leads (a celery worker: warm shutdown), then SIGKILL."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:  # whatever is left of the group (a worker's own children)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(5)


@pytest.fixture
def redis_url(tmp_path):
    """A throwaway redis-server on a free loopback port: no persistence, stopped afterwards."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server not found: install Debian's redis-server "
                    "(.ci/system-packages.sh does) to run the dagster-celery test")
    redis = pytest.importorskip("redis", reason="the redis package is not installed: "
                                "pip install -e '.[test]'")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    for _attempt in range(3):  # the free port may be taken between choosing and binding it
        port = _free_port()
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.1)
        else:
            _stop(process)
            continue
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            client.close()
            _stop(process, grace_s=5)
        return
    pytest.fail("redis-server did not start on a free loopback port in three tries")


def _wait_for_workers(broker: str, workers: list[subprocess.Popen], logs: list[Path]) -> None:
    from celery import Celery

    app = Celery("cog-assets-test", broker=broker, backend=broker)
    expected = set(WORKERS)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for process, log in zip(workers, logs):
                if process.poll() is not None:
                    pytest.fail(f"celery worker exited with {process.returncode}:\n"
                                f"{log.read_text()[-4000:]}")
            answered = {name.split("@")[0] for reply in app.control.ping(timeout=1)
                        for name in reply}
            if expected <= answered:
                return
            time.sleep(0.5)
        pytest.fail(f"celery workers {sorted(expected)} did not answer a ping in 90 s:\n"
                    + "\n".join(log.read_text()[-2000:] for log in logs))
    finally:
        app.close()


def _gpu_step_starts(instance: DagsterInstance, run_ids) -> list[str]:
    return [f"{e.dagster_event.step_key} ({run_id})" for run_id in run_ids
            for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
            if e.dagster_event.step_key in GPU_STEPS]


def _step_intervals(instance: DagsterInstance, run_id: str, steps) -> dict[str, tuple]:
    start, end = {}, {}
    for entry in instance.all_logs(run_id, of_type={DagsterEventType.STEP_START,
                                                    DagsterEventType.STEP_SUCCESS}):
        key = entry.dagster_event.step_key
        if key in steps:
            (start if entry.dagster_event.is_step_start else end)[key] = entry.timestamp
    return {key: (start[key], end[key]) for key in start}


def _celery_workers_of(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the worker that executed it, from dagster-celery's engine events."""
    seen = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.event_specific_data.metadata or {}
        if "Celery worker" in metadata:
            seen[entry.dagster_event.step_key] = metadata["Celery worker"].value
    return seen


def tensor_file(shard_dir: Path, index: pl.DataFrame, column: str, default: str) -> Path:
    """The tensor file a shard's index names (versioned names), or the plain default name."""
    if column not in index.columns:
        return shard_dir / default
    names = set(index[column].drop_nulls())
    assert len(names) == 1, (shard_dir, column, names)
    return shard_dir / names.pop()


def _assert_same_tensors(ours: Path, theirs: Path) -> None:
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(ours)), load_file(str(theirs))
    assert sorted(a) == sorted(b), ours.name
    assert a, f"{ours} holds no tensors"
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, (ours.name, key)
        # bit for bit, NaNs included: compare the raw bytes
        assert torch.equal(a[key].contiguous().view(torch.uint8),
                           b[key].contiguous().view(torch.uint8)), (ours.name, key)


def _needs_dagster_celery():
    pytest.importorskip("dagster_celery", reason="dagster-celery is not installed: "
                        "pip install -e '.[test]'")


def test_the_executor_setting_picks_the_executor():
    def executor(**flat):
        return executor_for(Settings.of(**flat).orchestration).name

    assert executor() == "in_process"  # the default: the run's process runs every step
    assert executor(executor="multiprocess") == "multiprocess"
    assert executor(executor="k8s") == "k8s"
    with pytest.raises(SettingsError, match="executor .*'in_process', 'multiprocess'"):
        Settings.of(executor="dask")
    with pytest.raises(SettingsError, match="celery needs celery_broker"):
        Settings.of(executor="celery")
    _needs_dagster_celery()
    celery = Settings.of(executor="celery", celery_broker="redis://h:1/0").orchestration
    assert executor_for(celery).name == "celery"
    assert celery_worker_config(celery) == {
        "execution": {"config": {"broker": "redis://h:1/0", "backend": "redis://h:1/0"}}}
    amqp = Settings.of(executor="celery", celery_broker="pyamqp://guest@h//").orchestration
    assert celery_worker_config(amqp)["execution"]["config"]["backend"] == "rpc://"


@pytest.mark.slow
def test_celery_backfill_with_two_workers_matches_single_process(tmp_path, redis_url):
    _needs_dagster_celery()
    started = time.monotonic()
    phases: dict[str, float] = {}
    data = write_test_dataset(tmp_path / "data", 6)
    settings = Settings.of(data_root=str(data), store=str(tmp_path / "store-celery"),
                           shards=3, device="cpu")
    home = tmp_path / "dagster_home"
    home.mkdir()
    # the instance settings `cog-assets backfill` uses: `gpu` pool limit 1
    shutil.copy(REPO / "cog_assets" / "dagster.yaml", home / "dagster.yaml")
    # Create the instance's SQLite storage before any worker opens it (two processes creating
    # it at once race on CREATE TABLE).
    with DagsterInstance.from_config(str(home)) as instance:
        shards = register_shards(instance, settings)
    assert len(shards) >= 2, shards
    inherited = {key: value for key, value in os.environ.items()
                 if not key.startswith("COG_ASSETS_")}  # the settings are exactly `settings`
    celery = settings.with_(executor="celery", celery_broker=redis_url)
    env = {**inherited, **settings_env(celery), "DAGSTER_HOME": str(home),
           # the workers import cog_assets from this checkout; dagster-celery runs `celery`
           # from PATH, which must be this environment's
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
    # no COG_ASSETS_CELERY_BACKEND: the broker's Redis is the result backend too
    worker_yaml = tmp_path / "celery.yaml"
    worker_yaml.write_text(yaml.safe_dump(celery_worker_config(celery.orchestration)))

    processes: list[subprocess.Popen] = []
    try:
        logs = [tmp_path / f"{name}.log" for name in WORKERS]
        for name, log in zip(WORKERS, logs):
            with open(log, "w") as out:
                processes.append(subprocess.Popen(
                    [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                     "-y", str(worker_yaml), "-n", name, "-l", "INFO", "--",
                     "--pool", "solo", "--without-mingle", "--without-gossip"],
                    env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True))
        workers = list(processes)

        # The reference, while the workers start: the same data, one process, another store.
        reference = settings.with_(store=str(tmp_path / "store-single"))
        with instance_for_test() as single_instance:
            single = materialize_shards(reference, single_instance)
        assert single and all(s.success for s in single.values()), single
        phases["single-process reference"] = time.monotonic() - started
        _wait_for_workers(redis_url, workers, logs)
        phases["workers answering"] = time.monotonic() - started

        with DagsterInstance.from_config(str(home)) as instance:
            assert shards == sorted(single)
            storage = instance.event_log_storage
            # Take the pool's only slot, as a GPU step of some other run would.
            storage.initialize_concurrency_limit_to_default(GPU_POOL)
            assert storage.get_concurrency_info(GPU_POOL).slot_count == 1
            assert storage.claim_concurrency_slot(GPU_POOL, HOLDER_RUN, HOLDER_STEP).is_claimed

            runs = {}
            for shard in shards:
                out = open(tmp_path / f"run-{shard}.out", "w")
                runs[shard] = subprocess.Popen(
                    [sys.executable, "-c", RUN_SHARD, shard], env=env, cwd=tmp_path,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                out.close()
                processes.append(runs[shard])

            def run_output(shard):
                return (tmp_path / f"run-{shard}.out").read_text()

            # Every GPU step of every run waits for the slot; the CPU steps go on meanwhile.
            deadline = time.monotonic() + 120
            while storage.get_concurrency_info(GPU_POOL).pending_step_count \
                    < len(GPU_STEPS) * len(shards):
                for shard, run in runs.items():
                    assert run.poll() is None, f"{shard} ended early:\n{run_output(shard)}"
                assert time.monotonic() < deadline, (
                    f"GPU steps did not queue for the pool: "
                    f"{storage.get_concurrency_info(GPU_POOL)}")
                time.sleep(0.5)
            run_ids = [r.run_id for r in instance.get_runs()]
            assert len(run_ids) == len(shards)
            assert _gpu_step_starts(instance, run_ids) == [], "a GPU step ran without a slot"
            storage.free_concurrency_slot_for_step(HOLDER_RUN, HOLDER_STEP)
            phases["GPU steps queued for the slot"] = time.monotonic() - started

            deadline = time.monotonic() + 150
            for shard, run in runs.items():
                try:
                    run.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pytest.fail(f"the run of {shard} did not finish in time:\n"
                                f"{run_output(shard)}")
                result = json.loads(run_output(shard).strip().splitlines()[-1])
                assert result["success"], f"{shard} failed:\n{run_output(shard)}"
                run_record = instance.get_run_by_id(result["run_id"])
                assert run_record.status == DagsterRunStatus.SUCCESS
                assert run_record.tags["dagster/partition"] == shard

            phases["celery runs done"] = time.monotonic() - started

            # Every step was executed by a celery worker, and both workers took part.
            hosts = set()
            for run_id in run_ids:
                by_step = _celery_workers_of(instance, run_id)
                plan_steps = {e.dagster_event.step_key for e in instance.all_logs(
                    run_id, of_type=DagsterEventType.STEP_SUCCESS)}
                assert plan_steps and plan_steps <= set(by_step), (plan_steps, by_step)
                hosts |= set(by_step.values())
            assert {h.split("@")[0] for h in hosts} == set(WORKERS), hosts

            # With one slot, no two GPU steps (of any run) ever ran at the same time.
            intervals = sorted(interval for run_id in run_ids for interval in
                               _step_intervals(instance, run_id, GPU_STEPS).values())
            assert len(intervals) == len(GPU_STEPS) * len(shards)
            for (_, end), (next_start, _) in zip(intervals, intervals[1:]):
                assert end <= next_start, intervals
            assert storage.get_concurrency_info(GPU_POOL).claimed_slots == []
    finally:
        for process in reversed(processes):
            _stop(process)

    # The finished datasets are those of the single-process run, bit for bit.
    for shard in shards:
        ours = Path(settings.store.url) / "datasets" / settings.model.profile / shard
        theirs = Path(reference.store.url) / "datasets" / reference.model.profile / shard
        ours_index = pl.read_parquet(ours / "index.parquet")
        theirs_index = pl.read_parquet(theirs / "index.parquet")
        assert len(ours_index) > 0
        assert ours_index.equals(theirs_index), shard
        for column, default in TENSOR_FILES:
            ours_file = tensor_file(ours, ours_index, column, default)
            theirs_file = tensor_file(theirs, theirs_index, column, default)
            assert ours_file.is_file(), ours_file
            _assert_same_tensors(ours_file, theirs_file)
    phases["all checked"] = time.monotonic() - started
    print(f"celery backfill of {len(shards)} shards on 2 workers, seconds since start: "
          + ", ".join(f"{name} {at:.1f}" for name, at in phases.items()))
