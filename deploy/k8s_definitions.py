"""The cog-assets code location for Kubernetes: every step of a run in its own pod.

Served by the user code deployment in deploy/helm-values.yaml:

    dagster api grpc --python-file /opt/cog-assets/k8s_definitions.py

Same assets, checks, sensor, jobs and COG_ASSETS_* settings as `cog_assets.definitions`; the only
difference is the default executor, dagster-k8s's `k8s_job_executor`. That executor is what reads
each op's `dagster-k8s/config` tag when it builds the step's Kubernetes Job, so `vae_latents` and
`t5_embeddings` (cog_assets/defs/kubernetes.py: nvidia.com/gpu limits, GPU tolerations, optional
node selector) get GPU pods while the other steps run on CPU pods. With the default executor a run
is one pod and those op tags are not used.
"""

from dagster import Definitions
from dagster_k8s import k8s_job_executor

from cog_assets.defs.definitions import build_definitions
from cog_assets.settings import Settings

defs = Definitions.merge(build_definitions(Settings.from_env()),
                         Definitions(executor=k8s_job_executor))
