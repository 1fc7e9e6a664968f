"""`cog-assets`: the demo, CI backfills and shard discovery from the command line.

Every pipeline setting is a flag of `demo` and `backfill`, derived from cog_assets.core.config:
`--help` lists them by group with their COG_ASSETS_* variable and default. A flag beats the
variable, which beats the default. Bad settings exit with status 2 before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from cog_assets.core.config import (
    DEMO_DIR,
    SettingsError,
    add_setting_arguments,
    field_by_flat,
    load_settings,
    overrides_from_args,
    settings_env,
)
from cog_assets.core.profiles import ProfileError
from cog_assets.sources.manifests import ManifestError


def _instance(dagster_home: str | None):
    """The persistent instance under DAGSTER_HOME (created with the directory if needed),
    with the pool slots of runs whose process is gone given back (logged)."""
    from dagster import DagsterInstance

    home = Path(dagster_home or os.environ.get("DAGSTER_HOME") or "").expanduser()
    if not str(home) or str(home) == ".":
        raise SettingsError("DAGSTER_HOME is not set: set it (or pass --dagster-home) so run "
                            "history persists between backfills")
    home = home.absolute()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as exc:
        raise SettingsError(f"DAGSTER_HOME {home} is not a writable directory: "
                            f"{exc.strerror or exc}") from None
    os.environ["DAGSTER_HOME"] = str(home)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(Path(__file__).with_name("dagster.yaml"), config)
    instance = DagsterInstance.get()
    from cog_assets.defs.dead_runs import release_dead_runs

    release_dead_runs(instance)  # a run killed before it could end holds no slot we wait for
    return instance


def _given(args: argparse.Namespace, flat: str) -> bool:
    """Whether the user gave a setting (its flag or its COG_ASSETS_* variable)."""
    return flat in overrides_from_args(args) or bool(
        os.environ.get(field_by_flat(flat).env, "").strip())


def _require_store(args: argparse.Namespace, command: str) -> None:
    """The store's default is the demo's (cog-assets-demo/store): outside the demo, a command
    that writes or removes must be told which store, never fall back to that one."""
    if _given(args, "store"):
        return
    store = field_by_flat("store")
    raise SettingsError(
        f"{command} needs the store to {'collect' if command == 'gc' else 'write to'}: pass "
        f"--store DIR_OR_URL (or set {store.env}); without one it would use the demo's store "
        f"{store.default} (pass --store {store.default} to mean it)")


def _start_vae_process(settings, parallel: int = 1) -> None:
    """Start the child that will run the VAE (models/vae_process.py) now, before this process
    imports torch and Dagster, where a backfill's steps will run here on the CPU: its imports
    then take the other core while this one opens the instance and judges the shards. An
    unused child (nothing to encode, or a GPU after all) is ended without loading a model."""
    if parallel <= 1 and settings.orchestration.steps_run_in_process \
            and settings.device.device in ("cpu", "auto"):
        from cog_assets.models import vae_process

        vae_process.start()


def _check_weights(settings) -> None:
    """Refuse (exit 2) weights whose configuration disagrees with the named model profile,
    before any work: their VAE scaling, latent channels, temporal compression, T5 width and
    maximum length are read from a local directory's config files."""
    from cog_assets.models.runtime import ModelRuntime

    ModelRuntime(settings.model, settings.device).profile  # noqa: B018 - raises WeightsMismatch


def _state(s) -> str:
    """The word a shard's line starts with: a shard that accepted no clip is not "ok"."""
    if not s.success:
        return "FAILED"
    if s.resumed:
        return "done  "
    if s.accepted == 0:
        return "EMPTY "
    return "fresh " if s.up_to_date else "ok    "


def _reasons(by_reason: dict[str, int]) -> str:
    return f" ({', '.join(f'{r} {n}' for r, n in sorted(by_reason.items()))})" \
        if by_reason else ""


