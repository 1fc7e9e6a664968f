"""The GPU regime without a GPU: how many clips per second our decoding feeds a VAE, per core.

On a GPU the VAE is fast and the CPU's decoding becomes the bound. Here the VAE is a no-op,
and each side turns the corpus's 720p/1080p clips into the VAE's input for 49x480x720:

- ours: what the pipeline's CPU does per clip for a VAE on a GPU: `read_clip_frames` (seek,
  decode, stop after the window, convert only the 49 sampled frames, scaled in uint8 by
  libswscale; short clips strided over, as `--short-clips stride`), the frames written to a
  content store and read back (safetensors + blake3 digest, as frame_tensors and vae_latents
  do), and the copy into pinned memory (here a plain copy: no CUDA). The uint8 frames cross
  to the GPU as they are and are normalised there (`models.vae.vae_input_on_device`);
  `--cpu-normalise` adds that normalising on the CPU (`frames_to_vae_input`, float
  [1, 3, 49, 480, 720] in [-1, 1]), as the pipeline did before and does for a CPU VAE;
- the peer: cogvideox-factory's `prepare_dataset.py` path: decord's `VideoReader` on the
  whole clip, frames `range(0, n, n // 49)[:49]` by `get_batch` at full resolution,
  converted to float, resized to the bucket with bilinear antialiased interpolation
  (torchvision's `resize` on float tensors is `F.interpolate(..., antialias=True)`), then
  `x / 255 * 2 - 1`. A clip with fewer than 49 frames (n // 49 == 0, which the script itself
  cannot take) steps by 1 and repeats its last frame up to 49, so both sides deliver 49.

Per core: each side runs on one thread (torch, FFmpeg and decord at 1 thread), and the
figure is clips per CPU-second of this process (CPU time does not move with the machine's
load as wall time does). Each clip is done `--repeats` times; the least CPU time counts.
With `--pool` ours also runs through the decode pool on every core (wall clips/s).

Then, with the VAE's FLOPs per 49x480x720 clip (`bench_gpu_vae.py --count-flops`: 148.96
TFLOP) and an H100's dense bf16 rate (`--peak`, default 800e12) at `--mfu` of it, the clips/s
one H100 encodes, and how many cores of our decoding (and of the peer's) keep it busy.

    python bench/bench_decode_feed.py [--repeats 3] [--pool] [--cpu-normalise] [--peak 800e12]
                                      [--mfu 0.4]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from cog_assets.core.choices import ArtifactKind, ResizeMode, ShortClipPolicy, StartPolicy  # noqa: E402,E501
from cog_assets.media.decode import ClipTask, FrameSpec, decode_clip_task, read_clip_frames  # noqa: E402,E501
from cog_assets.media.probe import probe_video  # noqa: E402
from cog_assets.models.vae import frames_to_vae_input  # noqa: E402
from cog_assets.store.content_store import ContentStore  # noqa: E402
from trainer_baseline import peer_frames  # noqa: E402

MEDIA = Path(os.environ.get("COG_ASSETS_MEDIA") or HERE.parent.parent / "shared" / "media")
FRAMES, HEIGHT, WIDTH, FPS = 49, 480, 720, 8
VAE_FLOPS_PER_CLIP = 148.96e12  # bench_gpu_vae.py --count-flops, 49x480x720
SPEC = FrameSpec(FRAMES, HEIGHT, WIDTH, FPS, StartPolicy.start, 0, ResizeMode.cover,
                 ShortClipPolicy.stride)


def hd_clips() -> list[Path]:
    """The corpus's videos (videos/ and edge/) whose short side is at least 720 pixels and
    that both sides can read."""
    found = []
    for folder in ("videos", "edge"):
        for path in sorted((MEDIA / folder).iterdir()):
            try:
                probe = probe_video(path)
                read_clip_frames(path, FrameSpec(1, 16, 16, FPS, StartPolicy.start, 0,
                                                 ResizeMode.cover, ShortClipPolicy.stride))
                peer_input(path)
            except Exception:  # noqa: BLE001 - not usable video for one side or the other
                continue
            if min(probe.width, probe.height) >= 720:
                found.append(path)
    return found


def ours_input(path: Path, store: ContentStore, key: str, cpu_normalise: bool
               ) -> torch.Tensor:
    frames = read_clip_frames(path, SPEC, threads=1)
    store.put_tensors(ArtifactKind.frames, key, {"frames": torch.from_numpy(frames)})
    stored = store.get_tensors(ArtifactKind.frames, key)["frames"][None]
    if cpu_normalise:
        return frames_to_vae_input(stored)
    return stored.clone()  # what pinning costs the CPU: one copy (normalised on the GPU)


def peer_input(path: Path) -> torch.Tensor:
    """The peer's frames (trainer_baseline.peer_frames, one decoding thread) as a batch."""
    return peer_frames(path, FRAMES, HEIGHT, WIDTH, threads=1).permute(1, 0, 2, 3)[None]


