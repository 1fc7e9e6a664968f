"""The VAE in a process of its own, for a backfill that runs its shards' steps in its own
process on the CPU.

Why: such a process is serial under the GIL. Importing diffusers there (3 s even with torch
loaded: its autoencoders package imports all of its autoencoders, with transformers,
accelerate, torch._dynamo and sympy) held back every step of a one-clip change, whose encode
itself takes 1.3 s (issue 21). A child started when the backfill starts does those imports
on another core while the parent opens the instance, judges the shards and runs the first
steps; the parent never imports diffusers. The child loads the VAE only when a step first
asks for it, so a backfill with nothing to encode loads no model.

- Requests and answers go over a socket pair (multiprocessing's Connection): small tuples
  pickled, tensors as their raw bytes (no pickling of a 13 MB batch of frames, which go
  over as uint8 and are normalised in the child, as on a GPU).
- Each bucket's encoder (eager, or compiled by `vae_compile`, with its measured costs) lives
  in the child; the parent holds a RemoteEncoder with the same face as a BucketEncoder.
- An error in the child comes back as the same exception (its traceback as a note) when it
  can be pickled, as a VaeProcessError naming it otherwise. A child that died (killed, out of
  memory) is a VaeProcessError naming its pid and exit status; the next request starts a
  fresh child (models/runtime.py drops a dead one).
- The child exits when the parent closes its end, or dies: killed with -9, the parent's
  sockets close and the child's next read ends. An unused child is killed at the parent's
  exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the CLI starts a child before it imports torch
    import torch

    from cog_assets.models.vae_compile import Decision


log = logging.getLogger(__name__)


class VaeProcessError(RuntimeError):
    """The VAE process failed in a way that has no exception of its own to raise."""


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    """A contiguous tensor's memory as bytes (any dtype, no copy)."""
    import torch

    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


def _dtype(name: str) -> torch.dtype:
    import torch

    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"not a torch dtype: {name!r}")
    return value


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _send_tensor(conn: Connection, tensor: torch.Tensor) -> None:
    tensor = tensor.contiguous()
    conn.send((tuple(tensor.shape), _dtype_name(tensor.dtype)))
    conn.send_bytes(_bytes_of(tensor))


def _recv_tensor(conn: Connection) -> torch.Tensor:
    import torch

    shape, dtype = conn.recv()
    tensor = torch.empty(shape, dtype=_dtype(dtype))
    if tensor.numel():
        conn.recv_bytes_into(_bytes_of(tensor))
    else:
        conn.recv_bytes()
    return tensor


