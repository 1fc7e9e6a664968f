"""Reading a finished dataset back for training, with neither the VAE nor T5 loaded.

The dataset is what its catalog lists (`cog_assets.store.catalog`): shard folders the catalog does
not name (another shard count, a shard that lost its last clip) are never read. Building a
dataset checks every file it will read: present, of the published size, readable, holding the
clips its index lists, no clip id in two shards; `verify=True` also compares each file's
digest with the one recorded at publication. A bad shard is refused with an error naming the
file, or skipped with a warning when `skip_bad_shards=True`.

Conventions: a latent is a sample of the stored moments times the VAE scaling factor; with a
temporal patch of 2 (1.5) odd latent frame counts get a copy of the first latent frame
prepended, as CogVideo's finetune trainers do before the transformer. I2V image latents follow
`image_latent_scaling` (the README's "Image-latent scaling"): `inference` (default) divides by
the scaling factor where the VAE has `invert_scale_latents` (1.5), as diffusers' I2V pipeline
conditions at inference, and multiplies elsewhere; `multiply` always multiplies, as the older
cogvideox-factory and CogVideo finetune/ trainers do.
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset, Sampler

from cog_assets.core.choices import ImageLatentScaling
from cog_assets.core.clip_row import CLIP_COLUMNS, CLIP_TEXT_COLUMNS
from cog_assets.core.config import ModelSettings
from cog_assets.core.keys import file_digest
from cog_assets.core.profiles import ModelProfile, get_profile
from cog_assets.store.catalog import CatalogFile, DatasetError, ShardEntry, load_catalog

log = logging.getLogger(__name__)
DEFAULT_SCALING = ModelSettings.model_fields["image_latent_scaling"].default


class BadShardWarning(UserWarning):
    """A shard was left out of a dataset because one of its files cannot be served."""

def sample_from_moments(moments: torch.Tensor, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
    """A draw from the diagonal Gaussian [2C, ...] -> [C, ...], as diffusers' latent_dist.sample()."""
    mean, logvar = moments.float().chunk(2, dim=0)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    return mean + std * noise


def pad_latent_frames(latent: torch.Tensor, temporal_patch: int) -> torch.Tensor:
    """[C, F', h, w] -> F' a multiple of the patch, by repeating the first latent frame."""
    missing = (-latent.shape[1]) % temporal_patch
    if not missing:
        return latent
    return torch.cat([latent[:, :1].repeat(1, missing, 1, 1), latent], dim=1)


def clip_fields(row: dict) -> dict:
    """Where the clip comes from and its scores (layout.CLIP_COLUMNS), from its index row, in
    values a default collate accepts: an unmeasured score (or a column an older shard lacks)
    is NaN, a missing text is ""."""
    fields = {}
    for column in CLIP_COLUMNS:
        value = row.get(column)
        if column in CLIP_TEXT_COLUMNS:
            fields[column] = value if value is not None else ""
        else:
            fields[column] = float("nan") if value is None else float(value)
    return fields