def _print_summaries(summaries, seconds: float | None = None) -> None:
    """One line per shard (state, counts with reject reasons, work, seconds), its steps'
    seconds under it, and the dataset's total at the end."""
    from cog_assets.defs.runs import dataset_totals
    from cog_assets.runtime.progress import duration_text

    for key, s in summaries.items():
        work = ("up to date, not run" if s.up_to_date
                else f"{s.computed} computed, {s.reused} reused"
                + (f", in {duration_text(s.seconds)}" if s.seconds else ""))
        print(f"{_state(s)} {key}: {s.clips} clips, {s.accepted} accepted, {s.rejected} "
              f"rejected{_reasons(s.rejects_by_reason)}, {work}")
        steps = sorted(((step, t) for step, t in s.step_seconds.items() if t >= 0.05),
                       key=lambda item: -item[1])
        if steps:
            print("       steps: " + ", ".join(f"{step} {t:.1f} s" for step, t in steps))
        if s.failure:
            print("       " + s.failure.replace("\n", "\n       "))
        for line in s.corrupt:
            print(f"       corrupt, replaced: {line}")
    t = dataset_totals(summaries)
    ran = f"{t['shards_run']} run, {t['shards'] - t['shards_run']} not needed"
    print(f"total  {t['shards']} shards ({ran}): {t['clips']} clips, {t['accepted']} "
          f"accepted, {t['rejected']} rejected{_reasons(t['rejects_by_reason'])}, "
          f"{t['computed']} computed, {t['reused']} reused"
          + (f", in {duration_text(seconds)}" if seconds is not None else ""))


def _seconds_since_start() -> float:
    """Seconds since this process started (interpreter start-up and imports included)."""
    import psutil

    return time.time() - psutil.Process().create_time()


def cmd_demo(args: argparse.Namespace) -> int:
    demo_dir = Path(args.dir).absolute()
    settings = load_settings(overrides={**overrides_from_args(args),
                                        "data_root": str(demo_dir / "data"),
                                        "store": str(demo_dir / "store")})
    _start_vae_process(settings)
    from cog_assets.defs.runs import materialize_shards
    from cog_assets.demo import write_demo_dataset

    print(f"writing the demo dataset under {settings.sources.data_root}")
    write_demo_dataset(Path(settings.sources.data_root))
    dagster_home = demo_dir / "dagster_home"
    instance = _instance(str(dagster_home))
    summaries = materialize_shards(settings, instance)
    _print_summaries(summaries, _seconds_since_start())
    dataset = f"{settings.store.url}/datasets/{settings.model.profile}"
    print(f"\nfinished dataset: {dataset}/shard-*/")
    print("read it with: from cog_assets.loader import CogVideoXLatentDataset; "
          f"CogVideoXLatentDataset('{dataset}', '{settings.model.profile}')")
    print(f"\nopen it in the Dagster UI:\n  {ui_command(args.dir, args)}\n"
          f"  then browse http://127.0.0.1:{UI_PORT}")
    return 0 if all(s.success for s in summaries.values()) else 1


UI_PORT = 3000
# `dagster dev` says it is superseded by `dg dev` (dagster-dg-cli, not a dependency here).
QUIET_DEV = "ignore:Function `dev_command` is superseded:FutureWarning"


def ui_command(demo_dir: str, args: argparse.Namespace) -> str:
    """The command that opens the UI on what `cog-assets demo` made (with its flags)."""
    parts = [str(Path(sys.executable).with_name("cog-assets")), "ui"]
    if Path(demo_dir).absolute() != DEMO_DIR.absolute():
        parts += ["--dir", str(Path(demo_dir).absolute())]
    for flat, value in overrides_from_args(args).items():
        field = field_by_flat(flat)
        if field.is_bool:
            parts.append(field.flag if value else "--no-" + field.flag[2:])
        else:
            parts += [field.flag, *(map(str, value) if field.is_list else [str(value)])]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_ui(args: argparse.Namespace) -> int:
    """`dagster dev` on the code location, with these settings and this instance."""
    overrides = overrides_from_args(args)
    home = args.dagster_home or (None if args.dir else os.environ.get("DAGSTER_HOME"))
    if not home:  # the demo's data, store and instance
        given = [f for f in ("data_root", "store")
                 if f in overrides or os.environ.get(field_by_flat(f).env)]
        if given and not args.dir:
            raise SettingsError(f"{' and '.join(given)} given but no instance: set "
                                "DAGSTER_HOME or --dagster-home (or --dir for a demo)")
        demo_dir = Path(args.dir or DEMO_DIR).absolute()
        overrides = {"data_root": str(demo_dir / "data"), "store": str(demo_dir / "store"),
                     **overrides}
        home = str(demo_dir / "dagster_home")
    settings = load_settings(overrides=overrides)
    _check_weights(settings)
    _instance(home).dispose()  # checked writable; cog-assets' dagster.yaml put there if new
    home = os.environ["DAGSTER_HOME"]
    env = {**os.environ, **settings_env(settings)}
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), QUIET_DEV]))
    dagster = str(Path(sys.executable).with_name("dagster"))
    print(f"DAGSTER_HOME={home}\ndata root: {settings.sources.data_root}\n"
          f"store: {settings.store.url}\nbrowse http://{args.host}:{args.port}", flush=True)
    # From DAGSTER_HOME, so no dagster.yaml in the caller's directory is read or warned about.
    os.chdir(home)
    os.execve(dagster, [dagster, "dev", "-m", "cog_assets.definitions", "-h", args.host,
                        "-p", str(args.port)], env)
    return 0  # not reached


