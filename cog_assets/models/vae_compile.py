"""The VAE's encoder compiled by torch.compile (inductor), and when compiling it pays.

- What is compiled: diffusers' `vae._encode` (its loop over chunks of frames, with the
  convolution cache between them, unrolled), for static shapes (`dynamic=False`): one
  graph per bucket shape (and batch size), made on the first clip of that shape and reused
  for every later clip, never recompiled per clip (the step reports the graphs it made,
  from torch._dynamo's counters). Compiling only `vae.encoder` instead made 3 graphs per
  shape (the first chunk, then the others) in about the same time, and ran no faster.
- Inductor's caches (FX graph and AOTAutograd, on by default) live in a directory the caller
  gives (TORCHINDUCTOR_CACHE_DIR): the VAE step keeps them under the Dagster instance, so the
  next backfill, the sensor's runs and CI (which keeps DAGSTER_HOME for its run history)
  load the kernels instead of compiling them again.
- Compiled latents equal eager ones within float rounding (inductor fuses and reorders
  float32 sums; measured ~1e-6 of the moments' range, a test holds them to 1e-4), as latents
  computed with another thread count or on another device do: they share keys (keys name
  what decides a latent's value, not the order of its sums), so changing `vae_compile`
  neither re-encodes nor invalidates anything.
- `auto` compiles when the step's clips of a bucket save more than the compilation costs:
  clips x (eager - compiled seconds per clip) > the first compiled call's extra seconds,
  with a cold or a warm cache. Each step measures these and records them beside the cache
  (`COSTS_FILE`), per model, dtype, device, shape and torch version, so the next decision
  uses this machine's costs; before anything is measured it uses the figures of issue 21
  (tiny VAE at 49x240x368 on a 2-core CPU, as multiples of one eager encode). One clip is
  never worth a compilation; a shape this process has compiled costs nothing more.
- On the CPU, `auto` compiles only where this machine measured a compiled encode faster than
  its eager one: eager runs the 3-D convolutions on oneDNN (models/cpu_convs.py) and
  inductor's graph runs aten's default ones, which for the tiny VAE's narrow layers is
  slow_conv3d (0.94 s eager against about 4.7 s compiled a clip at 49x240x368).
- On a GPU the same compiled encoder runs (default mode: no CUDA graphs; the chunked
  encode's convolution cache would have to be copied out of the graphs' static buffers, and
  each kernel of a 49x480x720 clip runs long enough that launch overhead is small);
  `bench/bench_gpu_vae.py --compile [--compile-mode reduce-overhead]` measures both.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cog_assets.core.choices import VaeCompile
from cog_assets.runtime.json_file import read_json, write_json

if TYPE_CHECKING:
    from diffusers import AutoencoderKLCogVideoX

COSTS_FILE = "cog-assets-compile-costs.json"
GRAPH_LIMIT = 64  # dynamo's per-function graph limit (default 8): 3 graphs per bucket shape

# Before this machine measured anything, in units of one eager encode of the clip (issue 21:
# eager 6.3 s; compiled 4.7-5.1 s; first call 64 s more with an empty cache, 8.6 s against
# 5.1 s with a filled one).
DEFAULT_COLD = 10.0
DEFAULT_WARM = 0.6
DEFAULT_GAIN = 0.2


@dataclass
class CompileCosts:
    """Seconds per clip measured for one (model, dtype, device, shape, torch version)."""

    eager_s: float | None = None
    compiled_s: float | None = None
    cold_s: float | None = None  # the first compiled call's extra seconds, empty cache
    warm_s: float | None = None  # the same in a new process, with the cache filled

    @property
    def cached(self) -> bool:
        """Whether a compilation of this shape finished here (its kernels are in the cache)."""
        return self.cold_s is not None or self.warm_s is not None

    def merged(self, **measured: float | None) -> "CompileCosts":
        """These costs with newly measured ones: the lower per-clip time (the least
        disturbed by other work), the latest overheads."""
        values = asdict(self)
        for name, value in measured.items():
            if value is None:
                continue
            old = values[name]
            values[name] = min(old, value) if name in ("eager_s", "compiled_s") and old \
                else value
        return CompileCosts(**values)


class CostLedger:
    """The costs measured beside one inductor cache, as a small JSON file."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / COSTS_FILE

    def read(self) -> dict[str, CompileCosts]:
        raw = read_json(self.path)
        if not isinstance(raw, dict):  # missing or damaged: measured again
            return {}
        names = {f.name for f in fields(CompileCosts)}
        return {key: CompileCosts(**{k: v for k, v in value.items() if k in names
                                     and (v is None or isinstance(v, (int, float)))})
                for key, value in raw.items() if isinstance(value, dict)}

    def get(self, key: str) -> CompileCosts:
        return self.read().get(key, CompileCosts())

    def record(self, key: str, **measured: float | None) -> None:
        """Merge measured costs in (written atomically; a concurrent writer may win)."""
        costs = self.read()
        costs[key] = costs.get(key, CompileCosts()).merged(**measured)
        write_json(self.path, {k: asdict(v) for k, v in costs.items()}, indent=1,
                   sort_keys=True)


