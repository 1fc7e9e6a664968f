"""`cog-assets`: the demo, CI backfills and shard discovery from the command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from cog_assets.media.resize import RESIZE_MODES
from cog_assets.media.sampling import SHORT_CLIP_POLICIES, START_POLICIES
from cog_assets.profiles import PROFILES, ProfileError
from cog_assets.sources import ManifestError
from cog_assets.settings import DEMO_DIR, Settings


def _instance(dagster_home: Path | None):
    """The persistent instance under DAGSTER_HOME (created with the directory if needed)."""
    from dagster import DagsterInstance

    if dagster_home is not None:
        os.environ["DAGSTER_HOME"] = str(dagster_home.absolute())
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise SystemExit("DAGSTER_HOME is not set: set it (or pass --dagster-home) so run "
                         "history persists between backfills")
    Path(home).mkdir(parents=True, exist_ok=True)
    config = Path(home) / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(Path(__file__).with_name("dagster.yaml"), config)
    return DagsterInstance.get()


def _print_summaries(summaries) -> None:
    for key, s in summaries.items():
        state = "done  " if s.resumed else "ok    " if s.success else "FAILED"
        print(f"{state} {key}: {s.clips} clips, {s.accepted} accepted, {s.rejected} rejected, "
              f"{s.computed} computed, {s.reused} reused")
        if s.failure:
            print("       " + s.failure.replace("\n", "\n       "))


def cmd_demo(args: argparse.Namespace) -> int:
    from cog_assets.demo import write_demo_dataset
    from cog_assets.runner import materialize_shards

    demo_dir = Path(args.dir).absolute()
    settings = Settings.for_demo(demo_dir).with_(shard_count=args.shards)
    print(f"writing the demo dataset under {settings.data_root}")
    write_demo_dataset(Path(settings.data_root))
    instance = _instance(demo_dir / "dagster_home")
    summaries = materialize_shards(settings, instance)
    _print_summaries(summaries)
    print(f"\nfinished dataset: {settings.store_url}/datasets/{settings.profile}/shard-*/")
    print("read it with: from cog_assets.loader import CogVideoXLatentDataset; "
          f"CogVideoXLatentDataset('{settings.store_url}/datasets/{settings.profile}', 'tiny')")
    env = " ".join(f"{k}={v}" for k, v in settings.to_env().items())
    print(f"\nopen it in the Dagster UI:\n  DAGSTER_HOME={demo_dir / 'dagster_home'} {env} "
          "dagster dev -m cog_assets.definitions\n  then browse http://127.0.0.1:3000")
    return 0 if all(s.success for s in summaries.values()) else 1


def cmd_backfill(args: argparse.Namespace) -> int:
    from cog_assets.defs.definitions import build_definitions
    from cog_assets.runner import (materialize_shards, register_shards, select_shards,
                                   write_summary_json)

    settings = Settings(
        data_root=str(Path(args.data_root).absolute()),
        store_url=args.store if "://" in args.store else str(Path(args.store).absolute()),
        profile=args.profile, weights=args.weights, revision=args.revision,
        shard_count=args.shards, device=args.device, dtype=args.dtype,
        batch_size=args.batch_size, buckets=tuple(args.buckets or ()),
        token_budget=args.token_budget, sample_start=args.sample_start, resize=args.resize,
        short_clips=args.short_clips,
    )
    build_definitions(settings)  # refuses a configuration the model cannot take, before any work
    instance = _instance(Path(args.dagster_home) if args.dagster_home else None)
    shards = select_shards(register_shards(instance, settings), args.shard, args.shard_range)
    previous = None
    if args.resume:
        if not args.summary_json or not Path(args.summary_json).is_file():
            raise ManifestError("--resume needs --summary-json pointing at the earlier summary")
        previous = json.loads(Path(args.summary_json).read_text())["shards"]
    summaries = materialize_shards(settings, instance, shards, parallel=args.parallel,
                                   resume_from=previous)
    _print_summaries(summaries)
    if args.summary_json:
        write_summary_json(args.summary_json, summaries)
        print(f"summary written to {args.summary_json}")
    failed = [k for k, s in summaries.items() if not s.success]
    if args.export and not failed:
        from cog_assets.runner import run_exports

        exported = run_exports(settings, instance)
        print(f"exports {'written' if exported.success else 'FAILED'} under "
              f"{settings.store_url}/exports/{settings.profile}/")
        if not exported.success:
            return 1
    if failed:
        print(f"{len(failed)} of {len(summaries)} shards failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from cog_assets.runner import register_shards

    settings = Settings(data_root=str(Path(args.data_root).absolute()), store_url="",
                        shard_count=args.shards)
    if args.register:
        keys = register_shards(_instance(Path(args.dagster_home) if args.dagster_home
                                         else None), settings)
    else:
        from cog_assets.stages.manifest import discover_shards
        keys = discover_shards(settings.data_root, settings.shard_count)
    print("\n".join(keys))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cog-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="make a synthetic dataset and materialize every shard")
    demo.add_argument("--dir", default=str(DEMO_DIR), help="where to write it (default: %(default)s)")
    demo.add_argument("--shards", type=int, default=Settings.shard_count,
                      help="shard count (default: %(default)s)")
    demo.set_defaults(func=cmd_demo)

    backfill = sub.add_parser("backfill", help="materialize every shard of a data root")
    backfill.add_argument("--data-root", required=True)
    backfill.add_argument("--store", required=True, help="directory or fsspec URL")
    backfill.add_argument("--profile", default="tiny", choices=sorted(PROFILES))
    backfill.add_argument("--weights", help="local diffusers-layout dir or hub id")
    backfill.add_argument("--revision")
    backfill.add_argument("--shards", type=int, default=4, help="shard count of the dataset")
    backfill.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    backfill.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    backfill.add_argument("--batch-size", type=int, default=1)
    backfill.add_argument("--buckets", nargs="+", metavar="FxHxW",
                          help="frame buckets, e.g. 49x480x720 49x720x480 (default: the "
                          "profile's own shape)")
    backfill.add_argument("--token-budget", type=int,
                          help="aspect-ratio buckets within this many video tokens, e.g. 13312")
    backfill.add_argument("--sample-start", default="start", choices=START_POLICIES)
    backfill.add_argument("--resize", default="cover", choices=RESIZE_MODES)
    backfill.add_argument("--short-clips", default="reject", choices=SHORT_CLIP_POLICIES,
                          help="clips shorter than their window: reject, stride or pad")
    backfill.add_argument("--summary-json", help="write a machine-readable summary here")
    backfill.add_argument("--shard", action="append", metavar="KEY",
                          help="only this shard (repeatable), e.g. shard-00003")
    backfill.add_argument("--shard-range", metavar="FIRST:LAST",
                          help="only shards in this inclusive range, by key or index (2:5)")
    backfill.add_argument("--parallel", type=int, default=1,
                          help="shards run at once, each on the multiprocess executor")
    backfill.add_argument("--resume", action="store_true",
                          help="skip shards that succeeded in --summary-json and whose uploads "
                          "have not changed; run the rest")
    backfill.add_argument("--export", action="store_true",
                          help="then write the cogvideox-factory and CogVideo finetune caches")
    backfill.add_argument("--dagster-home", help="instance directory (default: $DAGSTER_HOME)")
    backfill.set_defaults(func=cmd_backfill)

    shards = sub.add_parser("shards", help="list (and register) the shards of a data root")
    shards.add_argument("--data-root", required=True)
    shards.add_argument("--shards", type=int, default=4)
    shards.add_argument("--register", action="store_true",
                        help="add them as dynamic partitions in the instance")
    shards.add_argument("--dagster-home")
    shards.set_defaults(func=cmd_shards)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ProfileError, ManifestError) as exc:  # bad configuration: say so, run nothing
        print(f"cog-assets: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