def cpu_seconds(fn, repeats: int) -> tuple[float, float]:
    """(least CPU seconds, least wall seconds) of `fn()` over `repeats` calls."""
    cpu = wall = math.inf
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - w0)
        assert tuple(out.shape) in ((1, 3, FRAMES, HEIGHT, WIDTH),  # float, normalised
                                    (1, FRAMES, HEIGHT, WIDTH, 3)), out.shape  # uint8
        del out
    return cpu, wall


def pool_rate(paths: list[Path], rounds: int) -> float:
    """Wall clips/s of the decode pool (one worker per core, as frame_tensors runs it)."""
    from cog_assets.runtime.worker_pool import default_workers, prefetch_map

    tasks = [ClipTask(str(p), SPEC, threads=1) for p in paths] * rounds
    started = time.perf_counter()
    for outcome in prefetch_map(decode_clip_task, tasks, workers=default_workers(),
                                ordered=False):
        assert outcome.ok, outcome.error
    return len(tasks) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool", action="store_true", help="also ours on every core")
    parser.add_argument("--cpu-normalise", action="store_true",
                        help="ours normalises on the CPU too (as for a CPU VAE)")
    parser.add_argument("--peak", type=float, default=800e12,
                        help="the GPU's dense bf16 FLOP/s (default 800e12, an H100 SXM)")
    parser.add_argument("--mfu", type=float, default=0.4,
                        help="the share of --peak the VAE reaches (default 0.4)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    paths = hd_clips()
    print(f"{len(paths)} clips of the corpus at 720p or more -> {FRAMES}x{HEIGHT}x{WIDTH}, "
          f"one thread each side; {os.cpu_count()} cores; load average {load:.1f}; ours "
          f"normalises {'on the CPU' if args.cpu_normalise else 'on the GPU (not counted)'}")
    print(f"{'clip':44}{'source':>11}{'ours CPU s':>12}{'peer CPU s':>12}{'peer/ours':>11}")
    ours_total = peer_total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        store = ContentStore(tmp)
        for i, path in enumerate(paths):
            probe = probe_video(path)
            ours, _ = cpu_seconds(lambda: ours_input(path, store, f"clip{i}",
                                                     args.cpu_normalise), args.repeats)
            peer, _ = cpu_seconds(lambda: peer_input(path), args.repeats)
            ours_total, peer_total = ours_total + ours, peer_total + peer
            print(f"{path.parent.name + '/' + path.name:44}"
                  f"{f'{probe.width}x{probe.height}':>11}{ours:12.3f}{peer:12.3f}"
                  f"{peer / ours:10.2f}x")
    ours_rate, peer_rate = len(paths) / ours_total, len(paths) / peer_total
    print(f"clips per CPU-second (one core): ours {ours_rate:.2f}, peer {peer_rate:.2f}: "
          f"{ours_rate / peer_rate:.2f}x (target >= 3x); load average at end "
          f"{os.getloadavg()[0]:.1f}")
    if args.pool:
        rate = pool_rate(paths, max(1, args.repeats))
        print(f"ours through the decode pool on {os.cpu_count()} cores: {rate:.2f} clips/s "
              f"(decode only, {rate / os.cpu_count():.2f} per core)")
    gpu_rate = args.peak * args.mfu / VAE_FLOPS_PER_CLIP
    print(f"one H100: {VAE_FLOPS_PER_CLIP / 1e12:.2f} TFLOP per clip at {args.mfu:.0%} of "
          f"{args.peak / 1e12:.0f} TFLOP/s = {gpu_rate:.2f} clips/s, which needs "
          f"{gpu_rate / ours_rate:.1f} cores of our decoding or {gpu_rate / peer_rate:.1f} "
          f"of the peer's (at 100% of peak: {args.peak / VAE_FLOPS_PER_CLIP / ours_rate:.1f} "
          f"and {args.peak / VAE_FLOPS_PER_CLIP / peer_rate:.1f})")


if __name__ == "__main__":
    main()
