"""The Helm chart (deploy/helm/nasloop): every values file it ships renders, every object is
valid against the Kubernetes schemas, and what must hold for security, GPUs and probes holds.

Run by ``make chart-check`` (part of ``make test``), which installs the pinned Helm first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    VALUES_FILES,
    component,
    named,
    of_kind,
    pod_templates,
    refused,
    render,
    run_helm,
)
from tiny_lm import build_tiny_lm, lay_into_hf_cache

from nasloop.config import Config, load_config
from services.controller import kube as cycle_kube
from services.evaluator.kube import manifests

K8S = "1.33"
STORE_KEYS = {"NASLOOP_STORE__ACCESS_KEY": "a", "NASLOOP_STORE__SECRET_KEY": "s"}
FULL = f"{RELEASE}-nasloop"
SERVICES = ["generator", "evaluator", "novelty", "trainer", "controller"]
GPU = "nvidia.com/gpu"
CRDS = {"ServiceMonitor"}  # custom resources: no schema in kubernetes-validate
# Every shipped values file, and the default with every optional part switched on.
CASES: dict[str, dict[str, list[str]]] = {
    "default": {},
    **{f: {"values": [f]} for f in VALUES_FILES},
    "everything": {
        "sets": [
            "run.enabled=true",
            "run.spec.name=paper-1",
            "run.spec.preset=paper",
            "serviceMonitor.enabled=true",
            "namespace.create=true",
            "networkPolicy.metricsFrom[0].kubernetes\\.io/metadata\\.name=monitoring",
            "model.source=pvc",
            "model.pvc.claimName=models",
            "model.pvc.path=deepseek-7b",
            "model.tokenSecret=hf-token",
        ]
    },
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(**CASES[request.param])


def config_of(objs: list[dict[str, Any]]) -> Config:
    """The rendered nasloop configuration, loaded as every process loads it."""
    cm = named(objs, "ConfigMap", f"{FULL}-config")
    return Config.model_validate(yaml.safe_load(cm["data"]["config.yaml"]))


def controller_config(objs: list[dict[str, Any]], tmp: Path) -> Config:
    """The controller's configuration: the shared file plus its Deployment's own variables."""
    path = tmp / "config.yaml"
    path.write_text(named(objs, "ConfigMap", f"{FULL}-config")["data"]["config.yaml"])
    (c,) = named(objs, "Deployment", f"{FULL}-controller")["spec"]["template"]["spec"]["containers"]
    env = {
        e["name"]: e["value"] for e in c["env"] if "value" in e and e["name"] != "NASLOOP_CONFIG"
    }
    return load_config(path, env=env | STORE_KEYS)


def cycle_job(objs: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """The Job the controller would create for cycle 1 of a run, from the rendered settings."""
    return cycle_kube.cycle_job_manifest("run-1", 1, controller_config(objs, tmp))


def evaluation_job(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Job the evaluator would create for one candidate, from the rendered configuration."""
    cfg = config_of(objs).evaluator.kubernetes
    url = "http://store:9000/b/x?X-Amz-Signature=1"
    return manifests.job_manifest(
        cfg,
        manifests.job_name("c-1"),
        "c-1",
        task_url=url,
        data_url=url,
        result_url=url,
        time_limit_s=60,
    )


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod.get("initContainers", []) + pod["containers"]


def test_helm_lint_passes_for_every_values_file() -> None:
    for values in [[]] + [[f] for f in VALUES_FILES]:
        args = ["lint", str(CHART), "--namespace", NAMESPACE, "--strict"]
        for v in values:
            args += ["-f", str(CHART / v)]
        out = run_helm(*args)
        assert out.returncode == 0, out.stdout + out.stderr


