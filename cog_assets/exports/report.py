"""What an export wrote, so a caller can log it and start the trainer without re-deriving paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ExportReport:
    """One finished export.

    `files` lists every file written (absolute paths). `trainer_args` holds one command-line
    argument list per trainer run the export is meant for (cogvideox-factory: one run;
    CogVideo `finetune/`: one run per (F, H, W) bucket, since that trainer takes a single
    `--train_resolution`).
    """

    out_dir: Path
    clips: int
    files: tuple[Path, ...]
    trainer_args: tuple[tuple[str, ...], ...] = field(default=())
