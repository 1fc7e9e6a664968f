"""The VAE in a process of its own (models/vae_process.py): what a backfill on the CPU uses.

Real child processes, the real tiny diffusers VAE in them, real frames in a real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from cog_assets.core.choices import ArtifactKind, VaeCompile
from cog_assets.core.config import DeviceSettings, ModelSettings
from cog_assets.core.keys import VaeIdentity
from cog_assets.core.profiles import get_profile
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.models import vae_process
from cog_assets.models.runtime import PROCESS_MODELS, ModelRuntime
from cog_assets.models.vae import load_vae, vae_input_on_device
from cog_assets.models.vae_process import VaeProcess, VaeProcessError
from cog_assets.models.weights import WeightsSource
from cog_assets.stages.latents import encode_latents
from cog_assets.store.content_store import ContentStore

CPU = torch.device("cpu")
TINY = WeightsSource(get_profile("tiny"))
EAGER = {"policy": VaeCompile.off, "cache_dir": None, "model": "", "dtype": ""}


def _frames(clips: int, shape=(9, 64, 96), seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (clips, *shape, 3), dtype=np.uint8))


def _moments_here(frames: torch.Tensor, source: WeightsSource = TINY) -> torch.Tensor:
    vae = load_vae(source, CPU, torch.float32)
    with torch.inference_mode():
        return vae.encode(vae_input_on_device(frames, CPU, torch.float32)).latent_dist.parameters


def _close_to(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to the order of float sums (the child may split work over its threads
    differently): within 1e-5 of the moments' range."""
    scale = float(expected.max() - expected.min())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale)


@pytest.fixture
def child():
    process = VaeProcess().load(TINY, torch.float32, False, False)
    yield process
    process.close()


def test_moments_from_the_vae_process_equal_those_of_the_vae_in_this_process(child):
    frames = _frames(2)
    encoder = child.bucket_encoder((9, 64, 96), 2, **EAGER)
    got = encoder(frames)  # uint8 frames go over; the child normalises them
    assert got.dtype == torch.float32 and got.shape == (2, 32, 3, 8, 12)
    _close_to(got, _moments_here(frames))
    assert encoder.decision.why == "vae_compile off" and not encoder.compiled
    assert encoder.encode_s > 0 and len(encoder.times) == 1
    encoder.finish()
    assert child.device == CPU and child.dtype == torch.float32


def test_encode_latents_through_the_vae_process_stores_what_the_vae_here_stores(tmp_path):
    """The stage as vae_latents runs it on the CPU in a backfill: T2V and I2V (the clean
    first frame has an encoder of its own), the same moments as with the VAE in process."""
    frames, first = _frames(3), _frames(3, (1, 64, 96), seed=1)
    results = {}
    for how in ("here", "child"):
        store = ContentStore(str(tmp_path / how))
        table = pl.DataFrame({"clip_id": ["a", "b", "c"], "frames_key": ["fa", "fb", "fc"],
                              "bucket": ["9x64x96"] * 3, "status": ["computed"] * 3})
        for key, clip, image in zip(["fa", "fb", "fc"], frames, first, strict=True):
            store.put_tensors(ArtifactKind.frames, key, {"frames": clip, "first_frame": image[0]})
        identity = VaeIdentity(TINY.identity("vae"), "float32", False)
        process = VaeProcess() if how == "child" else None
        load = (lambda p=process: p.load(TINY, torch.float32, False, False)) if process else (
            lambda: load_vae(TINY, CPU, torch.float32))
        try:
            table, stats = encode_latents(table, store, identity, load, batch_size=2)
        finally:
            if process:
                process.close()
        assert stats.computed == 3
        assert "eager" in stats.extra["vae_compile"]
        results[how] = {r["clip_id"]: store.get_tensors(ArtifactKind.latents, r["latent_key"])
                        for r in table.iter_rows(named=True)}
    for clip, here in results["here"].items():
        _close_to(results["child"][clip]["moments"], here["moments"])
        _close_to(results["child"][clip]["image_moments"], here["image_moments"])


def test_an_error_in_the_child_is_raised_here_as_itself_with_its_traceback(tmp_path):
    """A VAE that fails to load there fails here with the exception loading it here raises."""
    broken = tmp_path / "weights"
    (broken / "vae").mkdir(parents=True)
    (broken / "vae" / "config.json").write_text("{ not json")
    source = WeightsSource(get_profile("cogvideox-2b"), str(broken))
    with pytest.raises(Exception) as here:
        load_vae(source, CPU, torch.float32)
    process = VaeProcess().load(source, torch.float32, False, False)
    try:
        with pytest.raises(type(here.value)) as there:
            process.bucket_encoder((9, 64, 96), 1, **EAGER)
        assert "raised in the VAE process" in "\n".join(getattr(there.value, "__notes__", []))
        assert not process.alive  # a child whose VAE did not load is ended
    finally:
        process.close()


