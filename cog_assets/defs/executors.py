"""The Dagster executor the `executor` setting names.

- `in_process` (default): every step in the run's process, one at a time: the process starts
  once and each model loads once per run;
- `multiprocess`: a process per step (Dagster's own default);
- `celery`: dagster-celery, each step a Celery task a worker runs (docs/distributed.md);
- `k8s`: dagster-k8s's `k8s_job_executor`, each step a Kubernetes Job (docs/kubernetes.md).

Celery workers are started with `dagster-celery worker start -A dagster_celery.app -y <yaml>`
(`celery_worker_config` gives that YAML's content) from the same broker and backend, with this
package importable and the same `COG_ASSETS_*` environment. dagster-celery and dagster-k8s are
imported only when chosen, so neither is needed otherwise.
"""

from __future__ import annotations

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from cog_assets.core.choices import Executor
from cog_assets.core.config import OrchestrationSettings


def celery_worker_config(orchestration: OrchestrationSettings) -> dict:
    """The `-y` YAML content for `dagster-celery worker start`: the executor's broker and
    backend, in the `execution: config:` block dagster-celery reads."""
    broker, backend = orchestration.celery_urls()
    return {"execution": {"config": {"broker": broker, "backend": backend}}}


def executor_for(orchestration: OrchestrationSettings) -> ExecutorDefinition:
    """The executor of the settings (validated: celery has its broker)."""
    name = orchestration.executor
    if name == Executor.in_process:
        return in_process_executor
    if name == Executor.multiprocess:
        return multiprocess_executor
    if name == Executor.celery:
        from dagster_celery import celery_executor

        broker, backend = orchestration.celery_urls()
        # `configured`: the run config needs no `execution` block, and the UI's launchpad
        # cannot point a run at another broker than the one the workers listen on.
        return celery_executor.configured({"broker": broker, "backend": backend})
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor
