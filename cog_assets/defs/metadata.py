"""Turning stage results into the metadata a user reads in the Dagster UI."""

from __future__ import annotations

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