def test_an_interrupt_while_an_answer_is_awaited_ends_the_child_rather_than_misreading_it(
        child):
    """Ctrl-C inside a step (Dagster raises it there) while the child encodes: its answer
    would be read as the next request's, one clip's moments as another's. The child is ended
    instead, and using it again is a clear error."""
    frames = _frames(1, (49, 240, 368))
    encoder = child.bucket_encoder((49, 240, 368), 1, **EAGER)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            encoder(frames)  # about a second on 2 cores
    finally:
        timer.join()
    assert not child.alive
    with pytest.raises(VaeProcessError, match="closed"):
        encoder(frames)


def test_a_killed_vae_process_is_a_clear_error_and_the_next_ask_starts_a_new_one():
    runtime = ModelRuntime(ModelSettings(profile="tiny"), DeviceSettings(device="cpu"))
    frames = _frames(1)
    with vae_process.serving():
        first = runtime.vae()
        assert isinstance(first, VaeProcess)
        encoder = first.bucket_encoder((9, 64, 96), 1, **EAGER)
        encoder(frames)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()
        with pytest.raises(VaeProcessError, match=rf"pid {first.process.pid}\).*signal 9"):
            encoder(frames)
        second = runtime.vae()
        assert second is not first and second.alive
        _close_to(second.bucket_encoder((9, 64, 96), 1, **EAGER)(frames),
                  _moments_here(frames))
    assert not isinstance(runtime.vae(), VaeProcess)  # outside a backfill: in this process
    PROCESS_MODELS.clear()


def test_the_vae_process_ends_when_its_parent_is_killed(tmp_path):
    """kill -9 of the backfill leaves no VAE process behind: its socket closes, it exits."""
    script = ("import sys, time, torch\n"
              "from cog_assets.core.profiles import get_profile\n"
              "from cog_assets.models.vae_process import VaeProcess\n"
              "from cog_assets.models.weights import WeightsSource\n"
              "p = VaeProcess().load(WeightsSource(get_profile('tiny')), torch.float32, "
              "False, False)\n"
              "p.dtype\n"  # loaded: the child is past its imports, waiting for requests
              "print(p.process.pid, flush=True)\n"
              "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True)
    try:
        child = int(parent.stdout.readline())
        assert _running(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 30
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child), f"VAE process {child} outlived its parent"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited


def test_a_cpu_backfill_encodes_in_a_child_and_never_imports_diffusers(tmp_path):
    """The point of the child: the backfill's own process imports neither diffusers nor its
    autoencoders (3 s under the GIL), and still writes every clip's latents."""
    data = write_test_dataset(tmp_path / "data", 3, broken=False)
    summary = tmp_path / "summary.json"
    script = ("import json, sys\n"
              "from cog_assets.cli import main\n"
              f"code = main(['backfill', '--data-root', {str(data)!r}, '--store', "
              f"{str(tmp_path / 'store')!r}, '--shards', '1', '--device', 'cpu', "
              f"'--summary-json', {str(summary)!r}])\n"
              "print(json.dumps({'code': code, 'diffusers': sorted(m for m in sys.modules "
              "if m.split('.')[0] == 'diffusers')}))\n")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "diffusers": []}
    [shard] = json.loads(summary.read_text())["shards"].values()
    assert shard["accepted"] == 3
    assert shard["vae"]["encode_s"] > 0


def test_where_no_process_can_be_started_the_vae_runs_here(monkeypatch, caplog):
    """No interpreter at sys.executable (an embedded Python, a venv removed under a long
    backfill): the backfill goes on with the VAE in its own process and says why once."""
    monkeypatch.setattr(vae_process, "_WARM", None)
    monkeypatch.setattr(vae_process, "_CANNOT_START", None)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    runtime = ModelRuntime(ModelSettings(profile="tiny"), DeviceSettings(device="cpu"))
    PROCESS_MODELS.clear()
    frames = _frames(1)
    try:
        with vae_process.serving():
            vae = runtime.vae()
            assert not isinstance(vae, VaeProcess)
            assert not runtime.vae_in_a_child()
        assert "could not start the VAE's own process ('/nonexistent/python3'" in caplog.text
        with torch.inference_mode():
            got = vae.encode(vae_input_on_device(frames, CPU, torch.float32)
                             ).latent_dist.parameters
        _close_to(got, _moments_here(frames))
    finally:
        PROCESS_MODELS.clear()
