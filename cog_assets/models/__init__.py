"""The real diffusers VAE and transformers T5 encoder, loaded per profile."""
