"""The Helm chart (deploy/helm/nasloop): every values file it ships renders, every object is
valid against the Kubernetes schemas, and what must hold for security, GPUs and probes holds.

Run by ``make chart-check`` (part of ``make test``), which installs the pinned Helm first."""

from __future__ import annotations

import base64
import os
import shutil
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
    allowed,
    component,
    named,
    of_kind,
    pod_templates,
    refused,
    render,
    run_helm,
    selects,
)
from helm_apiserver import fake_apiserver
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
            "networkPolicy.defaultDeny=true",
            "image.pullSecrets[0]=regcred",
            "priorityClassName=nasloop",
            "evaluator.jobs.priorityClassName=nasloop-low",
            "gpu.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=1",
            "gpu.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
            ".preference.matchExpressions[0].key=gpu",
            "gpu.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
            ".preference.matchExpressions[0].operator=Exists",
            "controller.cycleJobs.nodeSelector.pool=cpu",
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
    # With TLS, the services' CA as the controller reads it from its mounted Secret.
    ca = [o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == f"{FULL}-tls-ca"]
    if ca:
        env["NASLOOP_TLS__CA_PEM"] = base64.b64decode(ca[0]["data"]["ca.crt"]).decode()
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
    value of the store's keys (with TLS the run hook mounts the operator's certificate, its
    identity for StartRun, and nothing else; a cycle pod makes its own key)."""
    name, objs = case
    operator = {"name": "tls", "secret": {"secretName": f"{FULL}-operator-tls"}}
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
            if pod_name.endswith("-run-start") and volume == operator:
                continue
            assert not {"secret", "hostPath", "projected"} & volume.keys(), (pod_name, volume)
        for c in containers(pod):
            assert "envFrom" not in c, pod_name
            assert not [e for e in c.get("env", []) if "valueFrom" in e], pod_name
            keys = [e for e in c.get("env", []) if "KEY" in e["name"]]
            assert not [e for e in keys if e["name"] != "NASLOOP_TLS__KEY_FILE"], pod_name
    (c,) = containers(cycle)
    env = {e["name"]: e["value"] for e in c["env"]}
    port = 50056 if config_of(objs).tls.enabled else 50055  # with TLS: the cert-free port
    assert env["NASLOOP_STORE__URL"] == f"controller://{FULL}-controller:{port}", name


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
        probed = cfg.server.health_port if cfg.tls.enabled else port  # probes speak no TLS
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == probed, (name, probe)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        expected = {"grpc": port, "metrics": cfg.server.metrics_port}
        if cfg.tls.enabled and name == "controller":
            expected["cycle-store"] = cfg.controller.cycle_port
        assert ports == expected
        assert c["command"] == ["nasloop", "serve", name]
        svc = named(objs, "Service", f"{FULL}-{name}")
        assert {p["name"] for p in svc["spec"]["ports"]} == set(expected)


def test_network_policies(case: Any) -> None:
    name, objs = case
    policies = of_kind(objs, "NetworkPolicy")

    def selecting(labels: dict[str, str]) -> list[dict[str, Any]]:
        """The policies made for these pods (not the namespace's default deny)."""
        return [
            p
            for p in policies
            if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
            and selects(p["spec"]["podSelector"], labels)
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
        assert peer["matchLabels"] == {
            "app.kubernetes.io/name": "nasloop",
            "app.kubernetes.io/instance": RELEASE,
        }
        assert set(peer["matchExpressions"][0]["values"]) <= {"controller", "cycle", "run"}
    # The bundled store: nasloop's pods, but not the cycle Jobs (their store is the controller).
    if name != "values-external-s3.yaml":
        (store,) = [p for p in policies if p["metadata"]["name"] == f"{FULL}-store"]
        (peer,) = store["spec"]["ingress"][0]["from"]
        (expr,) = peer["podSelector"]["matchExpressions"]
        assert expr["operator"] == "NotIn" and "cycle" in expr["values"]
        assert expr["key"] == "app.kubernetes.io/component"


def test_the_chart_owns_no_namespace(case: Any) -> None:
    """The namespace is created the Helm way (helm install --create-namespace, README) and
    labelled with kubectl: a Namespace in the release would be deleted with it, and the volumes
    the chart keeps (helm.sh/resource-policy: keep) with it."""
    _, objs = case
    assert not of_kind(objs, "Namespace")
    assert "additional properties 'namespace' not allowed" in refused(["namespace.create=true"])


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
    address = f"{FULL}-controller:50056"  # the cycle pods' store: this controller (TLS: its
    # port that asks for no client certificate)
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


S3_SECRET = ["store.existingSecret=s3"]


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
            ["store.external.enabled=true", "store.external.cidr=10.0.0.0/8", *S3_SECRET],
            "store.external.endpoint is required",
        ),
        (
            ["store.external.enabled=true", "store.external.endpoint=s3:443", *S3_SECRET],
            "store.external.cidr",
        ),
        (["run.enabled=true"], "run.spec.name is required"),
        (["gpu.tolerations[0].operator=Sometimes"], "value must be one of"),
        (["evaluator.jobs.tolerations[0].keys=a"], "additional properties 'keys' not allowed"),
        (["controller.cycleJobs.affinity.nodeSelector.a=b"], "'nodeSelector' not allowed"),
        (["generator.affinity.podAffinty.a=b"], "'podAffinty' not allowed"),
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


# -- values that reach the Jobs the services build ---------------------------------------------

MIG = "nvidia.com/mig-3g.40gb"
GPU_NODES = {"nvidia.com/gpu.product": "A100-SXM4-80GB"}
GPU_TAINT = {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
SPOT = {"key": "spot", "operator": "Exists", "effect": "NoSchedule"}
SYSTEM = {"key": "system", "operator": "Exists", "effect": "NoExecute"}
GPU_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
            ]
        }
    }
}
CYCLE_AFFINITY = {
    "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 10,
                "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "cycle"}},
                },
            }
        ]
    }
}
# What a platform team sets for a private registry, MIG GPUs behind a custom taint, and
# priorities: every part must reach the Jobs that the evaluator and the controller create.
CLUSTER_VALUES: dict[str, Any] = {
    "image": {"registry": "registry.example.com", "pullSecrets": ["regcred", "mirror"]},
    "priorityClassName": "nasloop",
    "gpu": {
        "resource": MIG,
        "nodeSelector": GPU_NODES,
        "tolerations": [GPU_TAINT],
        "affinity": GPU_AFFINITY,
    },
    "evaluator": {
        "jobs": {
            "gpus": 2,
            "nodeSelector": {"pool": "evaluation"},
            "tolerations": [SPOT],
            "priorityClassName": "nasloop-evaluation",
        }
    },
    "controller": {
        "cycleJobs": {
            "nodeSelector": {"pool": "system"},
            "tolerations": [SYSTEM],
            "affinity": CYCLE_AFFINITY,
            "priorityClassName": "nasloop-cycles",
        }
    },
}


