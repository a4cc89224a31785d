"""Names and store keys: the one place that says what a run, a cycle or an adapter is called.

Store layout (DESIGN.md, "Object store"):

    runs/<run>/spec.yaml                      the run's spec (written once, at start)
    runs/<run>/state.json                     the run's state: what is durable, what comes next
    runs/<run>/stop.json                      a stop request (for a cycle in another process)
    runs/<run>/cycles/<n>/candidates.jsonl    one final CandidateRecord per candidate
    runs/<run>/cycles/<n>/summary.json        the cycle's summary, written when it is done
    runs/<run>/cycles/<n>/progress.json       the cycle's durable steps
    runs/<run>/cycles/<n>/evaluated/<i>.json  each evaluated candidate, until the cycle ends
    runs/<run>/cycles/<n>/training-set.jsonl  the pairs cycle n's adapter was trained on
    runs/<run>/pairs/<n>.jsonl                training pairs selected in cycle n (cumulative set:
                                              all files up to n)
    runs/<run>/baseline/candidates.jsonl      the cycle-0 model (no adapter) on the last cycle's
                                              prompts and seeds, evaluated the same way
    runs/<run>/baseline/summary.json          its summary (a cycle's shape, cycle 0)
    adapters/<run>/<n>/                       the adapter trained at the end of cycle n
    models/<name>/  corpora/<name>/           base models and seed corpora
    novelty/<namespace>/                      a novelty namespace: namespace.json, journal/,
                                              snapshot/<seq>/
    evaluations/<job>/                        a cluster evaluation's task.json and report.bin
"""

from __future__ import annotations

import re

RUN_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
MAX_CYCLE = 9999
RUNS = "runs"
ADAPTERS = "adapters"
MODELS = "models"
CORPORA = "corpora"
NOVELTY = "novelty"
EVALUATIONS = "evaluations"
CYCLE_JOB_PREFIX = "nasloop-cycle-"
TRAINING_SUFFIX = "-train"
CORPUS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The baseline's number wherever a cycle's goes (records, progress, summary, events): it is the
# cycle-0 model, the base model without an adapter. Cycles count from 1, so it is never a cycle.
BASELINE = 0


class InvalidName(ValueError):
    """A run name, cycle number or artifact name that cannot be used."""


