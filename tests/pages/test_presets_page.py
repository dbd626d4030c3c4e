"""The Reproduce page says what its own cards say: its intro's time range is computed from their estimates."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from repmap_core.capture import speed
from repmap_core.papers.presets import PRESETS, format_seconds, needs
from tests.conftest import ROOT


@pytest.mark.slow  # the page checks every preset's models and data: tens of seconds on a loaded 2-core machine
def test_the_intro_gives_the_range_of_the_cards_estimates_and_a_calibration_moves_both(cache_dir):
    """The intro said scaled runs take "a minute or two" while its cards estimated 19 min to 3 h."""
    def intro_and_cards(at: AppTest) -> tuple[str, list[str]]:
        texts = [m.value for m in at.markdown if m.value.startswith("**Scaled down**")]
        return at.caption[0].value, texts

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("views/presets.py").run()
    assert not at.exception, [e.value for e in at.exception]
    intro, cards = intro_and_cards(at)
    seconds = [needs(p, scaled=True)["seconds"] for p in PRESETS.values()]
    assert f"in {format_seconds(min(seconds))} to {format_seconds(max(seconds))} here" in intro
    assert "a minute or two" not in intro and len(cards) == len(PRESETS)
    assert all(f"time {format_seconds(s)}" in card for s, card in zip(seconds, cards))
    speed.record_run("preset", 100.0, 25.0)  # the last preset here took a quarter of its estimate
    at.run()
    intro, cards = intro_and_cards(at)
    assert f"in {format_seconds(min(seconds) / 4)} to {format_seconds(max(seconds) / 4)} here" in intro
    assert all(f"time {format_seconds(s / 4)}" in card for s, card in zip(seconds, cards))
