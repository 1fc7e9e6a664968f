"""What cutting clip files costs per minute of footage, at 720p and 1080p: a stream copy
(segments on keyframes) against a re-encode (segments off them), with the decode floor beside
them, in the same run on the same file.

The footage: MINUTES of multi-shot H.264 per size (30 fps, crf 23, veryfast, a keyframe every
2 s as cameras and encoders commonly place them), edited from 3-second stretches of the corpus
videos (COG_ASSETS_MEDIA or --media; generated clips without a corpus), made by
bench_scenes.write_footage. The jobs, each over the whole footage cut into 4-second clips:

- stream copy: clips from keyframe to keyframe (0-4 s, 4-8 s, ...), so every clip's packets
  are copied (`media.clip_cut`, the `stream_copy` path);
- re-encode: the same clips shifted by 1 s (1-5 s, 5-9 s, ...), so none starts on a keyframe
  and every clip is decoded from the keyframe before it and encoded with libx264 at the default
  clip_crf 18 (`re_encode`);
- decode floor: a plain PyAV loop that decodes every frame and converts none (threads auto):
  what any re-encode must at least pay.

Both cuts run `stages.clip_files.cut_clip_files` (the source hashed once, files and records
written) into a fresh store each time, in this process for the per-minute figures (median of
--repeats), then once in a worker process as the clip_files asset runs it (its start-up
included). Prints seconds per minute of footage, the realtime factor, the ratio of re-encode to
copy and to the decode floor, and the megabytes written per minute, with the load average (the
machine is shared).

    python bench/bench_clip_files.py [--minutes 1] [--sizes 1280x720 1920x1080] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
from av.video.frame import PictureType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scenes import write_footage  # noqa: E402

from cog_assets.core.keys import file_sha256  # noqa: E402
from cog_assets.media.clip_cut import ClipEncoding  # noqa: E402
from cog_assets.media.probe import probe_video  # noqa: E402
from cog_assets.stages.clip_files import ClipSource, cut_clip_files  # noqa: E402
from cog_assets.store.content_store import ContentStore  # noqa: E402

CLIP_S = 4.0
GOP_S = 2.0


def write(path: Path, media: Path | None, minutes: float, width: int, height: int,
          fps: int) -> None:
    """The footage, encoded again with a keyframe exactly every GOP_S seconds and none in
    between (write_footage lets x264 place them at scene changes too), so that both plans
    mean what they say."""
    raw = path.with_name(f"raw_{path.name}")
    write_footage(raw, media, minutes, width, height, fps)
    gop = round(GOP_S * fps)
    with av.open(str(raw)) as source, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast", "crf": "23",
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for i, frame in enumerate(source.decode(video=0)):
            frame.pts, frame.time_base = i, Fraction(1, fps)
            frame.pict_type = PictureType.NONE  # else x264 keeps the source's keyframes
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    raw.unlink()


def clips(path: Path, content_hash: str, duration: float, offset: float) -> list[ClipSource]:
    out, start = [], offset
    while start + CLIP_S <= duration + 1e-6:
        out.append(ClipSource(f"{path.name}#t={start:.3f},{start + CLIP_S:.3f}", path.name,
                              content_hash, start, start + CLIP_S))
        start += CLIP_S
    return out


def cut(path: Path, wanted: list[ClipSource], store_dir: Path, workers: int
        ) -> tuple[float, dict, int]:
    store = ContentStore(str(store_dir))
    started = time.perf_counter()
    result = cut_clip_files(wanted, path.parent, store, ClipEncoding(crf=18), workers=workers)
    seconds = time.perf_counter() - started
    assert not result.failed, result.failed
    written = sum(f.bytes for f in result.files.values())
    return seconds, result.stats.extra, written


def decode_floor(path: Path) -> float:
    started = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--media", default=os.environ.get("COG_ASSETS_MEDIA"))
    args = parser.parse_args()
    media = Path(args.media) if args.media else None
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            width, height = map(int, size.split("x"))
            path = Path(tmp) / f"footage_{size}.mp4"
            started = time.perf_counter()
            write(path, media, args.minutes, width, height, args.fps)
            duration = probe_video(path).duration_s or args.minutes * 60
            content_hash = file_sha256(str(path))
            plans = {"stream copy (clips on keyframes)": clips(path, content_hash, duration, 0.0),
                     "re-encode (clips off keyframes)": clips(path, content_hash, duration,
                                                              1.0)}
            print(f"\n{size} {args.fps} fps, {args.minutes:g} min "
                  f"({'corpus' if media else 'generated'} shots), "
                  f"{path.stat().st_size / 2**20:.1f} MiB, made in "
                  f"{time.perf_counter() - started:.0f} s; clips of {CLIP_S:g} s; "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            seconds: dict[str, list[float]] = {name: [] for name in [*plans, "decode floor"]}
            facts: dict[str, tuple[dict, int, float]] = {}
            for repeat in range(args.repeats):  # interleaved: load changes hit all alike
                seconds["decode floor"].append(decode_floor(path))
                for name, wanted in plans.items():
                    store = Path(tmp) / f"store_{size}_{repeat}_{name.split()[0]}"
                    took, extra, written = cut(path, wanted, store, workers=0)
                    seconds[name].append(took)
                    footage = sum(c.end_s - c.start_s for c in wanted)
                    facts[name] = (extra, written, footage)
            floor = statistics.median(seconds["decode floor"]) / (duration / 60)
            per_minute = {}
            for name, (extra, written, footage) in facts.items():
                per_minute[name] = statistics.median(seconds[name]) / (footage / 60)
                pooled, _, _ = cut(path, plans[name], Path(tmp) / f"pooled_{size}_{name[:4]}",
                                   workers=os.cpu_count() or 1)
                print(f"  {name:34s} {per_minute[name]:6.2f} s per minute of footage "
                      f"({60 / per_minute[name]:5.1f}x real time), "
                      f"{written / 2**20 / (footage / 60):6.1f} MiB per minute written, "
                      f"copied {extra['stream_copied']} / re-encoded {extra['re_encoded']} "
                      f"clips; in a worker process as the asset runs it: {pooled:.1f} s")
            print(f"  {'decode floor (PyAV, every frame)':34s} {floor:6.2f} s per minute")
            copy, encode = per_minute.values()
            print(f"  re-encode / stream copy: {encode / copy:.1f}x; "
                  f"re-encode / decode floor: {encode / floor:.1f}x; "
                  f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