class CogVideoXLatentDataset(Dataset):
    """The clips of a finished dataset: scaled latents, prompt embeddings and captions.

    `root` is the dataset directory (`<store>/datasets/<profile>`, holding `catalog.json`).
    Each item draws its latent sample with a generator seeded by (`seed`, item), so epochs can
    vary the seed; `sample=False` takes the mean instead. Raises DatasetError, naming the
    file, when a listed shard cannot be served (unless `skip_bad_shards`) or a clip id is in
    two shards.
    """

    def __init__(self, root: str | Path, profile: ModelProfile | str, seed: int = 0,
                 sample: bool = True, *,
                 image_latent_scaling: ImageLatentScaling | str = DEFAULT_SCALING,
                 verify: bool = False, skip_bad_shards: bool = False):
        self.root = Path(root)
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.seed = seed
        self.sample = sample
        self.image_latent_scaling = ImageLatentScaling(image_latent_scaling)
        self.catalog = load_catalog(self.root)
        self.skipped: dict[str, str] = {}  # shard -> why it was left out
        indexes = []
        for shard, entry in sorted(self.catalog.shards.items()):
            try:
                indexes.append(open_shard(self.root / shard, entry, verify))
            except DatasetError as exc:
                if not skip_bad_shards:
                    raise
                self.skipped[shard] = str(exc)
                log.error("skipping shard %s: %s", shard, exc)
                warnings.warn(f"skipping shard {shard} of {self.root}: {exc}", BadShardWarning,
                              stacklevel=2)
        self.index = (pl.concat(indexes, how="diagonal_relaxed").sort("shard_dir", "clip_id")
                      if indexes else pl.DataFrame({"clip_id": [], "shard_dir": []},
                                                   schema={"clip_id": pl.String,
                                                           "shard_dir": pl.String}))
        _refuse_duplicates(self.index)
        self._rows = self.index.to_dicts()

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def clip_ids(self) -> list[str]:
        return [row["clip_id"] for row in self._rows]

    @property
    def buckets(self) -> list[str]:
        """Each item's bucket (`FxHxW`), for BucketBatchSampler."""
        return [row["bucket"] for row in self._rows]

    def _tensor(self, i: int, file_column: str, name_column: str) -> torch.Tensor:
        row = self._rows[i]
        path = Path(row["shard_dir"]) / row[file_column]
        try:
            with safe_open(path, framework="pt") as handle:
                return handle.get_tensor(row[name_column])
        except (OSError, SafetensorError) as exc:
            raise DatasetError(f"{path}: cannot read {row[name_column]!r} of clip "
                               f"{row['clip_id']!r}: {exc}") from None

    def moments(self, i: int) -> torch.Tensor:
        return self._tensor(i, "latents_file", "clip_id")

    def prompt_embedding(self, i: int) -> torch.Tensor:
        return self._tensor(i, "embeds_file", "caption_sha256")

    def _draw(self, moments: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.sample:
            return sample_from_moments(moments, generator)
        return moments.float().chunk(2, dim=0)[0]

    def __getitem__(self, i: int) -> dict:
        row = self._rows[i]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        scale = self.profile.scaling_factor
        latent = self._draw(self.moments(i), generator) * scale
        item = {
            "clip_id": row["clip_id"], "caption": row["caption"], "bucket": row["bucket"],
            "latents": pad_latent_frames(latent, self.profile.temporal_patch),
            "prompt_embeds": self.prompt_embedding(i),
            **clip_fields(row),
        }
        if row.get("has_image_latent"):
            image = self._draw(self._tensor(i, "image_latents_file", "clip_id"), generator)
            item["image_latents"] = image * image_latent_factor(self.profile,
                                                                self.image_latent_scaling)
        return item


def image_latent_factor(profile: ModelProfile, scaling: ImageLatentScaling | str) -> float:
    """What an image-latent sample is multiplied by for training under `scaling`."""
    if ImageLatentScaling(scaling) == ImageLatentScaling.inference and \
            profile.invert_scale_latents:
        return 1.0 / profile.scaling_factor
    return profile.scaling_factor


def check_file(path: Path, published: CatalogFile, verify: bool) -> None:
    """The file is there with its published size (and, with `verify`, its digest)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing (the catalog lists it)") from None
    if size != published.bytes:
        raise DatasetError(f"{path}: {size} bytes, the catalog records {published.bytes} "
                           "(truncated or replaced)")
    if verify:
        actual = file_digest(path)
        if actual != published.digest:
            raise DatasetError(f"{path}: content differs from what was published (digest "
                               f"{actual[:16]}…, the catalog records {published.digest[:16]}…)")


def open_shard(shard_dir: Path, entry: ShardEntry, verify: bool) -> pl.DataFrame:
    """The shard's index, after checking every file a reader of it opens."""
    for published in [entry.index, *entry.files.values()]:
        check_file(shard_dir / published.name, published, verify)
    index_path = shard_dir / entry.index.name
    try:
        index = pl.read_parquet(index_path)
    except Exception as exc:  # noqa: BLE001 - polars raises several kinds for a bad file
        raise DatasetError(f"{index_path}: unreadable index: {exc}") from None
    if len(index) != entry.clips:
        raise DatasetError(f"{index_path}: {len(index)} clips, the catalog records {entry.clips}")
    needs = {"latents_file": "clip_id", "embeds_file": "caption_sha256",
             "image_latents_file": "clip_id"}
    for column, published in entry.files.items():
        path = shard_dir / published.name
        rows = index.filter(pl.col(column) == published.name) if column in index.columns \
            else index.clear()
        if column == "image_latents_file":
            rows = rows.filter(pl.col("has_image_latent"))
        wanted = set(rows[needs[column]].to_list())
        try:
            with safe_open(path, framework="pt") as handle:
                missing = wanted - set(handle.keys())
        except (OSError, SafetensorError) as exc:
            raise DatasetError(f"{path}: unreadable tensor file: {exc}") from None
        if missing:
            raise DatasetError(f"{path}: lacks {len(missing)} tensors its index lists, e.g. "
                               f"{sorted(missing)[:3]}")
    return index.with_columns(pl.lit(str(shard_dir)).alias("shard_dir"))


def _refuse_duplicates(index: pl.DataFrame) -> None:
    twice = index.filter(pl.col("clip_id").is_duplicated())
    if twice.is_empty():
        return
    clip = twice["clip_id"][0]
    where = sorted(twice.filter(pl.col("clip_id") == clip)["shard_dir"].to_list())
    raise DatasetError(f"clip {clip!r} is listed by more than one shard: {', '.join(where)} "
                       f"({twice['clip_id'].n_unique()} clip ids in all); the catalog serves "
                       "each clip once: re-publish the dataset")


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices that share a bucket, so every batch stacks into one tensor.

    Shuffles within and across buckets with `seed` (call `set_epoch` to vary it per epoch).
    """

    def __init__(self, buckets: list[str], batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0):
        self.buckets = buckets
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 10_007 + self.epoch)
        groups: dict[str, list[int]] = {}
        for index, bucket in enumerate(self.buckets):
            groups.setdefault(bucket, []).append(index)
        batches = []
        for bucket in sorted(groups):
            indices = groups[bucket]
            if self.shuffle:
                rng.shuffle(indices)
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start:start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
