"""The honest baselines: preprocessing written the way the trainers' own scripts do it.

Two methods (`--method`):

- `peer`: cogvideox-factory's `prepare_dataset.py` itself, step by step: decord's
  `VideoReader` opens each clip, frames `range(0, n, n // 49)[:49]` come from `get_batch` at
  full resolution, are converted to float and resized (bilinear, antialiased) to the bucket,
  normalised (`x / 255 * 2 - 1`); the VAE encodes one clip at a time, T5 one caption at a
  time, and the tensors are saved by a background thread. A clip with fewer frames than the
  bucket (n // 49 == 0, which the script itself cannot take) steps by one frame and repeats
  its last, so that every clip is encoded at the same 49 frames as ours.
- `trainer` (the default, and the stronger baseline): the same loop made faster than the
  peer's: one process, one pass over `videos.txt` / `prompts.txt`, for each video seek to
  the sampled window and decode only it, convert only the sampled frames, resize
  (antialiased, cover + centre crop, in float), then the VAE on that one clip, and T5 on
  one caption at a time; the latents and embeddings saved as `.pt` files.

Both: Nothing is cached: every run recomputes everything, as those
scripts do. It uses the same tiny diffusers / transformers models, the same frame timestamps
(stride over a short clip, as cogvideox-factory spreads its indices over the video) and the
same target shape as cog-assets, so the work per clip is the same.

    python bench/trainer_baseline.py --data-root DIR --out DIR [--bucket 49x240x368]
                                     [--method trainer|peer]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sampled_frames(path: Path, num_frames: int, fps: float, short_clips: str):
    """uint8 [F, H, W, 3] of the frames at the sampled times: seek to the window, decode it,
    convert only the picked frames (what decord's get_batch does)."""
    import av
    import numpy as np

    from cog_assets.media.sampling import pick_nearest, sample_timestamps

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = (float(stream.duration * stream.time_base) if stream.duration
                    else container.duration / 1e6)
        wanted = sample_timestamps(duration, num_frames, fps, "start", 0,
                                   short_clips=short_clips)
        origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        container.seek(int((origin + wanted[0]) / stream.time_base), stream=stream,
                       backward=True, any_frame=False)
        times, frames = [], []
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base) - origin
            times.append(t)
            frames.append(frame)
            if t > wanted[-1]:
                break
    picks = pick_nearest(times, wanted)
    return np.stack([frames[i].to_ndarray(format="rgb24") for i in picks])


def resize_cover(frames, height: int, width: int):
    """float [F, 3, H, W] in [0, 255], scaled to cover (antialiased) and centre-cropped."""
    import torch
    import torch.nn.functional as F

    from cog_assets.media.resize import cover_geometry

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    g = cover_geometry(x.shape[3], x.shape[2], width, height)
    x = F.interpolate(x, size=(g.scaled_height, g.scaled_width), mode="bilinear",
                      antialias=True, align_corners=False)
    return x[:, :, g.crop_y:g.crop_y + height, g.crop_x:g.crop_x + width].clamp(0, 255)


def peer_frames(path: Path, num_frames: int, height: int, width: int, threads: int = 0):
    """float [F, 3, H, W] in [-1, 1], as prepare_dataset.py makes it (see the docstring);
    `threads`: decord's decoding threads (0: its default)."""
    import decord
    import torch
    import torch.nn.functional as F

    reader = decord.VideoReader(str(path), num_threads=threads)
    n = len(reader)
    indices = list(range(0, n, max(1, n // num_frames)))[:num_frames]
    indices += [indices[-1]] * (num_frames - len(indices))
    frames = torch.from_numpy(reader.get_batch(indices).asnumpy()).float()
    frames = frames.permute(0, 3, 1, 2).contiguous()
    frames = F.interpolate(frames, size=(height, width), mode="bilinear", antialias=True,
                           align_corners=False)
    return frames / 255.0 * 2.0 - 1.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--bucket", default=None, help="FxHxW (default: the tiny profile's)")
    parser.add_argument("--short-clips", default="stride")
    parser.add_argument("--method", choices=["trainer", "peer"], default="trainer",
                        help="peer: prepare_dataset.py's decord path and background saves")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    import torch

    from cog_assets.core.profiles import get_profile
    from cog_assets.models.text_encoder import load_text_encoder
    from cog_assets.models.vae import load_vae
    from cog_assets.models.weights import WeightsSource

    profile = get_profile("tiny")
    frames_n, height, width = profile.num_frames, profile.height, profile.width
    if args.bucket:
        frames_n, height, width = map(int, args.bucket.split("x"))
    source = WeightsSource(profile)
    cpu = torch.device("cpu")
    vae = load_vae(source, cpu, torch.float32, onednn_convs=False)  # diffusers' own path
    encoder = load_text_encoder(source, cpu, torch.float32)
    videos = (args.data_root / "videos.txt").read_text().split()
    captions = (args.data_root / "prompts.txt").read_text().splitlines()
    (args.out / "video_latents").mkdir(parents=True, exist_ok=True)
    (args.out / "prompt_embeds").mkdir(parents=True, exist_ok=True)
    encoded = 0
    saver = ThreadPoolExecutor(max_workers=1) if args.method == "peer" else None

    def save(tensor, path: Path) -> None:  # the peer saves in the background
        if saver is None:
            torch.save(tensor, path)
        else:
            saver.submit(torch.save, tensor, path)

    with torch.no_grad():
        for name, caption in zip(videos, captions):
            stem = Path(name).name.split(".")[0]
            try:
                if args.method == "peer":
                    x = peer_frames(args.data_root / name, frames_n, height, width)
                else:
                    frames = sampled_frames(args.data_root / name, frames_n, profile.fps,
                                            args.short_clips)
                    x = resize_cover(frames, height, width).div(127.5).sub(1.0)
            except Exception as exc:  # noqa: BLE001 - a one-shot script skips what fails
                print(f"skipped {name}: {exc}", file=sys.stderr)
                continue
            x = x.permute(1, 0, 2, 3)[None]  # [1, 3, F, H, W]
            latent = vae.encode(x).latent_dist.parameters[0]
            save(latent.clone(), args.out / "video_latents" / f"{stem}.pt")
            embed = encoder.encode([caption])[0]
            save(embed.clone(), args.out / "prompt_embeds" / f"{stem}.pt")
            encoded += 1
    if saver is not None:
        saver.shutdown(wait=True)
    print(f"encoded {encoded} of {len(videos)} clips in {time.perf_counter() - started:.1f} s "
          f"({args.method})")


if __name__ == "__main__":
    main()
