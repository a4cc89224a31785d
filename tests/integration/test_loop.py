"""The closed loop through the real services: the controller over gRPC, crash-safe cycles
and baseline (SIGKILL at every step, then resume), stop and resume, a controller restart
mid-run, and ``nasloop run`` on this machine.

Every service is a real process on loopback (tests/loop_world.py): vLLM is not used here (the
transformers backend starts in seconds; the generator's own tests serve with vLLM), the store
is moto's real S3 endpoint, candidates are trained for real in the strict sandbox.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from kubefake import fake_kube
from loop_world import SPEC_OVERRIDES, LoopWorld, build_loop_world, controller_env, loop_services
from servers import grpcurl, json_stream

from nasloop import layout
from nasloop.config import load_config
from nasloop.records import TrainingPair, loads_pairs, loads_records, sha256_text
from nasloop.rpc import connect
from nasloop.v1 import controller_pb2 as pb
from nasloop.v1 import controller_pb2_grpc as pb_grpc
from services.controller.clients import GeneratorClient, NoveltyClient
from services.controller.kube import CycleJobs
from services.controller.loop import state as st
from services.controller.loop.baseline import BASELINE_STEPS
from services.controller.loop.cycle import CYCLE_STEPS
from services.controller.runs import create_run
from services.controller.runspec import dump_spec, load_spec, task_spec
from services.controller.server import build
from services.local import LocalService, free_port, start_service, wait_ready

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = 8


@pytest.fixture(scope="module")
def world(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> LoopWorld:
    return build_loop_world(s3_endpoint, tmp_path_factory.mktemp("loop"))


@pytest.fixture(scope="module")
def services(world: LoopWorld) -> Iterator[dict[str, LocalService]]:
    with loop_services(world, world.root / "logs") as s:
        yield s


def spec_of(name: str, *overrides: str):  # type: ignore[no-untyped-def]
    return load_spec(overrides=[*SPEC_OVERRIDES, f"name={name}", *overrides])


@contextmanager
def controller(world: LoopWorld, services: dict[str, LocalService]) -> Iterator[LocalService]:
    env = controller_env(world, services)
    c = start_service("controller", env, world.root / "logs" / "controller.log", cwd=ROOT)
    try:
        wait_ready(c, 60)
        yield c
    finally:
        c.stop(grace_s=5)


def stub(c: LocalService) -> pb_grpc.ControllerStub:
    return pb_grpc.ControllerStub(connect(c.address))


def records(world: LoopWorld, run: str, cycle: int) -> list:  # type: ignore[type-arg]
    return loads_records(world.store.get_bytes(layout.candidates_key(run, cycle)))


def check_cycle_records(world: LoopWorld, run: str, cycle: int, n: int = CANDIDATES) -> None:
    """Exactly one final record per candidate, none lost, none twice."""
    found = records(world, run, cycle)
    assert [r.id for r in found] == [layout.candidate_id(run, cycle, i) for i in range(n)]
    assert all(r.evaluation is not None for r in found)
    evaluated = world.store.list(f"{layout.cycle_prefix(run, cycle)}/evaluated/")
    assert len(evaluated) == n
    progress = st.load_progress(world.store, run, cycle)
    assert progress is not None and sorted(progress.done) == sorted(CYCLE_STEPS.names)


def check_baseline_records(world: LoopWorld, run: str, last: int, n: int = CANDIDATES) -> None:
    """The base model answered the last cycle's prompt with its seeds: one final, evaluated
    record per index, no adapter, ids of its own."""
    found = loads_records(world.store.get_bytes(layout.baseline_candidates_key(run)))
    previous = records(world, run, last)
    assert len(found) == len(previous) == n
    assert [r.id for r in found] == [layout.baseline_candidate_id(run, i) for i in range(n)]
    for mine, theirs in zip(found, previous, strict=True):
        assert mine.index == theirs.index and mine.cycle == layout.BASELINE
        assert (mine.prompt_sha256, mine.seed) == (theirs.prompt_sha256, theirs.seed)
        assert mine.adapter_name == "" and mine.evaluation is not None and not mine.selected
        assert mine.novelty is None or not mine.novelty.added  # checked, never added
    evaluated = world.store.list(st.evaluated_prefix(run, layout.BASELINE))
    assert len(evaluated) == n
    progress = st.load_progress(world.store, run, layout.BASELINE)
    assert progress is not None and sorted(progress.done) == sorted(BASELINE_STEPS.names)


def wait_for(condition: Callable[[], bool], timeout_s: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- the full loop, through the controller service ------------------------------------------------
def test_full_loop_through_the_controller_service(world, services) -> None:  # type: ignore[no-untyped-def]
    run = "full"
    with controller(world, services) as c:
        ctl = stub(c)
        started = ctl.StartRun(pb.StartRunRequest(spec_yaml=dump_spec(spec_of(run))))
        assert started.name == run and started.spec.cycles == 2
        events = list(ctl.WatchRun(pb.WatchRunRequest(name=run), timeout=600))
        final = ctl.GetRun(pb.GetRunRequest(name=run))
        assert final.state == pb.RUN_STATE_SUCCEEDED, final.error
        assert final.cycles_done == 2 and len(final.cycles) == 2

        # WatchRun streamed phase changes, every candidate's result, training and summaries
        # (the baseline's too, after the last cycle).
        kinds = [e.WhichOneof("detail") for e in events]
        assert kinds.count("candidate") == 3 * CANDIDATES
        assert kinds.count("summary") == 3 and "training" in kinds
        phases = {e.phase for e in events}
        assert {
            pb.CYCLE_PHASE_GENERATE, pb.CYCLE_PHASE_FINE_TUNE, pb.CYCLE_PHASE_DONE,
            pb.CYCLE_PHASE_BASELINE,
        } <= phases  # fmt: skip
        assert events[-1].phase == pb.CYCLE_PHASE_BASELINE and events[-1].summary.cycle == 0
        assert final.baseline.generated == CANDIDATES
        assert final.baseline.candidates.key == layout.baseline_candidates_key(run)

        # A watcher that arrives late gets the recorded summaries, and the stream ends.
        late = list(ctl.WatchRun(pb.WatchRunRequest(name=run, from_cycle=2), timeout=30))
        assert [e.summary.cycle for e in late] == [2, layout.BASELINE]
        got = ctl.GetCycle(pb.GetCycleRequest(run=run, cycle=1))
        assert got.generated == CANDIDATES and got.valid + sum(s.count for s in got.stopped) == 8
        assert got.step_seconds["generate"] > 0 and 0 < got.service_seconds <= got.seconds
        assert run in [r.name for r in ctl.ListRuns(pb.ListRunsRequest()).runs]

        # Bad requests get their status; the controller serves on.
        for request, call, code in [
            (pb.StartRunRequest(spec_yaml=dump_spec(spec_of(run))), ctl.StartRun, "ALREADY_EXISTS"),
            (pb.StartRunRequest(overrides=["training.lora.r=7"]), ctl.StartRun, "INVALID_ARGUMENT"),
            (pb.StartRunRequest(overrides=["cycles=2"]), ctl.StartRun, "INVALID_ARGUMENT"),
            (pb.GetRunRequest(name="nope"), ctl.GetRun, "NOT_FOUND"),
            (pb.GetRunRequest(name="Bad/Name"), ctl.GetRun, "INVALID_ARGUMENT"),
            (pb.GetCycleRequest(run=run, cycle=0), ctl.GetCycle, "INVALID_ARGUMENT"),
            (pb.GetCycleRequest(run=run, cycle=9), ctl.GetCycle, "NOT_FOUND"),
            (pb.ResumeRunRequest(name=run), ctl.ResumeRun, "FAILED_PRECONDITION"),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                call(request)
            assert err.value.code().name == code, (request, err.value.details())
        with pytest.raises(grpc.RpcError) as err:
            ctl.StartRun(pb.StartRunRequest(overrides=["name=x", "sampling.temprature=1"]))
        assert "sampling.temprature" in err.value.details()
        assert ctl.GetRun(pb.GetRunRequest(name=run)).state == pb.RUN_STATE_SUCCEEDED

        # The README's grpcurl calls, through reflection.
        cycle = json.loads(
            grpcurl(c, "nasloop.v1.Controller/GetCycle", data={"run": run, "cycle": 1})
        )
        assert cycle["generated"] == CANDIDATES
        watched = json_stream(grpcurl(c, "nasloop.v1.Controller/WatchRun", data={"name": run}))
        assert [e["summary"].get("cycle", 0) for e in watched] == [1, 2, 0]

    for cycle in (1, 2):
        check_cycle_records(world, run, cycle)
    check_baseline_records(world, run, 2)
    assert st.load_run_state(world.store, run).baseline_done  # type: ignore[union-attr]
    # Cycle 1 found novel answers, trained adapter 1; cycle 2 generated with it and trained
    # adapter 2 from it (continual), which the generator now serves under a new name.
    first, second = records(world, run, 1), records(world, run, 2)
    assert any(r.selected for r in first)
    assert all(r.adapter_name == "" for r in first)
    assert {r.adapter_name for r in second} == {layout.adapter_name(run, 1)}
    summary2 = final.cycles[1]
    assert summary2.adapter.parent_sha256 == final.cycles[0].adapter.sha256
    loaded = [a.name for a in GeneratorClient(services["generator"].address).list_adapters()]
    assert layout.adapter_name(run, 2) in loaded and layout.adapter_name(run, 1) not in loaded
    # Novel candidates were added to the run's namespace once each (the baseline's: never).
    ns = NoveltyClient(services["novelty"].address).get_namespace(layout.run_namespace(run))
    assert ns.entries == sum(1 for r in first + second if r.novelty and r.novelty.novel)


def test_training_pairs_carry_the_generators_exact_prompt(world, services) -> None:  # type: ignore[no-untyped-def]
    """The pair's prompt is byte-identical to what the generator was given (its hash is in
    every answer's provenance) and to what RenderPrompt gives for the run's TaskSpec."""
    run = "full"
    pairs = loads_pairs(world.store.get_bytes(layout.pairs_key(run, 1)))
    selected = [r for r in records(world, run, 1) if r.selected]
    assert len(pairs) == len(selected) > 0
    rendered = GeneratorClient(services["generator"].address).render_prompt(task_spec(spec_of(run)))
    by_id = {p.candidate_id: p for p in pairs}
    for record in selected:
        pair = by_id[record.id]
        assert pair == TrainingPair.from_record(record)
        assert pair.prompt == rendered.prompt
        assert sha256_text(pair.prompt) == record.prompt_sha256
        assert pair.completion == "```python\n" + record.code.strip() + "\n```"
    training_set = loads_pairs(world.store.get_bytes(layout.training_set_key(run, 2)))
    assert training_set[: len(pairs)] == pairs  # cumulative across cycles


def test_nasloop_run_drives_a_running_controller(world, services) -> None:  # type: ignore[no-untyped-def]
    run = "remote"
    sets = ["cycles=1", "candidates_per_cycle=2"]
    args = [arg for s in [*SPEC_OVERRIDES, *sets] for arg in ("--set", s)]
    with controller(world, services) as c:
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", "run", "--controller", c.address, "--name", run,
             *args],
            cwd=ROOT, env={**os.environ, **world.env}, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("succeeded") and "cycle 1: 2 generated" in out.stderr
    assert "baseline (base model, no adapter): 2 generated" in out.stderr
    check_cycle_records(world, run, 1, 2)
    check_baseline_records(world, run, 1, 2)


# -- crash safety ---------------------------------------------------------------------------------
@pytest.mark.timeout(1200)  # twelve processes started, each stopped at its point, then the rest
def test_a_cycle_killed_at_every_step_resumes_without_loss_or_duplicates(  # type: ignore[no-untyped-def]
    world, services, tmp_path
) -> None:
    """SIGKILL of the process running the cycle (what a Kubernetes Job runs) inside generate
    and evaluate, at each step boundary and inside fine-tuning; each restart resumes. Then the
    same for the run's baseline (``nasloop cycle --baseline``). The process stops at each named
    point (tests/pause_at.py) and is killed there: a point never reached fails the test."""
    run = "crash"
    store = world.store
    create_run(store, spec_of(run, "cycles=1"))
    env = {**os.environ, **controller_env(world, services)}
    job_id = layout.training_job_id(run, 1)

    kill_points = [
        ("inside generate+evaluate", "evaluated:2"),
        ("after generate", "after:generate"),
        ("after novelty", "after:novelty"),
        ("after select", "after:select"),
        ("inside fine-tune", "training-started"),
        ("after fine-tune", "after:fine_tune"),
        ("after publish", "after:publish"),
        ("after hot-load", "after:hot_load"),
    ]
    args = ["cycle", "--run", run, "--cycle", "1"]
    killed = _kill_and_finish(args, env, kill_points, tmp_path / "cycle")
    assert killed == [where for where, _ in kill_points]
    assert killed_in(tmp_path / "cycle", "inside fine-tune") == f"training-started {job_id}"

    check_cycle_records(world, run, 1)
    found = records(world, run, 1)
    ns = NoveltyClient(services["novelty"].address).get_namespace(layout.run_namespace(run))
    assert ns.entries == sum(1 for r in found if r.novelty and r.novelty.novel)
    manifests = [k for k in store.list(f"adapters/{run}/") if k.endswith("manifest.json")]
    assert manifests == [f"{layout.adapter_prefix(run, 1)}/manifest.json"]
    meta = store.get_json(manifests[0])["meta"]
    assert meta["job_id"] == job_id and meta["cycle"] == 1
    assert store.get_json(layout.summary_key(run, 1))["generated"] == CANDIDATES

    # The baseline, killed inside generate+evaluate and after each step, then finished.
    base = layout.BASELINE
    baseline_kill_points = [
        ("inside the baseline's generate+evaluate", "evaluated:2"),
        ("after the baseline's generate", "after:generate"),
        ("after the baseline's novelty", "after:novelty"),
        ("after the baseline's records", "after:records"),
    ]
    args = ["cycle", "--run", run, "--baseline"]
    killed = _kill_and_finish(args, env, baseline_kill_points, tmp_path / "baseline")
    assert killed == [where for where, _ in baseline_kill_points]
    check_baseline_records(world, run, 1)
    assert store.get_json(layout.summary_key(run, base))["generated"] == CANDIDATES
    ns2 = NoveltyClient(services["novelty"].address).get_namespace(layout.run_namespace(run))
    assert ns2.entries == ns.entries  # check-only: the baseline added nothing


PAUSE_AT = ROOT / "tests" / "pause_at.py"


def killed_in(markers: Path, where: str) -> str:
    """What the process wrote when it stopped at ``where`` (tests/pause_at.py)."""
    return (markers / where.replace(" ", "_").replace("'", "")).read_text()


def _kill_and_finish(
    args: list[str], env: dict[str, str], kill_points: list[tuple[str, str]], markers: Path
) -> list[str]:
    """Run ``nasloop *args`` once per kill point, stopping at that point (tests/pause_at.py),
    and SIGKILL it there; then run it to the end. The kill points where it was killed: a run
    that ends without reaching its point fails here."""
    markers.mkdir()
    killed = []
    for where, point in kill_points:
        marker = markers / where.replace(" ", "_").replace("'", "")
        command = [sys.executable, str(PAUSE_AT), point, str(marker), "--", *args]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            stopped = marker.exists
            wait_for(lambda p=proc, m=stopped: m() or p.poll() is not None, 300, where)
            assert marker.exists(), f"{where}: the cycle ended ({proc.poll()}) before it"
            assert proc.poll() is None, f"{where}: the process left its stopping point"
            proc.send_signal(signal.SIGKILL)
            killed.append(where)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, where
    command = [sys.executable, "-m", "services.cli", *args]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return killed


def test_stop_resume_and_a_controller_restart_mid_run(world, services) -> None:  # type: ignore[no-untyped-def]
    run = "restart"
    store = world.store
    spec = spec_of(run, "candidates_per_cycle=4", "baseline=false")
    evaluated = f"{layout.cycle_prefix(run, 1)}/evaluated/"
    with controller(world, services) as c:
        ctl = stub(c)
        ctl.StartRun(pb.StartRunRequest(spec_yaml=dump_spec(spec)))
        wait_for(lambda: len(store.list(evaluated)) >= 1, 300, "a first result")
        stopping = ctl.StopRun(pb.StopRunRequest(name=run))
        assert stopping.state in (pb.RUN_STATE_STOPPING, pb.RUN_STATE_STOPPED)
        wait_for(
            lambda: ctl.GetRun(pb.GetRunRequest(name=run)).state == pb.RUN_STATE_STOPPED,
            300,
            "the stop",
        )
        stopped = ctl.GetRun(pb.GetRunRequest(name=run))
        assert stopped.cycles_done == 0 and stopped.current_cycle == 1
        ctl.ResumeRun(pb.ResumeRunRequest(name=run))
        wait_for(lambda: store.exists(layout.summary_key(run, 1)), 300, "cycle 1")
        c.proc.send_signal(signal.SIGKILL)  # the controller dies mid-run (cycle 2)
        c.proc.wait()
    with controller(world, services) as c:  # a new controller resumes the run by itself
        ctl = stub(c)
        events = list(ctl.WatchRun(pb.WatchRunRequest(name=run, from_cycle=2), timeout=600))
        final = ctl.GetRun(pb.GetRunRequest(name=run))
    assert final.state == pb.RUN_STATE_SUCCEEDED, final.error
    assert [e.summary.cycle for e in events if e.WhichOneof("detail") == "summary"] == [2]
    for cycle in (1, 2):
        check_cycle_records(world, run, cycle, 4)
    state = json.loads(store.get_bytes(layout.state_key(run)))
    assert state["cycles_done"] == 2 and not state["baseline_done"]
    assert not store.list(f"{layout.baseline_prefix(run)}/")  # baseline=false: none


# -- nasloop run on this machine ------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_nasloop_run_starts_its_services_which_die_with_it_and_resumes(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = "cli"
    store = world.store
    env = {**os.environ, **world.env}
    sets = [
        a for s in [*SPEC_OVERRIDES, "cycles=1", "candidates_per_cycle=4"] for a in ("--set", s)
    ]
    command = [sys.executable, "-m", "services.cli", "run", "--name", run, "--no-baseline", *sets]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda: store.exists(layout.state_key(run)) or proc.poll() is not None, 300, "start"
        )
        assert proc.poll() is None
        services = _children(proc.pid)
        assert len(services) == 4  # novelty, evaluator, trainer, generator
        logs = tmp_path / ".nasloop" / "runs" / run / "logs"
        assert sorted(p.name for p in logs.iterdir()) == [
            "evaluator.log", "generator.log", "novelty.log", "trainer.log",
        ]  # fmt: skip
    finally:
        proc.send_signal(signal.SIGKILL)  # the run process dies without any clean-up
        proc.wait()
    wait_for(lambda: not any(_alive(p) for p in services), 30, "the services to die with it")

    resumed = subprocess.run(
        [sys.executable, "-m", "services.cli", "run", "--resume", run],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "| cycle |" in resumed.stdout and f"run {run} finished 1 cycles" in resumed.stderr
    check_cycle_records(world, run, 1, 4)
    assert not store.list(f"{layout.baseline_prefix(run)}/")  # --no-baseline, kept on resume

    def cli(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", *args], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert f"{run}\tsucceeded" in cli("runs")
    assert f"run {run}: succeeded" in cli("status", run)
    table = cli("report", run)
    assert table.splitlines()[2].startswith("| 1 ")  # one row per cycle
    bad = subprocess.run(
        [sys.executable, "-m", "services.cli", "run", "--set", "training.lora.r=7"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "training.lora.r" in bad.stderr


# -- cluster mode: a cycle Job that holds no store key --------------------------------------------
def test_a_cycle_job_holds_no_store_key_and_writes_through_the_controller(world, services) -> None:  # type: ignore[no-untyped-def]
    """Cluster mode with only the Kubernetes API FAKED (tests/kubefake.py; no cluster here):
    the controller (kubernetes mode, in this process) creates the cycle Job; the test plays the
    kubelet, running each Job's own command with exactly the Job's environment, in which no
    store key exists. The records of the cycle and of the baseline, read and written through
    the controller's CycleStore (each Job within its own scope), land in the real (moto) store,
    and the run succeeds."""
    run = "kubejob"
    port = free_port()
    cfg = load_config(
        env={
            **controller_env(world, services),
            "NASLOOP_CONTROLLER__MODE": "kubernetes",
            "NASLOOP_CONTROLLER__KUBERNETES__NAMESPACE": "nasloop",
            "NASLOOP_CONTROLLER__KUBERNETES__POLL_INTERVAL_S": "0.1",
            "NASLOOP_CONTROLLER__KUBERNETES__CONTROLLER_ADDRESS": f"127.0.0.1:{port}",
        }
    )
    jobs_env: list[dict[str, str]] = []
    with fake_kube() as fake:
        jobs = CycleJobs(fake.api_client(), cfg)
        host, runs = build(cfg, port=port, cycle_jobs=jobs)
        host.start()
        host.set_serving()

        def kubelet(stop: threading.Event) -> None:
            seen: set[str] = set()
            while not stop.wait(0.05):
                with fake.lock:
                    new = [name for (_, name) in fake.jobs if name not in seen]
                for name in new:
                    seen.add(name)
                    container = fake.job(name)["spec"]["template"]["spec"]["containers"][0]
                    env = {e["name"]: e["value"] for e in container["env"]}
                    jobs_env.append(env)
                    fake.start_pod(name, pod_ip="127.0.0.1")
                    command = [sys.executable, *container["command"][1:]]  # its python: ours
                    out = subprocess.run(
                        command, cwd=ROOT, env={"PATH": os.environ["PATH"], **env},
                        capture_output=True, text=True, timeout=600,
                    )  # fmt: skip
                    if out.returncode == 0:
                        fake.succeed(name, log=out.stdout)
                    else:
                        fake.fail(name, out.returncode, log=out.stderr[-3000:])

        stop = threading.Event()
        player = threading.Thread(target=kubelet, args=(stop,), daemon=True)
        player.start()
        events: list = []  # type: ignore[type-arg]
        try:
            runs.start(spec_of(run, "cycles=1"))  # a cycle Job, then the baseline's
            watcher = threading.Thread(target=lambda: events.extend(runs.watch(run)))
            watcher.start()
            state = runs.wait(run, timeout=600)
            watcher.join(timeout=30)
        finally:
            stop.set()
            player.join(timeout=60)
            runs.close()
            host.stop(1.0)
    assert state.state == "succeeded", state.error
    assert len(jobs_env) == 2
    for env in jobs_env:
        assert env["NASLOOP_STORE__URL"] == f"controller://127.0.0.1:{port}"
        assert not [k for k in env if "KEY" in k or "SECRET" in k or "ENDPOINT" in k]
        assert not [v for v in env.values() if v == "testing"]  # the store's key and secret
    check_cycle_records(world, run, 1)
    check_baseline_records(world, run, 1)
    # Live events, although each cycle ran in another process: every evaluated candidate (seen
    # as the Job wrote it through the CycleStore; a Job's end replays only its steps), each
    # step once, then the summary.
    for n, steps in ((1, CYCLE_STEPS.names), (layout.BASELINE, BASELINE_STEPS.names)):
        mine = [e for e in events if e.cycle == n]
        indexes = [e.candidate.index for e in mine if e.candidate is not None]
        assert sorted(indexes) == list(range(CANDIDATES)), (n, indexes)
        done = [e.message for e in mine if e.message.endswith(" done") and e.summary is None]
        assert sorted(done) == sorted(f"{step} done" for step in steps), (n, done)
        assert mine[-1].summary is not None and mine[-1].summary.cycle == n
    assert world.store.get_json(layout.summary_key(run, 1))["generated"] == CANDIDATES


# -- observers ----------------------------------------------------------------------------------
def test_an_observer_that_raises_on_every_event_leaves_the_records_as_without_it(
    world, services
) -> None:  # type: ignore[no-untyped-def]
    """A run whose only extra observer raises on every event succeeds, and its cycle's records
    (codes, statuses, accuracies) are those of the same spec run without it."""
    from services.controller.runs import RunManager

    cfg = load_config(env=controller_env(world, services))
    calls = {"n": 0}

    def broken(event: object) -> None:
        calls["n"] += 1
        raise RuntimeError("a display that always fails")

    def run_once(name: str, observer: Callable[[object], None] | None) -> list:  # type: ignore[type-arg]
        runs = RunManager(cfg, world.store)
        if observer is not None:
            runs.observers.add(observer)
        runs.start(spec_of(name, "cycles=1", "baseline=false"))
        state = runs.wait(name, 600)
        assert state.state == "succeeded", state.error
        return records(world, name, 1)

    plain = run_once("observed-plain", None)
    broken_run = run_once("observed-broken", broken)
    assert calls["n"] > CANDIDATES  # it was called for every candidate and step, and raised
    assert [(r.index, r.code, r.evaluation.status, r.evaluation.accuracy) for r in broken_run] == [
        (r.index, r.code, r.evaluation.status, r.evaluation.accuracy) for r in plain
    ]


def test_an_archive_cycle_shows_earlier_parents_and_a_killed_one_keeps_its_plan(  # type: ignore[no-untyped-def]
    world, services, tmp_path
) -> None:
    """search.strategy archive: cycle 1 (no archive yet) is the plain loop; cycle 2, killed
    inside generate+evaluate and resumed, asks half its prompts with a parent among cycle 1's
    valid candidates, exactly the plan an uninterrupted cycle makes from the same archive."""
    from services.controller.loop.archive import load_archive
    from services.controller.loop.plan import plan_prompts

    run, n = "archive", 6
    store = world.store
    generator = GeneratorClient(services["generator"].address)
    for adapter in generator.list_adapters():  # the runs before left theirs (max_cpu_loras)
        generator.unload_adapter(adapter.name)
    spec = spec_of(run, f"candidates_per_cycle={n}", "baseline=false", "search.strategy=archive")
    create_run(store, spec)
    env = {**os.environ, **controller_env(world, services)}
    _kill_and_finish(["cycle", "--run", run, "--cycle", "1"], env, [], tmp_path / "one")
    first = records(world, run, 1)
    assert {(r.parent_id, r.mode) for r in first} == {("", "")}
    assert st.load_progress(store, run, 1).plan == []  # type: ignore[union-attr]
    good = {r.id for r in first if r.valid}
    assert good, "cycle 1 found no valid candidate to be a parent"

    killed = [("inside generate+evaluate", "evaluated:1")]
    args = ["cycle", "--run", run, "--cycle", "2"]
    assert _kill_and_finish(args, env, killed, tmp_path / "two") == [killed[0][0]]
    check_cycle_records(world, run, 2, n)
    progress = st.load_progress(store, run, 2)
    assert progress is not None and len(progress.plan) == n

    # What an uninterrupted cycle 2 plans from the same archive, through the same generator.
    fresh = st.CycleProgress(cycle=2, seed=progress.seed)
    archive = load_archive(store, run, 2, objectives=spec.selection.objectives)
    plan_prompts(fresh, spec, archive, lambda task: generator.render_prompt(task).prompt)
    assert (fresh.plan, fresh.prompts, fresh.prompt) == (
        progress.plan, progress.prompts, progress.prompt,
    )  # fmt: skip

    second = records(world, run, 2)
    with_parent = [r for r in second if r.parent_id]
    assert len(with_parent) == n // 2 and {r.parent_id for r in with_parent} <= good
    for r in second:
        asked = progress.prompt_of(r.index)
        assert (r.prompt, r.prompt_sha256, r.parent_id) == (
            asked.text, progress.plan[r.index], asked.parent_id,
        )  # fmt: skip
        assert r.mode == ("full" if r.parent_id else "")
        assert r.seed == progress.seed + r.index