class VaeProcess:
    """The parent's handle on one child process holding (once loaded) one VAE."""

    def __init__(self):
        parent, child = Pipe(duplex=True)
        self._conn = parent
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-c",
             f"from cog_assets.models.vae_process import serve; serve({child.fileno()})"],
            pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        self._loaded: dict | None = None
        self._load_sent = False
        self._encoders = 0  # ids of the encoders made in the child
        self._answered: BaseException | None = None  # the error answer being raised
        self.closed = False
        atexit.register(self.close)

    @property
    def alive(self) -> bool:
        return not self.closed and self.process.poll() is None

    def load(self, weights: Any, dtype: torch.dtype, slicing: bool, tiling: bool
             ) -> "VaeProcess":
        """Ask the child to load the VAE (answered by the first request that needs it)."""
        with self._exchange():
            self._send(("load", weights, _dtype_name(dtype), slicing, tiling))
            self._load_sent = True
        return self

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        with self._exchange():
            return _dtype(self._ready()["dtype"])

    def bucket_encoder(self, shape: tuple[int, ...], clips: int, **how: Any
                       ) -> "RemoteEncoder":
        """The child's encoder for `clips` clips of `shape` (see vae_compile.bucket_encoder,
        whose keyword arguments `how` are)."""
        from cog_assets.models.vae_compile import Decision

        with self._exchange():
            self._ready()
            self._encoders += 1
            self._send(("encoder", self._encoders, tuple(shape), clips, how))
            compile_, why = self._answer()
        return RemoteEncoder(self, self._encoders, Decision(compile_, why))

    def encode(self, encoder: int, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The moments of batch `x` by the child's encoder `encoder`, and the graphs its
        call compiled."""
        with self._exchange():
            self._ready()
            self._send(("encode", encoder))
            self._guarded(_send_tensor, self._conn, x)
            graphs = self._answer()
            return self._guarded(_recv_tensor, self._conn), graphs

    def finish(self, encoder: int) -> None:
        """Record what the child's encoder `encoder` measured (vae_compile's ledger)."""
        with self._exchange():
            self._send(("finish", encoder))
            self._answer()

    def close(self) -> None:
        """End the child now: between requests it holds nothing that is not written (each
        answer comes after its work), and one still importing would not read the closed
        socket for seconds."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        self._conn.close()
        self.process.kill()
        self.process.wait()

    @contextmanager
    def _exchange(self) -> Iterator[None]:
        """One request and its whole answer, alone. Left half-way (an interrupt while the
        answer was awaited: Dagster raises Ctrl-C inside a step), the child's answer would be
        read as the next request's, a tensor as another clip's moments: the child is ended
        instead, and the next request starts a new one."""
        with self._lock:
            try:
                yield
            except BaseException as exc:
                if exc is not self._answered:  # not an error the child answered whole
                    self.close()
                raise
            finally:
                self._answered = None

    def _ready(self) -> dict:
        if self._loaded is None:
            if not self._load_sent:
                raise VaeProcessError("the VAE process was asked to encode before a load")
            try:
                self._loaded = self._answer()
            except BaseException:  # a VAE that did not load: this child is done with
                self.close()
                raise
        return self._loaded

    def _send(self, message: tuple) -> None:
        self._guarded(self._conn.send, message)

    def _answer(self) -> Any:
        kind, value = self._guarded(self._conn.recv)
        if kind == "ok":
            return value
        self._answered = _raised(value)  # read whole: the child is still in step
        raise self._answered

    def _guarded(self, call, *args):
        if self.closed:
            raise VaeProcessError("the VAE process was closed")
        try:
            return call(*args)
        except (EOFError, OSError) as exc:
            self.closed = True
            self._conn.close()
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
            raise VaeProcessError(
                f"the VAE process (pid {self.process.pid}) ended with exit status {code} "
                f"({'killed by signal ' + str(-code) if code < 0 else 'exited'}); the next "
                f"run starts a new one") from exc


class RemoteEncoder:
    """One bucket's encoder in the VAE process, as BucketEncoder looks to encode_latents:
    each call timed here (the bytes' way there and back included)."""

    def __init__(self, process: VaeProcess, number: int, decision: Decision):
        self.process, self.number, self.decision = process, number, decision
        self.times: list[tuple[float, int]] = []
        self.graphs = 0
        self.setup_s = 0.0

    @property
    def compiled(self) -> bool:
        return self.decision.compile

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        moments, graphs = self.process.encode(self.number, x)
        self.times.append((time.perf_counter() - started, x.shape[0]))
        self.graphs += graphs
        return moments

    @property
    def encode_s(self) -> float:
        return self.setup_s + sum(t for t, _ in self.times)

    def finish(self) -> None:
        self.process.finish(self.number)


def _raised(payload: tuple) -> BaseException:
    """The exception an answer carries: the child's own, or a VaeProcessError naming it."""
    how, value, text = payload
    if how == "pickled":
        try:
            exc = pickle.loads(value)
        except Exception:  # noqa: BLE001 - a class the parent cannot rebuild
            pass
        else:
            exc.add_note(f"raised in the VAE process:\n{text}")
            return exc
    return VaeProcessError(f"in the VAE process: {text}")


def _portable(exc: BaseException) -> tuple:
    text = "".join(traceback.format_exception(exc)).rstrip()
    try:
        value = pickle.dumps(exc)
        pickle.loads(value)
    except Exception:  # noqa: BLE001 - sent as text
        return ("text", None, text)
    return ("pickled", value, text)


