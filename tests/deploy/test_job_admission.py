"""The ValidatingAdmissionPolicy that limits what the Job-creating ServiceAccounts may start
(templates/admissionpolicy.yaml), its CEL evaluated here with cel-python on the Jobs the code
builds from the chart's rendered settings, as the API server would on their creation (no
cluster exists on these machines: the API server's admission is not run, its CEL is)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from chart import CHART, NAMESPACE, RELEASE, of_kind, run_helm
from test_chart import FULL, cycle_job, evaluation_job

VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
EVALUATOR = f"system:serviceaccount:{NAMESPACE}:{FULL}-evaluator"
CONTROLLER = f"system:serviceaccount:{NAMESPACE}:{FULL}-controller"


def rendered(*extra: str) -> list[dict[str, Any]]:
    out = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


class Policy:
    """The rendered policy's CEL, evaluated as admission does: match conditions, then the
    variables in order, then every validation."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.env = celpy.Environment()
        self.spec = spec

    def _eval(self, expression: str, activation: dict[str, Any]) -> Any:
        return self.env.program(self.env.compile(expression)).evaluate(activation)

    def refusals(self, job: dict[str, Any], username: str) -> list[str] | None:
        """``None`` if the policy does not apply to this request; else the failed validations'
        messages (empty: admitted)."""
        activation: dict[str, Any] = {
            "object": celpy.json_to_cel(job),
            "request": celpy.json_to_cel({"userInfo": {"username": username}}),
        }
        if not all(self._eval(c["expression"], activation) for c in self.spec["matchConditions"]):
            return None
        variables: dict[str, Any] = {}
        for v in self.spec["variables"]:
            activation["variables"] = celpy.celtypes.MapType(
                {celpy.celtypes.StringType(k): val for k, val in variables.items()}
            )
            variables[v["name"]] = self._eval(v["expression"], activation)
        activation["variables"] = celpy.celtypes.MapType(
            {celpy.celtypes.StringType(k): val for k, val in variables.items()}
        )
        failed = []
        for check in self.spec["validations"]:
            if not self._eval(check["expression"], activation):
                message = check.get("message")
                if message is None:
                    message = str(self._eval(check["messageExpression"], activation))
                failed.append(message)
        return failed


@pytest.fixture(scope="module")
def objs() -> list[dict[str, Any]]:
    return rendered("--api-versions", VAP_API)


@pytest.fixture(scope="module")
def policy(objs: list[dict[str, Any]]) -> Policy:
    (vap,) = of_kind(objs, "ValidatingAdmissionPolicy")
    (binding,) = of_kind(objs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": NAMESPACE
    }
    return Policy(vap["spec"])


def test_nasloops_own_jobs_are_admitted(
    objs: list[dict[str, Any]], policy: Policy, tmp_path: Path
) -> None:
    assert policy.refusals(cycle_job(objs, tmp_path), CONTROLLER) == []
    assert policy.refusals(evaluation_job(objs), EVALUATOR) == []


def _secret_volume(pod: dict[str, Any]) -> None:
    pod["volumes"].append({"name": "s", "secret": {"secretName": f"{FULL}-store"}})
    pod["containers"][0]["volumeMounts"].append({"name": "s", "mountPath": "/s"})


def _token(pod: dict[str, Any]) -> None:
    pod["automountServiceAccountToken"] = True


def _other_account(pod: dict[str, Any]) -> None:
    pod["serviceAccountName"] = f"{FULL}-controller"


def _host_network(pod: dict[str, Any]) -> None:
    pod["hostNetwork"] = True


def _env_from_secret(pod: dict[str, Any]) -> None:
    ref = {"secretKeyRef": {"name": f"{FULL}-store", "key": "secret_key"}}
    pod["containers"][0]["env"].append({"name": "K", "valueFrom": ref})


def _other_image(pod: dict[str, Any]) -> None:
    pod["containers"][0]["image"] = "attacker.example/tools:latest"


def _host_path(pod: dict[str, Any]) -> None:
    pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}})


def _projected_token(pod: dict[str, Any]) -> None:
    source = {"serviceAccountToken": {"path": "token"}}
    pod["volumes"].append({"name": "t", "projected": {"sources": [source]}})


def _privileged(pod: dict[str, Any]) -> None:
    pod["containers"][0]["securityContext"]["privileged"] = True


def _added_capability(pod: dict[str, Any]) -> None:
    pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]


def _privilege_escalation(pod: dict[str, Any]) -> None:
    del pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"]


@pytest.mark.parametrize(
    "change",
    [
        _privileged,
        _added_capability,
        _privilege_escalation,
        _secret_volume,
        _token,
        _other_account,
        _host_network,
        _env_from_secret,
        _other_image,
        _host_path,
        _projected_token,
    ],
)
@pytest.mark.parametrize("creator", ["controller", "evaluator"])
def test_any_other_job_of_theirs_is_refused(
    objs: list[dict[str, Any]], policy: Policy, tmp_path: Path, change: Any, creator: str
) -> None:
    job = copy.deepcopy(
        cycle_job(objs, tmp_path) if creator == "controller" else evaluation_job(objs)
    )
    change(job["spec"]["template"]["spec"])
    assert policy.refusals(job, CONTROLLER if creator == "controller" else EVALUATOR)


def test_each_account_starts_only_its_own_kind_of_job(
    objs: list[dict[str, Any]], policy: Policy, tmp_path: Path
) -> None:
    refusals = policy.refusals(evaluation_job(objs), CONTROLLER)
    assert refusals and any("must run as" in r for r in refusals)
    assert policy.refusals(cycle_job(objs, tmp_path), EVALUATOR)


def test_other_callers_are_not_its_business_and_old_clusters_get_none(
    objs: list[dict[str, Any]], policy: Policy
) -> None:
    job = evaluation_job(objs)
    job["spec"]["template"]["spec"]["hostNetwork"] = True
    assert policy.refusals(job, "admin@example.com") is None  # RBAC decides for people
    assert not of_kind(rendered(), "ValidatingAdmissionPolicy")  # no v1 API: not rendered
    disabled = rendered("--api-versions", VAP_API, "--set", "admissionPolicy.enabled=false")
    assert not of_kind(disabled, "ValidatingAdmissionPolicy")
