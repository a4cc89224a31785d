"""The evaluation Job manifest: schema-valid (Kubernetes 1.33) and hardened (its NetworkPolicy is
the chart's: tests/deploy)."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest

from nasloop.config import KubernetesConfig
from services.evaluator.kube import manifests as m

URLS = {
    "task_url": "http://store:9000/b/evaluations/x/task.json?X-Amz-Signature=1",
    "data_url": "http://store:9000/b/datasets/digits/abc/sandbox.npz?X-Amz-Signature=2",
    "result_url": "http://store:9000/b/evaluations/x/report.bin?X-Amz-Signature=3",
}
HARDENING_LABELS = {
    "app.kubernetes.io/name": "nasloop",
    "app.kubernetes.io/component": "evaluator-sandbox",
}


def build(cfg: KubernetesConfig | None = None, **kw: object) -> dict:
    cfg = cfg or KubernetesConfig()
    args = {"time_limit_s": 300.0, **URLS, **kw}
    return m.job_manifest(cfg, m.job_name("cand-1"), "cand-1", **args)  # type: ignore[arg-type]


def pod_spec(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def container(job: dict) -> dict:
    (c,) = pod_spec(job)["containers"]
    return c


def env(job: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(job)["env"]}


@pytest.mark.parametrize(
    "cfg",
    [
        KubernetesConfig(),
        KubernetesConfig(gpus=0, runtime_class="gvisor", node_selector={"pool": "cpu"}),
        KubernetesConfig(gpus=2, tolerate_gpu_taint=False, image_pull_policy="Always"),
    ],
)
def test_job_manifest_is_valid_against_the_kubernetes_schema(cfg: KubernetesConfig) -> None:
    assert kubernetes_validate.validate(build(cfg), "1.33", strict=True) == "1.33"


def test_labels_on_job_and_pod_template() -> None:
    job = build()
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        assert HARDENING_LABELS.items() <= meta["labels"].items()
        assert meta["labels"]["nasloop.io/candidate"] == "cand-1"


def test_security_context_is_locked_down() -> None:
    job = build()
    spec = pod_spec(job)
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65534 and psc["runAsGroup"] == 65534
    assert psc["fsGroup"] == 65534
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = container(job)["securityContext"]
    assert csc["runAsNonRoot"] is True
    assert csc["runAsUser"] == 65534 and csc["runAsGroup"] == 65534
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["privileged"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["hostNetwork"] is False and spec["hostPID"] is False and spec["hostIPC"] is False
    assert spec["restartPolicy"] == "Never"


def test_resources_requests_equal_limits_with_gpu() -> None:
    cfg = KubernetesConfig(gpus=1, cpu="3", memory="6Gi", ephemeral_storage="5Gi")
    res = container(build(cfg))["resources"]
    assert res["requests"] == res["limits"]
    assert res["limits"] == {
        "cpu": "3",
        "memory": "6Gi",
        "ephemeral-storage": "5Gi",
        "nvidia.com/gpu": "1",
    }
    assert pod_spec(build(cfg))["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_cpu_only_job_has_no_gpu_and_no_toleration() -> None:
    job = build(KubernetesConfig(gpus=0))
    res = container(job)["resources"]
    assert "nvidia.com/gpu" not in res["limits"] and res["requests"] == res["limits"]
    assert "tolerations" not in pod_spec(job)
    no_taint = build(KubernetesConfig(gpus=1, tolerate_gpu_taint=False))
    assert "tolerations" not in pod_spec(no_taint)


def test_tmp_is_a_size_limited_empty_dir() -> None:
    job = build(KubernetesConfig(tmp_size="512Mi"))
    assert pod_spec(job)["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}}]
    assert container(job)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]


def test_job_spec_deadline_backoff_failure_policy_ttl() -> None:
    cfg = KubernetesConfig(deadline_slack_s=120, ttl_after_finished_s=77)
    spec = build(cfg, time_limit_s=300.2)["spec"]
    assert spec["activeDeadlineSeconds"] == 2 * 301 + 120  # train, then score
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 77
    rules = spec["podFailurePolicy"]["rules"]
    # Disruptions first (an evicted container also exits nonzero), counted, never ignored.
    assert rules[0] == {
        "action": "Count",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "sandbox", "operator": "NotIn", "values": [0]},
    }
    assert all(r["action"] != "Ignore" for r in rules)


def test_optional_fields() -> None:
    plain = pod_spec(build(KubernetesConfig()))
    assert "runtimeClassName" not in plain and "nodeSelector" not in plain
    cfg = KubernetesConfig(
        runtime_class="gvisor", node_selector={"gpu": "a100"}, image_pull_policy="Never"
    )
    job = build(cfg)
    assert pod_spec(job)["runtimeClassName"] == "gvisor"
    assert pod_spec(job)["nodeSelector"] == {"gpu": "a100"}
    assert container(job)["imagePullPolicy"] == "Never"


PLACEMENT = {
    "image_pull_secrets": ["regcred", "mirror"],
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "nas", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]}
                ]
            }
        }
    },
    "priority_class": "batch-low",
    "labels": {"app.kubernetes.io/instance": "nl", "app.kubernetes.io/component": "spoof"},
}


def test_placement_reaches_the_pod_pull_secrets_tolerations_affinity_priority_labels() -> None:
    """What the chart passes from its values (image.pullSecrets, gpu.*, priority classes, the
    release's instance label) lands in the pod spec; nasloop's own labels cannot be replaced."""
    cfg = KubernetesConfig(gpus=2, gpu_resource="nvidia.com/mig-1g.10gb", **PLACEMENT)
    job = build(cfg)
    assert kubernetes_validate.validate(job, "1.33", strict=True) == "1.33"
    spec = pod_spec(job)
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert spec["affinity"] == PLACEMENT["affinity"]
    assert spec["priorityClassName"] == "batch-low"
    # The given tolerations, then the one for the GPU resource's taint (not nvidia.com/gpu).
    assert spec["tolerations"] == [
        *PLACEMENT["tolerations"],
        {"key": "nvidia.com/mig-1g.10gb", "operator": "Exists", "effect": "NoSchedule"},
    ]
    res = container(job)["resources"]
    assert (
        res["limits"]["nvidia.com/mig-1g.10gb"] == "2" == res["requests"]["nvidia.com/mig-1g.10gb"]
    )
    assert "nvidia.com/gpu" not in res["limits"]
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        assert meta["labels"]["app.kubernetes.io/instance"] == "nl"
        assert HARDENING_LABELS.items() <= meta["labels"].items()
    # A toleration given already is not repeated; a CPU Job keeps only the given ones.
    same = KubernetesConfig(
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )
    assert len(pod_spec(build(same))["tolerations"]) == 1
    cpu = pod_spec(build(KubernetesConfig(gpus=0, **PLACEMENT)))
    assert cpu["tolerations"] == PLACEMENT["tolerations"]
    plain = pod_spec(build())
    assert not {"imagePullSecrets", "affinity", "priorityClassName"} & plain.keys()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"gpu_resource": "gpu"}, "extended resource name"),
        ({"tolerations": [{"key": "a", "operator": "Sometimes"}]}, "Exists or Equal"),
        ({"tolerations": [{"key": "a", "effect": "Never"}]}, "NoSchedule"),
        ({"tolerations": [{"keys": "a"}]}, "unknown toleration fields"),
        ({"affinity": {"nodeSelector": {}}}, "affinity takes"),
        ({"image_pull_secrets": [""]}, "needs a name"),
        ({"labels": {"app.kubernetes.io/instance": "not a label"}}, "not valid Kubernetes labels"),
    ],
)
def test_bad_placement_is_refused_when_the_configuration_loads(
    settings: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        KubernetesConfig(**settings)


def test_command_and_env_hold_only_urls_and_harmless_settings() -> None:
    job = build(extra_env={"NASLOOP_EVALUATOR__MEMORY_BYTES": "1073741824"})
    c = container(job)
    assert c["command"] == ["python", "-m", "services.evaluator.pod"]
    assert "envFrom" not in c
    e = env(job)
    assert e["NASLOOP_TASK_URL"] == URLS["task_url"]
    assert e["NASLOOP_DATA_URL"] == URLS["data_url"]
    assert e["NASLOOP_RESULT_URL"] == URLS["result_url"]
    assert e["HOME"] == "/tmp"
    assert e["NASLOOP_EVALUATOR__MEMORY_BYTES"] == "1073741824"
    for item in c["env"]:
        assert set(item) == {"name", "value"}, "no valueFrom: no secrets or downward API"
        assert not any(w in item["name"] for w in ("KEY", "SECRET", "TOKEN", "PASSWORD"))
    with pytest.raises(ValueError):
        build(extra_env={"NASLOOP_RESULT_URL": "http://elsewhere/"})


def test_job_names_are_dns_labels() -> None:
    ids = ["cand-1", "A" * 200, "Ünïcödé/../../etc", "___", "", "x.y_z", "9-lives"]
    names = {m.job_name(i) for i in ids}
    assert len(names) == len(ids)
    for name in names:
        assert m.is_dns_label(name) and len(name) <= 63, name
        assert name.startswith("eval-")
    assert m.job_name("Run 7 / cand 42", suffix="abcd1234") == "eval-run-7-cand-42-abcd1234"
    assert m.job_name("cand") != m.job_name("cand")  # random suffix
    with pytest.raises(ValueError):
        m.job_manifest(KubernetesConfig(), "Bad_Name", "c", time_limit_s=1, **URLS)
    with pytest.raises(ValueError):
        m.job_manifest(KubernetesConfig(), "ok", "c", time_limit_s=0, **URLS)


@pytest.mark.parametrize("cid", ["A" * 200, "run/7:cand#1", "-x-", "ok.id_1", "ß"])
def test_candidate_label_is_a_valid_label_value(cid: str) -> None:
    job = m.job_manifest(KubernetesConfig(), m.job_name(cid), cid, time_limit_s=10, **URLS)
    kubernetes_validate.validate(job, "1.33", strict=True)
    value = job["metadata"]["labels"]["nasloop.io/candidate"]
    assert 0 < len(value) <= 63
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", value), value
    assert m.candidate_label(cid) == value
    assert m.candidate_label("ok.id_1") == "ok.id_1"
    assert m.candidate_label("run/7") != m.candidate_label("run:7")
