"""`nasloop report`: a synthetic run with known numbers, the files it writes, and the HTML page
rendered in a headless browser (Debian's chromium)."""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from nasloop import layout
from nasloop.records import CandidateRecord, Evaluation, NoveltyVerdict, dumps_lines
from nasloop.store import LocalStore
from services.controller.loop import state as st
from services.controller.loop.summary import save_summary, summarize
from services.controller.report import build as report
from services.controller.report.document import to_markdown
from services.controller.report.html import CSP
from services.controller.report.plots import ARCHIVE_FILE, PARETO_FILE, PLOTS
from services.controller.report.stats import newcombe_difference
from services.controller.runspec import dump_spec, load_spec

RUN = "fixture"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_FILES = [*(file for file, _, _ in PLOTS), PARETO_FILE, ARCHIVE_FILE]


def candidates(
    cycle: int, accuracies: list[float], invalid: int, adapter: str = ""
) -> list[CandidateRecord]:
    """Valid candidates with these accuracies, then ``invalid`` ones stopped at import."""
    out = []
    for i, acc in enumerate([*accuracies, *[None] * invalid]):
        ok = acc is not None
        out.append(
            CandidateRecord(
                id=f"{RUN}-c{cycle}-{i}",
                run=RUN,
                cycle=cycle,
                index=i,
                adapter_name=adapter,
                code=f"class Net:  # cycle {cycle}, answer {i}\n    pass\n",
                evaluation=Evaluation(
                    last_stage="STAGE_EVALUATED" if ok else "STAGE_IMPORTED",
                    status="STATUS_OK" if ok else "STATUS_INIT_EXCEPTION",
                    accuracy=acc or 0.0,
                    parameter_count=1000 + i,
                ),
                novelty=NoveltyVerdict(
                    novel=ok, max_similarity=0.5, nearest_id="seed-7", nearest_namespace="corpus"
                ),
            )
        )
    return out


# cycle 1: 5 of 10 valid, mean 0.6; cycle 2: 18 of 20 valid, mean 0.75; baseline: 4 of 20.
CYCLES = {
    1: candidates(1, [0.4, 0.5, 0.6, 0.7, 0.8], 5),
    2: candidates(2, [0.7, 0.8] * 9, 2, adapter=f"{RUN}-c1"),
}
BASELINE = candidates(2, [0.3, 0.4, 0.5, 0.6], 16)


