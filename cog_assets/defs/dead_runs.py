"""Runs whose process is gone give back what they held: their `gpu` pool slot and their place
in the run queue.

A run killed by SIGKILL (what the OOM killer sends) never reports its end: the instance keeps
it STARTED and its claimed concurrency slot forever, and the next run of a GPU step waits for
that slot without end. Dagster's run monitoring (enabled in the shipped dagster.yaml) frees the
slots of *finished* runs, but the default run launcher cannot tell it that a run's process
died. So the CLI, the demo and the upload sensor call `release_dead_runs` before they queue
work: a local run whose process no longer exists (or whose pid now belongs to a younger
process) is marked failed and its slots are freed, and the log says so.

A run's process is known by the tags `run_process_tags()` puts on the runs the CLI launches
(host, pid, process start time) or, for runs the UI or the sensor launched through the default
run launcher, by the pid Dagster records on the run's RUN_START event. Runs on other hosts, and
runs of other launchers (Kubernetes pods), are left to those launchers' own monitoring.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import psutil
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultRunLauncher,
    RunsFilter,
)

from cog_assets.defs.dagster_internals import FINISHED_STATUSES

HOST_TAG = "cog-assets/host"
PID_TAG = "cog-assets/pid"
STARTED_TAG = "cog-assets/process-started"
# How far a process's start time may lie after the moment it was seen running the run and
# still be that process (clock granularity); a later start means the pid was reused.
START_SLACK_S = 2.0
UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]

log = logging.getLogger(__name__)


def run_process_tags() -> dict[str, str]:
    """Tags naming this process, for a run it executes (execute_job in this process)."""
    me = psutil.Process()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(me.pid),
            STARTED_TAG: f"{me.create_time():.3f}"}


@dataclass(frozen=True)
class ReleasedRun:
    run_id: str
    partition: str | None
    pid: int | None
    slots: int  # pool slots it held
    marked_failed: bool

    def describe(self) -> str:
        shard = f" ({self.partition})" if self.partition else ""
        state = "marked failed" if self.marked_failed else "already finished"
        who = f"its process {self.pid} is gone" if self.pid else "it is over"
        return (f"run {self.run_id}{shard}: {who}; {state}, freed {self.slots} pool "
                f"slot{'s' if self.slots != 1 else ''}")


def _process_alive(pid: int, seen_at: float) -> bool:
    """Is `pid` the process that was running at `seen_at` (epoch seconds), still running?"""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.create_time() <= seen_at + START_SLACK_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's process, alive
        return True


def _run_process(instance: DagsterInstance, run: DagsterRun) -> tuple[int, float] | None:
    """(pid, a time it was known to run the run) of a local run's process; None when the run
    is not local or its process is not known (it has not started)."""
    tags = run.tags
    if PID_TAG in tags:
        if tags.get(HOST_TAG) != socket.gethostname():
            return None
        return int(tags[PID_TAG]), float(tags.get(STARTED_TAG) or 0.0)
    if not isinstance(instance.run_launcher, DefaultRunLauncher):
        return None
    starts = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
    for entry in starts:
        if entry.dagster_event is not None and entry.dagster_event.pid:
            return entry.dagster_event.pid, entry.timestamp
    return None


def _slots_held(instance: DagsterInstance) -> dict[str, int]:
    """Claimed pool slots by run id."""
    storage = instance.event_log_storage
    held: dict[str, int] = {}
    if not storage.supports_global_concurrency_limits:
        return held
    for info in storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).values():
        for slot in info.claimed_slots:
            held[slot.run_id] = held.get(slot.run_id, 0) + 1
    return held


def release_dead_runs(instance: DagsterInstance,
                      logger: logging.Logger | logging.LoggerAdapter | None = None
                      ) -> list[ReleasedRun]:
    """Mark failed the unfinished local runs whose process is gone, free the pool slots they
    and any finished run still hold, and log each one. Returns what was released."""
    logger = logger or log
    held = _slots_held(instance)
    released: list[ReleasedRun] = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        process = _run_process(instance, run)
        if process is None or _process_alive(*process):
            continue
        pid = process[0]
        instance.report_run_failed(run, (
            f"The process running this run (pid {pid}) is gone: it was killed (SIGKILL, the "
            "OOM killer?) before it could report its end. Marked failed by cog-assets, which "
            "freed the pool slots it held."))
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(ReleasedRun(run.run_id, run.tags.get("dagster/partition"), pid,
                                    held.pop(run.run_id, 0), True))
    if held:
        finished = instance.get_run_records(filters=RunsFilter(run_ids=list(held),
                                                               statuses=FINISHED_STATUSES))
        for record in finished:
            run = record.dagster_run
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            released.append(ReleasedRun(run.run_id, run.tags.get("dagster/partition"), None,
                                        held.pop(run.run_id), False))
    for item in released:
        logger.warning("released %s", item.describe())
    return released
