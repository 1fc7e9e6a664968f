"""Decoding in worker processes: ordered and bounded, with stuck and crashing decodes isolated.

The functions below run inside the worker processes (they must be importable by module name);
the slow and crashing "decoders" stand in only for the decoder at the process boundary:
everything else, the pool, the store, the real decode of the other clips, is the real thing.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.config import MediaLimits, SourceSettings
from cog_assets.core.profiles import get_profile
from cog_assets.media.decode import ClipTask, decode_clip_task
from cog_assets.media.errors import MediaError
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.runtime.worker_pool import TaskTimeout, WorkerCrash, prefetch_map
from cog_assets.stages.frames import extract_frames
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.validation import validate_clips
from cog_assets.store.content_store import ContentStore
from cog_assets_tests.fixtures.frames import read_frames
from cog_assets_tests.fixtures.slow_start import SLOW_MODULE, STARTUP_S, SlowToLoad

SLOW_S = 60.0


# -- run inside the workers ------------------------------------------------------------------

def square(x: int) -> int:
    return x * x


def marked(item: tuple[str, int, float]) -> int:
    """Leave a file saying the item started, then take `seconds`."""
    folder, index, seconds = item
    Path(folder, f"started-{index}").touch()
    time.sleep(seconds)
    return index


def misbehave(x: int) -> int:
    if x == 2:
        time.sleep(SLOW_S)
    if x == 3:
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == 4:
        raise MediaError("unreadable", "four is not a video")
    if x == 5:
        raise ValueError("five is a bug")
    return x


def take_a_second_and_a_half(item: int) -> float:
    time.sleep(1.5)
    return 1.5


def stuck_or_crashing_decoder(task: ClipTask) -> dict:
    """The real decoder, except that clip_01 never finishes and clip_02 segfaults."""
    name = Path(task.path).name
    if name == "clip_01.mp4":
        time.sleep(SLOW_S)
    if name == "clip_02.mp4":
        os.kill(os.getpid(), signal.SIGSEGV)
    return decode_clip_task(task)


# -- the pool --------------------------------------------------------------------------------

def test_results_come_back_in_order_from_several_workers():
    outcomes = list(prefetch_map(square, range(12), workers=2))
    assert [o.index for o in outcomes] == list(range(12))
    assert [o.value for o in outcomes] == [x * x for x in range(12)]
    assert all(o.ok for o in outcomes)


def test_no_more_than_depth_items_are_started_ahead_of_the_consumer(tmp_path):
    items = [(str(tmp_path), 0, 1.0)] + [(str(tmp_path), i, 0.0) for i in range(1, 10)]
    outcomes = prefetch_map(marked, items, workers=2, depth=3)
    first = next(outcomes)  # item 0 is slow: the others finish but wait to be consumed
    assert first.index == 0
    started = len(list(tmp_path.glob("started-*")))
    assert started <= 3, f"{started} items started with depth 3"
    assert [o.index for o in outcomes] == list(range(1, 10))


def test_stuck_task_is_stopped_a_crash_is_isolated_and_errors_come_back():
    outcomes = list(prefetch_map(misbehave, range(8), workers=2, timeout_s=1.0))
    by_index = {o.index: o for o in outcomes}
    assert [by_index[i].value for i in (0, 1, 6, 7)] == [0, 1, 6, 7]
    assert isinstance(by_index[2].error, TaskTimeout) and by_index[2].error.limit_s == 1.0
    # Stopped at its limit, long before its own sleep would have ended. (Only the task's own
    # time is bounded: how long workers take to start depends on the machine's load.)
    assert 1.0 <= by_index[2].seconds < SLOW_S / 6
    assert isinstance(by_index[3].error, WorkerCrash)
    assert by_index[3].error.exitcode == -signal.SIGSEGV
    media = by_index[4].error
    assert isinstance(media, MediaError) and media.reason == "unreadable"
    assert media.message == "four is not a video"
    bug = by_index[5].error
    assert isinstance(bug, ValueError) and "five is a bug" in str(bug)
    assert "misbehave" in str(bug.__cause__)  # the worker's traceback comes along


def test_each_item_can_have_its_own_time_limit():
    """A limit per item (a scan of a long video gets longer than one of a short one): the
    same 1.5 s task is stopped under a 0.5 s limit and finishes under a 30 s one."""
    limits = {0: 0.5, 1: 30.0}
    items = [0, 1]
    outcomes = {o.index: o for o in prefetch_map(take_a_second_and_a_half, items, workers=2,
                                                 timeout_s=lambda item: limits[item])}
    assert isinstance(outcomes[0].error, TaskTimeout) and outcomes[0].error.limit_s == 0.5
    assert outcomes[1].ok and outcomes[1].value == 1.5


def test_the_time_limit_starts_when_a_worker_takes_the_task():
    """Every worker takes STARTUP_S to start, twice the limit; its quick tasks still finish:
    the start-up does not count against the first task it takes."""
    outcomes = list(prefetch_map(SlowToLoad(), range(4), workers=2, timeout_s=STARTUP_S / 2))
    assert [o.error for o in outcomes] == [None] * 4
    assert [o.value for o in outcomes] == [1, 2, 3, 4]
    assert all(o.seconds < STARTUP_S / 2 for o in outcomes)
    assert SLOW_MODULE not in sys.modules  # the start-up delay was the workers' alone


def test_workers_zero_runs_in_this_process():
    outcomes = list(prefetch_map(square, range(4), workers=0))
    assert [o.value for o in outcomes] == [0, 1, 4, 9]


class CountingContext:
    """The real process context, counting the processes started through it."""

    def __init__(self):
        import multiprocessing

        self.real = multiprocessing.get_context("spawn")
        self.started = 0

    def Pipe(self, duplex=True):  # noqa: N802 - the context's own method names
        return self.real.Pipe(duplex)

    def Process(self, *args, **kwargs):  # noqa: N802
        self.started += 1
        return self.real.Process(*args, **kwargs)


@pytest.mark.parametrize("items", [[], iter(()), (x for x in range(0))])
def test_nothing_to_do_starts_no_worker(items):
    context = CountingContext()
    assert list(prefetch_map(square, items, workers=2, context=context)) == []
    assert context.started == 0


def test_one_item_starts_one_worker():
    context = CountingContext()
    assert [o.value for o in prefetch_map(square, [3], workers=2, context=context)] == [9]
    assert context.started == 1


# -- extract_frames through the pool --------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = write_test_dataset(tmp_path_factory.mktemp("data"), 5, seconds=1.5, broken=False)
    policy = FramePolicy.build(get_profile("tiny"))
    manifest = build_manifest(SourceSettings(data_root=str(root), shard_count=1), "shard-00000")
    validated = validate_clips(manifest, root, policy, MediaLimits())
    assert validated["accepted"].all()
    return root, policy, validated


def test_stuck_and_crashing_decodes_reject_only_their_clip(dataset, tmp_path):
    root, policy, validated = dataset
    store = ContentStore(str(tmp_path / "store"))
    frames, stats = extract_frames(validated, root, store, policy, workers=2,
                                   decode_timeout_s=2.0, decode=stuck_or_crashing_decoder)
    by_clip = {r["clip_id"]: r for r in frames.iter_rows(named=True)}
    stuck, crashed = by_clip["clips/clip_01.mp4"], by_clip["clips/clip_02.mp4"]
    # decode_timeout: its worker was stopped (had its SLOW_S sleep ended, the clip would be
    # computed); no bound on the whole call, which includes the workers' start-up
    assert (stuck["status"], stuck["reason"]) == ("rejected", "decode_timeout")
    assert "clips/clip_01.mp4" in stuck["message"] and "2 s" in stuck["message"]
    assert (crashed["status"], crashed["reason"]) == ("rejected", "decode_crash")
    assert "clips/clip_02.mp4" in crashed["message"] and "SIGSEGV" in crashed["message"]
    assert stats.rejected == 2 and stats.computed == 3
    assert frames["clip_id"].to_list() == validated["clip_id"].to_list()  # input order
    for clip in ("clips/clip_00.mp4", "clips/clip_03.mp4", "clips/clip_04.mp4"):
        row = by_clip[clip]
        assert row["status"] == "computed"
        stored = store.get_tensors(ArtifactKind.frames, row["frames_key"])["frames"]
        expected = read_frames(root / clip, num_frames=9, fps=8, height=64, width=96)
        assert torch.equal(stored, torch.from_numpy(expected))


def test_pool_and_in_process_decoding_store_the_same_bytes(dataset, tmp_path):
    root, policy, validated = dataset
    pooled, inline = ContentStore(str(tmp_path / "a")), ContentStore(str(tmp_path / "b"))
    a, _ = extract_frames(validated, root, pooled, policy, workers=2, prefetch=2,
                          decode_timeout_s=60.0)
    b, _ = extract_frames(validated, root, inline, policy, workers=0, decode_timeout_s=None)
    assert a.equals(b)
    for key in a["frames_key"]:
        assert (pooled.read_bytes(pooled.artifact_path(ArtifactKind.frames, key))
                == inline.read_bytes(inline.artifact_path(ArtifactKind.frames, key)))
    again, stats = extract_frames(validated, root, pooled, policy, workers=2,
                                  decode_timeout_s=60.0)
    assert stats.reused == len(validated) and stats.computed == 0
    assert (again["status"] == "reused").all()


@pytest.mark.parametrize("later", [False, True])
def test_one_source_under_two_names_is_decoded_once(dataset, tmp_path, later):
    """The second name comes while its bytes are still decoding, or (`later`: one worker,
    one clip in flight, other clips in between) after they were stored."""
    root, policy, validated = dataset
    first = validated.head(1)
    again = first.with_columns(pl.lit("clips/clip_00_again.mp4").alias("clip_id"))
    rows = pl.concat([first, validated.slice(1, 3), again] if later else [first, again])
    frames, stats = extract_frames(rows, root, ContentStore(str(tmp_path)), policy,
                                   workers=1 if later else 2, prefetch=1 if later else None,
                                   decode_timeout_s=60.0)
    statuses = frames["status"].to_list()
    assert statuses[0] == "computed" and statuses[-1] == "reused"
    assert stats.computed == len(rows) - 1 and stats.reused == 1
    assert frames["frames_key"][0] == frames["frames_key"][-1]


def test_a_shard_whose_frames_are_all_stored_starts_no_decode_process(dataset, tmp_path,
                                                                       monkeypatch):
    """Re-running frame_tensors on a full store: no decode worker is started (each start of
    the pool's worker class is counted; the workers themselves are the real ones)."""
    import cog_assets.runtime.worker_pool as prefetch

    root, policy, validated = dataset
    store = ContentStore(str(tmp_path / "store"))
    _, first = extract_frames(validated, root, store, policy, decode_timeout_s=60, workers=0)
    assert first.computed == len(validated)
    started = []
    real_init = prefetch._Worker.__init__

    def counted(self, *args, **kwargs):
        started.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(prefetch._Worker, "__init__", counted)
    _, again = extract_frames(validated, root, store, policy, decode_timeout_s=60, workers=2)
    assert again.reused == len(validated) and again.computed == 0
    assert started == []
    changed = validated.head(1).with_columns(pl.lit("0" * 64).alias("content_hash"))
    _, one = extract_frames(changed, root, store, policy, decode_timeout_s=60, workers=2)
    assert one.computed == 1 and len(started) == 1  # and one clip to decode starts one
