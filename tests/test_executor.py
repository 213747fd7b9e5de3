"""The local executor's order: one run of every row first (to measure it), then the longest rows' runs, so
short runs fill the end of a sweep. Results never depend on the order (``test_cli``: parallel == serial)."""
import time
from dataclasses import dataclass

from bench import executor
from bench.executor import Sweep, next_run, row_of, run_local
from bench.request import Execution


@dataclass(frozen=True, order=True)
class Run:                      # what the scheduler reads of a RunSpec
    row: str
    seed: int
    result_name: str = "toy"
    device: str = "cpu"


SECONDS = {"short": 1.0, "mid": 4.0, "long": 9.0, "longest": 12.0}


def fake_work(item):
    run, _ = item
    time.sleep(0.05)
    return {"timings": {"wall_seconds": SECONDS[run.row]}}


def test_every_row_starts_once_in_the_planned_order_first():
    pending = [Run("short", 0), Run("short", 1), Run("long", 0), Run("mid", 0), Run("long", 1)]
    started = set()
    picked = []
    for _ in range(3):
        run = pending.pop(next_run(pending, {}, started))
        started.add(row_of(run))
        picked.append(run)
    assert picked == [Run("short", 0), Run("long", 0), Run("mid", 0)]


def test_then_the_longest_measured_row_and_unmeasured_rows_last():
    pending = [Run("short", 1), Run("mid", 1), Run("other", 1), Run("long", 1), Run("long", 2), Run("mid", 2)]
    started = {row_of(r) for r in pending}
    seconds = {row_of(Run("short", 0)): 1.0, row_of(Run("mid", 0)): 4.0, row_of(Run("long", 0)): 9.0}  # "other" still running
    order = []
    while pending:
        order.append(pending.pop(next_run(pending, seconds, started)))
    assert order == [Run("long", 1), Run("long", 2), Run("mid", 1), Run("mid", 2), Run("short", 1), Run("other", 1)]


def test_the_pool_follows_the_order_as_rows_are_measured(monkeypatch):
    """Through ``run_local`` with two workers: every start after all rows have a result takes the longest row
    left (the events are the parent's callbacks, so this holds whatever the timing)."""
    monkeypatch.setattr(executor, "_work", fake_work)
    runs = [Run(row, seed) for row in SECONDS for seed in range(4)]          # planned row by row
    events = []

    class Recording(Sweep):
        def started(self, run):
            events.append(("start", run))

        def finished(self, run, record):
            events.append(("done", run))

    failures = run_local(runs, Recording(), Execution(jobs=2))
    assert failures == [] and sorted(r for e, r in events if e == "done") == sorted(runs)
    measured, after = set(), []
    for kind, run in events:
        if kind == "done":
            measured.add(run.row)
        elif measured == set(SECONDS):
            after.append(SECONDS[run.row])
    assert len(after) >= 3 and after == sorted(after, reverse=True)
    assert [r.row for e, r in events if e == "start"][:4] == list(SECONDS)      # one of each row first
