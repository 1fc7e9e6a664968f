"""The store's footprint and lifecycle on the real corpus (issue 15).

The real clips of ../shared/media (videos/ and edge/; the files that are not usable video are
rejected) at 49x240x368 with the tiny profile in float32, short clips padded as CogVideo does,
backfilled with every default and no export:

1. default retention (`until_published`) in a fresh store: the bytes outside the finished
   datasets against the datasets' bytes (target <= 0.3x), per kind; with `--baseline`, the
   same backfill with `frames_retention=keep` in another fresh store, as a baseline;
2. the resize policy changed (cover -> stretch), the backfill run again in the same store and
   `cog-assets gc` run (no grace): the store's size against a fresh store that only ever ran
   stretch (target within 10%); the dataset loads (every file checked against its digest) and
   one more run computes nothing.

    python bench/bench_store_footprint.py [--media ../shared/media] [--baseline]

Prints a table per store and a verdict per target; `--json PATH` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUCKET = "49x240x368"


def corpus_root(media: Path, root: Path) -> tuple[Path, int]:
    """A data root with every corpus video (videos/ and edge/) and a caption each."""
    names = sorted(f"{folder}/{p.name}" for folder in ("videos", "edge")
                   for p in (media / folder).iterdir() if p.is_file())
    captions = (media / "captions" / "vbench_all_dimension_longer.txt").read_text(
        encoding="utf-8").splitlines()
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(media / name, root / name)
    (root / "videos.txt").write_text("".join(f"{n}\n" for n in names))
    (root / "prompts.txt").write_text("".join(f"{captions[i % len(captions)].strip()}\n"
                                              for i in range(len(names))))
    return root, len(names)


def backfill(settings, instance) -> dict:
    from cog_assets.defs.runs import materialize_shards

    started = time.perf_counter()
    summaries = materialize_shards(settings, instance)
    failed = {k: s.failure for k, s in summaries.items() if not s.success}
    if failed:
        raise SystemExit(f"backfill failed: {failed}")
    return {"seconds": round(time.perf_counter() - started, 1),
            "accepted": sum(s.accepted for s in summaries.values()),
            "computed": sum(s.computed for s in summaries.values()),
            "reused": sum(s.reused for s in summaries.values())}


def footprint(store_dir: Path) -> dict:
    from cog_assets.store.content_store import ContentStore
    from cog_assets.store.footprint import store_footprint

    measured = store_footprint(ContentStore(str(store_dir)))
    return {"bytes": dict(measured.bytes), "files": dict(measured.files),
            "total": measured.total, "datasets": measured.bytes["datasets"],
            "outside": measured.outside_datasets}


def show(title: str, figures: dict) -> None:
    print(f"\n{title}: {figures['total'] / 1e6:.1f} MB in all, datasets "
          f"{figures['datasets'] / 1e6:.2f} MB, outside them {figures['outside'] / 1e6:.2f} MB "
          f"({figures['outside'] / max(figures['datasets'], 1):.3f}x)")
    for kind, size in figures["bytes"].items():
        if figures["files"][kind]:
            print(f"  {kind:<14} {figures['files'][kind]:>6} files {size / 1e6:>10.2f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", default=os.environ.get("COG_ASSETS_MEDIA", "../shared/media"))
    parser.add_argument("--baseline", action="store_true",
                        help="also backfill with frames_retention=keep in a fresh store")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--work", help="keep the stores here (default: a temporary folder)")
    args = parser.parse_args()

    from dagster import instance_for_test

    from cog_assets.core.config import Settings
    from cog_assets.loader import CogVideoXLatentDataset
    from cog_assets.store.collection import collect, plan_gc
    from cog_assets.store.content_store import ContentStore

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-footprint-"))
    root, files = corpus_root(Path(args.media), work / "data")
    print(f"load: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores; {files} corpus "
          f"files at {BUCKET}, tiny profile, float32, short clips padded, no export")

    def settings(store: str, **more) -> Settings:
        return Settings.of(data_root=str(root), store=str(work / store), buckets=[BUCKET],
                           short_clips="pad", device="cpu", dtype="float32", **more)

    figures: dict = {}
    with instance_for_test() as instance:
        figures["run"] = backfill(settings("store"), instance)
        figures["default"] = footprint(work / "store")
        show(f"default retention (until_published), {figures['run']['accepted']} clips, "
             f"{figures['run']['seconds']} s", figures["default"])
        if args.baseline:
            figures["keep_run"] = backfill(settings("store-keep", frames_retention="keep"),
                                           instance)
            figures["keep"] = footprint(work / "store-keep")
            show(f"baseline: frames_retention=keep, {figures['keep_run']['seconds']} s",
                 figures["keep"])

        stretch = settings("store", resize="stretch")
        figures["changed_run"] = backfill(stretch, instance)
        figures["changed_before_gc"] = footprint(work / "store")
        store = ContentStore(str(work / "store"))
        plan = plan_gc(store, grace_s=0)
        result = collect(store, plan, grace_s=0)
        figures["gc"] = {"removed_files": len(result.removed), "removed_bytes": result.bytes,
                         "by_category": plan.by_category()}
        figures["changed_after_gc"] = footprint(work / "store")
        show(f"resize changed to stretch and run again ({figures['changed_run']['computed']} "
             "computed), before gc", figures["changed_before_gc"])
        print(f"gc removed {len(result.removed)} files, {result.bytes / 1e6:.2f} MB: "
              + ", ".join(f"{c} {n} ({b / 1e6:.2f} MB)"
                          for c, (n, b) in plan.by_category().items()))
        show("...after gc", figures["changed_after_gc"])

        figures["fresh_run"] = backfill(settings("store-fresh", resize="stretch"), instance)
        figures["fresh"] = footprint(work / "store-fresh")
        show("a fresh store that only ever ran stretch", figures["fresh"])

        loaded = CogVideoXLatentDataset(work / "store" / "datasets" / "tiny", "tiny",
                                        verify=True)
        figures["loaded_clips"] = len(loaded)
        figures["rerun"] = backfill(stretch, instance)

    ratio = figures["default"]["outside"] / figures["default"]["datasets"]
    back = figures["changed_after_gc"]["total"] / figures["fresh"]["total"]
    checks = {
        "outside / datasets <= 0.3 (default retention)": ratio <= 0.3,
        "after a resize change + rerun + gc, within 10% of a fresh store": abs(back - 1) <= 0.10,
        "the dataset loads, every file checked": figures["loaded_clips"]
        == figures["run"]["accepted"],
        "a rerun computes nothing": figures["rerun"]["computed"] == 0,
    }
    print(f"\noutside / datasets: {ratio:.3f}x; after change + gc / fresh: {back:.3f}x; "
          f"dataset loads {figures['loaded_clips']} clips; rerun computed "
          f"{figures['rerun']['computed']}, reused {figures['rerun']['reused']}")
    for name, ok in checks.items():
        print(f"  {'met ' if ok else 'MISSED'} {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
