"""GPU throughput of the real-size models, and how far from the compute bound it is.

- VAE: AutoencoderKLCogVideoX() with its default config, which is the CogVideoX 2B/5B VAE
  (block_out_channels 128/256/256/512, 3 layers per block, 16 latent channels), random
  weights, encoding [B, 3, 49, 480, 720] clips to posterior moments, bf16 by default.
  clips/s, and the fraction of the compute bound: peak FLOP/s / FLOPs per clip (the encoder
  is ~149 TFLOP per 49x480x720 clip, all of it convolutions; `--count-flops` recounts it
  on the meta device, so no GPU and no memory is needed for that). At 800 TFLOP/s dense bf16
  (an H100 SXM, roughly) the bound is ~5.4 clips/s.
- T5: a T5-XXL-size encoder (d_model 4096, d_ff 10240, 24 layers, 64 heads of 64, gated-gelu,
  the text encoder of every CogVideoX), random weights, bf16, captions/s at 226 tokens.

- The compiled VAE (issue 21): `--compile` compiles `vae._encode` as the pipeline's
  `vae_compile` does (torch.compile, inductor, static shapes: one graph per shape), and
  reports the first call (the compilation; with `--compile-cache DIR` run it twice to see an
  empty and a filled cache), the compiled clips/s against eager ones measured in the same
  run, and the largest difference of the moments. `--compile-mode reduce-overhead` adds CUDA
  graphs (the pipeline does not use them: measure whether they would pay).

Options: --batch-size, --slicing, --tiling, --channels-last, --compile, --compile-mode,
--compile-cache, --peak, --dtype. Without CUDA it prints why and exits 0, unless --tiny:
toy-size models of the same classes on the CPU, a smoke test of the script itself (its
figures mean nothing).

    python bench/bench_gpu_vae.py                       # on a GPU machine
    python bench/bench_gpu_vae.py --compile --compile-cache /tmp/inductor   # twice: cold, warm
    python bench/bench_gpu_vae.py --compile --compile-mode reduce-overhead --skip-t5
    python bench/bench_gpu_vae.py --count-flops         # anywhere: FLOPs per clip / caption
    python bench/bench_gpu_vae.py --tiny [--compile]    # anywhere: smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VAE_FLOPS_PER_CLIP = 149e12  # 49x480x720, measured with --count-flops: 148.96e12
DEFAULT_PEAK = 800e12  # dense bf16 FLOP/s; the figure for an H100 ("~800 TFLOP/s")
TEXT_TOKENS = 226
T5_XXL = dict(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
              feed_forward_proj="gated-gelu", vocab_size=32128, tie_word_embeddings=False)
T5_TINY = dict(d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8,
               feed_forward_proj="gated-gelu", vocab_size=128, tie_word_embeddings=False)
VAE_TINY = dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
                latent_channels=16, sample_height=64, sample_width=96)


def build_vae(tiny: bool):
    from diffusers import AutoencoderKLCogVideoX

    return AutoencoderKLCogVideoX(**VAE_TINY) if tiny else AutoencoderKLCogVideoX()


def build_t5(tiny: bool):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**(T5_TINY if tiny else T5_XXL)))


def count_flops(tiny: bool, frames: int, height: int, width: int) -> tuple[float, float]:
    """(VAE FLOPs per clip, T5 FLOPs per caption), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        vae, t5 = build_vae(tiny).eval(), build_t5(tiny).eval()
        clip = torch.empty(1, 3, frames, height, width)
        ids = torch.zeros(1, TEXT_TOKENS, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as vae_count:
        vae.encode(clip)
    with torch.no_grad(), FlopCounterMode(display=False) as t5_count:
        t5(ids)
    return float(vae_count.get_total_flops()), float(t5_count.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, iterations: int) -> float:
    """Seconds per call, after `warmup` calls (compilation, cuDNN autotuning)."""
    for _ in range(warmup):
        fn()
    sync(device)
    started = time.perf_counter()
    for _ in range(iterations):
        fn()
    sync(device)
    return (time.perf_counter() - started) / iterations


def bench_vae(args, device: torch.device, dtype: torch.dtype) -> list[tuple[str, float]]:
    """[(how, clips/s)]: eager, and with --compile the compiled encode too (same inputs)."""
    vae = build_vae(args.tiny).to(device=device, dtype=dtype).eval()
    if args.slicing:
        vae.enable_slicing()
    if args.tiling:
        vae.enable_tiling()
    layout = torch.channels_last_3d if args.channels_last else torch.contiguous_format
    if args.channels_last:  # the 5-D conv weights; norms and biases keep their layout
        for module in vae.modules():
            if isinstance(module, torch.nn.Conv3d):
                module.weight.data = module.weight.data.contiguous(memory_format=layout)
    generator = torch.Generator(device=device).manual_seed(0)
    frames = torch.randint(0, 256, (args.batch_size, 3, args.frames, args.height, args.width),
                           dtype=torch.uint8, device=device, generator=generator)
    x = (frames.float() / 127.5 - 1.0).to(dtype).contiguous(memory_format=layout)

    @torch.inference_mode()
    def encode():
        return vae.encode(x).latent_dist.parameters

    out = encode()
    assert out.shape[1] == 32 and torch.isfinite(out.float()).all(), "non-finite moments"
    rates = [("eager", args.batch_size / timed(encode, device, args.warmup, args.iterations))]
    if args.compile:
        rates.append(bench_compiled(args, vae, x, out, device))
    if device.type == "cuda":
        print(f"  VAE peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    del vae, x, frames, out
    return rates


def bench_compiled(args, vae, x: torch.Tensor, eager: torch.Tensor, device: torch.device
                   ) -> tuple[str, float]:
    """`vae._encode` compiled as cog_assets.models.vae_compile does (mode: --compile-mode):
    its first call (the compilation, or its cache loads) and its clips/s."""
    import os

    if args.compile_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(args.compile_cache).absolute())
    mode = None if args.compile_mode == "default" else args.compile_mode
    function = torch.compile(vae._encode, dynamic=False, mode=mode)
    graphs = mode == "reduce-overhead"

    @torch.inference_mode()
    def encode():
        if graphs:  # CUDA graphs reuse their output buffers: a new step each call
            torch.compiler.cudagraph_mark_step_begin()
        return function(x).clone() if graphs else function(x)

    started = time.perf_counter()
    out = encode()
    sync(device)
    first = time.perf_counter() - started
    diff = (out.float() - eager.float()).abs().max().item()
    scale = eager.float().abs().max().item()
    seconds = timed(encode, device, args.warmup, args.iterations)
    print(f"  compiled ({args.compile_mode}): first call {first:.1f} s (compilation"
          f"{', cache ' + args.compile_cache if args.compile_cache else ''}), then "
          f"{seconds:.3f} s per call; moments differ from eager by at most {diff:.2e} "
          f"(of {scale:.2f})")
    return f"compiled {args.compile_mode}", args.batch_size / seconds


def bench_t5(args, device: torch.device, dtype: torch.dtype) -> float:
    model = build_t5(args.tiny).to(device=device, dtype=dtype).eval()
    if args.compile:
        model = torch.compile(model)
    vocab = (T5_TINY if args.tiny else T5_XXL)["vocab_size"]
    generator = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(2, vocab, (args.text_batch_size, TEXT_TOKENS), device=device,
                        generator=generator)

    @torch.inference_mode()
    def encode():
        return model(input_ids=ids)[0]

    seconds = timed(encode, device, args.warmup, args.iterations)
    del model
    return args.text_batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy models on the CPU: smoke test")
    parser.add_argument("--count-flops", action="store_true",
                        help="count FLOPs per clip and caption on the meta device, then exit")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                        help="default: bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--batch-size", type=int, default=1, help="VAE clips per call")
    parser.add_argument("--text-batch-size", type=int, default=16)
    parser.add_argument("--frames", type=int, default=None, help="default 49 (9 with --tiny)")
    parser.add_argument("--height", type=int, default=None, help="default 480 (64 with --tiny)")
    parser.add_argument("--width", type=int, default=None, help="default 720 (96 with --tiny)")
    parser.add_argument("--slicing", action="store_true", help="vae.enable_slicing()")
    parser.add_argument("--tiling", action="store_true", help="vae.enable_tiling()")
    parser.add_argument("--channels-last", action="store_true", help="channels_last_3d")
    parser.add_argument("--compile", action="store_true",
                        help="also torch.compile the VAE's _encode (and T5), against eager")
    parser.add_argument("--compile-mode", default="default",
                        choices=["default", "reduce-overhead", "max-autotune",
                                 "max-autotune-no-cudagraphs"],
                        help="torch.compile mode (reduce-overhead: CUDA graphs)")
    parser.add_argument("--compile-cache", default=None,
                        help="inductor's cache directory (run twice: empty, then filled)")
    parser.add_argument("--peak", type=float, default=DEFAULT_PEAK,
                        help="dense FLOP/s of the GPU in this dtype (default 800e12; H100 SXM "
                             "datasheet: 989e12)")
    parser.add_argument("--vae-flops", type=float, default=None,
                        help="FLOPs per clip (default 149e12 at 49x480x720, else counted)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--skip-t5", action="store_true")
    args = parser.parse_args()
    args.frames = args.frames or (9 if args.tiny else 49)
    args.height = args.height or (64 if args.tiny else 480)
    args.width = args.width or (96 if args.tiny else 720)

    if args.count_flops:
        vae_flops, t5_flops = count_flops(args.tiny, args.frames, args.height, args.width)
        print(f"VAE encode {args.frames}x{args.height}x{args.width}: "
              f"{vae_flops / 1e12:.2f} TFLOP per clip")
        print(f"T5 encoder, {TEXT_TOKENS} tokens: {t5_flops / 1e12:.3f} TFLOP per caption")
        return
    if args.device is None and not args.tiny and not torch.cuda.is_available():
        print("bench_gpu_vae: no CUDA device here; skipped (run it on a GPU machine, or "
              "--tiny for a CPU smoke test, or --count-flops)")
        return
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny
                                          else "cpu"))
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU"
    full_size = (args.frames, args.height, args.width) == (49, 480, 720) and not args.tiny
    vae_flops = args.vae_flops or (VAE_FLOPS_PER_CLIP if full_size else
                                   count_flops(args.tiny, args.frames, args.height,
                                               args.width)[0])
    _, t5_flops = count_flops(args.tiny, 1, 8, 8)

    options = [o for o in ("slicing", "tiling", "channels_last", "compile") if getattr(args, o)]
    print(f"{name}, {str(dtype).removeprefix('torch.')}, options: {', '.join(options) or 'none'}"
          f"{' (TINY models: a smoke test, not a measurement)' if args.tiny else ''}")
    bound = args.peak / vae_flops
    rows = [(f"VAE {how} {args.frames}x{args.height}x{args.width}, batch {args.batch_size}",
             "clips/s", rate, vae_flops, bound) for how, rate in bench_vae(args, device, dtype)]
    if not args.skip_t5:
        t5_rate = bench_t5(args, device, dtype)
        rows.append((f"T5{'-tiny' if args.tiny else '-XXL size'} {TEXT_TOKENS} tokens, batch "
                     f"{args.text_batch_size}", "captions/s", t5_rate, t5_flops,
                     args.peak / t5_flops))
    print(f"{'what':52} {'rate':>10} {'unit':>10} {'TFLOP/item':>11} {'bound/s':>9} "
          f"{'of bound':>9}")
    for what, unit, rate, flops, item_bound in rows:
        print(f"{what:52} {rate:10.3f} {unit:>10} {flops / 1e12:11.3f} {item_bound:9.2f} "
              f"{rate / item_bound:8.1%}")
    print(f"bound: peak {args.peak / 1e12:.0f} TFLOP/s / FLOPs per item")


if __name__ == "__main__":
    main()