def test_every_object_is_valid_against_the_kubernetes_schemas(case: Any, tmp_path: Path) -> None:
    _, objs = case
    assert objs
    for o in objs:
        if o["kind"] in CRDS:
            assert o["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        assert kubernetes_validate.validate(o, K8S, strict=True) == K8S, o["metadata"]["name"]
    kubernetes_validate.validate(evaluation_job(objs), K8S, strict=True)
    kubernetes_validate.validate(cycle_job(objs, tmp_path), K8S, strict=True)


def test_the_rendered_configuration_loads_in_nasloop(case: Any, tmp_path: Path) -> None:
    name, objs = case
    path = tmp_path / "config.yaml"
    path.write_text(named(objs, "ConfigMap", f"{FULL}-config")["data"]["config.yaml"])
    cfg = load_config(path, env=STORE_KEYS)
    assert cfg.store.url.startswith("s3://") and cfg.evaluator.executor == "kubernetes"
    assert cfg.evaluator.kubernetes.namespace == NAMESPACE
    if name == "values-external-s3.yaml":
        assert cfg.store.endpoint == "s3.eu-west-1.amazonaws.com:443" and cfg.store.secure
        assert cfg.store.url == "s3://my-nasloop-bucket/prod"
    else:
        assert cfg.store.endpoint == f"{FULL}-store:9000"


def test_no_evaluation_or_cycle_pod_gets_a_token_a_secret_or_a_host_path(
    case: Any, tmp_path: Path
) -> None:
    """Evaluation pods (presigned URLs), the run hook and cycle pods (their store is the
    controller's CycleStore, controller://) hold no token, no Secret and no host path, and no
    value of the store's keys."""
    name, objs = case
    accounts = {sa["metadata"]["name"]: sa for sa in of_kind(objs, "ServiceAccount")}
    pods = [("evaluation", evaluation_job(objs)["spec"]["template"]["spec"])]
    pods += [(o["metadata"]["name"], p) for o, p in pod_templates(objs) if o["kind"] == "Job"]
    cycle = cycle_job(objs, tmp_path)["spec"]["template"]["spec"]
    pods.append(("cycle", cycle))
    for pod_name, pod in pods:
        assert pod["automountServiceAccountToken"] is False, pod_name
        account = accounts[pod["serviceAccountName"]]  # its own account, made by the chart
        assert account["automountServiceAccountToken"] is False, pod_name
        assert pod["serviceAccountName"] in (f"{FULL}-sandbox", f"{FULL}-cycle"), pod_name
        for volume in pod.get("volumes", []):
            assert not {"secret", "hostPath", "projected"} & volume.keys(), (pod_name, volume)
        for c in containers(pod):
            assert "envFrom" not in c, pod_name
            assert not [e for e in c.get("env", []) if "valueFrom" in e], pod_name
            assert not [e for e in c.get("env", []) if "KEY" in e["name"]], pod_name
    (c,) = containers(cycle)
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["NASLOOP_STORE__URL"] == f"controller://{FULL}-controller:50055", name


def test_only_the_evaluator_and_the_controller_get_api_tokens(case: Any) -> None:
    _, objs = case
    for owner, pod in pod_templates(objs):
        token = pod.get("automountServiceAccountToken")
        expected = component(owner) in ("evaluator", "controller") and owner["kind"] == "Deployment"
        assert token is expected, owner["metadata"]["name"]
    assert not of_kind(objs, "ClusterRole") and not of_kind(objs, "ClusterRoleBinding")


def test_roles_are_namespaced_and_minimal(case: Any) -> None:
    _, objs = case
    roles = {r["metadata"]["name"]: r for r in of_kind(objs, "Role")}
    assert set(roles) == {f"{FULL}-evaluator", f"{FULL}-controller"}

    def rules(role: dict[str, Any]) -> dict[tuple[tuple[str, ...], ...], set[str]]:
        return {
            (tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]
        }

    # Exactly what the controller's own code says it needs (Jobs; Pods read-only).
    assert rules(roles[f"{FULL}-controller"]) == rules(cycle_kube.controller_role(NAMESPACE))
    for rule in roles[f"{FULL}-evaluator"]["rules"]:
        assert set(rule["resources"]) <= {"jobs", "pods", "pods/log"}
        assert "*" not in rule["verbs"]
    for binding in of_kind(objs, "RoleBinding"):
        (subject,) = binding["subjects"]
        assert subject["name"] == binding["roleRef"]["name"]  # each Role to its own account


def test_every_gpu_pod_requests_a_gpu(case: Any) -> None:
    name, objs = case
    cfg = config_of(objs)
    gpu_cluster = name not in ("values-cpu.yaml",)
    for owner, pod in pod_templates(objs):
        limits = pod["containers"][0]["resources"].get("limits", {})
        if component(owner) in ("generator", "trainer") and gpu_cluster:
            assert limits.get(GPU) == 1, owner["metadata"]["name"]
            assert any(t.get("key") == GPU for t in pod.get("tolerations", []))
        else:
            assert GPU not in limits, owner["metadata"]["name"]
    job = evaluation_job(objs)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert (GPU in job["limits"]) is gpu_cluster
    assert (cfg.evaluator.device == "cuda") is (gpu_cluster and name != "values-kind.yaml")


def test_every_container_runs_as_non_root_with_a_read_only_root(case: Any) -> None:
    _, objs = case
    pods = [(o["metadata"]["name"], p) for o, p in pod_templates(objs)]
    pods.append(("evaluation", evaluation_job(objs)["spec"]["template"]["spec"]))
    for name, pod in pods:
        psc = pod.get("securityContext", {})
        assert psc.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), name
        for c in containers(pod):
            sc = c["securityContext"]
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, name
            assert sc.get("runAsUser", psc.get("runAsUser", 1)) != 0, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name


