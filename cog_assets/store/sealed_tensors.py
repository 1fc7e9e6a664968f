"""Safetensors files that carry the digest of their own data.

An artefact's digest is recorded when it is written, inside the file: the blake3 of the bytes
after the header goes into the header's `__metadata__` (`cog_assets.blake3`). So checking an
artefact needs no second object and no second request, which keeps reads cheap on S3:

- a full check reads the file once, parses the header and compares the digest of the data;
- a header check (for reuse that does not read the data) reads only the header and compares
  the file's size with the size the header describes, and that a digest is recorded at all.

Any damage (truncation, a flipped byte in header or data, a file that is not safetensors, a
file written without a digest) raises `DamagedTensors` with a reason a person can act on.
Other safetensors readers are unaffected: the digest is ordinary metadata.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from cog_assets.core.keys import DIGEST, digest_of

DIGEST_KEY = f"cog_assets.{DIGEST}"
LENGTH_BYTES = 8  # the little-endian u64 header length every safetensors file starts with
MAX_HEADER = 100 << 20  # safetensors refuses larger headers too
HEAD_READ = 64 << 10  # what a header check reads first; larger headers take a second read


class DamagedTensors(ValueError):
    """The bytes are not the safetensors file that was written; `reason` says how."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class HeaderIncomplete(Exception):
    """The header is longer than the bytes given; read `needed` bytes from the start."""

    def __init__(self, needed: int):
        super().__init__(needed)
        self.needed = needed


def seal(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
         ) -> bytes:
    """safetensors bytes of `tensors` with the digest of their data in the header."""
    # metadata=None, not {}: safetensors writes an invalid header for no tensors and an
    # empty metadata dict (`{},"__metadata__":{}}`), and a shard can have no clips
    raw = save_safetensors({k: v.contiguous() for k, v in tensors.items()},
                           metadata=dict(metadata) if metadata else None)
    header, start = parse_header(raw, len(raw), require_digest=False)
    body = memoryview(raw)[start:]
    header["__metadata__"] = {**header.get("__metadata__", {}), DIGEST_KEY: digest_of(body)}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors does
    return b"".join([len(text).to_bytes(LENGTH_BYTES, "little"), text, body])


def parse_header(head: bytes | memoryview, size: int, *, require_digest: bool = True
                 ) -> tuple[dict[str, Any], int]:
    """(header, offset of the data) from the first bytes of a file of `size` bytes.

    Raises DamagedTensors when the header is unreadable or describes a different size, and
    HeaderIncomplete when `head` stops inside the header."""
    if size < LENGTH_BYTES:
        raise DamagedTensors(f"{size} bytes: too short for a safetensors header")
    length = int.from_bytes(bytes(head[:LENGTH_BYTES]), "little")
    if length > MAX_HEADER or LENGTH_BYTES + length > size:
        raise DamagedTensors(f"the header claims {length} bytes in a file of {size} bytes")
    if len(head) < LENGTH_BYTES + length:
        raise HeaderIncomplete(LENGTH_BYTES + length)
    try:
        header = json.loads(bytes(head[LENGTH_BYTES:LENGTH_BYTES + length]))
        ends = [int(entry["data_offsets"][1]) for name, entry in header.items()
                if name != "__metadata__"]
        metadata = header.get("__metadata__") or {}
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise DamagedTensors(f"unreadable header: {type(exc).__name__}: {exc}") from None
    start = LENGTH_BYTES + length
    if start + max(ends, default=0) != size:
        raise DamagedTensors(f"{size} bytes, but the header describes "
                             f"{start + max(ends, default=0)}")
    if require_digest and not metadata.get(DIGEST_KEY):
        raise DamagedTensors("no digest recorded in the header (not written by this version "
                             "of cog-assets), so its content cannot be trusted")
    return header, start


def verify(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The header, after checking the size and the digest of the data against it."""
    header, start = parse_header(data, len(data))
    recorded = header["__metadata__"][DIGEST_KEY]
    actual = digest_of(memoryview(data)[start:])
    if actual != recorded:
        raise DamagedTensors(f"the data's {DIGEST} is {actual[:16]}…, the header records "
                             f"{recorded[:16]}… (bytes changed after writing)")
    return header


def unseal(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of verified bytes (DamagedTensors if they are not what was written)."""
    verify(data)
    try:
        return load_safetensors(data)
    except SafetensorError as exc:
        raise DamagedTensors(f"safetensors cannot read it: {exc}") from None

