"""A harness for the crash tests and the benchmarks: `cog-assets backfill` as a separate
process (its own session, so it and its workers can be killed together), the steps its runs
start and finish read from outside it, and a SIGKILL that lands inside a chosen step."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]  # what the backfill process imports


@dataclass
class Backfill:
    """One `cog-assets backfill` process (its own session, so its workers can be killed)."""

    proc: subprocess.Popen
    summary: Path
    log: Path

    def wait(self, timeout_s: float = 300.0) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the CLI and everything it started (its process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # workers re-parented to init die a moment later
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def summary_json(self) -> dict:
        return json.loads(self.summary.read_text())


class StepWatch:
    """Which steps the runs in a DAGSTER_HOME (SQLite storage) have started and finished,
    read from the runs' event logs as Dagster writes them, from outside the run's process.
    Runs that were there when the watch began are ignored, and so are runs that have ended
    with success when `unfinished_only`."""

    def __init__(self, dagster_home: Path, unfinished_only: bool = False):
        self.runs_dir = Path(dagster_home) / "history" / "runs"
        self.old = set(self._run_dbs())
        self.unfinished_only = unfinished_only

    def _run_dbs(self) -> list[Path]:
        if not self.runs_dir.is_dir():
            return []
        return [p for p in self.runs_dir.glob("*.db") if p.stem and p.name != "index.db"]

    def events(self, step_key: str) -> set[str]:
        """STEP_START / STEP_SUCCESS / STEP_FAILURE seen for `step_key` in the new runs."""
        seen: set[str] = set()
        for db in self._run_dbs():
            if db in self.old:
                continue
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                try:
                    rows = con.execute(
                        "select dagster_event_type from event_logs where step_key = ? and "
                        "dagster_event_type in ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE')",
                        (step_key,)).fetchall()
                    if self.unfinished_only and con.execute(
                            "select 1 from event_logs where dagster_event_type = "
                            "'PIPELINE_SUCCESS'").fetchall():
                        rows = []
                finally:
                    con.close()
            except sqlite3.Error:  # being created: the next poll reads it
                continue
            seen.update(row[0] for row in rows)
        return seen


def kill_inside_step(run: "Backfill", dagster_home: Path, step_key: str,
                     timeout_s: float = 300.0, watch: StepWatch | None = None) -> bool:
    """SIGKILL `run` (its whole process group) while `step_key` runs: stopped (SIGSTOP) the
    moment the step's start is seen, killed if it has not finished by then. Returns whether
    the kill landed inside the step (False: the step had ended, or the run ended first)."""
    watch = watch or StepWatch(dagster_home)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and run.proc.poll() is None:
            if "STEP_START" in watch.events(step_key):
                try:
                    os.killpg(run.proc.pid, signal.SIGSTOP)  # frozen where it is
                except ProcessLookupError:
                    return False
                return not watch.events(step_key) & {"STEP_SUCCESS", "STEP_FAILURE"}
            time.sleep(0.005)
        return False
    finally:
        run.kill()


def start_backfill(data_root: Path, store: Path, dagster_home: Path, work: Path,
                   *extra: str) -> Backfill:
    work.mkdir(parents=True, exist_ok=True)
    summary, log = work / "summary.json", work / "backfill.log"
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home),
           "PYTHONPATH": os.pathsep.join([str(CHECKOUT),
                                          *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("COG_ASSETS_STORE", None)
    env.pop("COG_ASSETS_DATA_ROOT", None)
    argv = [sys.executable, "-m", "cog_assets.cli", "backfill", "--data-root", str(data_root),
            "--store", str(store), "--shards", "1", "--device", "cpu",
            "--summary-json", str(summary), *extra]
    with open(log, "wb") as handle:
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                cwd=str(work), start_new_session=True)
    return Backfill(proc, summary, log)


def run_backfill(data_root: Path, store: Path, dagster_home: Path, work: Path,
                 timeout_s: float = 300.0) -> tuple[int, Backfill]:
    backfill = start_backfill(data_root, store, dagster_home, work)
    return backfill.wait(timeout_s), backfill