def test_services_have_grpc_probes_ports_and_services(case: Any) -> None:
    _, objs = case
    deployments = {component(d): d for d in of_kind(objs, "Deployment")}
    assert set(SERVICES) <= set(deployments)
    cfg = config_of(objs)
    for name in SERVICES:
        port = getattr(cfg, name).port
        (c,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, (name, probe)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": port, "metrics": cfg.server.metrics_port}
        assert c["command"] == ["nasloop", "serve", name]
        svc = named(objs, "Service", f"{FULL}-{name}")
        assert {p["name"] for p in svc["spec"]["ports"]} == {"grpc", "metrics"}


def test_network_policies(case: Any) -> None:
    name, objs = case
    policies = of_kind(objs, "NetworkPolicy")

    def selecting(labels: dict[str, str]) -> list[dict[str, Any]]:
        return [
            p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]

    # Evaluation pods: default deny in, egress only to DNS and the store.
    job = evaluation_job(objs)
    (sandbox,) = selecting(job["spec"]["template"]["metadata"]["labels"])
    assert sandbox["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert sandbox["spec"]["ingress"] == []
    ports = [p["port"] for rule in sandbox["spec"]["egress"] for p in rule["ports"]]
    store_port = 443 if name == "values-external-s3.yaml" else 9000
    assert sorted(ports) == sorted([53, 53, store_port])
    # Each service: ingress to its gRPC port only from the controller and cycle pods.
    for d in of_kind(objs, "Deployment"):
        if component(d) not in SERVICES:
            continue
        (policy,) = selecting(d["spec"]["template"]["metadata"]["labels"])
        grpc = policy["spec"]["ingress"][0]
        peer = grpc["from"][0]["podSelector"]
        assert peer["matchLabels"] == {"app.kubernetes.io/name": "nasloop"}
        assert set(peer["matchExpressions"][0]["values"]) <= {"controller", "cycle", "run"}
    # The bundled store: nasloop's pods, but not the cycle Jobs (their store is the controller).
    if name != "values-external-s3.yaml":
        (store,) = [p for p in policies if p["metadata"]["name"] == f"{FULL}-store"]
        (peer,) = store["spec"]["ingress"][0]["from"]
        (expr,) = peer["podSelector"]["matchExpressions"]
        assert expr["operator"] == "NotIn" and "cycle" in expr["values"]
        assert expr["key"] == "app.kubernetes.io/component"


def test_namespace_is_labelled_restricted_when_the_chart_creates_it() -> None:
    (ns,) = of_kind(render(sets=["namespace.create=true"]), "Namespace")
    assert ns["metadata"]["name"] == NAMESPACE
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_model_sources() -> None:
    def generator(objs: list[dict[str, Any]]) -> dict[str, Any]:
        return named(objs, "Deployment", f"{FULL}-generator")["spec"]["template"]["spec"]

    objs = render()
    assert config_of(objs).generator.model == "deepseek-ai/deepseek-coder-7b-instruct-v1.5"
    pod = generator(objs)
    (c,) = pod["containers"]
    assert {"name": "HF_HOME", "value": "/var/lib/nasloop/hf"} in c["env"]
    assert "HF_HUB_OFFLINE" not in {e["name"] for e in c["env"]}  # downloads where it can
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"hf-cache": f"{FULL}-hf-generator"}
    assert named(objs, "PersistentVolumeClaim", f"{FULL}-hf-generator")

    objs = render(sets=["model.source=pvc", "model.pvc.claimName=models", "model.pvc.path=m/7b"])
    assert config_of(objs).generator.model == "/models/m/7b"
    mounts = {m["mountPath"]: m for m in generator(objs)["containers"][0]["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True

    objs = render(sets=["model.source=store", "model.storeKey=models/bootstrap-default"])
    assert config_of(objs).generator.model == "models/bootstrap-default"
    claims = [c["metadata"]["name"] for c in of_kind(objs, "PersistentVolumeClaim")]
    assert claims == [f"{FULL}-store"]  # no Hugging Face cache without a Hugging Face model

    objs = render(sets=["model.revision=v1.5"])
    assert config_of(objs).generator.model.endswith("@v1.5")


def test_the_run_hook_starts_the_run_from_values() -> None:
    objs = render(**CASES["everything"])
    spec = yaml.safe_load(named(objs, "ConfigMap", f"{FULL}-run")["data"]["spec.json"])
    assert spec == {"name": "paper-1", "preset": "paper", "base_model": "/models/deepseek-7b"}
    job = named(objs, "Job", f"{FULL}-run-start")
    assert "post-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    assert (
        job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
        == f"{FULL}-controller:50055"
    )


def test_replicated_evaluator_gets_a_disruption_budget() -> None:
    objs = render(values=["values-gpu.yaml"])
    (pdb,) = of_kind(objs, "PodDisruptionBudget")
    assert pdb["metadata"]["name"] == f"{FULL}-evaluator" and pdb["spec"]["minAvailable"] == 1
    assert not of_kind(render(), "PodDisruptionBudget")  # single replicas: no budget


def test_controller_is_pointed_at_the_services_and_its_cycle_jobs() -> None:
    objs = render()
    (c,) = named(objs, "Deployment", f"{FULL}-controller")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["NASLOOP_CONTROLLER__MODE"] == "kubernetes"
    for port, name in [
        (50051, "generator"),
        (50052, "evaluator"),
        (50053, "novelty"),
        (50054, "trainer"),
    ]:
        assert env[f"NASLOOP_CONTROLLER__{name.upper()}"] == f"{FULL}-{name}:{port}"
    assert env["NASLOOP_CONTROLLER__KUBERNETES__SERVICE_ACCOUNT"] == f"{FULL}-cycle"
    assert env["NASLOOP_CONTROLLER__KUBERNETES__IMAGE"] == "nasloop/controller:0.1.0"
    assert env["NASLOOP_CONTROLLER__KUBERNETES__CONFIG_MAP"] == f"{FULL}-config"
    address = f"{FULL}-controller:50055"  # the cycle pods' store: this controller
    assert env["NASLOOP_CONTROLLER__KUBERNETES__CONTROLLER_ADDRESS"] == address


def test_the_controller_settings_load_and_its_cycle_pods_may_call_the_services(
    case: Any, tmp_path: Path
) -> None:
    _, objs = case
    cfg = controller_config(objs, tmp_path)  # every variable is a real setting
    assert cfg.controller.mode == "kubernetes"
    assert cfg.controller.kubernetes.service_account == f"{FULL}-cycle"
    pod_labels = cycle_job(objs, tmp_path)["spec"]["template"]["metadata"]["labels"]
    checked = []
    for policy in of_kind(objs, "NetworkPolicy"):
        # The generator like every service; the controller, which is the cycle's store.
        if not policy["metadata"]["name"].endswith(("-generator", "-controller")):
            continue
        checked.append(policy["metadata"]["name"])
        peer = policy["spec"]["ingress"][0]["from"][0]["podSelector"]
        assert peer["matchLabels"].items() <= pod_labels.items()
        (expr,) = peer["matchExpressions"]
        assert pod_labels[expr["key"]] in expr["values"]
    assert len(checked) == 2, checked


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["bogus=1"], "additional properties 'bogus' not allowed"),
        (["generator.bogus=1"], "additional properties 'bogus' not allowed"),
        (["config.generator.bogus=1"], "additional properties 'bogus' not allowed"),
        (["generator.port=http"], "want integer"),
        (["image.variant=tpu"], "value must be one of"),
        (["model.source=ftp"], "value must be one of"),
        (["config.evaluator.workers=0"], "minimum"),
        (
            ["store.external.enabled=true", "store.external.cidr=10.0.0.0/8"],
            "store.external.endpoint is required",
        ),
        (["store.external.enabled=true", "store.external.endpoint=s3:443"], "store.external.cidr"),
        (["run.enabled=true"], "run.spec.name is required"),
        (["model.source=pvc"], "model.pvc.claimName is required"),
    ],
)
def test_bad_values_are_refused(sets: list[str], message: str) -> None:
    assert message in refused(sets)