def make_run(store: LocalStore, cycles: int = 2, state: str = "succeeded") -> None:
    spec = load_spec("local", overrides=["cycles=3", "selection.min_accuracy=0.5"]).model_copy(
        update={"name": RUN}
    )
    store.put_bytes(layout.spec_key(RUN), dump_spec(spec).encode())
    threshold = spec.selection.min_accuracy
    for n in range(1, cycles + 1):
        records = CYCLES[n]
        store.put_bytes(layout.candidates_key(RUN, n), dumps_lines(records))
        progress = st.CycleProgress(cycle=n, seconds={"generate": 10.0 * n, "fine_tune": 2.0})
        save_summary(store, summarize(records, progress, RUN, threshold))
    st.save_run_state(
        store,
        st.RunState(RUN, state=state, cycle=cycles + (state == "running"), cycles_done=cycles),
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_report_numbers_files_and_baseline(store: LocalStore, tmp_path: Path) -> None:
    make_run(store)
    store.put_bytes(layout.baseline_candidates_key(RUN), dumps_lines(BASELINE))
    out = tmp_path / "out"
    html = report.write_report(report.load_report(store, RUN), out)
    md = (out / "report.md").read_text()
    assert md.startswith(f"# nasloop report: {RUN}\n\nRun {RUN}: succeeded, 2 finished cycles.")
    rows = [line for line in md.splitlines() if re.match(r"\| [12] ", line)]
    assert "| 50.0 % " in rows[0] and "| 0.600 " in rows[0]
    assert "| 90.0 % " in rows[1] and "| 0.750 " in rows[1]
    d = newcombe_difference(18, 20, 4, 20)
    assert d.significant
    assert (
        f"Valid rate: difference +70.0 points, 95 % CI [{100 * d.low:+.1f}, {100 * d.high:+.1f}] "
        "(Newcombe's hybrid score interval): significant at 95 %." in md
    )
    assert "Mean accuracy of valid candidates: difference +30.0 points" in md
    assert "| valid rate " in md and "| 20.0 % " in md  # the baseline's column
    assert "1. fixture-c1-4: accuracy 0.8000" in md  # best, by accuracy then cycle
    assert "seed-7 (corpus)" in md and "preset: local" in md
    # Hypervolume: parameters 1000 + i, log10 box of 6 decades; cycle 1's front is 0.4 at
    # 1000, 0.5 at 1001, ... 0.8 at 1004 (each more accurate and larger).
    front = [(0.4 + i / 10, 1000 + i) for i in range(5)]
    hv1 = (
        sum(
            (acc - prev) * (6 - math.log10(p))
            for (acc, p), prev in zip(front, [0.0, *(a for a, _ in front)], strict=False)
        )
        / 6
    )
    assert re.search(rf"\| 1 +\| 5 +\| 5 +\| {hv1:.3f} ", md)
    assert re.search(r"\| baseline +\| 4 +\| 4 +\| ", md)
    assert "reference point: accuracy 0, 1,000,000 parameters" in md
    archive = report.load_report(store, RUN).archive()  # both cycles' 23 valid ones
    assert len(archive.entries) == 23 and archive.objectives == ("accuracy",)
    for file in PNG_FILES:
        data = (out / file).read_bytes()
        assert data.startswith(PNG_MAGIC), file
        with Image.open(out / file) as image:
            image.verify()
            assert image.size[0] > 300 and image.size[1] > 200
        assert base64.b64encode(data).decode() in html.read_text()  # embedded in the page


def test_report_without_baseline_of_a_running_run(store: LocalStore, tmp_path: Path) -> None:
    make_run(store, cycles=1, state="running")
    r = report.load_report(store, RUN)
    assert [s.cycle for s in r.cycles] == [1] and r.comparison is None
    md = to_markdown(report.document(r, []))
    assert "The run is still running (cycle 2" in md
    assert "The baseline was not run" in md
    assert r.cycles[0].share_above_threshold == pytest.approx(0.8)  # ≥ 0.5: 4 of 5
    assert r.cycles[0].novel_good == 4


def test_cli_report_writes_beside_the_store(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.cli import main

    make_run(store)
    monkeypatch.setenv("NASLOOP_STORE__URL", f"file://{store.root}")
    assert main(["report", RUN]) == 0
    assert (tmp_path / "reports" / RUN / "report.html").is_file()
    assert report.default_folder(store, RUN) == tmp_path / "reports" / RUN


def _chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be installed here (not root)")
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True)
    return shutil.which("chromium") or pytest.fail("apt-get installed no chromium")


PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const shown = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-probe", `${shown}/${imgs.length}`);
});
</script>"""


def test_html_renders_every_plot_offline(store: LocalStore, tmp_path: Path) -> None:
    browser = _chromium()
    make_run(store)
    html = report.write_report(report.load_report(store, RUN), tmp_path / "out")
    page = html.read_text()
    # Self-contained: every src/href is inline; the page's policy admits nothing else.
    assert all(v.startswith("data:") for v in re.findall(r'(?:src|href)="([^"]*)"', page))
    assert f'content="{CSP}"' in page
    # The probe needs a script: a copy of the page whose policy also allows inline scripts.
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.replace("default-src 'none'", "default-src 'none'; script-src 'unsafe-inline'")
        .replace("</body>", PROBE + "</body>")
    )  # fmt: skip
    out = subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: nothing to fetch
            "--virtual-time-budget=5000", "--dump-dom", probe.as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    found = re.search(r'data-probe="(\d+)/(\d+)"', out.stdout)
    assert found, out.stdout[-2000:]
    assert found.groups() == (str(len(PNG_FILES)), str(len(PNG_FILES)))


def test_the_end_of_a_run_announces_its_report(
    store: LocalStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nasloop.config import StoreConfig
    from services.controller.cli.commands import _report_if_visible

    make_run(store)
    assert report.announce(store, RUN) == tmp_path / "reports" / RUN / "report.html"
    assert f"report: {tmp_path / 'reports' / RUN / 'report.html'}" in capsys.readouterr().err
    _report_if_visible(StoreConfig(url=f"file://{tmp_path / 'elsewhere'}"), RUN)
    assert f"does not hold run {RUN}" in capsys.readouterr().err
