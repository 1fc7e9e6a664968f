"""The Dagster UI end to end: `dagster dev` on 127.0.0.1, a shard run launched through its
GraphQL API, the run's metadata read back through GraphQL, and the lineage page in Chromium.

`cog-assets ui` (`dagster dev -m cog_assets.definitions`) serves a generated 2-shard dataset
from a temporary DAGSTER_HOME (the instance settings of cog_assets/dagster.yaml). The shards are registered and a
run of `prepare_shards` launched with GraphQL mutations, as the UI's own buttons do; the run
goes through the instance's run queue and the daemon that `dagster dev` starts.

The browser test drives Debian's Chromium through Playwright (never `playwright install`); it
is skipped when Chromium or the playwright package is missing. Its screenshot is written to
$COG_ASSETS_ARTIFACTS when set (else the test's temporary directory) and its path printed.
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
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from cog_assets.core.config import SourceSettings
from cog_assets.defs.partitions import SHARDS_PARTITION
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.sources.sharding import shard_for, shard_key
from cog_assets.stages.manifest import discover_shards

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULE = "cog_assets.definitions"
REPOSITORY = "__repository__"
GROUP = "cogvideox"
SHARD_COUNT = 2
ASSETS = ("raw_manifest", "scene_segments", "clip_captions", "validated_clips", "frame_tensors",
          "vae_latents", "t5_embeddings", "training_dataset")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER_START_S = 120
RUN_S = 150

ADD_PARTITION = """
mutation Add($repo: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on DuplicateDynamicPartitionError { partitionName }
    ... on UnauthorizedError { message }
    ... on PythonError { message stack }
  }
}"""

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status tags { key value } } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message stack }
  }
}"""

