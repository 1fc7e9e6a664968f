"""Clip files in the store: kept while a current export links them, collected after the grace
period otherwise (retention as for frames), counted once however many exports link them, and
checked by `cog-assets verify` against their records."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.profiles import get_profile
from cog_assets.exports import export_cogvideo_finetune, export_videox_fun
from cog_assets.store.collection import collect, plan_gc
from cog_assets.store.content_store import ContentStore
from cog_assets.store.footprint import kind_of, store_footprint
from cog_assets.store.leases import Lease
from cog_assets.store.verify import verify_store
from cog_assets_tests.fixtures.clips import cut_sources
from cog_assets_tests.fixtures.datasets import CLIPS, build_dataset
from cog_assets_tests.fixtures.trainer_datasets import videox_fun_items

HOUR = 3600.0
TINY = get_profile("tiny")
IDS = [clip_id for _, clip_id, *_ in CLIPS]


def _age_all(root: Path, seconds: float = 2 * HOUR) -> None:
    then = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (then, then))


@pytest.fixture
def exported(tmp_path):
    """A dataset in a store, its clip files cut, and both video exports written."""
    store = ContentStore(str(tmp_path / "store"))
    dataset = tmp_path / "store" / "datasets" / "tiny"
    build_dataset(dataset, store=store)
    files = cut_sources(tmp_path / "data", IDS, store)
    exports = tmp_path / "store" / "exports" / "tiny"
    export_videox_fun(dataset, exports / "videox-fun", TINY, files.files)
    export_cogvideo_finetune(dataset, exports / "cogvideo-finetune", TINY,
                             clip_files=files.files)
    _age_all(tmp_path / "store")
    return store, files, exports


def _clip_garbage(store: ContentStore, grace_s: float = HOUR, **kwargs) -> list[str]:
    plan = plan_gc(store, grace_s=grace_s, **kwargs)
    return sorted(g.path for g in plan.garbage if g.category == "clip_files")


def test_clip_files_a_current_export_links_stay(exported):
    store, _, _ = exported
    assert _clip_garbage(store) == []


def test_clip_files_no_export_links_go_after_the_grace_period_and_exports_still_read(exported):
    store, files, exports = exported
    plan = plan_gc(store, grace_s=HOUR, exports=True)  # every export goes, then its clips
    collect(store, plan, grace_s=HOUR)
    assert not exports.exists() or not any(exports.iterdir())
    gone = _clip_garbage(store)
    keys = {f.key for f in files.files.values()}
    assert {Path(p).name.split(".")[0] for p in gone} == keys
    assert {Path(p).suffix for p in gone} == {".mp4", ".json"}
    collect(store, plan_gc(store, grace_s=HOUR), grace_s=HOUR)
    assert not list(Path(store.root, "cas", "clip_file").rglob("*.mp4"))


def test_a_clip_file_removed_from_the_store_leaves_the_exports_that_link_it_whole(exported,
                                                                                 tmp_path):
    store, files, exports = exported
    for clip in files.files.values():
        clip.path.unlink()  # what gc does once no current export lists it
    items = videox_fun_items(exports / "videox-fun", exports / "videox-fun" / "metadata.json",
                             n_frames=5, stride=2)
    assert len(items) == len(CLIPS)  # hard links: the bytes stay while an export has them


def test_recent_and_held_clip_files_stay(tmp_path):
    store = ContentStore(str(tmp_path / "store"))
    files = cut_sources(tmp_path / "data", ["a.mp4", "b.mp4"], store)
    assert _clip_garbage(store) == []  # written just now: within the grace period
    _age_all(tmp_path / "store")
    held = files.files["a.mp4"].key
    with Lease(store, "run.clip_files") as lease:
        lease.hold(ArtifactKind.clip_file, [held])
        gone = _clip_garbage(store)
    assert gone and not any(held in path for path in gone)
    assert any(files.files["b.mp4"].key in path for path in gone)


def test_an_exports_hard_links_count_once_as_clip_files(exported):
    store, files, _ = exported
    footprint = store_footprint(store)
    clip_bytes = sum(f.bytes for f in files.files.values())
    assert footprint.bytes["clip_files"] >= clip_bytes  # the MP4s and their records
    exported = [p for p in Path(store.root, "exports").rglob("*")  # the version folders
                if p.is_file() and not p.is_symlink()]
    mp4 = sum(p.stat().st_size for p in exported if p.suffix == ".mp4")
    assert mp4 == 2 * clip_bytes  # both exports link every clip ...
    others = sum(p.stat().st_size for p in exported if p.suffix != ".mp4")
    assert footprint.bytes["exports"] == others  # ... and none of it counts twice
    assert kind_of("cas/clip_file/ab/abc.mp4") == "clip_files"


def test_verify_finds_a_damaged_clip_file(exported):
    store, files, _ = exported
    assert verify_store(store).ok
    clip = next(iter(files.files.values()))
    data = bytearray(clip.path.read_bytes())
    data[-10] ^= 0xFF
    clip.path.write_bytes(bytes(data))
    report = verify_store(store)
    [finding] = report.findings
    assert finding.state == "corrupt" and clip.key in finding.detail
    assert "digest" in finding.detail
