"""GPU steps on Kubernetes, and the instance / deployment configuration files.

The Kubernetes Jobs are built by dagster-k8s's own code from the op tags of the real asset
definitions: directly (`construct_dagster_k8s_job`) and through the `k8s_job_executor`'s step
handler, which sends the Job to a Kubernetes API stand-in on 127.0.0.1 that records the request.
The YAML files are checked by Dagster itself: the instance config schema, a real instance loaded
from the repository's dagster.yaml, and dagster-k8s's run launcher config.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRun, instance_for_test
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from kubernetes.client import ApiClient

from cog_assets.core.config import Settings
from cog_assets.defs.build import build_definitions
from cog_assets.defs.kubernetes import K8S_CONFIG_TAG

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
IMAGE = "registry.example.com/cog-assets:0.1.0"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# the shard assets of the default settings, by name
ASSETS = {a.key.to_user_string(): a for a in build_definitions(Settings.of()).assets
          if a.key.to_user_string() != "uploads"}


def manifest(job) -> dict:
    """The V1Job as the JSON the Kubernetes API receives (camelCase keys)."""
    return ApiClient().sanitize_for_serialization(job)


def step_job(tags) -> dict:
    """The step's Kubernetes Job as dagster-k8s builds it from the op's tags."""
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image=IMAGE, dagster_home="/opt/dagster/dagster_home",
                            instance_config_map="dagster-instance"),
        args=["dagster", "api", "execute_step"], job_name="dagster-step-test",
        user_defined_k8s_config=get_user_defined_k8s_config(tags), component="step_worker")
    return manifest(job)


def pod_spec(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


# -- op tags -> Kubernetes Job ---------------------------------------------------------------


@pytest.mark.parametrize("asset", [ASSETS["vae_latents"], ASSETS["t5_embeddings"]],
                         ids=lambda a: a.op.name)
def test_gpu_step_job_requests_a_gpu_and_tolerates_gpu_nodes(asset):
    assert K8S_CONFIG_TAG in asset.op.tags
    spec = pod_spec(step_job(asset.op.tags))
    [container] = spec["containers"]
    assert container["image"] == IMAGE
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert container["resources"]["requests"] == {"nvidia.com/gpu": "1"}
    assert spec["tolerations"] == [GPU_TOLERATION]
    assert "nodeSelector" not in spec  # none unless COG_ASSETS_K8S_NODE_SELECTOR is set


@pytest.mark.parametrize("asset", [ASSETS["raw_manifest"], ASSETS["frame_tensors"],
                                   ASSETS["training_dataset"]], ids=lambda a: a.op.name)
def test_cpu_step_job_asks_for_no_gpu(asset):
    spec = pod_spec(step_job(asset.op.tags))
    [container] = spec["containers"]
    assert "nvidia.com/gpu" not in json.dumps(container.get("resources") or {})
    assert not spec.get("tolerations")


@pytest.mark.slow
def test_gpu_count_and_node_selector_come_from_the_environment():
    """COG_ASSETS_K8S_GPUS / COG_ASSETS_K8S_NODE_SELECTOR, read when the code location loads
    (as in the user code deployment of deploy/helm-values.yaml)."""
    selector = {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    code = ("import json; from cog_assets.definitions import defs; "
            "print(json.dumps({a.op.name: dict(a.op.tags) for a in defs.assets "
            "if a.key.to_user_string() in ('vae_latents', 't5_embeddings')}))")
    env = {**os.environ, "COG_ASSETS_K8S_GPUS": "2",
           "COG_ASSETS_K8S_NODE_SELECTOR": json.dumps(selector)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tags_by_op = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(tags_by_op) == ["t5_embeddings", "vae_latents"]
    for tags in tags_by_op.values():
        spec = pod_spec(step_job(tags))
        assert spec["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
        assert spec["nodeSelector"] == selector
        assert spec["tolerations"] == [GPU_TOLERATION]


# -- the k8s_job_executor's step handler, against a Kubernetes API stand-in -------------------


@contextlib.contextmanager
def kubernetes_api_recorder():
    """An HTTP server on 127.0.0.1 that accepts `POST .../jobs` like the Kubernetes API (201,
    the object echoed back) and records each request; stopped on exit."""
    received: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.path, json.loads(body)))
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def write_kubeconfig(path: Path, server: str) -> str:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }))
    return str(path)


RELEASE, NAMESPACE = "dagster", "dagster"  # helm upgrade --install dagster ... -n dagster
USER_DEPLOYMENTS = f"{RELEASE}-dagster-user-deployments"  # the subchart's full name


def helm_deployment() -> tuple[dict, dict]:
    """From deploy/helm-values.yaml, what the chart's templates render for the instance's run
    launcher (templates/helpers/instance/_run-launcher.tpl) and the container context the user
    deployment hands to the runs it launches (includeConfigInLaunchedRuns), for the keys our
    values set."""
    values = load_yaml(DEPLOY / "helm-values.yaml")
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher = {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "service_account_name": RELEASE,  # the chart's service account: its full name
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "run_k8s_config": {"container_config": k8s["runK8sConfig"]["containerConfig"]},
    }}
    [deployment] = values["dagster-user-deployments"]["deployments"]
    container_context = {"k8s": {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{USER_DEPLOYMENTS}-{deployment['name']}-user-env"],
        "env_secrets": [s["name"] for s in deployment["envSecrets"]],
        "volume_mounts": deployment["volumeMounts"], "volumes": deployment["volumes"],
        "namespace": NAMESPACE,
        "service_account_name": f"{USER_DEPLOYMENTS}-user-deployments",
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }}
    return launcher, container_context


def production_deployment() -> tuple[dict, None]:
    """deploy/dagster-production.yaml's run launcher; the code server adds nothing."""
    return load_yaml(DEPLOY / "dagster-production.yaml")["run_launcher"], None


