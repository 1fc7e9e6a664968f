"""What an export wrote, and the trainer arguments it needs, written beside it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import torch

TRAINER_ARGS_FILE = "trainer_args.txt"

# `--mixed_precision` of both trainers (accelerate's words) for the dtype their tensors hold
MIXED_PRECISION = {torch.float32: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class ExportReport:
    """One finished export.

    `files` lists every file written (absolute paths through `out_dir`, the link the trainer
    is pointed at). `trainer_args` holds one command-line argument list per trainer run the
    export is meant for (cogvideox-factory: one run; CogVideo `finetune/`: one run per
    (F, H, W) bucket, since that trainer takes a single `--train_resolution`); `notes` what
    a person must know besides; both are in `args_file` too.
    """

    out_dir: Path
    clips: int
    files: tuple[Path, ...]
    trainer_args: tuple[tuple[str, ...], ...] = field(default=())
    notes: tuple[str, ...] = ()
    args_file: Path | None = None

    def args_text(self) -> str:
        """The trainer arguments as the args file holds them: notes, then a line per run."""
        return trainer_args_text(self.trainer_args, self.notes)


def trainer_args_text(runs: tuple[tuple[str, ...], ...], notes: tuple[str, ...]) -> str:
    lines = [f"# {note}" for note in notes]
    lines += [shlex.join(run) for run in runs]
    return "\n".join(lines) + "\n"


def mixed_precision(dtype: torch.dtype) -> str:
    return MIXED_PRECISION[dtype]
