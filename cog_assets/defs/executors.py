"""Which Dagster executor runs the steps of a run, chosen by `COG_ASSETS_EXECUTOR`.

- `multiprocess` (default, or unset): none set, Dagster's default: a process per step;
- `in_process`: every step in the run's own process, one at a time;
- `celery`: dagster-celery, each step a Celery task a worker runs (docs/distributed.md);
- `k8s`: dagster-k8s's `k8s_job_executor`, each step a Kubernetes Job (docs/kubernetes.md).

`celery` reads the broker from `COG_ASSETS_CELERY_BROKER` (required, e.g.
`redis://redis-host:6379/0`) and the result backend from `COG_ASSETS_CELERY_BACKEND` (default:
the broker URL for a Redis broker, else `rpc://`). Workers are started with
`dagster-celery worker start -A dagster_celery.app -y <yaml>` from the same broker and backend
(`celery_worker_config` gives that YAML's content) and with this package importable and the same
`COG_ASSETS_*` environment: a worker rebuilds the job from `cog_assets.defs.executors` (or the
code location's module) to run its step.

dagster-celery and dagster-k8s are imported only when chosen, so neither is needed otherwise.

The module also serves, for workers and scripts, the code location with the executor of the
environment (`definitions_from_env`, `prepare_shards_job_from_env`), usable as a
reconstructable job: `build_reconstructable_job("cog_assets.defs.executors",
"prepare_shards_job_from_env")`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dagster import Definitions, ExecutorDefinition, in_process_executor

EXECUTOR_ENV = "COG_ASSETS_EXECUTOR"
BROKER_ENV = "COG_ASSETS_CELERY_BROKER"
BACKEND_ENV = "COG_ASSETS_CELERY_BACKEND"
EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")
JOB_NAME = "prepare_shards"


class ExecutorConfigError(ValueError):
    """COG_ASSETS_EXECUTOR (or its companion variables) names something that cannot run."""


def celery_urls(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(broker, backend) for the celery executor and its workers, from the environment."""
    env = os.environ if env is None else env
    broker = env.get(BROKER_ENV, "").strip()
    if not broker:
        raise ExecutorConfigError(
            f"{EXECUTOR_ENV}=celery needs {BROKER_ENV}, the Celery broker URL the workers "
            "listen on, e.g. redis://127.0.0.1:6379/0")
    backend = env.get(BACKEND_ENV, "").strip()
    if not backend:
        backend = broker if broker.startswith(("redis://", "rediss://")) else "rpc://"
    return broker, backend


def celery_worker_config(env: Mapping[str, str] | None = None) -> dict:
    """The `-y` YAML content for `dagster-celery worker start`: the executor's broker and
    backend, in the `execution: config:` block dagster-celery reads."""
    broker, backend = celery_urls(env)
    return {"execution": {"config": {"broker": broker, "backend": backend}}}


def executor_from_env(env: Mapping[str, str] | None = None) -> ExecutorDefinition | None:
    """The executor `COG_ASSETS_EXECUTOR` names; None for `multiprocess` (Dagster's default).

    Raises ExecutorConfigError for an unknown name or a celery executor without a broker, so a
    code location that cannot run its steps fails when it loads, not in the middle of a run.
    """
    env = os.environ if env is None else env
    name = env.get(EXECUTOR_ENV, "").strip().lower().replace("-", "_") or "multiprocess"
    if name == "multiprocess":
        return None
    if name == "in_process":
        return in_process_executor
    if name == "celery":
        from dagster_celery import celery_executor

        broker, backend = celery_urls(env)
        # `configured`: the run config needs no `execution` block, and the UI's launchpad
        # cannot point a run at another broker than the one the workers listen on.
        return celery_executor.configured({"broker": broker, "backend": backend})
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ExecutorConfigError(f"{EXECUTOR_ENV}={env.get(EXECUTOR_ENV)!r}: expected one of "
                              f"{', '.join(EXECUTORS)}")


def definitions_from_env() -> Definitions:
    """`cog_assets.definitions` with the executor of the environment (Settings.from_env)."""
    # Imported here: cog_assets.defs.definitions imports this module for executor_from_env.
    from cog_assets.defs.definitions import build_definitions
    from cog_assets.settings import Settings

    defs = build_definitions(Settings.from_env())
    executor = executor_from_env()
    if defs.executor is None and executor is not None:
        defs = Definitions.merge(defs, Definitions(executor=executor))
    return defs


def prepare_shards_job_from_env():
    """The shard job with the environment's executor, as a reconstructable factory: the run's
    process and every celery worker rebuild it from their COG_ASSETS_* environment."""
    return definitions_from_env().resolve_job_def(JOB_NAME)
