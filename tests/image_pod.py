"""The evaluation pod's entry point, run inside an evaluator image: a check for smoke.sh.

Usage: ``python tests/image_pod.py IMAGE``   (exit 0 when every check passed, 1 otherwise)

What runs is what runs in cluster mode, with only the cluster faked: the evaluator's own
``Evaluator`` with its ``KubernetesExecutor`` (built by ``executor_from_config`` from the same
settings a deployment gives it) against a real S3 endpoint on loopback (moto's standalone
server) and a FAKE Kubernetes API (tests/kubefake.py). The executor uploads the sandbox dataset
(digits) and the task, signs the presigned URLs and creates the Job; the fake's "kubelet" here
runs the Job's container with ``buildah run`` inside IMAGE, as the manifest says a pod runs:

* its command and exactly its environment (the three presigned URLs, HOME/TMPDIR=/tmp, the
  forwarded NASLOOP_EVALUATOR__* limits) on top of the image's own;
* as the manifest's ``runAsUser``/``runAsGroup`` (the sandbox uid, not the image's USER), every
  capability dropped;
* a read-only root (checked in the container before the pod's command runs, with the uid and
  the capabilities) as far as buildah allows: buildah cannot mount ``/`` read-only, so every
  top-level directory of the image (and ``/run/lock``) is bound read-only over itself; ``/tmp``
  is a fresh tmpfs (the manifest's emptyDir). Not reproduced: the pod's cgroup limits and the
  runtime's seccomp profile (buildah's chroot isolation applies neither), its network policy
  (the container shares the host's network, which is how it reaches moto on 127.0.0.1).

Then the executor reads the uploaded report and the evaluator scores it with the test labels,
as in a deployment. Checked: a known-good network is trained and evaluated with an accuracy
above the failure floor; a network that raises in ``learn`` gets its own failure status
(STATUS_TRAIN_EXCEPTION), not a plumbing error; a network that imports scikit-learn to rebuild
the digits labels (``load_digits``: the test set's labels, by construction of the data set)
cannot import it (STATUS_IMPORT_ERROR) — in an image that has scikit-learn, as the services'
evaluator image does, it reaches ``learn`` and says how many labels it rebuilt, and the check
fails; every pod exits 0 (their plumbing worked); the evaluation's objects are gone afterwards.
Anything else fails loudly with each pod's log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from candidates import GOOD_NET, replace
from kubefake import FakeKubeAPI
from s3server import running_s3_server, store_env

from nasloop.config import load_config
from nasloop.records import Evaluation
from nasloop.store import open_store
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2 as pb
from services.evaluator import protocols
from services.evaluator.datasets import DatasetCache
from services.evaluator.engine import Evaluator
from services.evaluator.kube.launcher import EVALUATIONS_PREFIX, executor_from_config
from services.evaluator.kube.manifests import ANNOTATION_CANDIDATE_ID

GOOD_ID = "smoke-good"
BAD_ID = "smoke-raises"
BAD_MESSAGE = "smoke: this candidate fails on purpose"
BAD_NET = replace(
    "    def learn(self, train_data):\n",
    f"    def learn(self, train_data):\n        raise RuntimeError({BAD_MESSAGE!r})\n",
)
# Rebuilds the digits labels from scikit-learn's bundled copy of the data set, where it can.
LEAK_ID = "smoke-sklearn-labels"
LEAK_MESSAGE = "rebuilt the digits labels from scikit-learn"
LEAK_NET = replace(
    "    def learn(self, train_data):\n",
    "    def learn(self, train_data):\n"
    f"        raise RuntimeError(f'{LEAK_MESSAGE}: {{len(load_digits().target)}} labels')\n",
    replace("import torch\n", "import torch\nfrom sklearn.datasets import load_digits\n"),
)
# A pod's time limit and the Job's slack (the fake kubelet kills the container at the deadline).
TIME_LIMIT_S = 240
DEADLINE_SLACK_S = 60
# Image directories that stay as they are: kernel filesystems, the pod's emptyDir (/tmp) and
# /run, where buildah itself writes (/run/.containerenv); /run/lock is bound read-only.
NOT_BOUND = {"dev", "proc", "sys", "tmp", "run"}
# Run first in each pod's container, with the pod's options: are the conditions what a pod gets?
CONDITIONS = """
import os, sys
uid, gid = int(sys.argv[1]), int(sys.argv[2])
problems = []
if (os.getuid(), os.getgid()) != (uid, gid):
    problems.append(f"runs as {os.getuid()}:{os.getgid()}, not {uid}:{gid}")
