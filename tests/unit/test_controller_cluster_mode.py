"""The controller's run manager in cluster mode: one Kubernetes Job per cycle, against a FAKE
Kubernetes API (tests/kubefake.py; no cluster exists on these machines).

The test plays the cycle Job: when the controller's Job appears in the fake, it writes what
``nasloop cycle`` would (the cycle's progress and summary) to the store, then marks the Job
complete or failed. The real cycle code is exercised by tests/integration/test_loop.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from kubefake import FakeKubeAPI, fake_kube
from test_controller_kube import config

from nasloop import layout
from nasloop.artifacts import AdapterMeta
from nasloop.store import LocalStore
from services.controller.kube import CycleJobs, cycle_job_name
from services.controller.loop import state as st
from services.controller.loop.summary import CycleSummary, save_summary
from services.controller.runs import RunManager, create_run
from services.controller.runspec import load_spec

RUN = "kube1"


class PlayedCycles:
    """Plays each cycle Job that appears: writes its summary, then completes (or fails) it."""

    def __init__(self, fake: FakeKubeAPI, store: LocalStore, fail: set[int] | None = None) -> None:
        self.fake, self.store, self.fail = fake, store, set(fail or ())
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, daemon=True)
        self._thread.start()

    def _play(self) -> None:
        while not self._stop.wait(0.02):
            with self.fake.lock:
                new = [
                    (name, job["metadata"]["uid"])
                    for (_, name), job in self.fake.jobs.items()
                    if job["metadata"]["uid"] not in self.seen
                ]
            for name, uid in new:
                self.seen.append(uid)
                suffix = name.rsplit("-", 1)[1]
                cycle = layout.BASELINE if suffix == "base" else int(suffix)
                self.fake.start_pod(name)
                if cycle in self.fail:
                    self.fail.discard(cycle)  # fails once; a resumed cycle succeeds
                    self.fake.deadline_exceeded(name)
                    continue
                adapter = None
                if cycle != layout.BASELINE:  # the baseline trains nothing
                    adapter = AdapterMeta(
                        name=layout.adapter_name(RUN, cycle), run=RUN, cycle=cycle,
                        prefix=layout.adapter_prefix(RUN, cycle), sha256="a" * 64,
                    )  # fmt: skip
                save_summary(self.store, CycleSummary(RUN, cycle, generated=4, adapter=adapter))
                self.fake.succeed(name)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    with fake_kube() as api:
        yield api


def manager(fake: FakeKubeAPI, store: LocalStore) -> RunManager:
    cfg = config()
    return RunManager(cfg, store, cycle_jobs=CycleJobs(fake.api_client(), cfg))


def spec(cycles: int = 2, baseline: bool = False):  # type: ignore[no-untyped-def]
    return load_spec(overrides=[f"name={RUN}", f"cycles={cycles}", f"baseline={baseline}"])


def test_fake_kube_each_cycle_is_a_job_and_the_run_succeeds(fake, local_store) -> None:  # type: ignore[no-untyped-def]
    played = PlayedCycles(fake, local_store)
    runs = manager(fake, local_store)
    runs.start(spec(baseline=True))
    state = runs.wait(RUN, 30)
    played.close()
    assert state.state == "succeeded" and state.cycles_done == 2, state.error
    # ... and the baseline after the last cycle, as a Job of its own
    assert [m["metadata"]["name"] for m in fake.created] == [
        cycle_job_name(RUN, 1), cycle_job_name(RUN, 2), f"nasloop-cycle-{RUN}-base",
    ]  # fmt: skip
    baseline = fake.created[2]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert baseline[-3:] == ["--run", RUN, "--baseline"]
    assert state.adapter is not None and state.adapter.name == layout.adapter_name(RUN, 2)
    assert state.cycle_job == cycle_job_name(RUN, layout.BASELINE) and state.baseline_done
    summary = runs.baseline(RUN, state)
    assert summary is not None and summary.cycle == layout.BASELINE


def test_fake_kube_a_failed_cycle_job_fails_the_run_and_resume_runs_it_again(
    fake, local_store
) -> None:  # type: ignore[no-untyped-def]
    played = PlayedCycles(fake, local_store, fail={1})
    runs = manager(fake, local_store)
    runs.start(spec(1))
    state = runs.wait(RUN, 30)
    assert state.state == "failed" and "DeadlineExceeded" in state.error, state.error
    assert fake.jobs == {}  # the failed Job was deleted, so a resume gets a fresh one
    runs.resume(RUN)
    state = runs.wait(RUN, 30)
    played.close()
    assert state.state == "succeeded", state.error
    assert len(fake.created) == 2


def test_fake_kube_a_restarted_controller_reattaches_to_the_running_cycle_job(
    fake, local_store
) -> None:  # type: ignore[no-untyped-def]
    """The first controller died with cycle 1's Job running: the next one must not create a
    second Job for it."""
    create_run(local_store, spec(1))
    state = st.load_run_state(local_store, RUN)
    assert state is not None
    state.state, state.cycle = "running", 1
    st.save_run_state(local_store, state)
    CycleJobs(fake.api_client(), config()).ensure(RUN, 1)  # the dead controller's Job
    runs = manager(fake, local_store)
    assert runs.recover() == [RUN]
    time.sleep(0.2)
    assert len(fake.created) == 1  # re-attached, not created again
    played = PlayedCycles(fake, local_store)
    state = runs.wait(RUN, 30)
    played.close()
    assert state.state == "succeeded" and len(fake.created) == 1, state.error


def test_fake_kube_stop_now_deletes_the_cycle_job(fake, local_store) -> None:  # type: ignore[no-untyped-def]
    runs = manager(fake, local_store)
    runs.start(spec(1))
    deadline = time.monotonic() + 10
    while not fake.jobs and time.monotonic() < deadline:
        time.sleep(0.02)
    runs.stop(RUN, now=True)
    state = runs.wait(RUN, 30)
    assert state.state == "stopped"
    assert fake.jobs == {}
    assert local_store.exists(f"runs/{RUN}/stop.json")
