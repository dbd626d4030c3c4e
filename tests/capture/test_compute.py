"""One heavy computation at a time per process: a second thread waits (and says so through its
progress), runs once the first is done, and a thread that already holds the turn can take it again."""
from __future__ import annotations

import threading
import time

from repmap_core.capture.compute import heavy_compute


def test_a_second_computation_waits_for_the_first_and_says_so():
    events: list[str] = []
    messages: list[tuple[float, str]] = []
    holding = threading.Event()

    def first():
        with heavy_compute():
            holding.set()
            time.sleep(0.3)
            events.append("first done")

    def second():
        holding.wait()
        with heavy_compute(lambda f, m: messages.append((f, m))):
            events.append("second ran")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert events == ["first done", "second ran"]
    assert messages == [(0.0, "Waiting for another computation in this process to finish")]


def test_the_turn_is_reentrant_and_free_again_afterwards():
    with heavy_compute(), heavy_compute():  # nested, e.g. a finetune that extracts: no deadlock
        pass
    said: list[str] = []
    with heavy_compute(lambda f, m: said.append(m)):
        pass
    assert said == []  # nobody held it, so nothing to wait for
