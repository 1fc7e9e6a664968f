"""The compiled VAE: when `auto` compiles, what it records, and that compiled latents equal
eager ones with one compilation per bucket shape."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from cog_assets.core.choices import ArtifactKind, VaeCompile
from cog_assets.core.keys import VaeIdentity
from cog_assets.core.profiles import get_profile
from cog_assets.models.vae import load_vae
from cog_assets.models.vae_compile import (
    CompileCosts,
    CostLedger,
    bucket_encoder,
    cost_key,
    decide,
)
from cog_assets.models.weights import WeightsSource
from cog_assets.stages.latents import encode_latents
from cog_assets.store.content_store import ContentStore

CPU = torch.device("cpu")
TINY = WeightsSource(get_profile("tiny"))
MEASURED = CompileCosts(eager_s=6.3, compiled_s=5.0, cold_s=64.0, warm_s=3.5)


def test_off_and_on_are_obeyed_whatever_the_clips():
    assert not decide(VaeCompile.off, 1000, MEASURED, compiled_here=True).compile
    assert decide(VaeCompile.on, 1, CompileCosts(), compiled_here=False).compile
    # obeyed on the CPU too, saying what it costs there (the step's metadata shows why)
    on_cpu = decide(VaeCompile.on, 1, CompileCosts(), compiled_here=False, on_cpu=True)
    assert on_cpu.compile and "slower than eager" in on_cpu.why


def test_auto_never_compiles_for_one_clip():
    decision = decide(VaeCompile.auto, 1, MEASURED, compiled_here=False)
    assert not decision.compile and "one clip" in decision.why


def test_auto_compiles_when_the_clips_pay_back_the_measured_cost():
    # filled cache: 3.5 s to load; 1.3 s saved a clip: 3 clips pay, 2 do not
    assert decide(VaeCompile.auto, 3, MEASURED, compiled_here=False).compile
    assert not decide(VaeCompile.auto, 2, MEASURED, compiled_here=False).compile
    # an empty cache (nothing compiled here yet): about ten eager encodes to compile
    empty = CompileCosts(eager_s=6.3, compiled_s=5.0)
    assert not empty.cached
    assert not decide(VaeCompile.auto, 30, empty, compiled_here=False).compile
    assert decide(VaeCompile.auto, 60, empty, compiled_here=False).compile
    # nothing measured at all: the defaults, in units of one eager encode
    assert not decide(VaeCompile.auto, 30, CompileCosts(), compiled_here=False).compile
    assert decide(VaeCompile.auto, 60, CompileCosts(), compiled_here=False).compile


def test_auto_does_not_compile_where_compiled_encodes_were_measured_slower():
    slower = CompileCosts(eager_s=1.0, compiled_s=1.5, warm_s=0.1)
    decision = decide(VaeCompile.auto, 500, slower, compiled_here=False)
    assert not decision.compile


def test_auto_on_the_cpu_compiles_only_where_compiled_was_measured_faster(tmp_path):
    """Eager CPU encodes run oneDNN convolutions (cpu_convs.py) and a compiled graph runs
    aten's default ones, 4-5x slower for the tiny VAE: the defaults that make `auto` compile
    many clips on a GPU must not make it compile on the CPU."""
    vae = load_vae(TINY, CPU, torch.float32)
    encoder = bucket_encoder(vae, (9, 64, 96), 10_000, policy=VaeCompile.auto,
                             cache_dir=tmp_path, model="tiny", dtype="float32")
    assert not encoder.compiled and "oneDNN" in encoder.decision.why
    assert decide(VaeCompile.auto, 10_000, CompileCosts(), compiled_here=False)  \
        .compile  # the same clips on a GPU
    CostLedger(tmp_path).record(cost_key("tiny", "float32", CPU, (9, 64, 96)),
                                eager_s=6.3, compiled_s=5.0, warm_s=3.5)  # a faster CPU graph
    assert bucket_encoder(vae, (9, 64, 96), 8, policy=VaeCompile.auto, cache_dir=tmp_path,
                          model="tiny", dtype="float32").compiled


def test_costs_measured_before_the_onednn_route_are_not_this_eagers(tmp_path):
    """A ledger written before eager CPU convolutions went to oneDNN holds an eager encode 4-5x
    slower than today's: read as today's, it made `auto` compile (and so never measure eager
    again) on every run after the upgrade."""
    vae = load_vae(TINY, CPU, torch.float32)
    before = f"tiny|float32|cpu|9x64x96|torch {torch.__version__}"  # the old key
    assert before != cost_key("tiny", "float32", CPU, (9, 64, 96))
    CostLedger(tmp_path).record(before, eager_s=6.3, compiled_s=5.0, warm_s=3.5)
    encoder = bucket_encoder(vae, (9, 64, 96), 8, policy=VaeCompile.auto, cache_dir=tmp_path,
                             model="tiny", dtype="float32")
    assert not encoder.compiled and "oneDNN" in encoder.decision.why


def test_auto_reuses_what_this_process_compiled_for_any_clip_count():
    assert decide(VaeCompile.auto, 1, CompileCosts(), compiled_here=True).compile


def test_the_ledger_keeps_the_fastest_clip_and_the_latest_overheads(tmp_path):
    ledger = CostLedger(tmp_path)
    key = cost_key("tiny", "float32", CPU, (49, 240, 368))
    ledger.record(key, eager_s=7.0, compiled_s=5.5, cold_s=70.0)
    ledger.record(key, eager_s=6.5, compiled_s=6.0, warm_s=4.0)
    costs = CostLedger(tmp_path).get(key)
    assert (costs.eager_s, costs.compiled_s, costs.cold_s, costs.warm_s) == (6.5, 5.5, 70.0, 4.0)
    assert costs.cached
    assert not CostLedger(tmp_path).get(cost_key("tiny", "float32", CPU, (9, 64, 96))).cached


@pytest.mark.parametrize("text", ["{not json", "null", "[1, 2]",
                                  '{"k": {"eager_s": "fast", "cold_s": [3]}}'])
def test_a_damaged_ledger_is_read_as_nothing_measured(tmp_path, text):
    (tmp_path / "cog-assets-compile-costs.json").write_text(text)
    assert CostLedger(tmp_path).get("anything") == CompileCosts()
    assert CostLedger(tmp_path).get("k") == CompileCosts()  # values that are no seconds


def test_auto_without_a_place_for_the_cache_stays_eager():
    vae = load_vae(TINY, CPU, torch.float32)
    encoder = bucket_encoder(vae, (9, 64, 96), 10_000, policy=VaeCompile.auto,
                             cache_dir=None, model="tiny", dtype="float32")
    assert not encoder.compiled


def test_a_one_clip_change_is_encoded_eager_even_with_a_filled_cache(tmp_path):
    vae = load_vae(TINY, CPU, torch.float32)
    CostLedger(tmp_path).record(cost_key("tiny", "float32", CPU, (9, 64, 96)),
                                **MEASURED.__dict__)
    one = bucket_encoder(vae, (9, 64, 96), 1, policy=VaeCompile.auto, cache_dir=tmp_path,
                         model="tiny", dtype="float32")
    many = bucket_encoder(vae, (9, 64, 96), 8, policy=VaeCompile.auto, cache_dir=tmp_path,
                          model="tiny", dtype="float32")
    assert not one.compiled and many.compiled  # deciding compiles nothing yet


BUCKETS = {"9x32x48": (9, 32, 48), "5x32x32": (5, 32, 32)}


def _clips(store: ContentStore, per_bucket: dict[str, int]) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for bucket, count in per_bucket.items():
        for i in range(count):
            frames = rng.integers(0, 256, (*BUCKETS[bucket], 3), dtype=np.uint8)
            key = f"{bucket}-{i}"
            store.put_tensors(ArtifactKind.frames, key, {"frames": torch.from_numpy(frames)})
            rows.append({"clip_id": key, "frames_key": key, "bucket": bucket,
                         "status": "computed"})
    return pl.DataFrame(rows)


@pytest.mark.slow
def test_compiled_latents_equal_eager_ones_with_one_compilation_per_bucket_shape(tmp_path):
    """3 clips of one shape and 2 of another: 2 graphs in all (none for the later clips of a
    shape), the same keys as eager, moments within 1e-4 of eager (float sums reordered:
    inductor fuses, and eager convolutions run on oneDNN)."""
    identity = VaeIdentity(TINY.identity("vae"), "float32", False)
    vae = load_vae(TINY, CPU, torch.float32)
    eager_store, compiled_store = (ContentStore(str(tmp_path / n)) for n in ("e", "c"))
    table = _clips(eager_store, {"9x32x48": 3, "5x32x32": 2})
    _clips(compiled_store, {"9x32x48": 3, "5x32x32": 2})
    eager, _ = encode_latents(table, eager_store, identity, lambda: vae, 1)

    def compiled_for(vae_, shape, clips):
        return bucket_encoder(vae_, shape, clips, policy=VaeCompile.on,
                              cache_dir=tmp_path / "cache", model="tiny", dtype="float32")

    compiled, stats = encode_latents(table, compiled_store, identity, lambda: vae, 1,
                                     encoder_for=compiled_for)
    assert stats.extra["compiled_graphs"] == 2, stats.extra
    assert compiled["latent_key"].to_list() == eager["latent_key"].to_list()
    for key in eager["latent_key"]:
        want = eager_store.get_tensors(ArtifactKind.latents, key)["moments"]
        got = compiled_store.get_tensors(ArtifactKind.latents, key)["moments"]
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=0, atol=1e-4), (got - want).abs().max()
    costs = CostLedger(tmp_path / "cache").read()
    assert {k.split("|")[3] for k in costs} == set(BUCKETS)
    assert all(c.cold_s is not None for k, c in costs.items() if "9x32x48" in k)