with open("/proc/self/status") as f:
    caps = {k: v.strip() for k, _, v in (line.partition(":") for line in f) if k == "CapEff"}
if int(caps.get("CapEff", "0"), 16):
    problems.append(f"effective capabilities {caps['CapEff']}")
places = ["/", "/etc", "/usr", "/opt/nasloop", "/var/lib/nasloop", "/var/tmp", "/run/lock"]
problems += [f"{d} is writable" for d in places if os.path.exists(d) and os.access(d, os.W_OK)]
if not os.access("/tmp", os.W_OK):
    problems.append("/tmp is not writable")
sys.exit("; ".join(problems) or None)
"""


@dataclass
class PodRun:
    """What the fake kubelet saw of one Job's container."""

    job: str
    candidate_id: str
    argv: list[str] = field(default_factory=list)
    exit_code: int | None = None
    log: str = ""
    seconds: float = 0.0
    error: str = ""  # the kubelet's own failure (buildah could not run it)


class KubeletError(RuntimeError):
    """The fake kubelet could not run the pod as a pod runs (not the pod's own failure)."""


def buildah(*args: str) -> str:
    proc = subprocess.run(["buildah", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise KubeletError(f"buildah {args[0]} exited with {proc.returncode}: {output}")
    return proc.stdout.strip()


def run_options(container: dict[str, Any], mountpoint: str | None) -> list[str]:
    """``buildah run`` options for the manifest's container: user, capabilities, mounts, env."""
    sec = container.get("securityContext", {})
    opts = ["--isolation", "chroot"]
    if "runAsUser" in sec:
        opts += ["--user", f"{sec['runAsUser']}:{sec.get('runAsGroup', sec['runAsUser'])}"]
    for cap in sec.get("capabilities", {}).get("drop", []):
        opts += ["--cap-drop", cap]
    for mount in container.get("volumeMounts", []):  # emptyDir volumes
        opts += ["--mount", f"type=tmpfs,destination={mount['mountPath']}"]
    if mountpoint is not None:  # readOnlyRootFilesystem
        root = Path(mountpoint)
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and not entry.is_symlink() and entry.name not in NOT_BOUND:
                opts += ["--volume", f"{entry}:/{entry.name}:ro"]
        if (root / "run" / "lock").is_dir():
            opts += ["--volume", f"{root / 'run' / 'lock'}:/run/lock:ro"]
    for var in container.get("env", []):
        opts += ["--env", f"{var['name']}={var['value']}"]
    return opts


class BuildahKubelet:
    """Plays the kubelet for the fake API: each created Job's container runs in the image."""

    def __init__(self) -> None:
        self.runs: list[PodRun] = []
        self.lock = threading.Lock()

    def on_create(self, api: FakeKubeAPI, job: dict[str, Any]) -> None:
        threading.Thread(target=self.run_job, args=(api, job), daemon=True).start()

    def run_job(self, api: FakeKubeAPI, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        spec = job["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        run = PodRun(name, job["metadata"]["annotations"].get(ANNOTATION_CANDIDATE_ID, "?"))
        with self.lock:
            self.runs.append(run)
        ctr = ""
        start = time.monotonic()
        try:
            ctr = buildah("from", "--quiet", container["image"])
            read_only = container.get("securityContext", {}).get("readOnlyRootFilesystem")
            mountpoint = buildah("mount", ctr) if read_only else None
            options = run_options(container, mountpoint)
            sec = container["securityContext"]
            probe = ["python3", "-c", CONDITIONS, str(sec["runAsUser"]), str(sec["runAsGroup"])]
            try:
                buildah("run", *options, ctr, "--", *probe)
            except KubeletError as e:
                raise KubeletError(f"the container's conditions are not a pod's: {e}") from None
            run.argv = ["buildah", "run", *options, ctr, "--"]
            run.argv += container["command"] + container.get("args", [])
            api.start_pod(name)
            proc = subprocess.run(
                run.argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=job["spec"]["activeDeadlineSeconds"],
            )
        except subprocess.TimeoutExpired as e:
            run.log = ((e.stdout or b"") + (e.stderr or b"")).decode(errors="replace")
            run.error = "deadline exceeded: the container was killed"
            api.deadline_exceeded(name)
            return
        except (OSError, KubeletError) as e:
            run.error = str(e)
            api.fail(name, 125, log=run.error)
            return
        finally:
            run.seconds = time.monotonic() - start
            if ctr:
                subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)
        run.exit_code = proc.returncode
        run.log = (proc.stdout + proc.stderr).decode(errors="replace")
        if proc.returncode == 0:
            api.succeed(name, log=run.log)
        else:
            api.fail(name, proc.returncode, log=run.log)


def describe(candidate_id: str, r: Evaluation) -> str:
    return (
        f"{candidate_id}: stage {r.last_stage}, status {r.status}, accuracy {r.accuracy:.4f}, "
        f"{r.parameter_count} parameters, {r.trained_samples} samples trained, "
        f"message {r.message!r}"
    )


def problems_of(
    outcomes: dict[str, Evaluation], runs: list[PodRun], leftovers: list[str]
) -> list[str]:
    problems: list[str] = []
    good, bad = outcomes.get(GOOD_ID), outcomes.get(BAD_ID)
    if good is None or bad is None:
        problems.append(f"outcomes missing: got {sorted(outcomes)}")
    if good is not None:
        r = good
        if good.executor != pb.Executor.Name(pb.EXECUTOR_KUBERNETES_JOB):
            problems.append(f"{GOOD_ID} did not run as a Job (executor {good.executor})")
        if r.status != "STATUS_OK" or r.last_stage != "STAGE_EVALUATED":
            problems.append(
                f"the good network was not trained and evaluated: {describe(GOOD_ID, good)}"
            )
        if not 0.0 < r.accuracy <= 1.0 or r.parameter_count <= 0 or r.trained_samples <= 0:
            problems.append(f"the good network's report is incomplete: {describe(GOOD_ID, good)}")
    if bad is not None:
        r = bad
        if r.status != "STATUS_TRAIN_EXCEPTION" or BAD_MESSAGE not in r.message:
            problems.append(
                f"the raising network did not get its own failure "
                f"(STATUS_TRAIN_EXCEPTION with its message): {describe(BAD_ID, bad)}"
            )
    leak = outcomes.get(LEAK_ID)
    if leak is None:
        problems.append(f"no outcome for {LEAK_ID}")
    else:
        r = leak
        if LEAK_MESSAGE in r.message:
            problems.append(
                f"a candidate rebuilt the test labels inside the image: {describe(LEAK_ID, leak)}"
            )
        elif r.status != "STATUS_IMPORT_ERROR" or "sklearn" not in r.message:
            problems.append(
                f"the label-rebuilding network did not fail to import scikit-learn "
                f"(STATUS_IMPORT_ERROR naming sklearn): {describe(LEAK_ID, leak)}"
            )
    by_candidate = {run.candidate_id: run for run in runs}
    for cid in (GOOD_ID, BAD_ID, LEAK_ID):
        run = by_candidate.get(cid)
        if run is None:
            problems.append(f"no pod ran for {cid}")
        elif run.exit_code is None:
            problems.append(f"the pod of {cid} did not run to its end: {run.error}")
        elif run.exit_code != 0:
            problems.append(f"the pod of {cid} exited with {run.exit_code}")
        elif "nasloop pod:" not in run.log:
            problems.append(f"the pod of {cid} did not log its outcome")
    if leftovers:
        problems.append(f"evaluation objects left in the store: {leftovers}")
    return problems


def main(image: str) -> int:
    started = time.monotonic()
    kubelet = BuildahKubelet()
    outcomes: dict[str, Evaluation] = {}
    error = ""
    with (
        tempfile.TemporaryDirectory(prefix="nasloop-image-pod-") as work,
        running_s3_server() as endpoint,
        FakeKubeAPI() as fake,
    ):
        env = {
            **store_env(endpoint, f"s3://smoke-{uuid.uuid4().hex[:12]}"),
            "NASLOOP_EVALUATOR__EXECUTOR": "kubernetes",
            "NASLOOP_EVALUATOR__DATA_DIR": str(Path(work) / "data"),
            "NASLOOP_EVALUATOR__TIME_LIMIT_S": str(TIME_LIMIT_S),
            "NASLOOP_EVALUATOR__KUBERNETES__IMAGE": image,
            "NASLOOP_EVALUATOR__KUBERNETES__GPUS": "0",
            "NASLOOP_EVALUATOR__KUBERNETES__POLL_INTERVAL_S": "0.2",
            "NASLOOP_EVALUATOR__KUBERNETES__DEADLINE_SLACK_S": str(DEADLINE_SLACK_S),
        }
        cfg = load_config(env=env)
        store = open_store(cfg.store)
        fake.on_create = kubelet.on_create
        executor = executor_from_config(cfg, store, api=fake.api_client())
        evaluator = Evaluator(cfg.evaluator, executor, DatasetCache(cfg.evaluator.data_dir))
        protocol = protocols.named(cfg.evaluator)[protocols.DEFAULT]  # digits, one epoch
        candidates = [
            common.Candidate(id=cid, code=code)
            for cid, code in ((GOOD_ID, GOOD_NET), (BAD_ID, BAD_NET), (LEAK_ID, LEAK_NET))
        ]
        try:
            for i, verdict in evaluator.run(candidates, protocol, "evaluate", threading.Event()):
                outcomes[candidates[i].id] = verdict
            fake.check()
        except Exception as e:  # reported with the pods' logs below
            error = f"the evaluation itself failed: {type(e).__name__}: {e}"
        finally:
            executor.close()
        leftovers = store.list(EVALUATIONS_PREFIX + "/")

    problems = ([error] if error else []) + problems_of(outcomes, kubelet.runs, leftovers)
    for cid, verdict in outcomes.items():
        print(f"image pod: {describe(cid, verdict)}")
    for run in kubelet.runs:
        print(f"image pod: {run.candidate_id}: pod exit {run.exit_code} in {run.seconds:.1f}s")
    if not problems:
        print(f"ok: the evaluation pod ran in {image} in {time.monotonic() - started:.0f}s")
        return 0
    for run in kubelet.runs:
        print(f"\n==== pod {run.job} (candidate {run.candidate_id}), exit {run.exit_code}")
        redacted = (a if "X-Amz" not in a else a.split("=", 1)[0] + "=…" for a in run.argv)
        print(" ".join(redacted))
        if run.error:
            print(f"kubelet: {run.error}")
        print(run.log.rstrip() or "(no output)")
    for cid, verdict in outcomes.items():
        if verdict.output_tail:
            print(f"\n==== output tail of {cid}\n{verdict.output_tail}")
    print("", *(f"FAILED: {p}" for p in problems), sep="\n", file=sys.stderr)
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: image_pod.py IMAGE")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1]))
