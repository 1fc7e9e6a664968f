"""A backfill SIGKILLed inside `vae_latents` (holding the instance's only `gpu` pool slot),
then rerun with the same DAGSTER_HOME (issue 12).

Both as real `cog-assets backfill` processes on generated clips (tiny profile, CPU). Baseline,
in the same run: an uninterrupted backfill of the same data into a fresh store and instance.
Before issue 12 the rerun never ended (it waited on the dead run's slot); now it frees the
slot, says so, and finishes. Prints both wall times (process start-up included) and the ratio.

    python bench/bench_kill_rerun.py --clips 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cog_assets.media.synthetic import write_test_dataset  # noqa: E402
from cog_assets.testing import StepWatch, kill_inside_step, start_backfill  # noqa: E402

LIMIT_S = 900


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--stage", default="vae_latents")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = write_test_dataset(tmp / "data", args.clips, broken=True)
        started = time.monotonic()
        fresh = start_backfill(data, tmp / "store-fresh", tmp / "home-fresh", tmp / "fresh")
        assert fresh.wait(LIMIT_S) == 0, fresh.output()[-2000:]
        fresh_s = time.monotonic() - started
        home = tmp / "home"
        watch = StepWatch(home)
        killed = start_backfill(data, tmp / "store", home, tmp / "killed")
        inside = kill_inside_step(killed, home, args.stage, watch=watch)
        started = time.monotonic()
        rerun = start_backfill(data, tmp / "store", home, tmp / "rerun")
        code = rerun.wait(LIMIT_S)
        rerun_s = time.monotonic() - started
        lines = rerun.output().splitlines()
        print(f"killed inside {args.stage}: {inside}")
        print(f"rerun: exit {code} in {rerun_s:.1f} s; uninterrupted fresh run: {fresh_s:.1f} s; "
              f"rerun/fresh {rerun_s / fresh_s:.2f}")
        print("\n".join(line for line in lines if "released run" in line or
                        line.startswith(("ok", "FAILED"))))


if __name__ == "__main__":
    main()
