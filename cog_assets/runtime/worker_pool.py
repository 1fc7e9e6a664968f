"""A bounded map over worker processes: prefetch ahead of the consumer, stop runaway tasks.

`prefetch_map(fn, items)` runs `fn(item)` in a small pool of worker processes and yields one
`Outcome` per item, in input order (or as they finish, `ordered=False`). At most `depth`
items are in flight or finished-but-not-yet-consumed at any time, so the memory it holds is
bounded by `depth` results whatever the number of items.

Each worker runs one task at a time, so the pool knows exactly which item every worker is on:

- a task that runs longer than `timeout_s` has its worker killed and replaced, and yields an
  Outcome whose error is `TaskTimeout`. The clock starts when a worker takes the task (it
  says so before it calls `fn`), not when the task is handed over: a worker's start-up
  (forkserver, imports; slow on a busy machine) never counts against its first task. A task
  no worker has taken yet has no deadline; a worker that dies before taking it still yields
  `WorkerCrash`;
- a worker that dies (a segfault in a decoder, the OOM killer) yields `WorkerCrash` for the
  one item it was running, and is replaced; the other items go on;
- an exception raised by `fn` comes back as the Outcome's error (the worker's traceback as
  its `__cause__`); the consumer decides whether to raise it.

Workers start by `forkserver` where the platform has it (else `spawn`): never a plain fork of a
process that may hold torch's or a decoder's threads. `fn` and the items must pickle (a
module-level function and plain data), and `fn` should live in a module that imports little,
since each worker imports it.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

STOP_GRACE_S = 5.0


class TaskError(Exception):
    """A task that produced no result because its worker had to be stopped or died."""


class TaskTimeout(TaskError):
    def __init__(self, limit_s: float):
        super().__init__(f"took longer than {limit_s:g} s; its worker was stopped")
        self.limit_s = limit_s


class WorkerCrash(TaskError):
    def __init__(self, exitcode: int | None):
        super().__init__(f"its worker process died ({describe_exit(exitcode)})")
        self.exitcode = exitcode


class RemoteTraceback(Exception):
    """The worker-side traceback of an exception raised by `fn`, set as its __cause__."""

    def __str__(self) -> str:
        return self.args[0]


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "no exit status"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


@dataclass
class Outcome:
    """What became of items[index]: `value`, or `error` when it failed."""

    index: int
    item: Any
    value: Any = None
    error: BaseException | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def default_workers() -> int:
    return os.cpu_count() or 1


def default_context(preload: Iterable[str] = ()) -> multiprocessing.context.BaseContext:
    """forkserver where available (its server is forked from a clean, single-threaded
    process that imported `preload` once), else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        modules = list(dict.fromkeys(["__main__", *preload]))
        context.set_forkserver_preload(modules)  # no effect once the server runs: harmless
        return context
    return multiprocessing.get_context("spawn")


# -- worker side ----------------------------------------------------------------------------