def render_values(tmp: Path, values: dict[str, Any], sets: list[str] | None = None) -> list:
    path = tmp / "cluster-values.yaml"
    path.write_text(yaml.safe_dump(values))
    return render(values=[str(path)], sets=sets)


def test_pull_secrets_gpu_settings_and_priorities_reach_the_evaluation_job(tmp_path: Path) -> None:
    """The evaluation Job as services/evaluator/kube builds it from the rendered configuration:
    image.pullSecrets, gpu.resource with evaluator.jobs.gpus (2, not 1), gpu.tolerations (not a
    hard-coded nvidia.com/gpu one) and gpu.affinity, the node selectors and the priority class;
    and the release's instance label, which the chart's NetworkPolicies match."""
    objs = render_values(tmp_path, CLUSTER_VALUES)
    job = evaluation_job(objs)
    kubernetes_validate.validate(job, K8S, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    (c,) = pod["containers"]
    assert c["image"].startswith("registry.example.com/nasloop/evaluator")
    for side in ("limits", "requests"):
        assert c["resources"][side][MIG] == "2" and GPU not in c["resources"][side]
    assert pod["tolerations"] == [SPOT, GPU_TAINT]
    assert pod["affinity"] == GPU_AFFINITY
    assert pod["nodeSelector"] == {"pool": "evaluation", **GPU_NODES}
    assert pod["priorityClassName"] == "nasloop-evaluation"
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    # CPU evaluation Jobs (gpus 0) keep their own scheduling, none of the GPU nodes'.
    cpu = evaluation_job(render_values(tmp_path, CLUSTER_VALUES, ["evaluator.jobs.gpus=0"]))
    pod = cpu["spec"]["template"]["spec"]
    assert pod["tolerations"] == [SPOT] and pod["nodeSelector"] == {"pool": "evaluation"}
    assert "affinity" not in pod and MIG not in pod["containers"][0]["resources"]["limits"]


def test_pull_secrets_placement_and_priorities_reach_the_cycle_job(tmp_path: Path) -> None:
    """The cycle Job as services/controller/kube.py builds it from the controller's rendered
    settings: image.pullSecrets and controller.cycleJobs' node selector, tolerations, affinity
    and priority class; the instance label."""
    objs = render_values(tmp_path, CLUSTER_VALUES)
    job = cycle_job(objs, tmp_path)
    kubernetes_validate.validate(job, K8S, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert pod["containers"][0]["image"] == "registry.example.com/nasloop/controller:0.1.0"
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [SYSTEM]
    assert pod["affinity"] == CYCLE_AFFINITY
    assert pod["priorityClassName"] == "nasloop-cycles"
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    # The release-wide priority class where a Job kind names none; none by default.
    objs = render(sets=["priorityClassName=nasloop"])
    assert cycle_job(objs, tmp_path)["spec"]["template"]["spec"]["priorityClassName"] == "nasloop"
    assert evaluation_job(objs)["spec"]["template"]["spec"]["priorityClassName"] == "nasloop"
    objs = render()
    for job in (cycle_job(objs, tmp_path), evaluation_job(objs)):
        assert (
            not {"priorityClassName", "imagePullSecrets"} & job["spec"]["template"]["spec"].keys()
        )


def test_pull_secrets_and_priority_reach_every_pod_and_service_account(tmp_path: Path) -> None:
    """Every pod the chart makes, and every ServiceAccount (the Jobs' tokenless ones too: the
    pods of a Job made by another tool under that account still pull)."""
    objs = render_values(tmp_path, CLUSTER_VALUES, ["run.enabled=true", "run.spec.name=r"])
    pulls = [{"name": "regcred"}, {"name": "mirror"}]
    accounts = of_kind(objs, "ServiceAccount")
    assert {a["metadata"]["name"] for a in accounts} >= {f"{FULL}-sandbox", f"{FULL}-cycle"}
    for account in accounts:
        assert account["imagePullSecrets"] == pulls, account["metadata"]["name"]
    for owner, pod in pod_templates(objs):
        assert pod["imagePullSecrets"] == pulls, owner["metadata"]["name"]
        assert pod["priorityClassName"] == "nasloop", owner["metadata"]["name"]
    for account in of_kind(render(), "ServiceAccount"):
        assert "imagePullSecrets" not in account


def test_gpu_resource_and_count_of_the_generator_and_the_trainer(tmp_path: Path) -> None:
    """gpu.resource replaces nvidia.com/gpu everywhere; a count the component's resources name
    (limits or requests) is kept in both (an extended resource's request equals its limit)."""
    objs = render_values(tmp_path, CLUSTER_VALUES)
    for d in of_kind(objs, "Deployment"):
        res = d["spec"]["template"]["spec"]["containers"][0]["resources"]
        if component(d) in ("generator", "trainer"):
            assert res["limits"][MIG] == res["requests"][MIG] == 1
            assert d["spec"]["template"]["spec"]["tolerations"] == [GPU_TAINT]
        assert GPU not in res.get("limits", {}), component(d)
    sets = [f"generator.resources.limits.{GPU.replace('.', chr(92) + '.')}=2"]
    sets += [f"trainer.resources.requests.{GPU.replace('.', chr(92) + '.')}=4"]
    objs = render(sets=sets)
    for name, count in (("generator", 2), ("trainer", 4)):
        pod = named(objs, "Deployment", f"{FULL}-{name}")["spec"]["template"]["spec"]
        for c in containers(pod):
            assert c["resources"]["limits"][GPU] == c["resources"]["requests"][GPU] == count


def test_global_values_are_accepted_and_the_chart_works_as_a_subchart(tmp_path: Path) -> None:
    """Helm hands a parent chart's ``global`` to every subchart; the closed schema admits it."""
    assert render(sets=["global.imageRegistry=registry.example.com"])
    parent = tmp_path / "platform"
    shutil.copytree(CHART, parent / "charts" / "nasloop")
    chart = {"apiVersion": "v2", "name": "platform", "version": "1.0.0"}
    (parent / "Chart.yaml").write_text(yaml.safe_dump(chart))
    values = {"global": {"imageRegistry": "r"}, "nasloop": {"image": {"pullSecrets": ["p"]}}}
    (parent / "values.yaml").write_text(yaml.safe_dump(values))
    out = run_helm("template", RELEASE, str(parent), "--namespace", NAMESPACE)
    assert out.returncode == 0, out.stderr
    objs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert config_of(objs).evaluator.kubernetes.image_pull_secrets == ["p"]


# -- NetworkPolicies -----------------------------------------------------------------------------


def test_every_policy_matches_only_this_releases_pods(case: Any) -> None:
    """Every policy's own pods and every peer that is a nasloop pod in the namespace are matched
    with the release's instance label, so a second release in the namespace is a stranger."""
    _, objs = case
    for policy in of_kind(objs, "NetworkPolicy"):
        spec, name = policy["spec"], policy["metadata"]["name"]
        if spec["podSelector"]:  # only the namespace's default deny selects every pod
            assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
        else:
            assert name == f"{FULL}-default-deny" and not {"ingress", "egress"} & spec.keys()
        rules = spec.get("ingress", []) + spec.get("egress", [])
        peers = [p for r in rules for p in r.get("from", []) + r.get("to", [])]
        for peer in peers:
            ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
            in_namespace = not ns or ns == {"kubernetes.io/metadata.name": NAMESPACE}
            if "podSelector" in peer and in_namespace:
                labels = peer["podSelector"]["matchLabels"]
                assert labels["app.kubernetes.io/instance"] == RELEASE, (name, peer)


@pytest.mark.parametrize("default_deny", [False, True])
def test_nasloop_connections_are_allowed_and_strangers_are_refused(
    default_deny: bool, tmp_path: Path
) -> None:
    """The connections nasloop's pods open (the Jobs' pods labelled as the code labels them),
    evaluated by NetworkPolicy's rules, with and without the namespace's default deny: each
    needed one is allowed; cycle pods never reach the store, evaluation pods only the store,
    and the pods of another release (or of anything else) none of nasloop's ports."""
    sets = ["run.enabled=true", "run.spec.name=r"]
    objs = render(sets=sets + ([] if not default_deny else ["networkPolicy.defaultDeny=true"]))
    policies = of_kind(objs, "NetworkPolicy")
    assert bool([p for p in policies if not p["spec"]["podSelector"]]) is default_deny
    pods = {
        component(o): o["spec"]["template"]["metadata"]["labels"] for o, _ in pod_templates(objs)
    }
    pods["cycle"] = cycle_job(objs, tmp_path)["spec"]["template"]["metadata"]["labels"]
    pods["sandbox"] = evaluation_job(objs)["spec"]["template"]["metadata"]["labels"]
    cfg = config_of(objs)
    port = {s: getattr(cfg, s).port for s in SERVICES} | {"store": 9000}
    need = [("controller", s) for s in SERVICES if s != "controller"]
    need += [("cycle", s) for s in SERVICES] + [("run", "controller")]
    need += [(s, "store") for s in [*SERVICES, "sandbox"]]
    for src, dst in need:
        assert allowed(policies, pods[src], pods[dst], port[dst]), (src, dst)
    other = {k: {**v, "app.kubernetes.io/instance": "other"} for k, v in pods.items()}
    refuse = [("cycle", "store"), ("run", "store"), *[("sandbox", s) for s in SERVICES]]
    for src, dst in refuse:
        assert not allowed(policies, pods[src], pods[dst], port[dst]), (src, dst)
    for dst in [*SERVICES, "store"]:
        for src in ("controller", "cycle", "evaluator"):
            assert not allowed(policies, other[src], pods[dst], port[dst]), (src, dst)
        assert not allowed(policies, {}, pods[dst], port[dst]), dst
    # With the default deny, a pod of anything else in the namespace talks to nothing, and a
    # cycle pod to nothing but the services' gRPC ports.
    assert allowed(policies, {}, {}, 8080) is not default_deny
    assert allowed(policies, pods["cycle"], {}, 8080) is not default_deny


# -- the store's keys ----------------------------------------------------------------------------


def store_keys(objs: list[dict[str, Any]]) -> dict[str, str]:
    secret = named(objs, "Secret", f"{FULL}-store")
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_no_store_keys_ship_with_the_chart() -> None:
    """values.yaml holds no keys: without store.existingSecret or given keys the chart
    generates random ones (an install keeps them on upgrade through Helm's lookup: the Secret
    is kept on uninstall too, like the store's volume)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["store"]["accessKey"] == values["store"]["secretKey"] == ""
    objs = render()
    first, second = store_keys(objs), store_keys(render())
    assert len(first["access_key"]) == 20 and len(first["secret_key"]) == 40
    assert first["access_key"].isalnum() and first["secret_key"].isalnum()
    assert first != second  # nothing fixed: each install draws its own
    secret = named(objs, "Secret", f"{FULL}-store")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    given = store_keys(render(sets=["store.accessKey=ak", "store.secretKey=sk"]))
    assert given == {"access_key": "ak", "secret_key": "sk"}
    objs = render(sets=["store.existingSecret=mine"])
    assert not [s for s in of_kind(objs, "Secret") if s["metadata"]["name"] == f"{FULL}-store"]
    (c,) = named(objs, "Deployment", f"{FULL}-novelty")["spec"]["template"]["spec"]["containers"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    assert refs == {"mine"}
    external = ["store.external.enabled=true", "store.external.endpoint=s3:443"]
    external += ["store.external.cidr=10.0.0.0/8"]
    assert "store.external needs its credentials" in refused(external)


def test_generated_store_keys_are_kept_on_upgrade_with_a_fake_kubernetes_api() -> None:
    """Against a FAKE Kubernetes API (tests/deploy/helm_apiserver.py; no cluster here) that
    holds the store's Secret as an earlier install of this release left it, the rendered
    upgrade (``--dry-run=server``: Helm's lookup reads the cluster) carries that Secret's keys,
    not new ones; keys given in values still win."""
    kept = {"access_key": "keptAccessKey01", "secret_key": "keptSecretKey0123456789"}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{FULL}-store",
            "namespace": NAMESPACE,
            # Helm's marks of ownership, which it puts on what it installs.
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": RELEASE,
                "meta.helm.sh/release-namespace": NAMESPACE,
            },
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in kept.items()},
    }

    def upgrade(url: str, *sets: str) -> dict[str, str]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=server"]
        args += ["--disable-openapi-validation", "--kube-apiserver", url]
        for s in sets:
            args += ["--set", s]
        out = run_helm(*args)
        assert out.returncode == 0, out.stderr
        return store_keys([d for d in yaml.safe_load_all(out.stdout) if d])

    with fake_apiserver([secret]) as url:
        assert upgrade(url) == kept
        given = upgrade(url, "store.accessKey=ak", "store.secretKey=sk")
        assert given == {"access_key": "ak", "secret_key": "sk"}
    with fake_apiserver([]) as url:  # a first install: new keys
        fresh = upgrade(url)
        assert fresh != kept and len(fresh["secret_key"]) == 40
