"""The demo tour: every step's narrative is written from its own numbers, its figure is drawn, a second
showing reads the cache, and the whole tour renders as one report (tiny random models stand in for
SmolLM2 and MiniLM here; the real tour is walked in the browser test and the closing notes)."""
from __future__ import annotations

import html
import re

import pytest

import repmap_core.papers.tour as tour

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_tour(tiny_models, monkeypatch):
    monkeypatch.setattr(tour, "SMOLLM2", str(tiny_models["llama"]))
    monkeypatch.setattr(tour, "MINILM", str(tiny_models["bert"]))
    return tour


def test_every_step_tells_its_own_numbers_and_draws_its_figure(tiny_tour):
    assert tiny_tour.kept_step("layers") is None  # nothing run here yet, and looking computes nothing
    steps = tiny_tour.run_tour()
    assert [s.key for s in steps] == list(tiny_tour.STEPS)
    for s in steps:
        assert s.figure.data, s.key  # something is drawn
        assert len(re.findall(r"\d\.\d{2,3}|\d+%", s.narrative)) >= 2, s.narrative  # numbers, not boilerplate
        assert s.seconds > 0 and not s.reused
    layers = steps[0]
    assert f"block {layers.numbers['best_layer']}" in layers.narrative
    assert f"{layers.numbers['probe_best']:.3f} [" in layers.narrative  # with its interval
    shift = steps[2]
    assert ("more separable" in shift.narrative) == (shift.numbers["probe_after"] - shift.numbers["probe_before"] >= 0.02)
    table = steps[3].figure.data[0]  # the within fit's Table 1, each test accuracy with its interval and null
    assert list(table.header.values)[2:] == ["probe test", "test 95% interval", "null (shuffled labels)"]
    assert all(re.fullmatch(r"\[0\.\d{3}, [01]\.\d{3}\]", v) for v in table.cells.values[3])
    steer = steps[5]
    assert steer.narrative.split(". ")[-1].startswith(("Steers", "No steering", "Moves", "Cannot tell"))

    again = tiny_tour.run_step("within")  # the second showing reads what the first kept
    assert again.reused and again.narrative == steps[3].narrative and again.seconds == steps[3].seconds
    kept = tiny_tour.kept_step("layers")  # what a refreshed page reads: the step as it was, nothing recomputed
    assert kept.reused and kept.narrative == steps[0].narrative and kept.numbers == steps[0].numbers
    page = tiny_tour.tour_report(steps)
    assert page.count('class="figure plot"') == 6 and all(html.escape(s.title) in page for s in steps)