def _portable(exc: BaseException) -> tuple[BaseException, str]:
    """The exception as it can cross a pipe (its own type if it pickles), plus its traceback."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        clone = pickle.loads(pickle.dumps(exc))
        if type(clone) is not type(exc):
            raise TypeError
    except Exception:
        clone = RuntimeError(f"{type(exc).__name__}: {exc}")
    return clone, text


def _worker_main(conn, fn: Callable[[Any], Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if message is None:
            return
        index, item = message
        try:
            conn.send((index, "begin", time.monotonic()))  # the task's clock starts here
            reply = (index, "ok", fn(item))
        except BaseException as exc:  # noqa: BLE001 - sent back for the parent to judge
            reply = (index, "error", _portable(exc))
        try:
            conn.send(reply)
        except (BrokenPipeError, EOFError, ConnectionResetError):
            return
        except Exception as exc:  # the result would not pickle
            conn.send((index, "error", _portable(RuntimeError(
                f"the result of item {index} could not be sent back: {exc}"))))
        del reply


# -- parent side ----------------------------------------------------------------------------

class _Worker:
    def __init__(self, context, fn):
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_worker_main, args=(child, fn), daemon=True,
                                       name="cog-assets-prefetch")
        self.process.start()
        child.close()
        # (index, item, started): started stays None until the worker says it took the task
        self.task: tuple[int, Any, float | None] | None = None

    def submit(self, index: int, item: Any) -> None:
        self.task = (index, item, None)
        try:
            self.conn.send((index, item))
        except OSError:  # it died idle: its sentinel reports the crash for this item
            pass

    def stop(self, kill: bool = False) -> None:
        if self.process.is_alive():
            if kill:
                self.process.kill()
            else:
                try:
                    self.conn.send(None)
                except OSError:
                    self.process.kill()
        self.process.join(STOP_GRACE_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        self.process.close()


def prefetch_map(fn: Callable[[Any], Any], items: Iterable[Any], *, workers: int | None = None,
                 depth: int | None = None,
                 timeout_s: float | Callable[[Any], float | None] | None = None,
                 ordered: bool = True,
                 context: multiprocessing.context.BaseContext | None = None,
                 preload: Iterable[str] = ()) -> Iterator[Outcome]:
    """Yield an Outcome per item of `items` (read lazily) with `fn` run in worker processes.

    workers: processes (default os.cpu_count(); 0 runs `fn` here, one item at a time, with no
    timeout). depth: items in flight plus finished-but-unconsumed, at most (default 2 per
    worker, never fewer than workers). timeout_s: per item, None for none, or a function of
    the item giving its own limit (e.g. longer for longer videos). preload: modules
    the forkserver imports once for every worker (fn's own module always is), when this is
    the process's first use of it."""
    workers = default_workers() if workers is None else workers
    if workers <= 0:
        yield from _run_here(fn, items)
        return
    depth = max(workers, depth or 2 * workers)
    context = context or default_context([*preload, fn.__module__])

    def limit_of(item: Any) -> float | None:
        return timeout_s(item) if callable(timeout_s) else timeout_s

    source = enumerate(items)
    pool: list[_Worker] = []
    done: dict[int, Outcome] = {}
    next_out = 0
    exhausted = False
    try:
        while True:
            # 1. keep every worker busy, within the depth bound
            # (the next item is taken before a worker is found or started for it, so an
            # empty `items` starts no process at all)
            busy = sum(w.task is not None for w in pool)
            while not exhausted and busy + len(done) < depth:
                idle = next((w for w in pool if w.task is None), None)
                if idle is None and len(pool) >= workers:
                    break
                try:
                    index, item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                if idle is None:
                    idle = _Worker(context, fn)
                    pool.append(idle)
                idle.submit(index, item)
                busy += 1
            # 2. hand over what is finished
            if ordered:
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
            else:
                while done:
                    yield done.pop(next(iter(done)))
            if exhausted and busy == 0 and not done:
                return
            if busy == 0:
                continue
            # 3. wait for a result, a death or the nearest deadline
            running = [w for w in pool if w.task is not None]
            wait_s = None
            deadlines = [w.task[2] + limit_of(w.task[1]) for w in running
                         if w.task[2] is not None and limit_of(w.task[1]) is not None]
            if deadlines:  # tasks not taken yet have no deadline
                wait_s = max(0.0, min(deadlines) - time.monotonic())
            ready = set(wait([w.conn for w in running] + [w.process.sentinel for w in running],
                             wait_s))
            now = time.monotonic()
            for worker in running:
                index, item, started = worker.task
                if worker.conn in ready:
                    try:
                        _, status, payload = worker.conn.recv()
                    except (EOFError, OSError):
                        status, payload = "died", None
                    if status == "begin":  # the clock runs from when fn starts, not startup
                        took = payload if isinstance(payload, float) else now
                        worker.task = (index, item, min(took, now))  # monotonic: one clock
                        continue
                    seconds = 0.0 if started is None else now - started
                    if status == "died":
                        outcome = _crashed(worker, index, item, seconds)
                        pool.remove(worker)
                    else:
                        outcome = Outcome(index, item, seconds=seconds)
                        if status == "ok":
                            outcome.value = payload
                        else:
                            exc, text = payload
                            exc.__cause__ = RemoteTraceback(text)
                            outcome.error = exc
                        worker.task = None
                elif worker.process.sentinel in ready:
                    outcome = _crashed(worker, index, item,
                                       0.0 if started is None else now - started)
                    pool.remove(worker)
                elif (limit_of(item) is not None and started is not None
                      and now - started >= limit_of(item)):
                    outcome = Outcome(index, item, error=TaskTimeout(limit_of(item)),
                                      seconds=now - started)
                    worker.task = None
                    worker.stop(kill=True)
                    pool.remove(worker)
                else:
                    continue
                done[index] = outcome
    finally:
        for worker in pool:
            worker.stop(kill=worker.task is not None)


def _crashed(worker: _Worker, index: int, item: Any, seconds: float) -> Outcome:
    worker.process.join(STOP_GRACE_S)
    exitcode = worker.process.exitcode
    worker.task = None
    worker.stop(kill=True)
    return Outcome(index, item, error=WorkerCrash(exitcode), seconds=seconds)


def _run_here(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Outcome]:
    for index, item in enumerate(items):
        started = time.monotonic()
        outcome = Outcome(index, item)
        try:
            outcome.value = fn(item)
        except Exception as exc:  # noqa: BLE001 - the consumer judges, as with workers
            outcome.error = exc
        outcome.seconds = time.monotonic() - started
        yield outcome
