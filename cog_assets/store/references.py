"""Artefacts whose home is a published shard's file: the reference the store keeps for them.

A finished shard holds its clips' latents and its captions' embeddings in its own tensor files
(`latents.<v>.safetensors`, ...), which a trainer reads without the store. Keeping the same
tensors under their keys in `cas/` as well would store every latent twice, so once a shard is
published its artefacts are *adopted*: the store writes, under each key,

    cas/<kind>/<key[:2]>/<key>.ref.json
        {"format": ..., "tensors": {"moments": {"file": ..., "name": ..., "digest": ...}}}

naming, for each tensor of the artefact, the shard file that holds it (relative to the store's
root, so a store can move), the tensor's name in that file and the blake3 of its bytes; then
the full copy is removed. `ContentStore` follows a reference where the full copy is missing,
with two range reads (the file's header, then the tensor's bytes) and a digest check of the
bytes, so reuse, `verify` and quarantine work as before, on local disk and object stores alike.

A shard file is removed only after the artefacts it is home to have been *evicted*: written
back under their keys in full (the clips a new version of the shard dropped, a retired shard
whose clips a re-shard still needs), so the pipeline itself never loses a computed artefact.
`cog-assets gc` is what removes artefacts no live shard references.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.keys import DIGEST, digest_of
from cog_assets.store import layout
from cog_assets.store.sealed_tensors import (
    HEAD_READ,
    LENGTH_BYTES,
    MAX_HEADER,
    DamagedTensors,
)

REF_FORMAT = "cog-assets-ref/1"


class StoreFiles(Protocol):
    """What reading a reference needs of a store (ContentStore has it): its filesystem and
    how it names paths. Kept this small so the content store can follow references."""

    fs: object

    def path(self, relative: str) -> str: ...

    def read_bytes(self, path: str) -> bytes: ...

# index column -> the kind of artefact it keys that lives in the shard's files once published
HOMED_KEYS = {"latent_key": ArtifactKind.latents, "embedding_key": ArtifactKind.embeddings}


@dataclass(frozen=True)
class TensorHome:
    """Where one tensor of an artefact lives: a sealed safetensors file and its name there."""

    file: str  # relative to the store's root
    name: str
    digest: str  # blake3 of the tensor's bytes


def ref_bytes(homes: Mapping[str, TensorHome]) -> bytes:
    return json.dumps({"format": REF_FORMAT,
                       "tensors": {n: asdict(h) for n, h in sorted(homes.items())}},
                      sort_keys=True).encode("utf-8")


def parse_ref(data: bytes) -> dict[str, TensorHome]:
    """The tensors' homes a reference names; DamagedTensors when it is not one."""
    try:
        value = json.loads(data)
        if value.get("format") != REF_FORMAT:
            raise ValueError(f"format {value.get('format')!r}, expected {REF_FORMAT!r}")
        homes = {name: TensorHome(**home) for name, home in value["tensors"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DamagedTensors(f"unreadable reference: {type(exc).__name__}: {exc}") from None
    if not homes:
        raise DamagedTensors("unreadable reference: it names no tensor")
    return homes


def read_ref(store: StoreFiles, kind: str, key: str) -> dict[str, TensorHome] | None:
    """The homes of the artefact's tensors, None when the store keeps no reference for it."""
    try:
        data = store.read_bytes(store.path(layout.ref_path(kind, key)))
    except FileNotFoundError:
        return None
    return parse_ref(data)


def tensor_digests(sealed: bytes) -> dict[str, str]:
    """The digest of each tensor's bytes in a safetensors file: what a reference records."""
    header, start = _parse_header(sealed)
    view = memoryview(sealed)
    return {name: digest_of(view[start + a:start + b]) for name, (a, b) in
            ((n, e["data_offsets"]) for n, e in header.items() if n != "__metadata__")}


def resolve(store: StoreFiles, homes: Mapping[str, TensorHome]) -> dict[str, torch.Tensor]:
    """The artefact's tensors, read from their homes and checked against their digests.

    FileNotFoundError when a home is gone (its shard was replaced meanwhile: read the
    reference again); DamagedTensors when the bytes are not the ones referenced."""
    headers: dict[str, tuple[dict, int]] = {}
    tensors = {}
    for name, home in homes.items():
        path = store.path(home.file)
        if path not in headers:
            headers[path] = _read_header(store, path)
        header, start = headers[path]
        entry = _entry(header, home)
        a, b = entry["data_offsets"]
        raw = store.fs.cat_file(path, start=start + a, end=start + b)
        if len(raw) != b - a:
            raise DamagedTensors(f"{home.file}: tensor {home.name!r} is cut short "
                                 f"({len(raw)} of {b - a} bytes)")
        actual = digest_of(raw)
        if actual != home.digest:
            raise DamagedTensors(f"{home.file}: the {DIGEST} of tensor {home.name!r} is "
                                 f"{actual[:16]}…, the reference records {home.digest[:16]}…")
        tensors[name] = _tensor(entry, raw)
    return tensors


def check_homes(store: StoreFiles, homes: Mapping[str, TensorHome]) -> None:
    """A check without reading tensor data: each home's header lists the tensor, and the
    file is long enough to hold it. Raises as `resolve`."""
    for home in homes.values():
        path = store.path(home.file)
        header, start = _read_header(store, path)
        end = start + _entry(header, home)["data_offsets"][1]
        size = store.fs.size(path)
        if size < end:
            raise DamagedTensors(f"{home.file}: {size} bytes, tensor {home.name!r} ends at {end}")


def _parse_header(head: bytes) -> tuple[dict, int]:
    if len(head) < LENGTH_BYTES:
        raise DamagedTensors(f"{len(head)} bytes: too short for a safetensors header")
    length = int.from_bytes(bytes(head[:LENGTH_BYTES]), "little")
    if length > MAX_HEADER or len(head) < LENGTH_BYTES + length:
        raise DamagedTensors(f"the header claims {length} bytes in {len(head)}")
    try:
        header = json.loads(bytes(head[LENGTH_BYTES:LENGTH_BYTES + length]))
    except ValueError as exc:
        raise DamagedTensors(f"unreadable header: {exc}") from None
    if not isinstance(header, dict):
        raise DamagedTensors("unreadable header: not a JSON object")
    return header, LENGTH_BYTES + length


def _read_header(store: StoreFiles, path: str) -> tuple[dict, int]:
    head = store.fs.cat_file(path, start=0, end=HEAD_READ)
    if len(head) >= LENGTH_BYTES:
        needed = LENGTH_BYTES + int.from_bytes(head[:LENGTH_BYTES], "little")
        if len(head) < needed <= MAX_HEADER:
            head = store.fs.cat_file(path, start=0, end=needed)
    return _parse_header(head)


def _entry(header: dict, home: TensorHome) -> dict:
    entry = header.get(home.name)
    try:
        a, b = (int(x) for x in entry["data_offsets"])
        if not 0 <= a <= b:
            raise ValueError(f"offsets {a}, {b}")
        return {**entry, "data_offsets": (a, b)}
    except (TypeError, KeyError, ValueError) as exc:
        problem = "holds no tensor" if entry is None else f"has a bad entry ({exc}) for"
        raise DamagedTensors(f"{home.file} {problem} {home.name!r}") from None


def _tensor(entry: dict, raw: bytes) -> torch.Tensor:
    """The tensor of one header entry from its bytes, decoded by safetensors itself."""
    text = json.dumps({"t": {"dtype": entry["dtype"], "shape": entry["shape"],
                             "data_offsets": [0, len(raw)]}}).encode("utf-8")
    text += b" " * (-len(text) % 8)
    try:
        return load_safetensors(len(text).to_bytes(LENGTH_BYTES, "little") + text + raw)["t"]
    except SafetensorError as exc:
        raise DamagedTensors(f"safetensors cannot read the tensor: {exc}") from None
