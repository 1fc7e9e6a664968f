"""The one module that reaches into Dagster's private API, and what it relies on there.

A Dagster release that moves or changes one of these names fails here, naming the Dagster
version, rather than somewhere deep in a backfill."""

from __future__ import annotations

import ast
import builtins
import importlib
import sys
from pathlib import Path

import dagster
import pytest
from dagster import (
    AssetKey,
    DagsterRunStatus,
    Definitions,
    asset,
    instance_for_test,
    materialize,
)

PACKAGE = Path(__file__).resolve().parents[2] / "cog_assets"
ADAPTER = "cog_assets.defs.dagster_internals"
VERSION = f"dagster {dagster.__version__}"


def private_imports(path: Path) -> list[str]:
    """The `dagster._…` modules a source file imports (lazy and type-checking imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [n for n in names if n.startswith("dagster._")]
    return found


def test_only_the_adapter_imports_dagsters_private_api():
    offenders = {str(p.relative_to(PACKAGE.parent)): private_imports(p)
                 for p in PACKAGE.rglob("*.py") if private_imports(p)}
    assert set(offenders) == {"cog_assets/defs/dagster_internals.py"}, offenders


def test_the_run_statuses_dagster_calls_finished_are_the_final_ones():
    from cog_assets.defs.dagster_internals import FINISHED_STATUSES

    assert set(FINISHED_STATUSES) == {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE,
                                      DagsterRunStatus.CANCELED}, VERSION


def test_stale_status_resolver_says_missing_then_fresh_then_stale():
    from cog_assets.defs.dagster_internals import StaleStatus, stale_status_resolver

    @asset(code_version="1")
    def thing() -> int:
        return 1

    with instance_for_test() as instance:
        graph = Definitions(assets=[thing]).resolve_asset_graph()
        key = AssetKey("thing")
        assert stale_status_resolver(instance, graph).get_status(key) == StaleStatus.MISSING, VERSION
        assert materialize([thing], instance=instance).success
        assert stale_status_resolver(instance, graph).get_status(key) == StaleStatus.FRESH, VERSION

        @asset(name="thing", code_version="2")
        def changed() -> int:
            return 2

        graph = Definitions(assets=[changed]).resolve_asset_graph()
        assert stale_status_resolver(instance, graph).get_status(key) == StaleStatus.STALE, VERSION


def test_a_dagster_that_moved_a_name_fails_at_import_naming_its_version(monkeypatch):
    real_import = builtins.__import__

    def without_time(name, *args, **kwargs):
        if name == "dagster._time":
            raise ImportError("No module named 'dagster._time'")
        return real_import(name, *args, **kwargs)

    saved = sys.modules.pop(ADAPTER)
    monkeypatch.setattr(builtins, "__import__", without_time)
    try:
        with pytest.raises(ImportError, match=f"dagster {dagster.__version__}.*dagster._time"):
            importlib.import_module(ADAPTER)
    finally:
        monkeypatch.undo()
        sys.modules[ADAPTER] = saved
