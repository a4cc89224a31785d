"""The controller holds an adapter as AdapterMeta; state.json, progress.json and summary.json keep
it as before (the eight keys of the former AdapterState), so an old run's files read back and are
written again the same."""

from __future__ import annotations

import json
from pathlib import Path

from nasloop import layout
from nasloop.artifacts import AdapterMeta
from nasloop.store import LocalStore
from services.controller.loop import state as st
from services.controller.loop.summary import CycleSummary, load_summary, save_summary

RUN = "r"
# An adapter as the controller wrote it before AdapterMeta (AdapterState's fields).
OLD = {
    "name": "r-c2", "prefix": "adapters/r/2", "sha256": "a" * 64, "cycle": 2, "rank": 8,
    "base_model": "models/tiny", "base_model_sha256": "b" * 64, "parent_sha256": "c" * 64,
}  # fmt: skip


def test_an_old_runs_files_read_back_and_are_written_the_same(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    state = {"name": RUN, "state": "running", "cycle": 3, "phase": "generate", "cycles_done": 2,
             "adapter": OLD, "error": "", "created": "t0", "updated": "t1", "cycle_job": "",
             "baseline_done": False}  # fmt: skip
    progress = {"cycle": 3, "started": "t0", "finished": "", "done": ["generate"],
                "seconds": {}, "prompt": "p", "prompt_sha256": "", "seed": 7,
                "generated_with": OLD, "adapter": None, "training": {}, "wall_seconds": 0.0,
                "service_seconds": 0.0, "generation_seconds": 0.0,
                "evaluation_seconds": 0.0}  # fmt: skip
    store.put_bytes(layout.state_key(RUN), json.dumps(state, indent=1, sort_keys=True).encode())
    store.put_bytes(
        st.progress_key(RUN, 3), json.dumps(progress, indent=1, sort_keys=True).encode()
    )

    run = st.load_run_state(store, RUN)
    assert run is not None and isinstance(run.adapter, AdapterMeta)
    assert (run.adapter.name, run.adapter.rank, run.adapter.run) == ("r-c2", 8, RUN)
    ref = run.adapter.to_ref()
    assert (ref.run, ref.prefix, ref.parent_sha256) == (RUN, "adapters/r/2", "c" * 64)
    loaded = st.load_progress(store, RUN, 3)
    assert loaded is not None and loaded.generated_with == run.adapter
    st.save_progress(store, RUN, loaded)
    written = json.loads(store.get_bytes(st.progress_key(RUN, 3)))
    assert {k: written[k] for k in progress} == progress
    st.save_run_state(store, run)
    written = json.loads(store.get_bytes(layout.state_key(RUN)))
    assert {k: written[k] for k in state} == {**state, "updated": written["updated"]}


def test_a_full_adapter_is_stored_as_its_eight_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    full = AdapterMeta(run=RUN, job_id="r-c2-train", data_sha256="d" * 64,
                       metrics={"final_loss": 0.5}, **OLD)  # fmt: skip
    progress = st.CycleProgress(cycle=2, adapter=full)
    st.save_progress(store, RUN, progress)
    assert json.loads(store.get_bytes(st.progress_key(RUN, 2)))["adapter"] == OLD
    save_summary(store, CycleSummary(RUN, 2, adapter=full, generated_with=None))
    assert json.loads(store.get_bytes(layout.summary_key(RUN, 2)))["adapter"] == OLD
    summary = load_summary(store, RUN, 2)
    assert summary is not None and summary.adapter is not None
    assert summary.to_proto().adapter == full.to_ref()
