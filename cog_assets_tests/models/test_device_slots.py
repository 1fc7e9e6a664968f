"""One GPU per concurrent GPU step, on a simulated device count (the claim is a lock file per
GPU index; no GPU is needed to test which index each process gets), and models loaded once
per process."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from cog_assets.core.config import DeviceSettings, ModelSettings
from cog_assets.models.device_slots import claim_gpu, needs_claim
from cog_assets.models.runtime import PROCESS_MODELS, ModelRuntime

GPUS = 3


def _claim_and_hold(lock_dir: str, count: int, claimed, all_claimed) -> None:
    with claim_gpu(count, lock_dir) as index:
        claimed.put(index)
        all_claimed.wait(60)


def test_concurrent_steps_in_separate_processes_each_get_their_own_gpu(tmp_path):
    context = multiprocessing.get_context("spawn")
    claimed, all_claimed = context.Queue(), context.Event()
    steps = [context.Process(target=_claim_and_hold,
                             args=(str(tmp_path), GPUS, claimed, all_claimed))
             for _ in range(GPUS)]
    for step in steps:
        step.start()
    try:
        indices = sorted(claimed.get(timeout=60) for _ in steps)
    finally:
        all_claimed.set()
        for step in steps:
            step.join(30)
    assert indices == list(range(GPUS))
    assert all(step.exitcode == 0 for step in steps)


def test_a_step_waits_for_a_free_gpu_when_all_are_claimed(tmp_path):
    got = []
    with claim_gpu(2, tmp_path) as first, claim_gpu(2, tmp_path) as second:
        assert {first, second} == {0, 1}
        waiter = threading.Thread(target=lambda: got.append(
            claim_gpu(2, tmp_path).__enter__()))
        waiter.start()
        time.sleep(0.6)
        assert got == []  # still waiting: both GPUs are claimed
    waiter.join(10)
    assert got and got[0] in (0, 1)


def test_a_process_prefers_the_gpu_its_models_are_on(tmp_path):
    with claim_gpu(GPUS, tmp_path, prefer=2) as index:
        assert index == 2
        with claim_gpu(GPUS, tmp_path, prefer=2) as other:
            assert other != 2  # taken: another free one instead


def test_a_killed_step_leaves_its_gpu_free(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from cog_assets.models.device_slots import claim_gpu\n"
         f"with claim_gpu(1, {str(tmp_path)!r}) as i:\n"
         "    print(i, flush=True); time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        done = []
        waiter = threading.Thread(target=lambda: done.append(
            claim_gpu(1, tmp_path).__enter__()))
        waiter.start()
        time.sleep(0.5)
        assert done == []
        os.kill(holder.pid, signal.SIGKILL)
        waiter.join(10)
        assert done == [0]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("device, gpus, claims", [
    ("auto", 4, True), ("cuda", 2, True), ("cuda:1", 4, False), ("cpu", 4, False),
    ("auto", 1, False), ("auto", 0, False)])
def test_which_settings_claim_a_gpu(device, gpus, claims):
    assert needs_claim(device, gpus) is claims


def test_models_load_once_per_process_and_are_replaced_when_their_identity_changes():
    PROCESS_MODELS.clear()
    fp32 = ModelRuntime(ModelSettings(), DeviceSettings(device="cpu", dtype="float32"))
    loads = PROCESS_MODELS.loads
    vae = fp32.vae()
    assert fp32.vae() is vae
    again = ModelRuntime(ModelSettings(), DeviceSettings(device="cpu", dtype="float32",
                                                         batch_size=4))
    assert again.vae() is vae  # the batch size does not change the model
    assert fp32.text_encoder() is fp32.text_encoder()
    assert fp32.tokenizer() is again.tokenizer()
    assert PROCESS_MODELS.loads == loads + 3
    bf16 = ModelRuntime(ModelSettings(), DeviceSettings(device="cpu", dtype="bfloat16"))
    other = bf16.vae()
    assert other is not vae and next(other.parameters()).dtype == torch.bfloat16
    assert PROCESS_MODELS.loads == loads + 4
    PROCESS_MODELS.clear()


def test_a_step_on_a_one_device_host_runs_on_the_setting():
    runtime = ModelRuntime(ModelSettings(), DeviceSettings(device="cpu"))
    with runtime.step_device() as device:
        assert device == torch.device("cpu")