def check_run_name(name: str) -> str:
    """``name`` if it can name a run: 1-40 of [a-z0-9-], starting and ending with [a-z0-9].

    Short enough that every name derived from it (novelty namespace, Kubernetes Job, adapter)
    stays within its own limit."""
    if not isinstance(name, str) or not RUN_NAME.match(name):
        raise InvalidName(
            f"run name {name!r}: use 1-40 of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def check_cycle(cycle: int) -> int:
    if not isinstance(cycle, int) or not 1 <= cycle <= MAX_CYCLE:
        raise InvalidName(f"cycle {cycle!r}: cycles count from 1 to {MAX_CYCLE}")
    return cycle


def run_prefix(run: str) -> str:
    return f"{RUNS}/{check_run_name(run)}"


def spec_key(run: str) -> str:
    return f"{run_prefix(run)}/spec.yaml"


def state_key(run: str) -> str:
    return f"{run_prefix(run)}/state.json"


def stop_key(run: str) -> str:
    """A stop request, for a cycle running in another process (a Kubernetes Job)."""
    return f"{run_prefix(run)}/stop.json"


def cycle_prefix(run: str, cycle: int) -> str:
    return f"{run_prefix(run)}/cycles/{check_cycle(cycle)}"


def records_prefix(run: str, cycle: int) -> str:
    """Where cycle ``cycle`` keeps its records and progress; ``BASELINE`` is the baseline's."""
    return baseline_prefix(run) if cycle == BASELINE else cycle_prefix(run, cycle)


def candidates_key(run: str, cycle: int) -> str:
    """One final CandidateRecord per answer of ``cycle`` (of the baseline for ``BASELINE``)."""
    return f"{records_prefix(run, cycle)}/candidates.jsonl"


def summary_key(run: str, cycle: int) -> str:
    return f"{records_prefix(run, cycle)}/summary.json"


def progress_key(run: str, cycle: int) -> str:
    """How far ``cycle`` (the baseline for ``BASELINE``) got: its durable steps."""
    return f"{records_prefix(run, cycle)}/progress.json"


def evaluated_prefix(run: str, cycle: int) -> str:
    """Where each evaluated candidate of ``cycle`` is kept on its own until the cycle ends."""
    return f"{records_prefix(run, cycle)}/evaluated/"


def evaluated_key(run: str, cycle: int, index: int) -> str:
    return f"{evaluated_prefix(run, cycle)}{index}.json"


def pairs_prefix(run: str) -> str:
    return f"{run_prefix(run)}/pairs"


def pairs_key(run: str, cycle: int) -> str:
    """Pairs selected in ``cycle`` (the cumulative set is every file up to it)."""
    return f"{pairs_prefix(run)}/{check_cycle(cycle)}.jsonl"


def training_set_key(run: str, cycle: int) -> str:
    """The cumulative pairs the adapter of ``cycle`` was trained on (one object for the trainer)."""
    return f"{cycle_prefix(run, cycle)}/training-set.jsonl"


def baseline_prefix(run: str) -> str:
    return f"{run_prefix(run)}/baseline"


def baseline_candidates_key(run: str) -> str:
    """One final CandidateRecord per baseline answer (the base model, no adapter)."""
    return candidates_key(run, BASELINE)


def run_adapters_prefix(run: str) -> str:
    """Where every adapter of ``run`` lives."""
    return f"{ADAPTERS}/{check_run_name(run)}"


def adapter_prefix(run: str, cycle: int) -> str:
    return f"{run_adapters_prefix(run)}/{check_cycle(cycle)}"


def adapter_name(run: str, cycle: int) -> str:
    """The generator's serving name of cycle ``cycle``'s adapter: a new name every cycle (vLLM
    caches adapters by name, and replacing one in place has known stale-cache bugs)."""
    return f"{check_run_name(run)}-c{check_cycle(cycle)}"


def run_namespace(run: str) -> str:
    """The novelty namespace holding the run's own accepted candidates."""
    return f"run-{check_run_name(run)}"


def candidate_id(run: str, cycle: int, index: int) -> str:
    """Deterministic candidate ids, so a retried step never makes a second record or entry."""
    return f"{check_run_name(run)}-c{check_cycle(cycle)}-{index}"


def baseline_candidate_id(run: str, index: int) -> str:
    """The baseline's candidate ids: ``<run>-base-<i>``, never a cycle's ``<run>-c<n>-<i>``."""
    return f"{check_run_name(run)}-base-{index}"


def training_job_id(run: str, cycle: int) -> str:
    """The trainer's job id for a cycle's fine-tune: a retried StartJob re-attaches to it."""
    return f"{check_run_name(run)}-c{check_cycle(cycle)}{TRAINING_SUFFIX}"


def _run_of_cycle_name(name: str, suffix: str = "") -> str | None:
    if suffix:
        if not name.endswith(suffix):
            return None
        name = name[: -len(suffix)]
    run, sep, n = name.rpartition("-c")
    return run if sep and n.isdigit() else None


def run_of_adapter_name(name: str) -> str | None:
    """The run whose ``adapter_name`` ``name`` is (``<run>-c<n>``), else ``None``."""
    return _run_of_cycle_name(name)


def run_of_training_job(job_id: str) -> str | None:
    """The run whose ``training_job_id`` ``job_id`` is (``<run>-c<n>-train``), else ``None``."""
    return _run_of_cycle_name(job_id, TRAINING_SUFFIX)


def cycle_label(cycle: int) -> str:
    """``base`` for the baseline, else the cycle number (Job names and labels)."""
    return "base" if cycle == BASELINE else str(check_cycle(cycle))


def cycle_job_name(run: str, cycle: int) -> str:
    """The Kubernetes Job that runs a cycle in cluster mode: ``nasloop-cycle-<run>-<cycle>``
    (``-base`` for the baseline), deterministic; a DNS-1123 label of at most 63 characters (run
    names have at most 40 characters, cycles at most 4 digits)."""
    return f"{CYCLE_JOB_PREFIX}{check_run_name(run)}-{cycle_label(cycle)}"


def model_prefix(name: str) -> str:
    return f"{MODELS}/{name}"


def is_store_model(ref: str) -> bool:
    """Whether a base-model reference names a model in the store (``models/<name>``)."""
    return ref.startswith(f"{MODELS}/")


def bootstrap_model(size: str) -> str:
    """The store prefix of the bootstrapped model of ``size`` (nasloop.bootstrap)."""
    return model_prefix(f"bootstrap-{size}")


def check_corpus_name(name: str) -> str:
    if not isinstance(name, str) or not CORPUS_NAME.fullmatch(name):
        raise InvalidName(f"invalid corpus name {name!r}: use [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}")
    return name


def corpus_prefix(name: str) -> str:
    return f"{CORPORA}/{check_corpus_name(name)}"


def namespace_prefix(namespace: str) -> str:
    """Where the novelty service keeps ``namespace`` (its meta, journal and snapshots)."""
    return f"{NOVELTY}/{namespace}"


def evaluation_prefix(job: str) -> str:
    """Where a cluster evaluation Job's task and report are exchanged."""
    return f"{EVALUATIONS}/{job}"


def archive_key(run: str, cycle: int) -> str:
    """A snapshot of the archive cycle ``cycle`` sampled its parents from (its cycles 1 ..
    ``cycle`` - 1; services/controller/loop/archive.py): the map's cells and their elites."""
    return f"{cycle_prefix(run, cycle)}/archive.json"
