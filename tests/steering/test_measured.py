"""The layers where built-in behaviours were measured to steer: a page default, so it must name real entries."""
from __future__ import annotations

from repmap_core.capture.gguf import SMOLLM2_ID
from repmap_core.data.data_spec import BUILTIN
from repmap_core.steering.measured import STEERS_AT, measured_note, steers_at


def test_every_entry_is_a_built_in_ab_set_and_a_block_of_smollm2():
    assert STEERS_AT
    for (model, data), layer in STEERS_AT.items():
        assert model == SMOLLM2_ID and data.removeprefix("builtin:") in BUILTIN and 0 <= layer < 30


def test_the_note_speaks_only_for_the_measured_layer():
    assert steers_at(SMOLLM2_ID, "builtin:myopic_reward") == 14
    assert steers_at(SMOLLM2_ID, "builtin:survival_instinct") is None  # measured: it does not steer at 8, 14 or 20
    assert "measured to steer" in measured_note(SMOLLM2_ID, "builtin:myopic_reward", 14)
    assert measured_note(SMOLLM2_ID, "builtin:myopic_reward", 15) is None
