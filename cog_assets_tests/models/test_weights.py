"""Weights are checked against the profile when they load: a named model profile with
disagreeing weights is refused, naming both values; a tiny profile takes the weights'."""

from __future__ import annotations

import json

import pytest
import torch

from cog_assets.cli import main
from cog_assets.core.profiles import get_profile
from cog_assets.models.runtime import ModelRuntime
from cog_assets.core.config import Settings
from cog_assets.models.vae import load_vae
from cog_assets.models.weights import (
    WeightsMismatch,
    WeightsSource,
    effective_profile,
    reconcile,
    weight_facts,
)
from cog_assets.media.synthetic import write_test_dataset
from cog_assets_tests.fixtures.weights import write_tiny_weights

CONFIG_2B = {"vae": {"scaling_factor": 1.15258426, "latent_channels": 16,
                     "temporal_compression_ratio": 4},
             "text_encoder": {"d_model": 4096}, "tokenizer": {"model_max_length": 226}}


def _config_only_weights(folder, configs=CONFIG_2B):
    """A weights directory holding only the configuration files (no model is loaded)."""
    for component, config in configs.items():
        name = "tokenizer_config.json" if component == "tokenizer" else "config.json"
        (folder / component).mkdir(parents=True)
        (folder / component / name).write_text(json.dumps(config))
    return folder


def test_the_2b_vae_under_the_5b_profile_is_refused_naming_both_values():
    with pytest.raises(WeightsMismatch) as refused:
        reconcile(get_profile("cogvideox-5b"), weight_facts(CONFIG_2B), "/models/2b")
    message = str(refused.value)
    assert "vae scaling_factor is 1.15258426 in the weights, 0.7 in profile cogvideox-5b" \
        in message and "/models/2b" in message
    assert reconcile(get_profile("cogvideox-2b"), weight_facts(CONFIG_2B), "x") is \
        get_profile("cogvideox-2b")  # the right profile: nothing to say


def test_every_fact_is_compared():
    wrong = {"vae": {"scaling_factor": 0.7, "invert_scale_latents": True,
                     "latent_channels": 32, "temporal_compression_ratio": 8},
             "text_encoder": {"d_model": 2048}, "tokenizer": {"model_max_length": 512}}
    with pytest.raises(WeightsMismatch) as refused:
        reconcile(get_profile("cogvideox-5b"), weight_facts(wrong), "w")
    for said in ("invert_scale_latents is True", "latent_channels is 32",
                 "temporal_compression_ratio is 8", "d_model is 2048",
                 "model_max_length is 512"):
        assert said in str(refused.value)
    unset = weight_facts({"tokenizer": {"model_max_length": int(1e30)}})
    assert "text_max_length" not in unset  # a tokenizer without a maximum says nothing


def test_a_tiny_profile_takes_the_weights_values(tmp_path):
    weights = _config_only_weights(tmp_path / "w")
    profile = effective_profile(WeightsSource(get_profile("tiny"), str(weights)))
    assert (profile.scaling_factor, profile.text_dim, profile.name) == (1.15258426, 4096, "tiny")
    assert profile.num_frames == get_profile("tiny").num_frames  # the frames stay the tiny's


def test_a_backfill_with_weights_that_disagree_with_the_named_profile_exits_2(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    weights = _config_only_weights(tmp_path / "CogVideoX-2b")
    data = write_test_dataset(tmp_path / "data", 1, broken=False)
    code = main(["backfill", "--data-root", str(data), "--store", str(tmp_path / "store"),
                 "--profile", "cogvideox-5b", "--weights", str(weights)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "scaling_factor is 1.15258426 in the weights, 0.7 in profile cogvideox-5b" in err
    assert "Traceback" not in err and not (tmp_path / "store").exists()


def test_loaded_weights_are_checked_too(tmp_path):
    """Hub weights are checked when they load (their configs are not read before)."""
    weights = write_tiny_weights(tmp_path / "w", scaling_factor=1.15258426)
    named = WeightsSource(get_profile("cogvideox-5b"), str(weights))
    with pytest.raises(WeightsMismatch, match="scaling_factor is 1.15258426 in the weights"):
        load_vae(named, torch.device("cpu"), torch.float32)
    tiny = ModelRuntime(Settings.of(profile="tiny", weights=str(weights)).model,
                        Settings().device)
    assert tiny.profile.scaling_factor == 1.15258426
    assert load_vae(tiny.weights, torch.device("cpu"), torch.float32).config.scaling_factor \
        == 1.15258426
