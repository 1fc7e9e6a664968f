"""The VAE step against a bare `vae._encode` of the same clip: where each second goes.

One real clip of the corpus (default: the first of `$COG_ASSETS_MEDIA/videos` long enough)
decoded once by our decoder to the bucket (default 49x240x368, `--short-clips stride`), then,
each in a fresh process, with the tiny profile's VAE in float32 on the CPU:

- `bare, plain process`: what a trainer's script gets: `vae._encode(x)` under no_grad with
  glibc's and torch's defaults (no huge pages, glibc's sliding mmap threshold);
- `bare, our heap settings`: the same call with what cog-assets sets for the VAE step
  (torch's transparent huge pages and a fixed 4 MiB mmap threshold: runtime/heap.py);
  `--heap-policies` adds each setting alone;
- `bare, heap settings + oneDNN convs`: and the VAE's 3-D convolutions routed to oneDNN as
  `load_vae` does on the CPU (models/cpu_convs.py; diffusers' default runs the tiny VAE's
  narrow layers through aten's slow_conv3d);
- `our step`: `encode_latents` (the vae_latents step without Dagster) on `--clips` copies of
  the clip in a content store: reading the frames, normalising, encoding, writing the
  moments, per clip; with `--profile`, cProfile's top functions of the step;
- with `--compile`: the bare call compiled as `vae_compile` does (`vae._encode`, static
  shapes), first with an empty inductor cache (the compilation) and then in a new process
  with the filled cache, and our step compiled (`vae_compile on`, filled cache).

Every row: seconds per clip (the least of `--repeats` calls: the one the machine's other work
disturbed least), CPU seconds, minor page faults (the cost of fresh memory, which load does
not move) and peak RSS, with the load average. The ratio "step / bare" is the issue-21
target (within 10 %).

    python bench/bench_vae_step.py [--bucket 49x240x368] [--repeats 3] [--clips 3]
                                   [--heap-policies] [--compile] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEDIA = Path(os.environ.get("COG_ASSETS_MEDIA") or HERE.parent.parent / "shared" / "media")
DEFAULT_CLIP = "videos/decord__flipping_a_pancake.mkv"


# -- in the measured process ----------------------------------------------------------------

def _usage() -> tuple[float, int, float]:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt, usage.ru_maxrss / 1024


def _bare(frames_path: str, repeats: int, compiled: str | None, onednn: bool = False) -> dict:
    import time

    import numpy as np
    import torch

    from cog_assets.models.tiny import tiny_vae
    from cog_assets.models.vae import frames_to_vae_input

    vae = tiny_vae(1.15258426)
    if onednn:  # what load_vae does on the CPU
        from cog_assets.models.cpu_convs import route_convs_to_onednn

        route_convs_to_onednn(vae)
    x = frames_to_vae_input(np.load(frames_path))
    encode = vae._encode
    if compiled is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = compiled
        encode = torch.compile(vae._encode, dynamic=False)
    rows = []
    # no_grad as a trainer's script; compiled under inference_mode as the VAE step, so that
    # both find the same graphs in inductor's cache
    mode = torch.no_grad if compiled is None else torch.inference_mode
    for _ in range(repeats):
        cpu, faults, _ = _usage()
        started = time.perf_counter()
        with mode():
            out = encode(x)
        wall = time.perf_counter() - started
        cpu2, faults2, _ = _usage()
        rows.append({"wall": wall, "cpu": cpu2 - cpu, "faults": faults2 - faults})
        del out
    return {"calls": rows, "rss_mib": _usage()[2]}


def _step(frames_path: str, clips: int, compile_on: str | None, profile: bool) -> dict:
    import cProfile
    import io
    import pstats
    import time

    import numpy as np
    import polars as pl
    import torch

    from cog_assets.core.choices import ArtifactKind, VaeCompile
    from cog_assets.core.keys import VaeIdentity
    from cog_assets.core.profiles import get_profile
    from cog_assets.models.vae import load_vae
    from cog_assets.models.vae_compile import bucket_encoder
    from cog_assets.models.weights import WeightsSource
    from cog_assets.stages.latents import encode_latents
    from cog_assets.store.content_store import ContentStore

    frames = torch.from_numpy(np.load(frames_path))
    bucket = "x".join(map(str, frames.shape[:3]))
    with tempfile.TemporaryDirectory() as tmp:
        store = ContentStore(tmp)
        rows = []
        for i in range(clips):
            store.put_tensors(ArtifactKind.frames, f"clip{i}", {"frames": frames})
            rows.append({"clip_id": f"c{i}", "frames_key": f"clip{i}", "bucket": bucket,
                         "status": "computed"})
        vae = load_vae(WeightsSource(get_profile("tiny")), torch.device("cpu"), torch.float32)
        made = []  # the step's encoders, to read each call's seconds from

        def encoder_for(vae_, shape, n):
            made.append(bucket_encoder(
                vae_, shape, n, policy=VaeCompile.on if compile_on else VaeCompile.off,
                cache_dir=compile_on, model="tiny", dtype="float32"))
            return made[-1]
        profiler = cProfile.Profile() if profile else None
        cpu, faults, _ = _usage()
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        _, stats = encode_latents(pl.DataFrame(rows), store, VaeIdentity("tiny", "float32",
                                                                        False),
                                  lambda: vae, 1, encoder_for=encoder_for)
        if profiler:
            profiler.disable()
        wall = time.perf_counter() - started
        cpu2, faults2, rss = _usage()
    result = {"wall": wall / clips, "cpu": (cpu2 - cpu) / clips,
              "faults": (faults2 - faults) / clips, "rss_mib": rss, "stats": stats.extra,
              "calls": [seconds for e in made for seconds, _ in e.times]}
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
        result["profile"] = text.getvalue()
    return result


def measured(argv: list[str]) -> None:
    """The child: one measurement, printed as one JSON line."""
    kind, frames_path = argv[0], argv[1]
    if os.environ.get("BENCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    if kind.startswith("bare"):
        if "4m" in kind:
            from cog_assets.runtime.heap import map_large_blocks

            map_large_blocks()
        compiled = argv[3] if len(argv) > 3 else None
        result = _bare(frames_path, int(argv[2]), compiled, onednn="onednn" in kind)
    else:
        result = _step(frames_path, int(argv[2]), argv[3] if argv[3] != "-" else None,
                       argv[4] == "1")
    result["load"] = os.getloadavg()[0]
    print("RESULT " + json.dumps(result))


# -- the parent -----------------------------------------------------------------------------

THREADS: int | None = None  # --threads: torch's intra-op threads in the measured processes


def run(kind: str, args: list[str], thp: bool) -> dict:
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if thp else "0",
           "PYTHONPATH": str(HERE.parent)}
    if THREADS:
        env["BENCH_THREADS"] = str(THREADS)
    done = subprocess.run([sys.executable, __file__, "--child", kind, *args], env=env,
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{kind} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def best(result: dict) -> dict:
    """A run's least disturbed call (`wall`), its mean over calls and its first call."""
    if "calls" not in result:
        return result
    calls = result["calls"]
    if not isinstance(calls[0], dict):  # our step: per-clip seconds of its encoder
        return {**result, "mean": result["wall"], "wall": min(calls), "first": calls[0]}
    call = min(calls, key=lambda c: c["wall"])
    return {**call, "rss_mib": result["rss_mib"], "load": result["load"],
            "first": calls[0]["wall"], "mean": sum(c["wall"] for c in calls) / len(calls)}