@pytest.mark.parametrize("deployment, settings_config_map", [
    (helm_deployment, f"{USER_DEPLOYMENTS}-cog-assets-user-env"),
    (production_deployment, "cog-assets-env"),
], ids=["helm-values", "dagster-production"])
def test_k8s_executor_launches_gpu_step_pods_with_gpus(tmp_path, deployment,
                                                       settings_config_map, monkeypatch):
    """`prepare_shards` from cog_assets.definitions with COG_ASSETS_EXECUTOR=k8s, as deployed by
    either file: the Jobs the k8s_job_executor's step handler sends to Kubernetes for a GPU
    step and a CPU step."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.execution.context.system import (
        PlanData,
        PlanOrchestrationContext,
    )
    from dagster._core.execution.context_creation_job import (
        create_context_free_log_manager,
    )
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.executor.step_delegating.step_handler.base import (
        StepHandlerContext,
    )
    from dagster._grpc.types import ExecuteStepArgs
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.executor import K8sStepHandler

    monkeypatch.setenv("COG_ASSETS_EXECUTOR", "k8s")
    recon_job = ReconstructableRepository.for_module(
        "cog_assets.definitions", "defs", working_directory=str(REPO),
    ).get_reconstructable_job("prepare_shards")
    job_def = recon_job.get_definition()
    assert job_def.executor_def.name == k8s_job_executor.name  # pod per step
    launcher, container_context = deployment()
    origin = recon_job.get_python_origin()
    origin = origin._replace(repository_origin=origin.repository_origin._replace(
        container_image=IMAGE, container_context=container_context))

    with kubernetes_api_recorder() as (server, received):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server)
        launcher = {**launcher, "config": {**launcher["config"], "load_incluster_config": False,
                                           "kubeconfig_file": kubeconfig}}
        with instance_for_test(overrides={"run_launcher": launcher}) as instance:
            assert isinstance(instance.run_launcher, K8sRunLauncher)
            run = instance.create_run_for_job(job_def=job_def, job_code_origin=origin)
            executor_config = process_config(
                resolve_to_config_type(k8s_job_executor.config_schema.config_type), {})
            assert executor_config.success, executor_config.errors
            executor = k8s_job_executor.executor_creation_fn(InitExecutorContext(
                job=recon_job, executor_def=k8s_job_executor,
                executor_config=executor_config.value, instance=instance))
            handler = K8sStepHandler(image=None, container_context=K8sContainerContext(),
                                     load_incluster_config=False, kubeconfig_file=kubeconfig)
            plan = create_execution_plan(recon_job)
            plan_context = PlanOrchestrationContext(
                plan_data=PlanData(job=recon_job, dagster_run=run, instance=instance,
                                   execution_plan=plan, raise_on_error=True,
                                   retry_mode=RetryMode.DISABLED),
                log_manager=create_context_free_log_manager(instance, run),
                executor=executor, output_capture=None)
            for step in ("vae_latents", "frame_tensors"):
                context = StepHandlerContext(
                    instance=instance, plan_context=plan_context, steps=plan.steps,
                    execute_step_args=ExecuteStepArgs(origin, run.run_id, [step],
                                                      instance_ref=instance.get_ref()),
                    dagster_run=run)
                events = list(handler.launch_step(context))
                assert [e.event_type_value for e in events] == ["STEP_WORKER_STARTING"]

    assert [path for path, _ in received] == [f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"] * 2
    (_, gpu_job), (_, cpu_job) = received
    for job, step in ((gpu_job, "vae_latents"), (cpu_job, "frame_tensors")):
        spec = pod_spec(job)
        [container] = spec["containers"]
        assert container["image"] == IMAGE
        assert job["metadata"]["labels"]["dagster/op"] == step
        assert {"name": "DAGSTER_RUN_STEP_KEY", "value": step} in container["env"]
        assert "execute_step" in container["args"]
        # every step sees the same settings, S3 credentials and data root as the code server
        refs = [next(iter(ref.values()))["name"] for ref in container["envFrom"]]
        assert settings_config_map in refs and "cog-assets-s3" in refs
        assert container["volumeMounts"] == [{"name": "cog-assets-shared", "mountPath": "/shared"}]
        assert [v["name"] for v in spec["volumes"]] == ["cog-assets-shared"]
        assert container["resources"]["requests"]["cpu"] == "2"  # runK8sConfig, every pod

    gpu_container = pod_spec(gpu_job)["containers"][0]
    assert gpu_container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert gpu_container["resources"]["requests"] == {"cpu": "2", "memory": "8Gi",
                                                      "nvidia.com/gpu": "1"}
    assert pod_spec(gpu_job)["tolerations"] == [GPU_TOLERATION]
    cpu_container = pod_spec(cpu_job)["containers"][0]
    assert "nvidia.com/gpu" not in json.dumps(cpu_container["resources"])
    assert not pod_spec(cpu_job).get("tolerations")


# -- dagster.yaml and the deployment files ---------------------------------------------------


def load_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_every_yaml_file_we_ship_parses():
    for path in [REPO / "dagster.yaml", REPO / "cog_assets" / "dagster.yaml",
                 *sorted(DEPLOY.glob("*.yaml"))]:
        assert isinstance(load_yaml(path), dict), path
    assert {p.name for p in DEPLOY.glob("*.yaml")} >= {"dagster-production.yaml",
                                                       "helm-values.yaml"}


def test_repo_dagster_yaml_is_the_embedded_default_and_matches_the_packaged_one():
    """The same settings `dagster dev` (cwd) and `cog-assets demo` (copied to DAGSTER_HOME)
    use, and no storage: SQLite under DAGSTER_HOME, Dagster's default."""
    root = load_yaml(REPO / "dagster.yaml")
    assert root == load_yaml(REPO / "cog_assets" / "dagster.yaml")
    assert "storage" not in root and "run_storage" not in root
    assert root["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert root["concurrency"]["pools"]["default_limit"] >= 1


def test_repo_dagster_yaml_loads_in_a_real_instance_and_caps_the_gpu_pool(tmp_path):
    """As `dagster dev` loads it with DAGSTER_HOME unset: storage in a scratch directory,
    settings from the repository root. Two GPU steps ask for a slot; the second waits."""
    settings = load_yaml(REPO / "dagster.yaml")["concurrency"]
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path),
                                                       config_dir=str(REPO))) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
        config = instance.get_concurrency_config()
        assert config.run_queue_config.max_concurrent_runs == settings["runs"][
            "max_concurrent_runs"]
        assert config.pool_config.default_pool_limit == settings["pools"]["default_limit"] == 1
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

        # What every executor does before it starts a step of a pool: claim a slot.
        from dagster._core.execution.plan.instance_concurrency_context import (
            InstanceConcurrencyContext,
        )

        assert instance.event_log_storage.supports_global_concurrency_limits
        pool = ASSETS["vae_latents"].op.pool
        assert pool == ASSETS["t5_embeddings"].op.pool == "gpu"
        shard_0 = DagsterRun(job_name="prepare_shards", run_id=str(uuid.uuid4()))
        shard_1 = DagsterRun(job_name="prepare_shards", run_id=str(uuid.uuid4()))
        with InstanceConcurrencyContext(instance, shard_0) as run_0, \
                InstanceConcurrencyContext(instance, shard_1) as run_1:
            assert run_0.claim(pool, "vae_latents")
            assert not run_1.claim(pool, "vae_latents")  # the one GPU is taken: it waits
            assert not run_1.claim(pool, "t5_embeddings")
            info = instance.event_log_storage.get_concurrency_info(pool)
            assert info.slot_count == 1
            assert [c.run_id for c in info.claimed_slots] == [shard_0.run_id]
            waiting = [(p.run_id, p.step_key) for p in info.pending_steps
                       if p.assigned_timestamp is None]
            assert sorted(waiting) == [(shard_1.run_id, "t5_embeddings"),
                                       (shard_1.run_id, "vae_latents")]


