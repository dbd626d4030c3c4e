"""The Demo tour page (issue 25, item 2): steps run before are read back from the cache in a new session (a
refresh), the report is offered in the run that made the steps, and a step about to run never reads "Not run
yet". Tiny random models stand in for SmolLM2 and MiniLM."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

import repmap_core.papers.tour as tour
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def tour_page(tiny_models, monkeypatch):
    monkeypatch.setattr(tour, "SMOLLM2", str(tiny_models["llama"]))
    monkeypatch.setattr(tour, "MINILM", str(tiny_models["bert"]))

    def open_page() -> AppTest:  # a new session on the page: a refresh, or a collaborator opening it
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.switch_page("views/tour.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return open_page


def card_texts(at: AppTest, key: str) -> str:
    """Every text shown in a step's card (its subheader, state line, narrative, caption)."""
    def texts(node) -> list[str]:
        value = getattr(node, "value", None)
        own = [value] if isinstance(value, str) else []
        return own + [t for child in getattr(node, "children", {}).values() for t in texts(child)]

    card = next(b for b in at.main.children.values() if getattr(b, "key", None) == f"tour.card.{key}")
    return " ".join(texts(card))


def test_a_refreshed_tour_shows_the_steps_already_run_and_offers_the_report(tour_page):
    at = tour_page()
    assert all("Not run yet" in card_texts(at, k) for k in tour.STEPS)
    assert not [b for b in at.get("download_button") if "tour" in b.proto.label.lower()]  # nothing to report yet

    at.button(key="tour.run.layers").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Not run yet" not in card_texts(at, "layers") and "reads the sentiment" in card_texts(at, "layers")
    report = [b.proto.label for b in at.get("download_button") if "tour" in b.proto.label.lower()]
    assert report == ["Download the tour as an HTML report (1 of 6 steps)"]  # in the same run, no other click

    again = tour_page()  # a refresh: a new session
    texts = card_texts(again, "layers")
    assert "reads the sentiment" in texts and "read back from the cache now" in texts and "Not run yet" not in texts
    assert all("Not run yet" in card_texts(again, k) for k in tour.STEPS if k != "layers")
    assert [b.proto.label for b in again.get("download_button") if "tour" in b.proto.label.lower()] == report