def decoded_frames(clip: Path, bucket: str, out: Path) -> Path:
    import numpy as np

    sys.path.insert(0, str(HERE.parent))
    from cog_assets.core.choices import ResizeMode, ShortClipPolicy, StartPolicy
    from cog_assets.media.decode import FrameSpec, read_clip_frames

    frames, height, width = map(int, bucket.split("x"))
    spec = FrameSpec(frames, height, width, 8.0, StartPolicy.start, 0, ResizeMode.cover,
                     ShortClipPolicy.stride)
    np.save(out, read_clip_frames(clip, spec))
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(HERE.parent))
        measured(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", default="49x240x368")
    parser.add_argument("--clip", type=Path, default=MEDIA / DEFAULT_CLIP)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=3, help="clips our step encodes")
    parser.add_argument("--heap-policies", action="store_true",
                        help="also huge pages alone and the 4 MiB threshold alone")
    parser.add_argument("--compile", action="store_true", help="also compiled, cold and warm")
    parser.add_argument("--profile", action="store_true", help="cProfile our step")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in every measured process (default: torch's)")
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = str(decoded_frames(args.clip, args.bucket, tmp / "frames.npy"))
        reps = str(args.repeats)
        rows = [("bare, plain process", best(run("bare", [frames, reps], thp=False)))]
        if args.heap_policies:
            rows.append(("bare, huge pages only", best(run("bare", [frames, reps], thp=True))))
            rows.append(("bare, 4 MiB threshold only",
                         best(run("bare-4m", [frames, reps], thp=False))))
        rows.append(("bare, our heap settings", best(run("bare-4m", [frames, reps],
                                                         thp=True))))
        rows.append(("bare, heap settings + oneDNN convs",
                     best(run("bare-4m-onednn", [frames, reps], thp=True))))
        step = run("step", [frames, str(args.clips), "-", "1" if args.profile else "0"],
                   thp=True)
        rows.append((f"our step ({args.clips} clips)", best(step)))
        if args.compile:
            cache = str(tmp / "inductor")
            cold = run("bare-4m", [frames, reps, cache], thp=True)
            warm = run("bare-4m", [frames, reps, cache], thp=True)
            rows.append(("bare compiled, empty cache: 1st call", cold["calls"][0] | {
                "rss_mib": cold["rss_mib"], "load": cold["load"]}))
            rows.append(("bare compiled, filled cache: 1st call", warm["calls"][0] | {
                "rss_mib": warm["rss_mib"], "load": warm["load"]}))
            rows.append(("bare compiled, later calls", best({**warm,
                                                             "calls": warm["calls"][1:]})))
            compiled_step = run("step", [frames, str(args.clips), cache, "0"], thp=True)
            rows.append((f"our step compiled ({args.clips} clips, filled cache)",
                         best(compiled_step)))
    bare = rows[0][1]["wall"]
    print(f"VAE step vs bare vae._encode: {args.clip.name} at {args.bucket}, tiny profile, "
          f"float32, CPU ({os.cpu_count()} cores, torch threads: {args.threads or 'default'})")
    print("s/clip: the least of a run's calls (the one other work disturbed least); mean and "
          "1st call beside (a process's first encode also pays for first touches); our step: "
          "its encoder's calls, CPU and faults of the whole step per clip")
    print(f"{'':46}{'s/clip':>8}{'/bare':>7}{'mean':>7}{'1st':>7}{'CPU s':>8}{'faults':>10}"
          f"{'peak RSS':>10}{'load':>6}")
    for label, r in rows:
        extra = "".join(f"{r[k]:7.2f}" if k in r else f"{'':7}" for k in ("mean", "first"))
        print(f"{label:46}{r['wall']:8.2f}{r['wall'] / bare:7.2f}{extra}{r['cpu']:8.2f}"
              f"{r['faults'] / 1000:9.0f}k{r['rss_mib']:8.0f}Mi{r['load']:6.1f}")
    print("our step's seconds:", {k: v for k, v in step["stats"].items()
                                  if k.endswith("_s") or k == "encode_s_per_clip"},
          "each clip's encode:", [round(t, 2) for t in step["calls"]])
    if args.profile:
        print(step["profile"])


if __name__ == "__main__":
    main()
