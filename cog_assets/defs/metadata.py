"""Turning stage results into the metadata a user reads in the Dagster UI."""

from __future__ import annotations

import numpy as np
import polars as pl
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

MAX_TABLE_ROWS = 200


def table_metadata(frame: pl.DataFrame, limit: int = MAX_TABLE_ROWS) -> MetadataValue:
    """A polars frame as a UI table (first `limit` rows; the full table is in the store)."""
    schema = TableSchema(columns=[TableColumn(name, "string") for name in frame.columns])
    records = [TableRecord({k: "" if v is None else str(v) for k, v in row.items()})
               for row in frame.head(limit).iter_rows(named=True)]
    return MetadataValue.table(records=records, schema=schema)


def reason_counts(rejects: pl.DataFrame) -> dict[str, int]:
    if rejects.is_empty():
        return {}
    counts = rejects.group_by("reason").len().sort("reason")
    return {row["reason"]: row["len"] for row in counts.iter_rows(named=True)}


HISTOGRAM_BINS = 10
BAR_WIDTH = 24


def score_histograms(table: pl.DataFrame, columns: tuple[str, ...]) -> str | None:
    """A text histogram per score column (its non-null values), as Markdown the UI shows."""
    sections = []
    for column in columns:
        values = table[column].drop_nulls().cast(pl.Float64).to_numpy()
        if not len(values):
            continue
        counts, edges = np.histogram(values, bins=HISTOGRAM_BINS)
        most = max(1, int(counts.max()))
        rows = [f"| {edges[i]:.4g} – {edges[i + 1]:.4g} | "
                f"{'█' * round(BAR_WIDTH * n / most)} {n} |" for i, n in enumerate(counts)]
        sections.append("\n".join([f"**{column}** ({len(values)} clips, median "
                                   f"{np.median(values):.4g})", "", "| range | clips |",
                                   "|---|---|", *rows]))
    return "\n\n".join(sections) or None


def score_medians(table: pl.DataFrame, columns: tuple[str, ...]) -> dict[str, float]:
    """`<score>_median` per measured score: numbers the UI plots across materializations."""
    out = {}
    for column in columns:
        values = table[column].drop_nulls()
        if len(values):
            out[f"{column}_median"] = round(float(values.median()), 4)
    return out
