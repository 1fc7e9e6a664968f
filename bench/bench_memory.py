"""Peak memory of a shard of 16 clips vs 256 clips: bounded by batch and prefetch, not shard.

Generates 256 distinct clips once (each its own seed, so the content-addressed store cannot
deduplicate them), then runs the real stages (manifest, validation, extract_frames with its
decode workers, encode_latents, encode_captions; tiny profile, CPU) on the first 16 and on all
256, each in a fresh subprocess so the peaks cannot mix. While a run goes, this process samples
the whole process tree (the stage process, the forkserver, the decode workers) every 10 ms:

- tree PSS: the sum of proportional set sizes, each shared page split between the processes
  that map it: the memory the run really takes;
- tree RSS: the sum of resident sets (counts the pages the workers share with the forkserver,
  torch's libraries among them, once per process);
- and, from the run itself, getrusage's ru_maxrss of the stage process and of its largest
  child.

    python bench/bench_memory.py [--sizes 16 256] [--bucket 9x128x192] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_count, make_shard, run_stages  # noqa: E402

SAMPLE_S = 0.01


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def resident_kib(pid: int) -> tuple[int, int]:
    """(RSS now, peak RSS) of one process in KiB from /proc/<pid>/status; (0, 0) when gone.

    The kernel's counters, read without walking the page tables: a timing benchmark samples
    with this. memory_kib's smaps_rollup takes the process's mmap lock and walks every page
    of it; every 20 ms it made cog-assets' VAE step (which maps and unmaps its large blocks)
    a third slower (issue 21: 89.5 s unsampled, 128.6 s sampled, the same backfill)."""
    return _kib_fields(f"/proc/{pid}/status", "VmRSS:", "VmHWM:")


def anonymous_kib(pid: int) -> int:
    """Resident anonymous memory of one process in KiB (/proc/<pid>/status RssAnon): the
    pages no other process of the tree shares (the VAE process is exec'd, not forked), unlike
    the libraries' file pages every torch process maps, which a sum of RSS counts again for
    each process."""
    return _kib_fields(f"/proc/{pid}/status", "RssAnon:")[0]


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB; (0, 0) when it is gone."""
    return _kib_fields(f"/proc/{pid}/smaps_rollup", "Pss:", "Rss:")


def _kib_fields(path: str, *names: str) -> tuple[int, ...]:
    """The kB values of the lines of a /proc file that start with `names`, in that order;
    0 for each where the process is gone."""
    values = dict.fromkeys(names, 0)
    try:
        with open(path) as handle:
            for line in handle:
                name = line.split(maxsplit=1)[0] if line.strip() else ""
                if name in values:
                    values[name] = int(line.split()[1])
    except OSError:
        pass
    return tuple(values.values())


def measure(args: list[str]) -> dict:
    """Run this script's --child mode; the peaks of the process tree while it runs."""
    process = subprocess.Popen([sys.executable, __file__, "--child", *args],
                               stdout=subprocess.PIPE, text=True)
    peak_pss = peak_rss = 0
    most_processes = 0
    while process.poll() is None:
        tree = descendants(process.pid)
        sizes = [memory_kib(pid) for pid in tree]
        peak_pss = max(peak_pss, sum(p for p, _ in sizes))
        peak_rss = max(peak_rss, sum(r for _, r in sizes))
        most_processes = max(most_processes, len(tree))
        time.sleep(SAMPLE_S)
    out, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"child failed with {process.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(tree_pss_mib=peak_pss / 1024, tree_rss_mib=peak_rss / 1024,
                  processes=most_processes)
    return result


def child(data_root: str, store: str, workers: int | None, bucket: str, batch_size: int
          ) -> None:
    times = run_stages(Path(data_root), store, batch_size=batch_size, workers=workers,
                       bucket=bucket)
    print(json.dumps({
        "seconds": times.total, "computed": times.counts["latents"]["computed"],
        "self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_maxrss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def link_shard(clips_root: Path, target: Path, count: int) -> Path:
    """A data root holding the first `count` clips (hard links: the same bytes, no copies)."""
    (target / "clips").mkdir(parents=True)
    videos = (clips_root / "videos.txt").read_text().split("\n")[:count]
    prompts = (clips_root / "prompts.txt").read_text().split("\n")[:count]
    for name in videos:
        os.link(clips_root / name, target / name)
    (target / "videos.txt").write_text("\n".join(videos) + "\n")
    (target / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--bucket", default="9x128x192", help="FxHxW the clips are cut to")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--child", nargs=2, metavar=("DATA_ROOT", "STORE"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.workers, args.bucket, args.batch_size)
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        clips = make_shard(tmp / "all", max(args.sizes), width=args.width, height=args.height,
                           fps=24, seconds=args.seconds)
        print(f"generated {max(args.sizes)} clips {args.width}x{args.height} 24 fps "
              f"{args.seconds:g} s in {time.perf_counter() - started:.1f} s; bucket "
              f"{args.bucket}, VAE batch {args.batch_size}, decode workers "
              f"{args.workers if args.workers is not None else cpu_count()}")
        results = {}
        for size in args.sizes:
            root = link_shard(clips, tmp / f"shard-{size}", size)
            extra = ["--bucket", args.bucket, "--batch-size", str(args.batch_size)]
            if args.workers is not None:
                extra += ["--workers", str(args.workers)]
            results[size] = measure([str(root), str(tmp / f"store-{size}"), *extra])
            assert results[size]["computed"] == size, results[size]

    f, h, w = (int(v) for v in args.bucket.split("x"))
    print(f"{'clips':>6} {'seconds':>8} {'tree PSS MiB':>13} {'tree RSS MiB':>13} "
          f"{'self maxrss':>12} {'child maxrss':>13} {'procs':>6} {'all frames MiB':>15}")
    for size, r in results.items():
        print(f"{size:6d} {r['seconds']:8.1f} {r['tree_pss_mib']:13.0f} {r['tree_rss_mib']:13.0f} "
              f"{r['self_maxrss_mib']:12.0f} {r['children_maxrss_mib']:13.0f} "
              f"{r['processes']:6d} {size * f * h * w * 3 / 2**20:15.0f}")
    small, large = results[min(results)], results[max(results)]
    for key, label in (("tree_pss_mib", "tree PSS"), ("tree_rss_mib", "tree RSS"),
                       ("self_maxrss_mib", "stage process maxrss")):
        print(f"{label}: {max(results)} clips / {min(results)} clips = "
              f"{large[key] / small[key]:.3f} (target <= 1.10)")
    print("'all frames MiB': what the shard's decoded frames would take if held at once")


if __name__ == "__main__":
    main()