RUN_STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status jobName stepStats { stepKey status } }
    ... on PythonError { message }
  }
}"""

LATEST_MATERIALIZATION = """
query Latest($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions, limit: 1) {
        partition runId
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on PathMetadataEntry { path }
          ... on JsonMetadataEntry { jsonString }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}"""

WORKSPACE = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name loadStatus
        locationOrLoadError { __typename ... on PythonError { message stack } }
      }
    }
    ... on PythonError { message }
  }
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GraphQL:
    def __init__(self, url: str):
        self.url = url

    def __call__(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(self.url, data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.load(response)
        assert not payload.get("errors"), payload["errors"]
        return payload["data"]


class DagsterDev:
    """`dagster dev` in its own process group; `stop()` ends the whole group."""

    def __init__(self, env: dict, cwd: Path, log: Path):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(  # the command the README and the demo give
                [str(BIN / "cog-assets"), "ui", "--port", str(self.port)],
                env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.graphql = GraphQL(f"{self.base}/graphql")

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_loaded(self, timeout_s: float) -> str:
        """Wait until the webserver answers GraphQL with the code location loaded; its name."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"dagster dev exited with {self.process.returncode}:\n{self.tail()}")
            try:
                workspace = self.graphql(WORKSPACE, timeout=5)["workspaceOrError"]
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                last = exc
            else:
                last = workspace
                entries = workspace.get("locationEntries") or []
                for entry in entries:
                    error = entry["locationOrLoadError"]
                    if error and error["__typename"] == "PythonError":
                        pytest.fail(f"code location {entry['name']} failed to load:\n"
                                    f"{error['message']}\n{error['stack']}")
                loaded = [e["name"] for e in entries if e["loadStatus"] == "LOADED"
                          and e["locationOrLoadError"]
                          and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"]
                if loaded:
                    return loaded[0]
            time.sleep(1)
        pytest.fail(f"dagster dev did not serve the code location in {timeout_s:.0f} s "
                    f"(last answer: {last}):\n{self.tail()}")

    def stop(self, grace_s: float = 15.0) -> None:
        # SIGTERM to `dagster dev` alone: it shuts its webserver and daemon down in a couple of
        # seconds (signalling the whole group at once makes that shutdown hang), then SIGKILL
        # to the group for whatever is left (code servers, a run still going).
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:  # webserver, daemon, code servers and run workers left behind
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass


def _metadata(entries: list[dict]) -> dict:
    values = {}
    for entry in entries:
        for field in ("intValue", "floatValue", "path", "text"):
            if field in entry:
                values[entry["label"]] = entry[field]
        if "jsonString" in entry:
            values[entry["label"]] = json.loads(entry["jsonString"])
    return values


@pytest.fixture(scope="module")
def ui_run(tmp_path_factory):
    """dagster dev serving a 2-shard dataset, with one shard materialized through GraphQL.

    Yields (server, location, shard, expected counts, metadata of the shard's latest
    training_dataset materialization); stops dagster dev afterwards, whatever happened.
    """
    tmp = tmp_path_factory.mktemp("ui")
    data = write_test_dataset(tmp / "data", 4)
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "cog_assets" / "dagster.yaml", home / "dagster.yaml")
    with open(home / "dagster.yaml", "a") as config:
        config.write("telemetry:\n  enabled: false\n")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("COG_ASSETS_") and key != "DAGSTER_HOME"}
    env.update({
        "DAGSTER_HOME": str(home), "COG_ASSETS_DATA_ROOT": str(data),
        "COG_ASSETS_STORE": str(tmp / "store"), "COG_ASSETS_SHARDS": str(SHARD_COUNT),
        "COG_ASSETS_DEVICE": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
    })
    # The shard with the undecodable file: one reject among its clips.
    videos = (data / "videos.txt").read_text().split()
    shard = shard_for("clips/garbage.mp4", SHARD_COUNT)
    expected = {"clips": sum(shard_for(v, SHARD_COUNT) == shard for v in videos), "rejected": 1}
    expected["accepted"] = expected["clips"] - 1
    assert expected["accepted"] > 0, "the shard has no decodable clip: change the dataset size"

    server = DagsterDev(env, cwd=tmp, log=tmp / "dagster-dev.log")
    try:
        location = server.wait_loaded(SERVER_START_S)
        repo = {"repositoryLocationName": location, "repositoryName": REPOSITORY}
        shards = discover_shards(SourceSettings(data_root=str(data), shard_count=SHARD_COUNT))
        assert shard in shards
        for key in shards:
            added = server.graphql(ADD_PARTITION, {"repo": repo, "name": SHARDS_PARTITION,
                                                   "key": key})["addDynamicPartition"]
            assert added["__typename"] == "AddDynamicPartitionSuccess", added
        params = {
            "selector": {**repo, "pipelineName": "prepare_shards"},
            # No run config: what the launchpad sends when a user clicks Materialize. The
            # default executor runs every step in the run's process.
            "runConfigData": {},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": shard}]},
        }
        run = _launch_and_wait(server, params)
        run_id = run["runId"]
        assert run["status"] == "SUCCESS", f"{run}\n{server.tail()}"
        assert run["jobName"] == "prepare_shards"

        asset = server.graphql(LATEST_MATERIALIZATION, {
            "key": {"path": ["training_dataset"]}, "partitions": [shard]})["assetOrError"]
        assert asset["__typename"] == "Asset", asset
        [materialization] = asset["assetMaterializations"]
        assert materialization["partition"] == shard
        assert materialization["runId"] == run_id
        yield server, location, shard, expected, _metadata(materialization["metadataEntries"])
    finally:
        server.stop()


def test_the_ui_starts_without_warnings(ui_run):
    """`cog-assets ui` starts `dagster dev` from DAGSTER_HOME (no stray dagster.yaml read)
    and without its "superseded by dg dev" notice: a new user sees no warning."""
    server, *_ = ui_run
    log = server.log.read_text(errors="replace")
    assert "Serving dagster-webserver" in log
    assert not [line for line in log.splitlines() if "Warning" in line or "WARNING" in line], log


