"""Idle cores lent to a lone forward pass (app.idle_cores): when a pass gets a helper thread, judged over every
server process."""

from __future__ import annotations

import time

from app.idle_cores import BUSY_THREADS, LAST_PASS_END, RECENT_S, IdleCores
from app.processes import Siblings


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def test_a_pass_gets_a_helper_only_while_the_cores_it_needs_are_idle_in_every_process(tmp_path):
    mine, theirs = Siblings(tmp_path, 0, 2), Siblings(tmp_path, 1, 2)
    their_busy, their_end = theirs.counts(BUSY_THREADS), theirs.counts(LAST_PASS_END)
    cores = IdleCores(cores=2, threads_per_pass=1, workers=2, siblings=mine)
    try:
        with cores.lend(time.monotonic()) as first:
            assert first is cores.executor  # alone on the machine: the second core is lent
            assert their_busy.others() == 2  # its thread and its helper, as the other process sees them
            with cores.lend(time.monotonic()) as second:
                assert second is None  # both cores busy: one thread for this pass
                assert their_busy.others() == 3
            assert their_busy.others() == 2
        assert their_busy.others() == 0
        assert now_ms() - their_end.others() < 1000  # when its last pass ended, published

        their_busy.publish(1)  # a pass under way in the other process
        with cores.lend(time.monotonic()) as helper:
            assert helper is None
        their_busy.publish(0)
        their_end.publish(now_ms())  # ... that has just ended: that process is between two passes
        with cores.lend(time.monotonic()) as helper:
            assert helper is None
        their_end.publish(now_ms() - int(RECENT_S * 1000) - 1)  # idle for a while now
        with cores.lend(time.monotonic()) as helper:
            assert helper is cores.executor
        arrived = time.monotonic()
        with cores.lend(time.monotonic()):
            pass
        with cores.lend(arrived) as helper:
            assert helper is None  # its text arrived during the pass before: this process has work queueing
    finally:
        cores.shutdown()


def test_a_pass_that_fills_the_cores_alone_never_gets_a_helper():
    wide = IdleCores(cores=2, threads_per_pass=2, workers=1)
    roomy = IdleCores(cores=4, threads_per_pass=2, workers=1)
    try:
        with wide.lend(time.monotonic()) as helper:
            assert helper is None
        with roomy.lend(time.monotonic()) as helper:
            assert helper is roomy.executor
    finally:
        wide.shutdown()
        roomy.shutdown()
