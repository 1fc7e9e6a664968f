"""Turning the user's device and dtype words into torch objects."""

from __future__ import annotations

import torch

from cog_assets.core.choices import Dtype

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` takes CUDA when present, else the CPU; `cuda:N` must name a visible GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} GPUs visible")
    return device


def resolve_dtype(name: Dtype | str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on a GPU (what CogVideoX trains in) and fp32 on a CPU (bf16 is slow there)."""
    if Dtype(name) == Dtype.auto:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[str(name)]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
