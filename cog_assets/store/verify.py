"""`cog-assets verify`: a store checked against the digests recorded when it was written.

What is checked, with a full read of each file:

- each dataset's catalog, and every file its live shards serve (index, tensor files,
  first-frame PNGs, rejects) against the size and digest the catalog records;
- the artefacts those shards' indexes reference: latents and embeddings must be there and
  whole; frames, a cache a run decodes again when needed, must be whole where present;
- without a narrowing `profiles`, every artefact under `cas/` as well (digest in its header;
  PNGs by their chunk CRCs; a reference to a shard file by the digest it records of each
  tensor there; a clip file by the digest its record holds).

Nothing is changed: damaged files are reported with their key and path (a run quarantines and
recomputes them). Shard folders the catalog does not list are not served and not checked.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import polars as pl
from PIL import Image

from cog_assets.core.choices import ArtifactKind
from cog_assets.store import layout, references
from cog_assets.store.catalog import CatalogFile, DatasetError, read_catalog
from cog_assets.store.clip_files import verify_clip
from cog_assets.store.content_store import ContentStore
from cog_assets.store.footprint import is_temporary
from cog_assets.store.sealed_tensors import DamagedTensors


@dataclass(frozen=True)
class Finding:
    state: str  # "corrupt" or "missing"
    path: str
    detail: str

    def line(self) -> str:
        return f"{self.state.upper():8} {self.path}: {self.detail}"


@dataclass
class VerifyReport:
    artifacts: int = 0  # content-addressed artefacts read and checked
    files: int = 0  # catalog and shard files read and checked
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        counts = {state: sum(f.state == state for f in self.findings)
                  for state in ("corrupt", "missing")}
        return (f"verified {self.artifacts} artefacts and {self.files} dataset files: "
                f"{counts['corrupt']} corrupt, {counts['missing']} missing")


def dataset_profiles(store: ContentStore) -> list[str]:
    """The profiles with a dataset (a catalog) in the store."""
    root = store.path("datasets")
    if not store.exists(root):
        return []
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(root, detail=False)]
    return sorted(n for n in names if store.exists(store.path(layout.catalog_path(n))))


def verify_store(store: ContentStore, profiles: list[str] | None = None) -> VerifyReport:
    """Check the datasets of `profiles` (default: all, and then every artefact too)."""
    report = VerifyReport()
    checked: set[tuple[str, str]] = set()
    for profile in (profiles if profiles is not None else dataset_profiles(store)):
        _verify_dataset(store, profile, report, checked)
    if profiles is None:
        _verify_all_artifacts(store, report, checked)
    return report


def _verify_dataset(store: ContentStore, profile: str, report: VerifyReport,
                    checked: set[tuple[str, str]]) -> None:
    dataset_dir = store.path(layout.dataset_dir(profile))
    catalog_path = store.local_path(store.path(layout.catalog_path(profile)))
    try:
        catalog = read_catalog(store, dataset_dir)
    except DatasetError as exc:
        report.findings.append(Finding("corrupt", catalog_path, str(exc)))
        return
    report.files += 1
    if catalog is None:
        report.findings.append(Finding("missing", catalog_path,
                                       f"no catalog: nothing of profile {profile} published"))
        return
    for shard, entry in sorted(catalog.shards.items()):
        shard_dir = f"{dataset_dir}/{shard}"
        files = [*entry.served(), *([entry.rejects] if entry.rejects else [])]
        whole = [_check_file(store, f"{shard_dir}/{f.name}", f, report) for f in files]
        if whole[0]:  # the index (first) is whole: check the artefacts it references
            index = pl.read_parquet(io.BytesIO(store.read_bytes(f"{shard_dir}/{entry.index.name}")))
            _verify_references(store, index, report, checked)


def _check_file(store: ContentStore, path: str, published: CatalogFile,
                report: VerifyReport) -> bool:
    report.files += 1
    data = store.read_bytes(path) if store.exists(path) else None
    problem = published.problem(data)
    if problem is not None:
        report.findings.append(Finding("missing" if data is None else "corrupt",
                                       store.local_path(path), problem))
    return problem is None


def _verify_references(store: ContentStore, index: pl.DataFrame, report: VerifyReport,
                       checked: set[tuple[str, str]]) -> None:
    required = {"latent_key": ArtifactKind.latents, "embedding_key": ArtifactKind.embeddings}
    for column, kind in [*required.items(), ("frames_key", ArtifactKind.frames)]:
        if column not in index.columns:
            continue
        for key in index[column].drop_nulls().unique().to_list():
            if (kind, key) in checked:
                continue
            checked.add((kind, key))
            result = store.check_artifact(kind, key, full=True)
            if result.missing and column not in required:
                continue  # frames are a cache: decoded again when a run needs them
            report.artifacts += 1
            if not result.ok:
                report.findings.append(Finding("missing" if result.missing else "corrupt",
                                               store.local_path(result.path),
                                               f"{kind} {key}: {result.problem}"))


def _verify_all_artifacts(store: ContentStore, report: VerifyReport,
                          checked: set[tuple[str, str]]) -> None:
    root = store.path("cas")
    if not store.exists(root):
        return
    for path in sorted(store.fs.find(root)):
        relative = path[len(root) + 1:].split("/")
        if len(relative) != 3 or is_temporary(relative[2]):
            continue  # not an artefact (a killed run's temporary, a stray file)
        kind, name = relative[0], relative[2]
        key, _, suffix = name.partition(".")
        if (kind, key) in checked and suffix in ("safetensors", layout.REF_SUFFIX[1:]):
            continue
        if kind == ArtifactKind.clip_file and suffix != "json":
            continue  # a clip file and its PNGs are checked through their record
        report.artifacts += 1
        if kind == ArtifactKind.clip_file:
            problem = verify_clip(store, key)
        elif suffix == "png":
            problem = png_problem(store.read_bytes(path))
        elif "." + suffix == layout.REF_SUFFIX:
            problem = _ref_problem(store, kind, key)
        else:
            problem = store.check_artifact(kind, key, full=True).problem
        if problem is not None:
            report.findings.append(Finding("corrupt", store.local_path(path),
                                           f"{kind} {key}: {problem}"))


def _ref_problem(store: ContentStore, kind: str, key: str) -> str | None:
    """What is wrong with a reference: unreadable, its home gone, or bytes not the ones it
    records (None if nothing)."""
    try:
        homes = references.read_ref(store, kind, key)
        if homes is not None:
            references.resolve(store, homes)
    except FileNotFoundError as exc:
        return f"the shard file it lives in is gone ({exc})"
    except DamagedTensors as exc:
        return exc.reason
    return None


def png_problem(data: bytes) -> str | None:
    """What is wrong with a PNG's bytes (its chunk CRCs, its zlib stream), None if nothing."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for damaged files
        return f"not a readable PNG: {type(exc).__name__}: {exc}"
    return None
