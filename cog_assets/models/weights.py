"""Where a profile's weights come from and a short identity for them.

The identity goes into every artefact key, so changing weights, revision or dtype re-computes
exactly the artefacts they produced and nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cog_assets.core.profiles import ModelProfile, ProfileError
from cog_assets.models.tiny import TINY_IDENTITY


@dataclass(frozen=True)
class WeightsSource:
    """A profile plus where its weights live: a local diffusers-layout dir or a hub id."""

    profile: ModelProfile
    weights: str | None = None  # None: the profile's default hub id (or the seeded tiny models)
    revision: str | None = None

    @property
    def location(self) -> str | None:
        return self.weights or self.profile.hub_id

    def is_tiny(self) -> bool:
        return self.profile.name.startswith("tiny") and self.weights is None

    def identity(self, component: str) -> str:
        """Name + revision, or a fingerprint of a local directory's files for `component`."""
        if self.is_tiny():
            return f"{TINY_IDENTITY}/{component}"
        location = self.location
        if location is None:
            raise ValueError(f"profile {self.profile.name} has no weights: set a directory or hub id")
        local = Path(location) / component
        if local.is_dir():
            return f"dir:{directory_fingerprint(local)}/{component}"
        return f"hub:{location}@{self.revision or 'main'}/{component}"


def directory_fingerprint(directory: Path) -> str:
    """Names, sizes and the head and tail of every file: cheap, and changes with the weights."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(directory).as_posix()}:{size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), 2)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


# -- what the weights say, against the profile ------------------------------------------------

class WeightsMismatch(ProfileError):
    """Weights whose configuration disagrees with the named model profile (refused: exit 2)."""


# profile field -> (component, the key of its config that says it, its type); the tokenizer's
# from tokenizer_config.json, the others from config.json
WEIGHT_FACTS: dict[str, tuple[str, str, type]] = {
    "scaling_factor": ("vae", "scaling_factor", float),
    "invert_scale_latents": ("vae", "invert_scale_latents", bool),
    "latent_channels": ("vae", "latent_channels", int),
    "temporal_compression": ("vae", "temporal_compression_ratio", int),
    "text_dim": ("text_encoder", "d_model", int),
    "text_max_length": ("tokenizer", "model_max_length", int),
}
# what a config that does not name a fact means by it (diffusers' default)
DEFAULTS = {"invert_scale_latents": False}
UNSET_MAX_LENGTH = 10**6  # transformers writes ~1e30 for a tokenizer with no maximum
CONFIG_FILES = {"vae": "config.json", "text_encoder": "config.json",
                "tokenizer": "tokenizer_config.json"}


def weight_facts(configs: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """The profile fields the weights' configs say ({component: config}; a component or a key
    not given says nothing)."""
    facts: dict[str, Any] = {}
    for field, (component, key, kind) in WEIGHT_FACTS.items():
        config = configs.get(component)
        if config is None:
            continue
        value = config.get(key, DEFAULTS.get(field))
        if value is None or (field == "text_max_length" and value >= UNSET_MAX_LENGTH):
            continue
        facts[field] = kind(value)
    return facts


def reconcile(profile: ModelProfile, facts: Mapping[str, Any], where: str) -> ModelProfile:
    """The profile the weights are used with: a tiny profile takes the weights' values (its
    toy numbers describe the seeded models only); a named model profile must agree with them,
    else WeightsMismatch names every disagreement, both values and where they come from."""
    differ = {f: v for f, v in facts.items() if _differs(getattr(profile, f), v)}
    if not differ:
        return profile
    if profile.name.startswith("tiny"):
        return dataclasses.replace(profile, **differ)
    lines = [f"{WEIGHT_FACTS[f][0]} {WEIGHT_FACTS[f][1]} is {v!r} in the weights, "
             f"{getattr(profile, f)!r} in profile {profile.name}" for f, v in differ.items()]
    raise WeightsMismatch(f"the weights {where} do not fit profile {profile.name}: "
                          + "; ".join(lines) + " (choose the profile of these weights, or "
                          "the weights of this profile)")


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) > 1e-9 * max(1.0, abs(float(a)))
    return a != b


def local_configs(source: WeightsSource) -> dict[str, dict] | None:
    """The components' configs of a local weights directory (None: not a local directory;
    a component without its file says nothing)."""
    if source.is_tiny() or source.location is None or not Path(source.location).is_dir():
        return None
    configs: dict[str, dict] = {}
    for component, name in CONFIG_FILES.items():
        path = Path(source.location) / component / name
        if path.is_file():
            try:
                configs[component] = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise WeightsMismatch(f"{path}: unreadable configuration: {exc}") from None
    return configs


def hub_configs(source: WeightsSource) -> dict[str, dict]:
    """The components' configs of hub weights (downloads the small JSON files only)."""
    from huggingface_hub import hf_hub_download

    configs = {}
    for component, name in CONFIG_FILES.items():
        path = hf_hub_download(source.location, f"{component}/{name}", revision=source.revision)
        configs[component] = json.loads(Path(path).read_text(encoding="utf-8"))
    return configs


def effective_profile(source: WeightsSource) -> ModelProfile:
    """The profile these weights are used with (see `reconcile`), from their configs where
    they can be read without loading a model: a local directory's files; a tiny profile's hub
    weights (their configs downloaded). A named profile's hub weights are checked when they
    load (`check_loaded`)."""
    if source.is_tiny() or source.location is None:
        return source.profile
    configs = local_configs(source)
    if configs is None:
        location = source.location
        if location.startswith(("/", "./", "../", "~")) or Path(location).exists():
            raise WeightsMismatch(f"the weights {location} are not a directory (a local "
                                  "diffusers-layout folder with vae/, text_encoder/, "
                                  "tokenizer/, or a hub id)")
        if not source.profile.name.startswith("tiny"):
            return source.profile
        try:
            configs = hub_configs(source)
        except Exception as exc:  # noqa: BLE001 - offline, unknown id: say which and why
            raise WeightsMismatch(f"the weights {location}: their configuration could not "
                                  f"be read from the hub ({type(exc).__name__}: {exc})"
                                  ) from None
    return reconcile(source.profile, weight_facts(configs), source.location)


def check_loaded(source: WeightsSource, component: str, config: Mapping[str, Any]) -> None:
    """Refuse a loaded component whose configuration disagrees with the profile in use."""
    if source.is_tiny():
        return
    reconcile(source.profile, weight_facts({component: config}),
              f"{source.location} ({component})")
