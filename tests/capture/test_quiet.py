"""quiet_transformers: transformers' warnings and both libraries' progress bars are off inside, and
what was on before is on again after, also when the body raises."""
from __future__ import annotations

import pytest
from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from transformers.utils import logging as hf_logging

from repmap_core.capture.quiet import quiet_transformers


@pytest.fixture(autouse=True)
def restore_output_settings():
    """These tests change process-wide settings; put back what the session had."""
    level, bars, hub_bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    yield
    hf_logging.set_verbosity(level)
    hf_logging.enable_progress_bar() if bars else hf_logging.disable_progress_bar()
    enable_progress_bars() if hub_bars else disable_progress_bars()


def test_output_is_off_inside_and_restored_after_even_on_error():
    hf_logging.set_verbosity_info()
    hf_logging.enable_progress_bar()
    enable_progress_bars()
    with pytest.raises(RuntimeError), quiet_transformers():
        assert hf_logging.get_verbosity() == hf_logging.ERROR
        assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
        raise RuntimeError("inside")
    assert hf_logging.get_verbosity() == hf_logging.INFO
    assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()


def test_bars_that_were_off_stay_off():
    disable_progress_bars()
    hf_logging.disable_progress_bar()
    with quiet_transformers():
        pass
    assert are_progress_bars_disabled() and not hf_logging.is_progress_bar_enabled()