@dataclass(frozen=True)
class Decision:
    compile: bool
    why: str


def decide(policy: VaeCompile, clips: int, costs: CompileCosts, compiled_here: bool,
           on_cpu: bool = False) -> Decision:
    """Whether to encode `clips` clips of one shape compiled (see the module's docstring)."""
    if policy == VaeCompile.off:
        return Decision(False, "vae_compile off")
    if policy == VaeCompile.on:
        return Decision(True, "vae_compile on" + (
            " (on the CPU the compiled graph runs aten's convolutions, not eager's oneDNN "
            "ones: measured 4-5x slower than eager; auto would not compile)" if on_cpu else ""))
    if compiled_here:
        return Decision(True, "compiled earlier in this process")
    if clips < 2:
        return Decision(False, "one clip never pays back a compilation")
    if on_cpu and costs.compiled_s is None:
        return Decision(False, "on the CPU eager convolutions run on oneDNN and the compiled "
                               "graph's do not: measured 4-5x slower, not worth compiling")
    eager = costs.eager_s or (costs.compiled_s / (1 - DEFAULT_GAIN) if costs.compiled_s
                              else None)
    unit = eager or 1.0  # nothing measured: in units of one eager encode
    unit_name = "s" if eager else " eager encodes"
    gain = (costs.eager_s - costs.compiled_s if costs.eager_s and costs.compiled_s
            else DEFAULT_GAIN * unit)
    if costs.cached:
        cache, overhead = "filled", costs.warm_s if costs.warm_s is not None \
            else DEFAULT_WARM * unit
    else:
        cache, overhead = "empty", costs.cold_s if costs.cold_s is not None \
            else DEFAULT_COLD * unit
    saved = clips * gain
    verdict = saved > overhead
    return Decision(verdict, f"{clips} clips x {gain:.2g}{unit_name} saved "
                    f"{'>' if verdict else '<='} {overhead:.2g}{unit_name} to compile "
                    f"({cache} cache)")


_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, Callable]" = \
    weakref.WeakKeyDictionary()
_SHAPES: "weakref.WeakKeyDictionary[torch.nn.Module, set[tuple[int, ...]]]" = \
    weakref.WeakKeyDictionary()