def cmd_backfill(args: argparse.Namespace) -> int:
    if _given(args, "data_root"):  # another dataset than the demo's: its own store
        _require_store(args, "backfill")
    settings = load_settings(overrides=overrides_from_args(args))
    _start_vae_process(settings, args.parallel)
    _check_weights(settings)
    from cog_assets.defs.runs import (
        materialize_shards,
        register_shards,
        resumable,
        run_exports,
        select_shards,
        summary_work,
        write_summary_json,
    )

    if not _given(args, "store"):
        print(f"cog-assets: no --store given: the demo's data ({settings.sources.data_root}) "
              f"into the demo's store ({settings.store.url})", file=sys.stderr)
    previous = None
    if args.resume:
        if not args.summary_json:
            raise SettingsError("--resume needs --summary-json pointing at the earlier summary")
        if Path(args.summary_json).is_file():
            earlier = json.loads(Path(args.summary_json).read_text())
            why = resumable(earlier, settings)
            if why is None:
                previous = earlier["shards"]
            else:
                print(f"not resuming {args.summary_json}: {why}; running as a plain backfill "
                      "(shards up to date are still skipped)", file=sys.stderr)
        else:  # killed before its first shard ended: nothing finished to skip
            print(f"no summary at {args.summary_json} yet: nothing to resume, running every "
                  "shard")
    instance = _instance(args.dagster_home)
    shards = select_shards(register_shards(instance, settings), args.shard, args.shard_range)
    work = summary_work(settings)

    def after_each_shard(so_far) -> None:  # a backfill killed now can --resume from here
        if args.summary_json:
            write_summary_json(args.summary_json, so_far,
                               pending=[s for s in shards if s not in so_far], work=work,
                               seconds=_seconds_since_start())

    summaries = materialize_shards(settings, instance, shards, parallel=args.parallel,
                                   resume_from=previous, force=args.force,
                                   on_shard=after_each_shard)
    seconds = _seconds_since_start()
    _print_summaries(summaries, seconds)
    if args.summary_json:
        write_summary_json(args.summary_json, summaries, work=work, seconds=seconds)
        print(f"summary written to {args.summary_json}")
    failed = [k for k, s in summaries.items() if not s.success]
    if args.export and not failed:
        exported = run_exports(settings, instance)
        print(f"exports {'written' if exported else 'FAILED'} under "
              f"{settings.store.url}/exports/{settings.model.profile}/")
        if not exported:
            return 1
        _print_trainer_args(settings)
    if failed:
        print(f"{len(failed)} of {len(summaries)} shards failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


def _print_trainer_args(settings) -> None:
    """The trainer arguments each export wrote beside itself (trainer_args.txt)."""
    from cog_assets.exports.report import TRAINER_ARGS_FILE
    from cog_assets.store import layout

    exports = Path(settings.store.url) / layout.export_dir(settings.model.profile, "")
    for path in sorted(exports.glob(f"*/{TRAINER_ARGS_FILE}")):
        if path.parent.name.startswith("."):  # a version folder; its link is listed too
            continue
        print(f"\n{path.parent.name}: trainer arguments ({path})")
        print(path.read_text(encoding="utf-8"), end="")


def cmd_verify(args: argparse.Namespace) -> int:
    from cog_assets.store.content_store import ContentStore
    from cog_assets.store.verify import verify_store

    settings = load_settings(overrides=overrides_from_args(args))
    if not _given(args, "store"):
        print(f"cog-assets: no --store given: checking the demo's store {settings.store.url}",
              file=sys.stderr)
    store = ContentStore(settings.store.url)
    report = verify_store(store, args.profile)
    for finding in report.findings:
        print(finding.line())
    print(report.summary())
    return 0 if report.ok else 1


def cmd_gc(args: argparse.Namespace) -> int:
    from cog_assets.store.collection import GcError, GcPlan, collect, plan_gc
    from cog_assets.store.content_store import ContentStore
    from cog_assets.store.footprint import megabytes

    _require_store(args, "gc")
    settings = load_settings(overrides=overrides_from_args(args))
    store = ContentStore(settings.store.url)
    grace_s = settings.store.gc_grace_s
    try:
        plan = plan_gc(store, grace_s=grace_s, exports=args.exports)
    except GcError as exc:
        print(f"cog-assets gc: {exc}; nothing removed", file=sys.stderr)
        return 1
    if args.dry_run:
        verb, gone = "would remove", plan.garbage
        for repair in plan.repairs:
            if repair.copy_bytes:
                print(f"{repair.kind:<14} {repair.copy_bytes:>12} "
                      f"{store.artifact_path(repair.kind, repair.key)} (a copy: its home is "
                      f"{repair.shard_dir})")
    else:
        verb, result = "removed", collect(store, plan, grace_s=grace_s)
        gone = result.removed
        if result.repaired:
            print(f"stored once: {result.repaired} latents and embeddings now live only in "
                  "their shard files")
    for item in gone:
        print(f"{item.category:<14} {item.bytes:>12} {item.path}")
    counts = (plan if args.dry_run else GcPlan(garbage=gone)).by_category()
    total = sum(size for _, size in counts.values())
    detail = ", ".join(f"{c} {n} ({megabytes(b)})" for c, (n, b) in counts.items())
    print(f"{verb} {sum(n for n, _ in counts.values())} files, {megabytes(total)}"
          + (f": {detail}" if detail else ""))
    if plan.kept_held or plan.kept_recent:
        print(f"kept {plan.kept_held} files held by running steps and {plan.kept_recent} "
              f"written in the last {grace_s:g} s (gc_grace_s)")
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from cog_assets.stages.manifest import discover_shards

    settings = load_settings(overrides=overrides_from_args(args))
    if args.register:
        from cog_assets.defs.runs import register_shards

        keys = register_shards(_instance(args.dagster_home), settings)
    else:
        keys = discover_shards(settings.sources)
    print("\n".join(keys))
    return 0


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _Raw(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written: a line, then an example, then the long lists."""


def _help(first: str, examples: list[str], *more: str) -> str:
    """A subcommand's description: what it does, examples, then anything else (wrapped)."""
    fill = lambda text: textwrap.fill(text, 88)  # noqa: E731
    return "\n\n".join([fill(first), "example:\n" + "\n".join(f"  {e}" for e in examples),
                        *map(fill, more)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cog-assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="make a synthetic dataset and materialize every shard",
        usage="cog-assets demo [--dir DIR] [settings]", formatter_class=_Raw,
        description=_help("Make a small synthetic dataset (generated clips and captions) and "
                          "materialize every shard of it, on the CPU with the tiny models.",
                          ["cog-assets demo --dir /tmp/cog-demo",
                           "cog-assets ui --dir /tmp/cog-demo"],
                          "Every setting below is also a COG_ASSETS_* variable (a flag "
                          "beats it)."))
    demo.add_argument("--dir", default=str(DEMO_DIR),
                      help="where to write it: data/, store/, dagster_home/ (default: %(default)s)")
    add_setting_arguments(demo, exclude=("data_root", "store"))
    demo.set_defaults(func=cmd_demo)

    backfill = sub.add_parser(
        "backfill", help="materialize every shard of a data root",
        usage="cog-assets backfill [--summary-json PATH] [--shard KEY ...] [options] "
        "[settings]", formatter_class=_Raw,
        description=_help("Materialize the shards of a data root that need it (new or "
                          "changed videos, captions or settings), as CI does. Exit status: "
                          "0 every shard succeeded, 1 a shard or the export failed, 2 bad "
                          "settings (nothing run).",
                          ["DAGSTER_HOME=~/cog-home cog-assets backfill --data-root data/ "
                           "--store store/ --summary-json summary.json"],
                          "Every setting below is also a COG_ASSETS_* variable (a flag "
                          "beats it)."))
    run = backfill.add_argument_group("what to run")
    run.add_argument("--summary-json", help="write a machine-readable summary here (after "
                     "every shard, atomically, so --resume works after a kill)")
    run.add_argument("--shard", action="append", metavar="KEY",
                     help="only this shard (repeatable), e.g. shard-00003")
    run.add_argument("--shard-range", metavar="FIRST:LAST",
                     help="only shards in this inclusive range, by key or index (2:5)")
    run.add_argument("--parallel", type=_at_least_one, default=1,
                     help="shards run at once, each in its own process (default: %(default)s)")
    run.add_argument("--resume", action="store_true",
                     help="skip shards that succeeded in --summary-json and whose uploads have "
                     "not changed; run the rest")
    run.add_argument("--force", action="store_true",
                     help="run every selected shard, also those whose uploads and settings "
                     "match their last materialization (skipped as up to date otherwise)")
    run.add_argument("--export", action="store_true",
                     help="then cut the clip files and write the cogvideox-factory, CogVideo "
                     "finetune and VideoX-Fun exports, printing their trainer arguments")
    run.add_argument("--dagster-home", help="instance directory (default: $DAGSTER_HOME)")
    add_setting_arguments(backfill)
    backfill.set_defaults(func=cmd_backfill)

    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on these settings",
                        usage="cog-assets ui [--dir DIR | --dagster-home DIR] [--port PORT] "
                        "[settings]", formatter_class=_Raw,
                        description=_help(
                            "Open the Dagster UI on a dataset: what `cog-assets demo` made, "
                            "or an instance and settings of your own.",
                            ["cog-assets ui --dir /tmp/cog-demo",
                             "DAGSTER_HOME=~/cog-home cog-assets ui --data-root data/ "
                             "--store store/"],
                            "Runs this environment's `dagster dev` on the code location "
                            "cog_assets.definitions with the settings given here (flags, else "
                            "COG_ASSETS_* variables) and the instance under --dagster-home "
                            "(else $DAGSTER_HOME). With neither --dagster-home nor "
                            "DAGSTER_HOME, or with --dir: what `cog-assets demo` wrote there."))
    ui.add_argument("--dir", help=f"a demo directory (default: {DEMO_DIR} when no instance is "
                    "given)")
    ui.add_argument("--dagster-home", help="instance directory (default: $DAGSTER_HOME)")
    ui.add_argument("--host", default="127.0.0.1", help="(default: %(default)s)")
    ui.add_argument("--port", type=int, default=UI_PORT, help="(default: %(default)s)")
    add_setting_arguments(ui)
    ui.set_defaults(func=cmd_ui)

    verify = sub.add_parser("verify", help="check a store's datasets and artefacts against "
                            "their recorded digests; exit 1 if anything is corrupt or missing",
                            formatter_class=_Raw,
                            description=_help(
                                "Check a store's datasets and artefacts against their "
                                "recorded digests.", ["cog-assets verify --store store/"],
                                "Exit status: 0 everything checked is whole, 1 something "
                                "is corrupt or missing (each is listed), 2 bad settings."))
    verify.add_argument("--profile", "--dataset", action="append", metavar="PROFILE",
                        help="only the dataset of this profile and the artefacts it references "
                        "(repeatable; default: every dataset and every artefact of the store)")
    add_setting_arguments(verify, groups=["store"],
                          exclude=("verify_artifacts", "frames_retention", "gc_grace_s"))
    verify.set_defaults(func=cmd_verify)

    gc = sub.add_parser("gc", help="remove what no live shard references: old versions, "
                        "retired shards, dropped frames, rejected clips' leftovers, quarantined "
                        "and temporary files older than gc_grace_s; never what a running step "
                        "holds", formatter_class=_Raw,
                        description=_help(
                            "Remove what no live shard references, older than gc_grace_s; "
                            "never what a running step holds.",
                            ["cog-assets gc --store store/ --dry-run"],
                            "Exit status: 0 done (or planned, with --dry-run), 1 the store "
                            "cannot be collected as it is (nothing was removed; the message "
                            "says why), 2 bad settings."))
    gc.add_argument("--dry-run", action="store_true",
                    help="list what would go, with its bytes, and change nothing")
    gc.add_argument("--exports", action="store_true",
                    help="also remove every trainer export (backfill --export writes them "
                    "again)")
    add_setting_arguments(gc, groups=["store"],
                          exclude=("verify_artifacts", "frames_retention"))
    gc.set_defaults(func=cmd_gc)

    shards = sub.add_parser("shards", help="list (and register) the shards of a data root")
    shards.add_argument("--register", action="store_true",
                        help="add them as dynamic partitions in the instance")
    shards.add_argument("--dagster-home", help="instance directory (default: $DAGSTER_HOME)")
    add_setting_arguments(shards, groups=["sources"])
    shards.set_defaults(func=cmd_shards)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SettingsError, ProfileError, ManifestError) as exc:  # say so, run nothing
        print(f"cog-assets: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    """The `cog-assets` command: main(), then a quick exit. The interpreter's own tear-down
    of torch, Dagster and their extension modules took about a second after every command
    (measured: 1.1 s of a 4.8 s no-op backfill on a busy 2-core machine) and does nothing a
    user needs: the work is written, the streams are flushed, other threads are joined and
    the atexit handlers (temporary directories, multiprocessing's and logging's clean-up)
    still run; only the freeing of memory the OS reclaims anyway is skipped."""
    import atexit
    import threading

    code = main()
    for thread in threading.enumerate():  # what a normal exit waits for
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
