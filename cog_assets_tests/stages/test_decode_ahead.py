"""Decoding ahead takes only the CPU time the run leaves: the helper and its workers run at
idle priority."""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest

from cog_assets.stages.decode_ahead import die_with_parent


def _policy_of_a_child() -> tuple[int, int]:
    """(scheduling policy of this process, of a process it starts), as the decode workers
    the helper starts are its children."""
    import subprocess

    child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                           capture_output=True, text=True, check=True)
    return os.sched_getscheduler(0), int(child.stdout)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_helper_and_the_workers_it_starts_run_at_idle_priority():
    context = multiprocessing.get_context("spawn")
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=context, initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        helper, worker = pool.submit(_policy_of_a_child).result(timeout=120)
    assert helper == worker == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the run itself keeps its priority
