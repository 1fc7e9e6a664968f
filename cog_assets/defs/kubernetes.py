"""Op tags that make GPU steps ask Kubernetes for GPUs when run by dagster-k8s.

dagster-k8s reads `dagster-k8s/config` from op tags when it builds the pod of a step
(k8s_job_executor) or run (K8sRunLauncher), so the same code runs pod-per-step on a cluster.
"""

from __future__ import annotations

import json
import os

K8S_CONFIG_TAG = "dagster-k8s/config"


def gpu_op_tags(gpus: int | None = None, node_selector: dict[str, str] | None = None,
                tolerations: list[dict] | None = None) -> dict[str, dict]:
    """Request `gpus` NVIDIA GPUs (env COG_ASSETS_K8S_GPUS, default 1), tolerate the usual GPU
    taint, and pin to GPU nodes (env COG_ASSETS_K8S_NODE_SELECTOR as JSON, if set)."""
    count = gpus if gpus is not None else int(os.environ.get("COG_ASSETS_K8S_GPUS", "1"))
    selector = node_selector
    if selector is None and os.environ.get("COG_ASSETS_K8S_NODE_SELECTOR"):
        selector = json.loads(os.environ["COG_ASSETS_K8S_NODE_SELECTOR"])
    pod_spec: dict = {"tolerations": tolerations if tolerations is not None else [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    if selector:
        pod_spec["node_selector"] = selector
    return {K8S_CONFIG_TAG: {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": str(count)},
                                           "requests": {"nvidia.com/gpu": str(count)}}},
        "pod_spec_config": pod_spec,
    }}
