"""The watch's daemon workers (its module scans): a thread is reused once idle, and a job that
hangs holds only its own thread."""

from __future__ import annotations

import threading

from probe.monitor.watch import DaemonWorkers
from tests.waits import until


def run_and_wait(workers: DaemonWorkers) -> int:
    """One job to its end; the thread it ran on."""
    done = threading.Event()
    ran_on: list[int] = []

    def work() -> None:
        ran_on.append(threading.get_ident())
        done.set()

    workers.submit(work)
    assert done.wait(10)
    until(lambda: workers.idle, "the worker waits for the next job")
    return ran_on[0]


def test_an_idle_worker_takes_the_next_job_no_new_thread():
    workers = DaemonWorkers("test-workers")
    first = run_and_wait(workers)
    before = threading.active_count()
    for _ in range(5):
        assert run_and_wait(workers) == first
    assert threading.active_count() == before


def test_a_hung_job_holds_only_its_own_thread():
    workers = DaemonWorkers("test-workers")
    release, hung = threading.Event(), threading.Event()

    def hang() -> None:
        hung.set()
        release.wait(10)

    workers.submit(hang)
    assert hung.wait(10)
    try:
        hung_on = workers.idle
        assert run_and_wait(workers) != 0  # ran, on a second thread, while the first hangs
        assert hung_on == 0
    finally:
        release.set()