# -- the parent's choice: which runs encode in the child -------------------------------------

_WARM: VaeProcess | None = None  # started, nothing loaded, not yet taken by a runtime
_SERVING = 0  # > 0 while a backfill that encodes in the child runs its shards
_CANNOT_START: str | None = None  # why no child could be started: the VAE runs here instead


def start() -> None:
    """Start a child that imports torch and diffusers now, for the next `take` (idempotent).
    Where no process can be started (no interpreter at sys.executable, no process left under
    a limit), this process runs the VAE itself, as before, and says so once."""
    global _WARM, _CANNOT_START
    if _CANNOT_START is None and (_WARM is None or not _WARM.alive):
        try:
            _WARM = VaeProcess()
        except OSError as exc:
            _CANNOT_START = f"{sys.executable!r}: {exc.strerror or exc}"
            log.warning("could not start the VAE's own process (%s); the VAE runs in this "
                        "process", _CANNOT_START)


def take() -> VaeProcess:
    """The warm child (started now if there is none), handed over to its user."""
    global _WARM
    start()
    process, _WARM = _WARM, None
    return process


def discard_warm() -> None:
    """Stop a warm child nobody took (the VAE runs elsewhere after all)."""
    global _WARM
    if _WARM is not None:
        _WARM.close()
        _WARM = None


@contextmanager
def serving() -> Iterator[None]:
    """While inside, a VAE asked for on the CPU runs in a child process (models/runtime)."""
    global _SERVING
    _SERVING += 1
    try:
        yield
    finally:
        _SERVING -= 1


def in_use() -> bool:
    """Whether a VAE asked for on the CPU now runs in a child (serving, and no start failed)."""
    return _SERVING > 0 and _CANNOT_START is None


# -- the child ------------------------------------------------------------------------------

def serve(fd: int) -> None:
    """The child's loop: import, then answer requests until the parent closes its end."""
    # Ctrl-C on a terminal reaches the whole process group: the parent handles it (and ends
    # this child as it exits); here it would only print a second traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    import diffusers.models.autoencoders.autoencoder_kl_cogvideox  # noqa: F401 - now, not later
    import torch

    from cog_assets.models.vae import load_vae, vae_input_on_device
    from cog_assets.models.vae_compile import bucket_encoder
    from cog_assets.runtime.heap import map_large_blocks, release_free_memory

    map_large_blocks()  # the VAE's activations: returned to the OS when freed
    vae = None
    encoders: dict[int, Any] = {}
    while True:
        try:
            op, *args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            x = _recv_tensor(conn) if op == "encode" else None  # read before any error
            if op == "load":
                weights, dtype, slicing, tiling = args
                vae = None
                encoders.clear()
                vae = load_vae(weights, torch.device("cpu"), _dtype(dtype), slicing, tiling)
                answer: Any = {"dtype": _dtype_name(next(vae.parameters()).dtype),
                               "pid": os.getpid()}
            elif op == "encoder":
                number, shape, clips, how = args
                encoder = bucket_encoder(vae, shape, clips, **how)
                encoders[number] = encoder
                answer = (encoder.decision.compile, encoder.decision.why)
            elif op == "encode":
                encoder = encoders[args[0]]
                graphs = encoder.graphs
                moments = encoder(vae_input_on_device(x, torch.device("cpu"),
                                                      next(vae.parameters()).dtype))
                del x
                conn.send(("ok", encoder.graphs - graphs))
                _send_tensor(conn, moments)
                del moments
                release_free_memory()
                continue
            elif op == "finish":
                encoders.pop(args[0]).finish()
                answer = None
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:  # noqa: BLE001 - answered, the parent raises it
            try:
                conn.send(("error", _portable(exc)))
            except (EOFError, OSError):
                return
            continue
        try:
            conn.send(("ok", answer))
        except (EOFError, OSError):
            return
