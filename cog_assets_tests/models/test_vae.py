"""Parity: our stages produce exactly what the diffusers VAE and transformers T5 produce."""

import numpy as np
import polars as pl
import pytest
import torch

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.keys import TextIdentity, VaeIdentity
from cog_assets.core.profiles import get_profile
from cog_assets.loader import sample_from_moments
from cog_assets.models.text_encoder import load_text_encoder
from cog_assets.models.vae import load_vae
from cog_assets.models.weights import WeightsSource
from cog_assets.stages.embeddings import encode_captions
from cog_assets.stages.latents import encode_latents
from cog_assets.store.content_store import ContentStore

CPU = torch.device("cpu")
TINY = WeightsSource(get_profile("tiny"))


def test_tiny_models_are_seeded_and_deterministic():
    a = load_vae(TINY, CPU, torch.float32)
    b = load_vae(TINY, CPU, torch.float32)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_vae_moments_equal_diffusers_on_frames_normalised_to_minus_one_one(tmp_path):
    profile = get_profile("tiny")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, profile.num_frames, profile.height, profile.width, 3),
                          dtype=np.uint8)
    store = ContentStore(str(tmp_path))
    table = pl.DataFrame({"clip_id": ["a", "b"], "frames_key": ["fa", "fb"],
                          "bucket": ["9x64x96"] * 2, "status": ["computed"] * 2})
    for key, clip in zip(["fa", "fb"], frames):
        store.put_tensors("frames", key, {"frames": torch.from_numpy(clip)})
    identity = VaeIdentity(TINY.identity("vae"), "float32", False)
    result, stats = encode_latents(table, store, identity,
                                   lambda: load_vae(TINY, CPU, torch.float32), batch_size=2)
    assert stats.computed == 2

    vae = load_vae(TINY, CPU, torch.float32, onednn_convs=False)  # diffusers' own path
    x = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    with torch.no_grad():
        expected = vae.encode(x).latent_dist.parameters
    for i, row in enumerate(result.iter_rows(named=True)):
        got = store.get_tensors(ArtifactKind.latents, row["latent_key"])["moments"]
        assert got.shape == (32, 3, 8, 12) == profile.latent_shape()
        torch.testing.assert_close(got, expected[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("profile", ["tiny", "tiny-1.5"])
@pytest.mark.parametrize("height,width", [(64, 96), (96, 160), (240, 368)])
def test_tiled_moments_have_the_untiled_shape(profile, height, width):
    """Tiling is a memory setting: the latents keep their shape (the real VAE's tile steps
    are whole latent pixels, and so are the tiny twin's)."""
    source = WeightsSource(get_profile(profile))
    frames = torch.rand(1, 3, 9, height, width) * 2 - 1
    with torch.no_grad():
        plain = load_vae(source, CPU, torch.float32).encode(frames).latent_dist.parameters
        tiled = load_vae(source, CPU, torch.float32, tiling=True).encode(
            frames).latent_dist.parameters
    assert tiled.shape == plain.shape == (1, 32, 3, height // 8, width // 8)
    assert torch.isfinite(tiled).all()


def test_t5_embeddings_equal_encoder_with_cogvideox_tokenizer_settings(tmp_path):
    profile = get_profile("tiny")
    captions = ["a red ball moving across the sky", "a dark city street at night"]
    validated = pl.DataFrame({"caption": captions + captions[:1],
                              "caption_sha256": ["h1", "h2", "h1"],
                              "accepted": [True, True, True]})
    store = ContentStore(str(tmp_path))
    identity = TextIdentity(TINY.identity("text_encoder"), "float32", 226)
    table, stats = encode_captions(validated, store, identity,
                                   lambda: load_text_encoder(TINY, CPU, torch.float32), 8)
    assert stats.computed == 2 and len(table) == 2  # deduplicated by caption hash

    encoder = load_text_encoder(TINY, CPU, torch.float32)
    ids = encoder.tokenizer(captions, padding="max_length", max_length=226, truncation=True,
                            add_special_tokens=True, return_tensors="pt").input_ids
    assert ids.shape == (2, 226) and (ids[:, -1] == encoder.tokenizer.pad_token_id).all()
    with torch.no_grad():
        expected = encoder.model(ids)[0]  # no attention mask, last hidden state
    by_hash = {r["caption_sha256"]: r["embedding_key"] for r in table.iter_rows(named=True)}
    for i, h in enumerate(["h1", "h2"]):
        got = store.get_tensors(ArtifactKind.embeddings, by_hash[h])["prompt_embedding"]
        assert got.shape == profile.text_shape()
        torch.testing.assert_close(got, expected[i])


def test_second_encode_reuses_everything_without_loading_the_model(tmp_path):
    validated = pl.DataFrame({"caption": ["x"], "caption_sha256": ["hx"], "accepted": [True]})
    store = ContentStore(str(tmp_path))
    identity = TextIdentity(TINY.identity("text_encoder"), "float32", 226)
    encode_captions(validated, store, identity,
                    lambda: load_text_encoder(TINY, CPU, torch.float32), 8)

    def must_not_load():
        raise AssertionError("the encoder was loaded although every embedding exists")

    _, stats = encode_captions(validated, store, identity, must_not_load, 8)
    assert (stats.computed, stats.reused) == (0, 1)


def test_sampling_from_moments_matches_diffusers_distribution():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    moments = torch.randn(32, 3, 8, 12)
    ours = sample_from_moments(moments, torch.Generator().manual_seed(3))
    dist = DiagonalGaussianDistribution(moments.unsqueeze(0))
    theirs = dist.sample(torch.Generator().manual_seed(3))[0]
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("component", ["vae", "text_encoder"])
def test_identity_changes_with_local_weights(tmp_path, component):
    (tmp_path / component).mkdir()
    (tmp_path / component / "w.safetensors").write_bytes(b"1")
    source = WeightsSource(get_profile("cogvideox-5b"), str(tmp_path))
    before = source.identity(component)
    (tmp_path / component / "w.safetensors").write_bytes(b"2")
    assert source.identity(component) != before
    assert WeightsSource(get_profile("cogvideox-5b")).identity(component).startswith(
        "hub:THUDM/CogVideoX-5b@main")
