"""A shard run that is killed, run twice at once, or meets an I/O error (DESIGN §9).

Real `cog-assets backfill` processes (DAGSTER_HOME in tmp, tiny profile, one shard, CPU):

- killed with SIGKILL part-way, the store holds no half-written file under a final name, and
  the next run succeeds, reusing what was finished before the kill;
- two runs of the same shard at once on one store both succeed (or one fails cleanly) and the
  finished dataset reads back consistently;
- an I/O error while writing (a read-only store, or the last file of the shard refused) fails
  the step with a clear message and leaves the previous finished dataset as it was;
- killed inside any one stage (the GPU steps included, which hold the instance's only `gpu`
  pool slot), a rerun with the same DAGSTER_HOME frees what the dead run held, says so, and
  finishes with the dataset an uninterrupted run makes;
- killed between shards, `--resume` skips the shards the summary (written after every shard)
  already has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from cog_assets.loader import CogVideoXLatentDataset
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.store.content_store import ContentStore
from cog_assets.testing import StepWatch, kill_inside_step, start_backfill
from cog_assets_tests.fixtures.pipeline import (
    artefact_key,
    audit_store,
    backfill_here,
    read_shard,
)

pytestmark = pytest.mark.slow

SHARD = "shard-00000"
CLIPS = 8


def _shard_dir(store: Path) -> Path:
    return store / "datasets" / "tiny" / SHARD


def _assert_no_half_written_files(store: Path):
    audit = audit_store(store)
    assert not audit.broken, f"files a reader would take for complete are not: {audit.broken}"
    return audit


def _snapshot(paths) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


# -- (a) kill and resume ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill")
    data = write_test_dataset(tmp / "data", CLIPS, broken=False)
    store = tmp / "store"
    frames_dir = store / "cas" / "frames"
    # frames kept: what the killed run finished must be found, untouched, after the rerun
    keep = ("--frames-retention", "keep")
    run = start_backfill(data, store, tmp / "home-1", tmp / "run-1", *keep)
    finished_frames = []
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and run.proc.poll() is None:
            finished_frames = [p for p in frames_dir.rglob("*.safetensors")
                               if ".tmp-" not in p.name] if frames_dir.exists() else []
            if len(finished_frames) >= 2:
                break
            time.sleep(0.02)
        alive = run.proc.poll() is None
    finally:
        run.kill()
    assert alive, f"the run ended before it could be killed:\n{run.output()[-3000:]}"
    assert len(finished_frames) >= 2, f"no frames after 240 s:\n{run.output()[-3000:]}"
    after_kill = audit_store(store)
    before = _snapshot(after_kill.artefacts())
    # Run again in the same instance (in this process: the same `main`, fewer imports).
    code, summary, output = backfill_here(data, store, tmp / "home-1", tmp / "run-2", *keep)
    return {"tmp": tmp, "data": data, "store": store, "after_kill": after_kill,
            "before": before, "code": code, "summary": summary, "output": output}


def test_killed_run_leaves_no_half_written_file_under_a_final_name(killed_and_resumed):
    audit = killed_and_resumed["after_kill"]
    assert not audit.broken, f"after SIGKILL a reader would take these for complete: {audit.broken}"
    assert not (_shard_dir(killed_and_resumed["store"]) / "index.parquet").exists() or \
        read_shard(_shard_dir(killed_and_resumed["store"]))  # if it is there, it is whole
    for tmp in audit.temporaries:  # temporaries are only ever a final name plus .tmp-<id>
        assert tmp.name.split(".tmp-")[0].endswith((".safetensors", ".parquet", ".json", ".png"))


def test_resumed_run_succeeds_and_reuses_the_finished_clips(killed_and_resumed):
    assert killed_and_resumed["code"] == 0, killed_and_resumed["output"][-4000:]
    summary = killed_and_resumed["summary"]["shards"][SHARD]
    assert summary["success"] and summary["accepted"] == CLIPS, summary
    store = killed_and_resumed["store"]
    before = killed_and_resumed["before"]
    after = _assert_no_half_written_files(store).artefacts()
    # Every computed item writes one artefact (a latent or embedding, once published, as a
    # reference to its shard file), so a run from scratch computes len(after); this one
    # computed only what the killed run had not finished and reused the rest.
    assert summary["reused"] == len(before) > 0, (summary, len(before))
    assert summary["computed"] == len(after) - len(before) < len(after), (summary, len(after))
    # The files finished before the kill were reused as they were, not written again.
    assert _snapshot(before) == before
    frames = pl.read_parquet(store / "tables" / "tiny" / "frame_tensors" / f"{SHARD}.parquet")
    keys_before = {p.stem for p in before if p.parent.parent.name == "frames"}
    statuses = dict(zip(frames["frames_key"].to_list(), frames["status"].to_list()))
    assert keys_before and all(statuses[k] == "reused" for k in keys_before), statuses


def test_resumed_dataset_reads_back(killed_and_resumed):
    shard = read_shard(_shard_dir(killed_and_resumed["store"]))
    assert len(shard["index"]) == CLIPS
    dataset = CogVideoXLatentDataset(killed_and_resumed["store"] / "datasets" / "tiny", "tiny")
    assert len(dataset) == CLIPS and dataset[0]["latents"].shape == (16, 3, 8, 12)


# -- (b) two runs of one shard at once ------------------------------------------------------

def test_two_runs_of_the_same_shard_at_once(tmp_path):
    data = write_test_dataset(tmp_path / "data", 3, broken=False)
    store = tmp_path / "store"
    runs = [start_backfill(data, store, tmp_path / f"home-{i}", tmp_path / f"run-{i}")
            for i in (1, 2)]
    try:
        codes = [run.wait(300) for run in runs]
    finally:
        for run in runs:
            run.kill()
    logs = "\n----\n".join(run.output()[-3000:] for run in runs)
    assert 0 in codes, f"neither concurrent run succeeded: {codes}\n{logs}"
    for code, run in zip(codes, runs):
        summary = run.summary_json()  # written by both, failed or not: a clean end
        shard = summary["shards"][SHARD]
        if code == 0:
            assert shard["success"] and shard["accepted"] == 3, shard
        else:
            assert code == 1 and not shard["success"] and shard["failure"], (code, shard)
    audit = _assert_no_half_written_files(store)
    shard = read_shard(_shard_dir(store))
    assert sorted(shard["index"]["clip_id"].to_list()) == [f"clips/clip_{i:02d}.mp4"
                                                           for i in range(3)]
    for row in shard["index"].iter_rows(named=True):
        key = row["latent_key"]
        stored = [p for p in audit.artefacts("vae_moments") if artefact_key(p) == key]
        assert len(stored) == 1, key  # stored once: a reference to the shard file, no copy
        moments = ContentStore(str(store)).get_tensors("vae_moments", key)["moments"]
        assert moments.equal(shard["latents"][row["clip_id"]])


# -- (c) I/O errors --------------------------------------------------------------------------

def _read_only(path: Path, mounts: list[Path]) -> None:
    """Make `path` (a directory or a file) refuse writes, even for root; skip if we cannot."""
    if os.geteuid() != 0:
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            p.chmod(p.stat().st_mode & ~0o222)
        return
    # Root writes through permission bits: use a read-only bind mount instead.
    for cmd in (["mount", "--bind", str(path), str(path)],
                ["mount", "-o", "remount,ro,bind", str(path)]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            if cmd[1] == "-o":
                subprocess.run(["umount", str(path)], capture_output=True)
            pytest.skip(f"running as root and cannot make {path.name} read-only: "
                        f"{' '.join(cmd)}: {done.stderr.strip()}")
    mounts.append(path)


def _undo(mounts: list[Path]) -> None:
    for path in reversed(mounts):
        subprocess.run(["umount", str(path)], capture_output=True)


def _copy_finished(killed_and_resumed, tmp: Path) -> tuple[Path, Path]:
    if killed_and_resumed["code"] != 0:
        pytest.skip("needs the finished dataset of the kill-and-resume run, which failed")
    data = tmp / "data"
    store = tmp / "store"
    shutil.copytree(killed_and_resumed["data"], data)
    shutil.copytree(killed_and_resumed["store"], store)
    return data, store


def _change_first_caption(data: Path) -> None:
    prompts = data / "prompts.txt"
    lines = prompts.read_text().splitlines()
    lines[0] = lines[0] + ", now seen at dusk"
    prompts.write_text("\n".join(lines) + "\n")


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_read_only_store_fails_the_step_clearly_and_keeps_the_dataset(killed_and_resumed,
                                                                      tmp_path):
    data, store = _copy_finished(killed_and_resumed, tmp_path)
    shard_dir = _shard_dir(store)
    before = _files(shard_dir)
    index_before = read_shard(shard_dir)["index"]
    _change_first_caption(data)  # a new caption: a new embedding and a new dataset to write
    mounts: list[Path] = []
    try:
        _read_only(store / "datasets", mounts)
        _read_only(store / "cas", mounts)
        probe = store / "datasets" / "probe"
        with pytest.raises(OSError):
            probe.write_bytes(b"x")
        code, summary, output = backfill_here(data, store, tmp_path / "home", tmp_path / "run")
    finally:
        _undo(mounts)
    assert code == 1, output[-4000:]
    shard = summary["shards"][SHARD]
    assert not shard["success"] and shard["failure"]
    assert _files(shard_dir) == before  # the previous finished dataset, byte for byte
    assert read_shard(shard_dir)["index"].equals(index_before)
    _assert_no_half_written_files(store)
    # The summary JSON is what CI reads: its failure must say what went wrong, and where.
    failure = shard["failure"]
    assert "Read-only file system" in failure or "Permission denied" in failure, failure
    assert str(store) in failure, f"the message should say where it could not write: {failure}"


def test_io_error_on_the_last_file_of_the_shard_keeps_the_previous_dataset(
        killed_and_resumed, tmp_path):
    """The shard's files are replaced one by one (tensors first, index last). When the index
    cannot be replaced, the previous dataset must still be whole: its index must still find
    its latents and its prompt embeddings."""
    if os.geteuid() != 0:
        pytest.skip("refusing the replacement of one file needs a read-only bind mount (root); "
                    "file permission bits do not stop a rename over it")
    data, store = _copy_finished(killed_and_resumed, tmp_path)
    shard_dir = _shard_dir(store)
    before = _files(shard_dir)
    index_before = read_shard(shard_dir)["index"]
    _change_first_caption(data)
    mounts: list[Path] = []
    try:
        _read_only(shard_dir / "index.parquet", mounts)  # replacing it fails (EBUSY / EACCES)
        code, summary, output = backfill_here(data, store, tmp_path / "home", tmp_path / "run")
    finally:
        _undo(mounts)
    assert code == 1, output[-4000:]
    shard = summary["shards"][SHARD]
    assert not shard["success"] and "training_dataset" in (shard["failure"] or ""), shard
    assert pl.read_parquet(shard_dir / "index.parquet").equals(index_before)
    changed = sorted(name for name, data in _files(shard_dir).items() if before.get(name) != data)
    try:
        read_shard(shard_dir)
    except (AssertionError, KeyError) as exc:
        pytest.fail(f"the previous dataset no longer reads back: {exc}; files replaced before "
                    f"the error: {changed}")
    dataset = CogVideoXLatentDataset(store / "datasets" / "tiny", "tiny")
    for i in range(len(dataset)):
        dataset[i]


# -- (d) SIGKILL inside each stage, then a rerun in the same instance --------------------------

STAGES = ["raw_manifest", "validated_clips", "frame_tensors", "t5_embeddings", "vae_latents",
          "training_dataset"]
GPU_STAGES = {"t5_embeddings", "vae_latents"}  # pool `gpu`: one slot in the shipped yaml
KILL_ATTEMPTS = 3  # a stage that ends before the kill lands is tried again
# Not a performance bound: a rerun that waits on the dead run's slot never ends at all.
RERUN_LIMIT_S = 600


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The dataset (with one undecodable file) and what a run that is never killed makes."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    data = write_test_dataset(tmp / "data", 4, broken=True)
    code, summary, output = backfill_here(data, tmp / "store", tmp / "home", tmp / "run")
    assert code == 0, output[-4000:]
    return data, read_shard(_shard_dir(tmp / "store"))


def _same_dataset(store: Path, expected: dict) -> None:
    shard = read_shard(_shard_dir(store))
    assert shard["index"].equals(expected["index"])
    assert shard["rejects"].equals(expected["rejects"])
    for name in ("latents", "embeds"):
        assert shard[name].keys() == expected[name].keys()
        assert all(shard[name][k].equal(expected[name][k]) for k in shard[name]), name


@pytest.mark.parametrize("stage", STAGES)
def test_killed_inside_a_stage_the_rerun_frees_the_dead_runs_slot_and_finishes(
        uninterrupted, tmp_path, stage):
    data, expected = uninterrupted
    store, home = tmp_path / "store", tmp_path / "home"
    for attempt in range(KILL_ATTEMPTS):
        watch = StepWatch(home)
        run = start_backfill(data, store, home, tmp_path / f"killed-{attempt}")
        if kill_inside_step(run, home, stage, watch=watch):
            break
    else:
        pytest.fail(f"{stage} ended before every one of {KILL_ATTEMPTS} kills landed")
    _assert_no_half_written_files(store)
    rerun = start_backfill(data, store, home, tmp_path / "rerun")
    code = rerun.wait(RERUN_LIMIT_S)
    output = rerun.output()
    assert code == 0, output[-4000:]
    slots = 1 if stage in GPU_STAGES else 0
    assert "its process" in output and "is gone; marked failed" in output, output[-4000:]
    assert f"freed {slots} pool slot" in output, output[-4000:]
    _same_dataset(store, expected)
    _assert_no_half_written_files(store)


def test_resume_after_a_kill_skips_the_shards_the_summary_already_has(tmp_path):
    """Two shards; killed while the second runs: the summary written after the first lets
    `--resume` skip it; the rerun computes the second only."""
    data = write_test_dataset(tmp_path / "data", 6, broken=False)
    store, home = tmp_path / "store", tmp_path / "home"
    run = start_backfill(data, store, home, tmp_path / "killed", "--shards", "2")
    deadline = time.monotonic() + RERUN_LIMIT_S
    while not run.summary.exists() and run.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.summary.exists(), run.output()[-4000:]
    partial = run.summary_json()
    assert kill_inside_step(run, home, "frame_tensors", watch=StepWatch(home, unfinished_only=True))
    [first] = partial["shards"]
    assert partial["shards"][first]["success"] and partial["success"] is False
    [second] = partial["pending"]
    work = tmp_path / "killed"  # resume from the same summary file
    resumed = start_backfill(data, store, home, work, "--shards", "2", "--resume")
    assert resumed.wait(RERUN_LIMIT_S) == 0, resumed.output()[-4000:]
    summary = resumed.summary_json()
    assert summary["success"] and summary["pending"] == []
    assert summary["shards"][first]["resumed"] and not summary["shards"][second]["resumed"]
    assert summary["shards"][second]["success"]
    assert summary["shards"][first]["accepted"] + summary["shards"][second]["accepted"] == 6


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid:
            found.append((int(entry), command))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc (Linux)")
def test_a_killed_backfill_leaves_no_helper_decoding_ahead(shared_media, tmp_path):
    """kill -9 of the backfill process alone (the OOM killer, `kill -9 PID`), not of its
    group, while the helper decodes the next shard's real videos ahead (seconds of work): the
    helper goes at once with it, and everything else it started follows."""
    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    names = []
    for video in sorted((shared_media / "videos").iterdir()):
        shutil.copyfile(video, data / "clips" / video.name)
        names.append(f"clips/{video.name}")
    (data / "videos.txt").write_text("".join(f"{n}\n" for n in names))
    (data / "prompts.txt").write_text("".join(f"clip {i}\n" for i in range(len(names))))
    run = start_backfill(data, tmp_path / "store", tmp_path / "home", tmp_path / "run",
                         "--shards", "2", "--buckets", "49x240x368")
    try:
        deadline = time.monotonic() + 180
        while not (helpers := [p for p, c in _children(run.proc.pid) if "spawn_main" in c]):
            assert run.proc.poll() is None and time.monotonic() < deadline, run.output()[-3000:]
            time.sleep(0.05)
        time.sleep(3)  # into its work: importing, probing, decoding
        run.proc.kill()  # the CLI's process only
        run.proc.wait()
        assert _gone(helpers[0], within_s=5), "the helper decoding ahead outlived the backfill"
        assert _gone_group(run.proc.pid, within_s=30), subprocess.run(
            ["ps", "-o", "pid,ppid,cmd", "-g", str(run.proc.pid)], capture_output=True,
            text=True).stdout
    finally:
        run.kill()


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True  # dead, not yet reaped by init
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _gone_group(pgid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
