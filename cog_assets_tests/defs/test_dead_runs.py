"""Runs whose process is gone give back their `gpu` pool slot (issue 12).

A real SQLite instance with the shipped dagster.yaml; runs recorded as a killed backfill
leaves them (STARTED, holding the one `gpu` slot, their process dead). `release_dead_runs` is
what the CLI, the demo and the upload sensor call before they queue work. The whole story with
a real SIGKILLed backfill is in end_to_end/test_crash_safety.py.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, build_sensor_context
from dagster._core.instance.ref import InstanceRef

from cog_assets.core.config import Settings
from cog_assets.defs.build import build_definitions
from cog_assets.defs.dead_runs import (
    HOST_TAG,
    PID_TAG,
    STARTED_TAG,
    release_dead_runs,
    run_process_tags,
)
from cog_assets.defs.sensors import upload_sensor
from cog_assets.media.synthetic import write_test_dataset

REPO = Path(__file__).resolve().parents[2]
POOL = "gpu"


@pytest.fixture
def instance(tmp_path):
    shutil.copy(REPO / "cog_assets" / "dagster.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as instance:
        yield instance


def _dead_pid() -> tuple[int, float]:
    """The pid and start time of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(child.pid).create_time()
    child.wait()
    return child.pid, started


def _run(instance: DagsterInstance, tags: dict[str, str], step: str | None = "vae_latents",
         status: DagsterRunStatus = DagsterRunStatus.STARTED) -> DagsterRun:
    """A run as the instance records it, holding the pool's slot for `step` when given."""
    run = instance.add_run(DagsterRun(job_name="prepare_shards", run_id=str(uuid.uuid4()),
                                      status=status,
                                      tags={"dagster/partition": "shard-00000", **tags}))
    if step is not None:
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(POOL)
        assert storage.claim_concurrency_slot(POOL, run.run_id, step).is_claimed
    return run


def _holders(instance: DagsterInstance) -> list[str]:
    return [slot.run_id for slot in
            instance.event_log_storage.get_concurrency_info(POOL).claimed_slots]


def _tags(pid: int, started: float, host: str | None = None) -> dict[str, str]:
    return {HOST_TAG: host or run_process_tags()[HOST_TAG], PID_TAG: str(pid),
            STARTED_TAG: f"{started:.3f}"}


def test_shipped_dagster_yaml_enables_run_monitoring(instance):
    for path in (REPO / "dagster.yaml", REPO / "cog_assets" / "dagster.yaml"):
        assert yaml.safe_load(path.read_text())["run_monitoring"]["enabled"] is True
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0


def test_a_dead_runs_slot_is_freed_and_the_run_marked_failed(instance, caplog):
    pid, started = _dead_pid()
    dead = _run(instance, _tags(pid, started))
    assert _holders(instance) == [dead.run_id]
    with caplog.at_level(logging.WARNING, logger="cog_assets.defs.dead_runs"):
        released = release_dead_runs(instance)
    assert [(r.run_id, r.pid, r.slots, r.marked_failed) for r in released] == [
        (dead.run_id, pid, 1, True)]
    assert _holders(instance) == []
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert f"run {dead.run_id} (shard-00000): its process {pid} is gone" in caplog.text
    assert "freed 1 pool slot" in caplog.text
    # the next GPU step gets the slot at once
    assert instance.event_log_storage.claim_concurrency_slot(
        POOL, str(uuid.uuid4()), "vae_latents").is_claimed


def test_live_runs_and_runs_elsewhere_keep_their_slots(instance):
    me = psutil.Process()
    alive = _run(instance, _tags(me.pid, me.create_time()))
    pid, started = _dead_pid()
    elsewhere = _run(instance, _tags(pid, started, host="another-host"), step=None)
    assert release_dead_runs(instance) == []
    assert instance.get_run_by_id(alive.run_id).status == DagsterRunStatus.STARTED
    assert instance.get_run_by_id(elsewhere.run_id).status == DagsterRunStatus.STARTED
    assert _holders(instance) == [alive.run_id]


def test_a_reused_pid_is_not_taken_for_the_runs_process(instance):
    """The run's pid now names a process that started after the run did: the run is dead."""
    me = psutil.Process()
    reused = _run(instance, _tags(me.pid, me.create_time() - 3600))
    [released] = release_dead_runs(instance)
    assert released.run_id == reused.run_id and _holders(instance) == []


def test_a_finished_run_still_holding_a_slot_gives_it_back(instance):
    pid, started = _dead_pid()
    done = _run(instance, _tags(pid, started), status=DagsterRunStatus.SUCCESS)
    [released] = release_dead_runs(instance)
    assert (released.run_id, released.marked_failed, released.slots) == (done.run_id, False, 1)
    assert _holders(instance) == []


def test_the_upload_sensor_frees_dead_runs_slots_before_it_asks_for_runs(instance, tmp_path,
                                                                         capfd):
    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    pid, started = _dead_pid()
    dead = _run(instance, _tags(pid, started))
    definitions = build_definitions(Settings.of(data_root=str(root), shards=1, device="cpu",
                                                store=str(tmp_path / "store")))
    context = build_sensor_context(instance=instance, definitions=definitions, resources={
        k: v for k, v in definitions.resources.items() if k in ("sources", "model", "store")})
    result = upload_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["shard-00000"]
    assert _holders(instance) == []
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert f"released run {dead.run_id}" in capfd.readouterr().err  # the tick's log


def test_run_process_tags_name_this_process():
    tags = run_process_tags()
    assert int(tags[PID_TAG]) == psutil.Process().pid
    assert abs(float(tags[STARTED_TAG]) - psutil.Process().create_time()) < 1
    assert time.time() >= float(tags[STARTED_TAG])