def test_the_trainer_downloads_a_hugging_face_model_before_it_starts(tmp_path: Path) -> None:
    """Its init container's command, run as is against a cache that holds the model (offline):
    it resolves the id to the cached snapshot; an id missing from the cache fails it."""
    objs = render(sets=["model.id=nasloop-test/tiny-lm"])
    pod = named(objs, "Deployment", f"{FULL}-trainer")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == pod["containers"][0]["image"]
    assert init["volumeMounts"] == pod["containers"][0]["volumeMounts"]
    snapshot = lay_into_hf_cache(
        build_tiny_lm(tmp_path / "m"), tmp_path / "hf", "nasloop-test/tiny-lm"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, *init["command"][1:]]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == str(snapshot), out.stderr
    out = subprocess.run(
        [*command[:-1], "nasloop-test/absent"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0 and "not in the cache" in out.stderr
    # No init container where there is nothing to download.
    for sets in (["model.source=store"], ["model.source=pvc", "model.pvc.claimName=m"]):
        trainer = named(render(sets=sets), "Deployment", f"{FULL}-trainer")
        assert "initContainers" not in trainer["spec"]["template"]["spec"]


def test_gpu_runtime_class_reaches_every_gpu_pod_and_only_those() -> None:
    """``gpu.runtimeClassName`` (e.g. nvidia, where the NVIDIA runtime is not containerd's
    default, as on nvkind): the generator, the trainer and the evaluation Jobs; an explicit
    ``evaluator.jobs.runtimeClassName`` wins for the Jobs."""
    objs = render(sets=["gpu.runtimeClassName=nvidia"])
    for d in of_kind(objs, "Deployment"):
        expected = "nvidia" if component(d) in ("generator", "trainer") else None
        assert d["spec"]["template"]["spec"].get("runtimeClassName") == expected, component(d)
    assert evaluation_job(objs)["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    objs = render(sets=["gpu.runtimeClassName=nvidia", "evaluator.jobs.runtimeClassName=gvisor"])
    assert evaluation_job(objs)["spec"]["template"]["spec"]["runtimeClassName"] == "gvisor"
    objs = render(sets=["gpu.runtimeClassName=nvidia", "gpu.enabled=false"])
    assert not [
        d
        for d in of_kind(objs, "Deployment")
        if "runtimeClassName" in d["spec"]["template"]["spec"]
    ]
    assert "runtimeClassName" not in evaluation_job(objs)["spec"]["template"]["spec"]
    assert "runtimeClassName" not in evaluation_job(render())["spec"]["template"]["spec"]
