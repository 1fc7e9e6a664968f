"""Captions written, polished and checked: the captioners (a local image-text-to-text model,
an OpenAI-compatible endpoint), the frames they are shown, their prompts and the cheap checks
every written caption passes. Plain modules: nothing here knows of Dagster or of shards."""
