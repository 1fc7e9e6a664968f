"""Op tags that make GPU steps ask Kubernetes for GPUs when run by dagster-k8s.

dagster-k8s reads `dagster-k8s/config` from op tags when it builds the pod of a step
(k8s_job_executor) or run (K8sRunLauncher), so the same code runs pod-per-step on a cluster.
"""

from __future__ import annotations

from cog_assets.core.config import OrchestrationSettings

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def gpu_op_tags(orchestration: OrchestrationSettings) -> dict[str, dict]:
    """Request `k8s_gpus` NVIDIA GPUs, tolerate the usual GPU taint, and pin to GPU nodes
    (`k8s_node_selector`, if set)."""
    count = str(orchestration.k8s_gpus)
    pod_spec: dict = {"tolerations": [GPU_TOLERATION]}
    selector = orchestration.node_selector()
    if selector:
        pod_spec["node_selector"] = selector
    return {K8S_CONFIG_TAG: {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": count},
                                           "requests": {"nvidia.com/gpu": count}}},
        "pod_spec_config": pod_spec,
    }}
