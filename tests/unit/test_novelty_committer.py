"""Group commit: rounds, failures, undo that itself fails, and no caller left waiting."""

from __future__ import annotations

import threading

import pytest

from services.novelty.committer import Committer


class Journal:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.writes: list[list[dict]] = []

    def append_journal(self, ops: list[dict]) -> None:
        if self.fail:
            raise OSError("disk full")
        self.writes.append(ops)


def test_one_write_per_journal_per_round() -> None:
    c = Committer(threading.RLock())
    a, b = Journal(), Journal()
    futures = [
        c.submit(a, {"seq": 1}, lambda: None),
        c.submit(b, {"seq": 1}, lambda: None),
        c.submit(a, {"seq": 2}, lambda: None),
    ]
    c.wait(futures)
    assert a.writes == [[{"seq": 1}, {"seq": 2}]] and b.writes == [[{"seq": 1}]]
    assert all(f.result() is None for f in futures)


def test_failure_undoes_newest_first_and_settles_every_caller() -> None:
    undone: list[int] = []
    failed: list[object] = []
    c = Committer(threading.RLock(), on_failure=failed.append)
    bad = Journal(fail=True)

    def undo(seq: int) -> None:
        undone.append(seq)
        if seq == 2:
            raise KeyError("the id was added again meanwhile")

    futures = [c.submit(bad, {"seq": s}, lambda s=s: undo(s)) for s in (1, 2, 3)]
    done = threading.Event()
    threading.Thread(target=lambda: (c.wait(futures), done.set()), daemon=True).start()
    assert done.wait(5), "a caller was left waiting"
    assert undone == [3, 2, 1]  # the failing undo did not stop the others
    assert failed == [bad]
    for f in futures:
        with pytest.raises(OSError, match="disk full"):
            f.result()


def test_concurrent_callers_all_return() -> None:
    c = Committer(threading.RLock())
    j = Journal()
    results: list[bool] = []

    def caller(i: int) -> None:
        f = c.submit(j, {"seq": i}, lambda: None)
        c.wait([f])
        results.append(f.done())

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [True] * 50
    assert sorted(op["seq"] for w in j.writes for op in w) == list(range(50))
    c.flush()
