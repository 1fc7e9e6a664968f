"""A run launched from the UI vs the CLI, for one shard where everything is reused; and the
upload sensor's first tick after the demo.

1. `cog-assets demo --dir TMP` (every shard materialized);
2. the CLI: `cog-assets backfill --shard S --force` on the demo's settings, a fresh process,
   timed from its start to its exit;
3. the UI: `cog-assets ui --dir TMP`, then the run of `prepare_shards` for S launched through
   GraphQL as the UI's Materialize button does (no run config), timed from the launch to
   SUCCESS (queue, run process start-up, imports and steps included), plus the run's own
   start-to-end time as Dagster records it;
4. `upload_sensor` switched on: what its first tick requests (nothing changed since the demo).

    python bench/bench_ui_run.py [--shard shard-00001]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
REPO = {"repositoryLocationName": "cog_assets.definitions", "repositoryName": "__repository__"}


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    if payload.get("errors"):
        raise RuntimeError(payload["errors"])
    return payload["data"]


def wait_loaded(port: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            data = graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { "
                                 "loadStatus locationOrLoadError { __typename } } } } }")
            entries = data["workspaceOrError"]["locationEntries"]
            if entries and all(e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                               for e in entries):
                return
        except (urllib.error.URLError, OSError, RuntimeError, KeyError, TypeError):
            pass
        time.sleep(1)
    raise SystemExit("the UI did not load")


LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
STATUS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status startTime endTime } } }"""
SENSOR = {**REPO, "sensorName": "upload_sensor"}
START_SENSOR = """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename
  ... on PythonError { message } } }"""
TICKS = """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor {
  sensorState { ticks(limit: 5) { status runIds skipReason error { message } } } } } }"""


def ui_run(port: int, shard: str) -> tuple[float, float]:
    started = time.perf_counter()
    launched = graphql(port, LAUNCH, {"p": {
        "selector": {**REPO, "pipelineName": "prepare_shards"}, "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": shard}]}}})
    run_id = launched["launchRun"]["run"]["runId"]
    while True:
        run = graphql(port, STATUS, {"id": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(0.25)
    if run["status"] != "SUCCESS":
        raise SystemExit(f"the UI's run ended {run['status']}")
    return time.perf_counter() - started, run["endTime"] - run["startTime"]


def first_sensor_tick(port: int, timeout_s: float = 180) -> dict:
    graphql(port, START_SENSOR, {"s": SENSOR})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ticks = graphql(port, TICKS, {"s": SENSOR})["sensorOrError"]["sensorState"]["ticks"]
        done = [t for t in ticks if t["status"] != "STARTED"]
        if done:
            return done[-1]
        time.sleep(2)
    return {"status": "no tick within the time limit"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", default="shard-00001")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("COG_ASSETS_") and k != "DAGSTER_HOME"}
        subprocess.run([str(BIN / "cog-assets"), "demo", "--dir", str(demo), "--device", "cpu"],
                       env=env, check=True, stdout=subprocess.DEVNULL, cwd=tmp)
        load = os.getloadavg()[0]
        cli = [str(BIN / "cog-assets"), "backfill", "--shard", args.shard, "--force",
               "--data-root", str(demo / "data"), "--store", str(demo / "store"),
               "--device", "cpu", "--dagster-home", str(demo / "dagster_home")]
        started = time.perf_counter()
        subprocess.run(cli, env=env, check=True, stdout=subprocess.DEVNULL, cwd=tmp)
        cli_s = time.perf_counter() - started
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with open(Path(tmp) / "ui.log", "wb") as log:
            server = subprocess.Popen([str(BIN / "cog-assets"), "ui", "--dir", str(demo),
                                       "--device", "cpu", "--port", str(port)],
                                      env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                                      start_new_session=True)
        try:
            wait_loaded(port)
            graphql(port, "mutation { setNuxSeen }")
            ui_s, run_s = ui_run(port, args.shard)
            tick = first_sensor_tick(port)
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    print(f"one shard ({args.shard}) of the demo, everything reused; {os.cpu_count()} cores, "
          f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print(f"CLI  `cog-assets backfill --shard {args.shard} --force`, process wall: {cli_s:7.1f} s")
    print(f"UI   launch to SUCCESS:                                  {ui_s:7.1f} s "
          f"({ui_s / cli_s:.2f}x the CLI); the run itself (Dagster's start to end): {run_s:.1f} s")
    print(f"upload_sensor's first tick after the demo: {tick['status']}, runs {tick.get('runIds')}"
          f", {tick.get('skipReason') or (tick.get('error') or {}).get('message')}")


if __name__ == "__main__":
    main()