def test_production_dagster_yaml_is_a_valid_instance_config(tmp_path, monkeypatch):
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD",
                 "DAGSTER_PG_DB"):
        monkeypatch.setenv(name, "x")
    shutil.copy(DEPLOY / "dagster-production.yaml", tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))  # Dagster's own schema
    assert custom_class is None
    pg = config["storage"]["postgres"]["postgres_db"]
    for field in ("hostname", "username", "password", "db_name"):
        assert set(load_yaml(tmp_path / "dagster.yaml")["storage"]["postgres"]["postgres_db"][
            field]) == {"env"}, field  # credentials from the environment, not the file
    assert pg["port"] == 5432

    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    checked = process_config(resolve_to_config_type(K8sRunLauncher.config_type()),
                             launcher["config"])
    assert checked.success, checked.errors  # dagster-k8s's own schema for its launcher

    # the same limits as the embedded default
    assert config["concurrency"] == load_yaml(REPO / "dagster.yaml")["concurrency"]


def test_helm_values_match_the_instance_limits_and_serve_the_k8s_code_location():
    values = load_yaml(DEPLOY / "helm-values.yaml")
    limits = load_yaml(REPO / "dagster.yaml")["concurrency"]
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == limits["runs"][
        "max_concurrent_runs"]
    assert values["concurrency"]["pools"]["defaultLimit"] == limits["pools"]["default_limit"]
    # the chart refuses a run limit in both places
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert "maxConcurrentRuns" not in json.dumps(coordinator.get("config", {}))

    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["postgresqlHost"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert deployment["env"]["COG_ASSETS_STORE"].startswith("s3://")
    assert all(isinstance(v, str) for v in deployment["env"].values())  # a ConfigMap's data
    json.loads(deployment["env"]["COG_ASSETS_K8S_NODE_SELECTOR"])
    # the code server serves cog_assets.definitions with the pod-per-step executor
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("-m") + 1] == "cog_assets.definitions"
    assert deployment["env"]["COG_ASSETS_EXECUTOR"] == "k8s"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "ENV COG_ASSETS_EXECUTOR=k8s" in dockerfile
    # the data root is on the volume every pod mounts
    [mount] = deployment["volumeMounts"]
    assert deployment["env"]["COG_ASSETS_DATA_ROOT"].startswith(mount["mountPath"] + "/")


def test_the_code_server_loads_on_a_cpu_pod_with_the_gpu_steps_device_and_agrees_with_them():
    """The Helm values set COG_ASSETS_DEVICE=cuda for every pod; the code server and the
    decode steps run on CPU pods. The definitions load there, and the code versions they
    record are the GPU pod's, so a materialization made there is not stale here."""
    from cog_assets.core.config import Settings
    from cog_assets.defs.build import build_definitions
    from cog_assets.defs.versions import code_versions

    cuda = Settings.of(device="cuda")  # no CUDA on this machine
    assert build_definitions(cuda).resolve_job_def("prepare_shards")
    assert code_versions(cuda) == code_versions(cuda.with_(dtype="bfloat16"))  # auto's choice
    # auto on a CPU is float32: the same outputs, the same versions
    cpu = Settings.of(device="cpu")
    assert code_versions(cpu) == code_versions(cpu.with_(dtype="float32"))
    assert code_versions(cpu)["vae_latents"] != code_versions(cuda)["vae_latents"]