def test_shard_run_through_graphql_reports_its_dataset(ui_run):
    _server, _location, shard, expected, metadata = ui_run
    assert metadata["clips"] == expected["clips"]
    assert metadata["accepted"] == expected["accepted"]
    assert metadata["rejected"] == expected["rejected"]
    assert metadata["rejects_by_reason"] == {"unreadable": 1}
    index_path = Path(metadata["index_path"])
    assert index_path.name == "index.parquet" and index_path.parent.name == shard
    index = pl.read_parquet(index_path)
    assert len(index) == expected["accepted"]
    assert len(pl.read_parquet(metadata["rejects_path"])) == expected["rejected"]
    for column, default in (("latents_file", "latents.safetensors"),
                            ("embeds_file", "prompt_embeds.safetensors")):
        # the tensor files the index names (versioned), or their plain names
        names = set(index[column].drop_nulls()) if column in index.columns else {default}
        assert len(names) == 1 and (index_path.parent / names.pop()).is_file(), (column, names)


STEP_FAILURES = """
query Failures($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events { __typename ... on ExecutionStepFailureEvent { stepKey error { message } } }
    }
  }
}"""


def _launch_and_wait(server: DagsterDev, params: dict) -> dict:
    """Launch a run as the UI's button does and wait for it to end; the run, with its id."""
    launched = server.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + RUN_S
    while True:
        run = server.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return {**run, "runId": run_id}
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {run['status']} after {RUN_S} s:\n{server.tail()}")
        time.sleep(1)


def test_a_launchpad_override_of_a_setting_that_shapes_outputs_is_refused(ui_run):
    """What a user sees who edits the buckets in the launchpad: the run fails at its first
    step, before anything is written, saying which setting, both values and where to set it."""
    server, location, shard, _expected, _metadata = ui_run
    other = next(s for s in map(shard_key, range(SHARD_COUNT)) if s != shard)  # registered
    repo = {"repositoryLocationName": location, "repositoryName": REPOSITORY}
    run = _launch_and_wait(server, {
        "selector": {**repo, "pipelineName": "prepare_shards"},
        "runConfigData": {"resources": {"frames": {"config": {"buckets": ["9x32x48"]}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": other}]}})
    assert run["status"] == "FAILURE", run
    events = server.graphql(STEP_FAILURES, {"runId": run["runId"]})["logsForRun"]["events"]
    [failure] = [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    assert failure["stepKey"] == "raw_manifest"
    message = failure["error"]["message"]
    print(f"the launchpad's user reads: {message}")
    assert "buckets (resource frames) is '9x32x48' in this run's config but unset in the code " \
        "location's settings" in message
    assert "COG_ASSETS_BUCKETS=9x32x48" in message and "batch_size" in message
    steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
    assert steps["raw_manifest"] == "FAILURE"
    assert all(status != "SUCCESS" for status in steps.values())


def _chromium() -> str:
    path = os.environ.get("COG_ASSETS_CHROMIUM") or shutil.which("chromium")
    if not path or not os.access(path, os.X_OK):
        pytest.skip("chromium not found: install Debian's chromium (.ci/system-packages.sh "
                    "does) or set COG_ASSETS_CHROMIUM to a Chromium binary")
    return path


def test_lineage_page_shows_the_seven_assets(ui_run, tmp_path):
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is "
                                   "not installed: pip install -e '.[test]'")
    server, location, _shard, _expected, _metadata = ui_run
    # The "join the community" dialog the UI shows on a first visit, marked as seen.
    server.graphql("mutation { setNuxSeen }")
    url = f"{server.base}/locations/{REPOSITORY}@{location}/asset-groups/{GROUP}/lineage"
    artifacts = Path(os.environ.get("COG_ASSETS_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "dagster-ui-asset-lineage.png"

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                             headless=True, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(45_000)
            # Should the dialog show anyway, it is dismissed before anything is checked.
            page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                     lambda: page.get_by_role("button", name="Skip").click())
            page.goto(url, wait_until="domcontentloaded")
            for asset in ASSETS:
                sync_api.expect(page.get_by_text(asset, exact=True).first).to_be_visible()
            assert "/asset-groups/" in page.url and GROUP in page.url, page.url
            try:  # let the nodes' status (fetched after the graph) arrive for the screenshot
                page.wait_for_load_state("networkidle", timeout=15_000)
            except sync_api.TimeoutError:
                pass
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot of the lineage page: {screenshot}")