def compiled_encode(vae: AutoencoderKLCogVideoX, cache_dir: str | os.PathLike | None
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """`vae._encode` compiled, once per VAE object (kept as long as the VAE is); inductor's
    cache in `cache_dir` (None: torch's default, under the system's temp directory)."""
    if cache_dir is not None:  # read by inductor whenever it looks for its cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_dir).absolute())
    function = _COMPILED.get(vae)
    if function is None:
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") \
            else "cache_size_limit"
        setattr(torch._dynamo.config, limit,
                max(getattr(torch._dynamo.config, limit), GRAPH_LIMIT))
        function = torch.compile(vae._encode, dynamic=False)
        _COMPILED[vae] = function
    return function


def compiled_shapes(vae: AutoencoderKLCogVideoX) -> set[tuple[int, ...]]:
    """The input shapes this process has compiled `vae`'s encoder for."""
    return _SHAPES.setdefault(vae, set())


def graphs_compiled() -> int:
    """Graphs dynamo has made in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


# What eager encodes run: costs measured with another eager are not this one's. v2: on the CPU
# its 3-D convolutions go to oneDNN (models/cpu_convs.py), 4-5x faster than the aten ones a
# ledger written before measured, whose eager seconds would make `auto` compile on every run.
EAGER_VERSION = "eager v2"


def cost_key(model: str, dtype: str, device: torch.device, shape: tuple[int, ...]) -> str:
    return (f"{model}|{dtype}|{device.type}|{'x'.join(map(str, shape))}|"
            f"torch {torch.__version__}|{EAGER_VERSION}")


class BucketEncoder:
    """Moments of one bucket's batches, eager or compiled as decided, each call timed; the
    times go to the ledger when the bucket is done."""

    def __init__(self, vae: AutoencoderKLCogVideoX, decision: Decision,
                 compiled: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 ledger: CostLedger | None = None, key: str = "", cached: bool = False):
        self.vae, self.decision, self.function = vae, decision, compiled
        self.ledger, self.key, self.cached = ledger, key, cached
        self.times: list[tuple[float, int]] = []  # (seconds, clips) per call
        self.graphs = 0
        self.setup_s = 0.0  # deciding, and importing torch's compiler (set by the caller)

    @property
    def compiled(self) -> bool:
        return self.function is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The moments (mean ‖ logvar) of a batch [B, 3, F, H, W], on the CPU: what
        `vae.encode(x).latent_dist.parameters` holds, slicing honoured."""
        graphs = graphs_compiled() if self.compiled else 0
        started = time.perf_counter()
        with torch.inference_mode():
            if self.function is None:
                moments = self.vae.encode(x).latent_dist.parameters.cpu()
            elif self.vae.use_slicing and x.shape[0] > 1:
                moments = torch.cat([self.function(one) for one in x.split(1)]).cpu()
            else:
                moments = self.function(x).cpu()
        self.times.append((time.perf_counter() - started, x.shape[0]))
        if self.compiled:
            self.graphs += graphs_compiled() - graphs
            compiled_shapes(self.vae).add(tuple(x.shape))
        return moments

    @property
    def encode_s(self) -> float:
        return self.setup_s + sum(t for t, _ in self.times)

    def finish(self) -> None:
        """Record what this bucket measured: eager or compiled seconds per clip, and the
        first compiled call's extra seconds (its compilation, or its cache loads)."""
        if self.ledger is None or not self.times:
            return
        per_clip = [t / n for t, n in self.times]
        if not self.compiled:
            self.ledger.record(self.key, eager_s=min(per_clip))
            return
        first, first_clips = self.times[0]
        if self.graphs == 0:  # compiled before (this process): nothing new to learn of it
            self.ledger.record(self.key, compiled_s=min(per_clip))
            return
        later = per_clip[1:]
        compiled_s = min(later) if later else self.ledger.get(self.key).compiled_s
        overhead = first - first_clips * compiled_s if compiled_s is not None else None
        self.ledger.record(self.key, compiled_s=compiled_s if later else None,
                           **{"warm_s" if self.cached else "cold_s": overhead})


def bucket_encoder(vae: AutoencoderKLCogVideoX, shape: tuple[int, ...], clips: int, *,
                   policy: VaeCompile, cache_dir: str | os.PathLike | None, model: str,
                   dtype: str) -> BucketEncoder:
    """The encoder for `clips` clips of `shape` ([F, H, W]), by `policy`; `cache_dir` keeps
    inductor's cache and the measured costs (None: `auto` does not compile, there being no
    place to keep a compilation for the next run)."""
    device = next(vae.parameters()).device
    key = cost_key(model, dtype, device, shape)
    ledger = CostLedger(cache_dir) if cache_dir is not None else None
    costs = ledger.get(key) if ledger is not None else CompileCosts()
    done_here = any(s[2:] == tuple(shape) for s in compiled_shapes(vae)) \
        if vae in _SHAPES else False
    if ledger is None and policy == VaeCompile.auto and not done_here:
        decision = Decision(False, "no cache directory to keep a compilation in")
    else:
        decision = decide(policy, clips, costs, compiled_here=done_here,
                          on_cpu=device.type == "cpu")
    if not decision.compile:
        return BucketEncoder(vae, decision, ledger=ledger, key=key)
    return BucketEncoder(vae, decision, compiled_encode(vae, cache_dir), ledger, key,
                         cached=costs.cached)
