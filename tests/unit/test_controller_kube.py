"""Cycle Jobs (services/controller/kube.py): manifests checked against the Kubernetes 1.33 schema,
and the lifecycle against a FAKE Kubernetes API (tests/kubefake.py), not a cluster.

There is no Kubernetes cluster on these machines: the fake is the API server, and each test plays
the scheduler, kubelet and Job controller by changing the fake's state while ``wait`` polls it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import kubernetes_validate
import pytest
from kubefake import FakeKubeAPI

from nasloop import layout
from nasloop.config import Config, load_config
from nasloop.layout import InvalidName
from services.controller import kube
from services.controller.kube import (
    CycleJobError,
    CycleJobs,
    CycleOutcome,
    cycle_job_manifest,
    cycle_job_name,
)

NS = "nasloop"
RUN = "run1"
SCHEMA = "1.33"


def config(**kube_settings: Any) -> Config:
    return Config.model_validate(
        {
            "store": {
                "url": "s3://nasloop/prefix",
                "endpoint": "minio.storage:9000",
                "region": "eu-west-1",
                "access_key": "AKIA-PLAINTEXT-KEY",
                "secret_key": "very-secret-value",
            },
            "controller": {
                "mode": "kubernetes",
                "generator": "generator.nasloop:50051",
                "evaluator": "evaluator.nasloop:50052",
                "novelty": "novelty.nasloop:50053",
                "trainer": "trainer.nasloop:50054",
                "kubernetes": {"namespace": NS, "poll_interval_s": 0.02, **kube_settings},
            },
        }
    )


def pod_spec(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def container(job: dict) -> dict:
    (c,) = pod_spec(job)["containers"]
    return c


def plain_env(job: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(job)["env"] if "value" in e}


def walk(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted path, value) in a manifest."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk(v, f"{path}[{i}]")
    else:
        yield path, obj


# -- names and manifests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"controller_address": "ctl.nasloop:50055", "config_map": "nasloop-config"},
        {"node_selector": {"pool": "cpu"}, "image_pull_policy": "Always"},
        {"ttl_after_finished_s": 0, "active_deadline_s": 60, "service_account": "default"},
    ],
)
def test_cycle_job_manifest_is_valid_against_the_kubernetes_schema(settings: dict) -> None:
    job = cycle_job_manifest(RUN, 3, config(**settings))
    assert kubernetes_validate.validate(job, SCHEMA, strict=True) == SCHEMA


def test_cycle_job_manifest_runs_the_cycle_command_with_labels_deadline_and_resources() -> None:
    cfg = config(cpu="3", memory="5Gi", active_deadline_s=7200, ttl_after_finished_s=600)
    job = cycle_job_manifest(RUN, 12, cfg)
    assert job["metadata"]["name"] == "nasloop-cycle-run1-12"
    assert job["metadata"]["namespace"] == NS
    labels = {
        "app.kubernetes.io/name": "nasloop",
        "app.kubernetes.io/component": "cycle",
        "nasloop.io/run": RUN,
        "nasloop.io/cycle": "12",
    }
    assert job["metadata"]["labels"] == labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 7200
    assert spec["ttlSecondsAfterFinished"] == 600
    c = container(job)
    assert c["command"] == ["python", "-m", "services.cli", "cycle", "--run", RUN, "--cycle", "12"]
    assert c["image"] == "nasloop/controller:latest"
    assert c["resources"] == {
        "requests": {"cpu": "3", "memory": "5Gi"},
        "limits": {"cpu": "3", "memory": "5Gi"},
    }
    env = plain_env(job)
    assert env["NASLOOP_CONTROLLER__GENERATOR"] == "generator.nasloop:50051"
    assert env["NASLOOP_CONTROLLER__EVALUATOR"] == "evaluator.nasloop:50052"
    assert env["NASLOOP_CONTROLLER__NOVELTY"] == "novelty.nasloop:50053"
    assert env["NASLOOP_CONTROLLER__TRAINER"] == "trainer.nasloop:50054"
    # The store through the controller; nothing of the S3 endpoint's.
    assert env["NASLOOP_STORE__URL"] == "controller://nasloop-controller:50055"
    assert not [k for k in env if k.startswith("NASLOOP_STORE__") and k != "NASLOOP_STORE__URL"]
    assert "NASLOOP_CONFIG" not in env


def test_cycle_job_env_is_read_back_by_the_config_loader() -> None:
    cfg = config(controller_address="ctl.nasloop:50055")
    env = plain_env(cycle_job_manifest(RUN, 1, cfg))
    got = load_config(env={k: v for k, v in env.items() if k.startswith("NASLOOP_")})
    assert got.controller.generator == cfg.controller.generator
    assert got.controller.trainer == cfg.controller.trainer
    assert got.store.url == "controller://ctl.nasloop:50055"
    assert got.store.access_key is None and got.store.secret_key is None


def test_cycle_job_manifest_is_hardened() -> None:
    job = cycle_job_manifest(RUN, 1, config(service_account="cycle-sa"))
    pod = pod_spec(job)
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "cycle-sa"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert not pod["hostNetwork"] and not pod["hostPID"] and not pod["hostIPC"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(job)["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == kube.CYCLE_UID != 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in sc["capabilities"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable place is a size-limited emptyDir at /tmp.
    assert container(job)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": kube.TMP_SIZE}}]
    paths = [p for p, _ in walk(job)]
    assert not [p for p in paths if "hostPath" in p or "secret" in p.lower()]
    assert not [p for p, v in walk(job) if p.endswith(".privileged") and v is not False]
    assert "envFrom" not in container(job)


def test_cycle_job_gets_no_secret_and_no_store_key() -> None:
    """The cycle reads and writes its records through the controller (controller://): the
    store's keys, which the controller's config holds, appear nowhere in the Job."""
    for settings in ({}, {"config_map": "nasloop-config"}):
        job = cycle_job_manifest(RUN, 1, config(**settings))
        values = [str(v) for _, v in walk(job)]
        assert not [v for v in values if "very-secret-value" in v or "AKIA-PLAINTEXT" in v]
        assert not [p for p, _ in walk(job) if "secret" in p.lower()]
        assert not [e for e in container(job)["env"] if "valueFrom" in e]
        assert "envFrom" not in container(job)


def test_cycle_job_config_map_is_mounted_read_only() -> None:
    job = cycle_job_manifest(RUN, 1, config(config_map="nasloop-config"))
    assert plain_env(job)["NASLOOP_CONFIG"] == "/etc/nasloop/config.yaml"
    mount = {m["name"]: m for m in container(job)["volumeMounts"]}["config"]
    assert mount == {"name": "config", "mountPath": "/etc/nasloop", "readOnly": True}
    volume = {v["name"]: v for v in pod_spec(job)["volumes"]}["config"]
    assert volume["configMap"]["name"] == "nasloop-config"
    assert volume["configMap"]["items"] == [{"key": "config.yaml", "path": "config.yaml"}]


def test_cycle_job_node_selector() -> None:
    job = cycle_job_manifest(RUN, 1, config(node_selector={"pool": "cpu", "zone": "a"}))
    assert pod_spec(job)["nodeSelector"] == {"pool": "cpu", "zone": "a"}
    assert "nodeSelector" not in pod_spec(cycle_job_manifest(RUN, 1, config()))


def test_cycle_job_placement_pull_secrets_tolerations_affinity_priority_labels() -> None:
    """The chart's values for cycle Jobs (image.pullSecrets, controller.cycleJobs.*, the
    release's instance label) land in the pod spec; the cycle's own labels cannot be replaced."""
    toleration = {"key": "pool", "operator": "Equal", "value": "ctl", "effect": "NoExecute"}
    affinity = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    cfg = config(
        image_pull_secrets=["regcred"],
        tolerations=[toleration],
        affinity=affinity,
        priority_class="nasloop-cycles",
        labels={"app.kubernetes.io/instance": "nl", "nasloop.io/run": "other-run"},
    )
    job = cycle_job_manifest(RUN, 2, cfg)
    assert kubernetes_validate.validate(job, SCHEMA, strict=True) == SCHEMA
    spec = pod_spec(job)
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["tolerations"] == [toleration]
    assert spec["affinity"] == affinity
    assert spec["priorityClassName"] == "nasloop-cycles"
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        assert meta["labels"]["app.kubernetes.io/instance"] == "nl"
        assert meta["labels"]["nasloop.io/run"] == RUN
    plain = pod_spec(cycle_job_manifest(RUN, 1, config()))
    assert not {"imagePullSecrets", "tolerations", "affinity", "priorityClassName"} & plain.keys()


def test_cycle_job_manifest_refuses_a_local_store() -> None:
    cfg = config()
    cfg.store.url = "file:///var/lib/nasloop"
    with pytest.raises(ValueError, match="s3://"):
        cycle_job_manifest(RUN, 1, cfg)


def test_cycle_job_name_is_deterministic_and_short_enough_for_40_char_runs() -> None:
    run = "r" + "a1-" * 12 + "a1x"  # 40 characters
    assert len(run) == 40
    assert cycle_job_name(run, 9999) == cycle_job_name(run, 9999)
    name = cycle_job_name(run, 9999)
    assert name == f"nasloop-cycle-{run}-9999" and len(name) <= 63
    assert cycle_job_name(RUN, 1) == "nasloop-cycle-run1-1"
    assert cycle_job_name(RUN, 1) != cycle_job_name(RUN, 11) != cycle_job_name("run11", 1)
    job = cycle_job_manifest(run, 9999, config())
    assert job["metadata"]["labels"]["nasloop.io/run"] == run
    kubernetes_validate.validate(job, SCHEMA, strict=True)
    # The baseline (cycle 0) runs as a Job of its own: `nasloop cycle --baseline`.
    base = cycle_job_manifest(run, layout.BASELINE, config())
    assert base["metadata"]["name"] == f"nasloop-cycle-{run}-base"
    assert base["metadata"]["labels"]["nasloop.io/cycle"] == "base"
    assert base["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "--baseline"
    kubernetes_validate.validate(base, SCHEMA, strict=True)


@pytest.mark.parametrize(
    ("run", "cycle"), [("Bad_Name", 1), ("-x", 1), ("a" * 41, 1), (RUN, -1), (RUN, 10000)]
)
def test_cycle_job_name_refuses_bad_runs_and_cycles(run: str, cycle: int) -> None:
    with pytest.raises(InvalidName):
        cycle_job_name(run, cycle)


def test_controller_role_is_valid_and_namespaced() -> None:
    role = kube.controller_role(NS)
    kubernetes_validate.validate(role, SCHEMA, strict=True)
    assert role["kind"] == "Role"
    assert {r["resources"][0] for r in role["rules"]} == {"jobs", "pods"}


# -- lifecycle against the FAKE API -------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        yield api
        api.check()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as ex:
        yield ex


def jobs(fake: FakeKubeAPI, **settings: Any) -> CycleJobs:
    return CycleJobs(fake.api_client(), config(**settings))


def polls(fake: FakeKubeAPI, name: str) -> int:
    with fake.lock:
        return sum(1 for m, p in fake.requests if m == "GET" and p.endswith(f"/jobs/{name}"))


def until_polled(fake: FakeKubeAPI, name: str, times: int = 3) -> None:
    """Wait until the watcher has read the Job ``times`` more times."""
    start = polls(fake, name)
    deadline = time.monotonic() + 10
    while polls(fake, name) < start + times:
        assert time.monotonic() < deadline, "the watcher stopped polling"
        time.sleep(0.01)


def watch(
    pool: ThreadPoolExecutor, cj: CycleJobs, stop: threading.Event | None = None
) -> Future[CycleOutcome]:
    return pool.submit(cj.wait, RUN, 1, stop)


def test_fake_kube_lifecycle_create_running_succeeded(
    fake: FakeKubeAPI, pool: ThreadPoolExecutor
) -> None:
    cj = jobs(fake)
    name = cj.ensure(RUN, 1)
    assert name == "nasloop-cycle-run1-1"
    (manifest,) = fake.created  # validated by the fake against the schema on create
    assert manifest == cycle_job_manifest(RUN, 1, cj.config)
    outcome = watch(pool, cj)
    until_polled(fake, name)
    assert not outcome.done()  # created, not started
    fake.start_pod(name)
    until_polled(fake, name)
    assert not outcome.done()  # running
    fake.succeed(name)
    assert outcome.result(timeout=10) == CycleOutcome("succeeded", f"cycle job {name} completed")
    assert outcome.result().ok
    assert (NS, name) in fake.jobs  # finished Jobs are left to their TTL


def test_fake_kube_failed_deadline_exceeded(fake: FakeKubeAPI, pool: ThreadPoolExecutor) -> None:
    cj = jobs(fake)
    name = cj.ensure(RUN, 1)
    fake.start_pod(name)
    outcome = watch(pool, cj)
    until_polled(fake, name)
    fake.deadline_exceeded(name)
    result = outcome.result(timeout=10)
    assert result.state == "failed" and not result.ok
    assert "DeadlineExceeded" in result.message
    assert "exit 137" in result.message


def test_fake_kube_failed_oom_killed_pod(fake: FakeKubeAPI, pool: ThreadPoolExecutor) -> None:
    cj = jobs(fake)
    name = cj.ensure(RUN, 1)
    fake.start_pod(name)
    outcome = watch(pool, cj)
    until_polled(fake, name)
    with fake.lock:  # the kubelet OOM-kills the container; backoffLimit 0 fails the Job
        fake.terminate(name, 137, reason="OOMKilled")
        fake.finish_job(name, False, "BackoffLimitExceeded", "Job has reached the backoff limit")
    result = outcome.result(timeout=10)
    assert result.state == "failed"
    assert "BackoffLimitExceeded" in result.message
    assert "OOMKilled (exit 137)" in result.message


def test_fake_kube_pod_that_cannot_start_fails_at_once(fake: FakeKubeAPI) -> None:
    cj = jobs(fake, config_map="missing-config")
    name = cj.ensure(RUN, 1)
    fake.set_pending(name, waiting="CreateContainerConfigError")
    result = cj.wait(RUN, 1)
    assert result.state == "failed"
    assert "CreateContainerConfigError" in result.message
    fake.set_pending(name, waiting="ImagePullBackOff")  # a registry can recover: keep waiting
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert cj.wait(RUN, 1, stop).state == "stopped"


def test_fake_kube_job_deleted_under_the_watcher(
    fake: FakeKubeAPI, pool: ThreadPoolExecutor
) -> None:
    cj = jobs(fake)
    name = cj.ensure(RUN, 1)
    fake.start_pod(name)
    outcome = watch(pool, cj)
    until_polled(fake, name)
    fake.delete_job(NS, name, "Background")  # someone ran kubectl delete job
    assert outcome.result(timeout=10).state == "deleted"


def test_fake_kube_restarted_controller_reattaches_to_the_job(
    fake: FakeKubeAPI, pool: ThreadPoolExecutor
) -> None:
    first = jobs(fake)
    name = first.ensure(RUN, 1)
    fake.start_pod(name)
    first.api.close()  # the controller dies while the cycle runs
    second = jobs(fake)
    assert second.ensure(RUN, 1) == name
    assert len(fake.created) == 1 and list(fake.jobs) == [(NS, name)]
    assert [p for m, p in fake.requests if m == "POST"] == [f"/apis/batch/v1/namespaces/{NS}/jobs"]
    outcome = watch(pool, second)
    until_polled(fake, name)
    fake.succeed(name)
    assert outcome.result(timeout=10).state == "succeeded"
    # Restarted after the end: re-attaching reports the earlier attempt's result.
    third = jobs(fake)
    assert third.ensure(RUN, 1) == name and len(fake.created) == 1
    assert third.wait(RUN, 1).state == "succeeded"


def test_fake_kube_create_conflict_reattaches(fake: FakeKubeAPI) -> None:
    """Another replica created the Job between our look and our create: 409 → re-attach."""
    cj = jobs(fake)
    name = cj.ensure(RUN, 1)
    fake.get_errors.append(404)  # the first look misses it
    assert jobs(fake).ensure(RUN, 1) == name
    assert len(fake.created) == 1 and len(fake.jobs) == 1


def test_fake_kube_refuses_a_foreign_job_of_the_same_name(fake: FakeKubeAPI) -> None:
    body = cycle_job_manifest(RUN, 1, config())
    body["metadata"]["labels"] = {"app": "something-else"}
    assert fake.create_job(NS, body)[0] == 201
    with pytest.raises(CycleJobError, match="not this run's cycle job"):
        jobs(fake).ensure(RUN, 1)


def test_fake_kube_refuses_the_same_runs_job_of_another_release(fake: FakeKubeAPI) -> None:
    """Two releases in one namespace, each with a run of the same name: the Job names collide,
    and the other release's Job (its instance label differs) is not re-attached to, so its pod
    never speaks for this release's run (its uid is never recorded)."""
    mine, theirs = ({"app.kubernetes.io/instance": i} for i in ("nl-a", "nl-b"))
    assert fake.create_job(NS, cycle_job_manifest(RUN, 1, config(labels=theirs)))[0] == 201
    with pytest.raises(CycleJobError, match="not this run's cycle job"):
        jobs(fake, labels=mine).ensure(RUN, 1)
    assert jobs(fake, labels=theirs).ensure(RUN, 1) == "nasloop-cycle-run1-1"


def test_fake_kube_refuses_a_job_of_the_cycle_name_under_another_account(
    fake: FakeKubeAPI,
) -> None:
    """A Job named and labelled as a cycle's that does not run as the cycle account (e.g. made
    with the evaluator's token, which the admission policy holds to the sandbox account) is not
    re-attached to: its pod would speak for the run's cycle at the CycleStore."""
    body = cycle_job_manifest(RUN, 1, config())
    body["spec"]["template"]["spec"]["serviceAccountName"] = "nasloop-sandbox"
    body["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", "steal"]
    assert fake.create_job(NS, body)[0] == 201
    with pytest.raises(CycleJobError, match="not this run's cycle job"):
        jobs(fake).ensure(RUN, 1)


def test_fake_kube_restarted_controller_knows_its_running_cycle_pod_at_once(
    fake: FakeKubeAPI,
) -> None:
    """A controller restarted while a cycle runs (an upgrade) serves the cycle pod's first
    CycleStore call, which may come before the run is resumed and its Job re-attached to: the
    Job is adopted then, under the same checks as a re-attach (a refusal failed the cycle)."""
    name = jobs(fake).ensure(RUN, 1)
    fake.start_pod(name, pod_ip="10.0.0.5")
    assert jobs(fake).cycle_of_pod_ip("10.0.0.5") == (RUN, 1)
    fake.delete_job(NS, name, None)
    body = cycle_job_manifest(RUN, 1, config())
    body["spec"]["template"]["spec"]["serviceAccountName"] = "nasloop-sandbox"
    assert fake.create_job(NS, body)[0] == 201
    fake.start_pod(name, pod_ip="10.0.0.6")
    assert jobs(fake).cycle_of_pod_ip("10.0.0.6") is None  # not the controller's kind of Job


def test_fake_kube_job_being_deleted_is_waited_out_then_created(fake: FakeKubeAPI) -> None:
    cj = jobs(fake)
    name = cj.ensure(RUN, 1)
    with fake.lock:
        fake.jobs[(NS, name)]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    threading.Timer(0.2, fake.delete_job, (NS, name, "Background")).start()
    assert cj.ensure(RUN, 1) == name
    assert len(fake.created) == 2 and (NS, name) in fake.jobs
    assert "deletionTimestamp" not in fake.job(name)["metadata"]


def test_fake_kube_stop_event_returns_early_and_leaves_the_job(
    fake: FakeKubeAPI, pool: ThreadPoolExecutor
) -> None:
    cj = jobs(fake)
    name = cj.ensure(RUN, 1)
    fake.start_pod(name)
    stop = threading.Event()
    outcome = watch(pool, cj, stop)
    until_polled(fake, name)
    stop.set()
    assert outcome.result(timeout=10).state == "stopped"
    assert (NS, name) in fake.jobs and not fake.deleted
    already = threading.Event()
    already.set()
    before = polls(fake, name)
    assert cj.wait(RUN, 1, already).state == "stopped"
    assert polls(fake, name) == before


def test_fake_kube_delete_and_retry(fake: FakeKubeAPI) -> None:
    cj = jobs(fake)
    name = cj.ensure(RUN, 1)
    fake.start_pod(name)
    fake.fail(name, 1)
    assert cj.wait(RUN, 1).state == "failed"
    assert cj.delete(RUN, 1) is True
    assert fake.deleted == [(NS, name, "Background")]
    assert (NS, name) not in fake.jobs and not fake.pods_of(name)
    assert cj.delete(RUN, 1) is False  # missing is fine
    assert cj.wait(RUN, 1).state == "deleted"
    # The controller's retry: a fresh Job of the same name.
    assert cj.ensure(RUN, 1) == name and len(fake.created) == 2


def test_fake_kube_transient_api_errors_are_retried(fake: FakeKubeAPI) -> None:
    cj = jobs(fake)
    name = cj.ensure(RUN, 1)
    fake.start_pod(name)
    fake.succeed(name)
    fake.get_errors.extend([503, 500, 429])
    assert cj.wait(RUN, 1).state == "succeeded"
    assert not fake.get_errors


def test_fake_kube_api_errors_raise_cycle_job_error(fake: FakeKubeAPI) -> None:
    cj = jobs(fake)
    fake.create_errors.append(403)
    fake.get_errors.append(404)
    with pytest.raises(CycleJobError, match=r"cannot create cycle job .* 403"):
        cj.ensure(RUN, 1)
    fake.get_errors.append(403)
    with pytest.raises(CycleJobError, match="403"):
        cj.ensure(RUN, 1)
    name = cj.ensure(RUN, 1)
    fake.get_errors.append(401)
    with pytest.raises(CycleJobError, match=rf"cannot read cycle job {name}: .*401"):
        cj.wait(RUN, 1)
    # An API server that keeps failing is given up on after api_outage_s.
    cj.api_outage_s = 0.1
    fake.get_errors.extend([503] * 1000)
    with pytest.raises(CycleJobError, match="failed for"):
        cj.wait(RUN, 1)
    fake.get_errors.clear()


def test_fake_kube_unreachable_api_raises_cycle_job_error() -> None:
    with FakeKubeAPI() as api:
        cj = jobs(api)
    # The fake is gone: nothing listens on its port any more.
    with pytest.raises(CycleJobError, match="cannot"):
        cj.ensure(RUN, 1)
    with pytest.raises(CycleJobError, match="cannot delete"):
        cj.delete(RUN, 1)
