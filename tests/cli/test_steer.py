"""`python -m repmap_core steer`: a layer's sweep on held-out A/B questions beside a random direction,
as one JSON object; multipliers refused in one line before anything loads."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.cli.steer import parse_alphas
from repmap_core.errors import RepmapError
from tests.cli.test_cli import one_json_object, run_cli


def test_multipliers_are_parsed_or_refused_in_one_sentence():
    assert parse_alphas("-1,-0.5,0,0.5,1") == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert parse_alphas("0,2,") == [0.0, 2.0]
    too_many = ",".join(["0.1"] * 102)
    for bad, why in (("1", "from 2 to 101 finite"), ("0,nan", "finite"), ("a,b", "numbers separated by commas"),
                     (too_many, "from 2 to 101 finite")):
        with pytest.raises(RepmapError, match=why):
            parse_alphas(bad)


@pytest.mark.slow
def test_steer_sweeps_held_out_questions_beside_a_random_direction(tiny_gpt2, cache_dir):
    r = run_cli("steer", "--model", str(tiny_gpt2), "--data", "builtin:corrigible", "--layer", "-1", "--alphas=-2,0,2",
                "--limit", "40", "--json", cache=cache_dir)
    assert r.returncode == 0, r.stderr
    out = one_json_object(r.stdout)
    assert out["layer"] == 2 and out["site"] == "blocks.2.hook_resid_post" and out["alphas"] == [-2.0, 0.0, 2.0]
    assert out["held_out"]["questions"] == 6  # 20 questions, 0.3 held out
    assert out["vector"]["source"] == "caa (training questions)" and "letter" in out["vector"]["balance"]
    vector, random = out["propensity"], out["random_direction"]
    side = out["side_effect"]["per_alpha"]
    assert len(vector["mean"]) == len(random["mean"]) == 3 and [s["alpha"] for s in side] == [-2.0, 0.0, 2.0]
    # at α = 0 nothing is added, so the vector and the random direction read the same unsteered model
    assert vector["mean"][1] == pytest.approx(random["mean"][1], abs=1e-6)
    assert side[1]["loss_nats"] == pytest.approx(out["side_effect"]["unsteered_nats"], abs=1e-6)
    assert side[1]["change_nats"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert all(s["change_nats"]["low"] <= s["change_nats"]["value"] <= s["change_nats"]["high"] for s in side)
    # the strength scale: α in units of the layer's residual spread, and what one unit adds
    scale = out["scale"]
    assert scale["name"] == "spread" and "residual spread" in scale["unit"]
    assert scale["added_norm_per_unit_alpha"] == pytest.approx(scale["residual_spread"], rel=1e-5)
    assert np.isfinite(out["slope"]["value"]) and out["verdict"] and out["effect"] in (-1, 0, 1)
    diff = out["vector_minus_random_slope"]
    assert diff["value"] == pytest.approx(out["slope"]["value"] - out["random_slope"]["value"], abs=1e-9)


def test_bad_multipliers_are_refused_before_the_model_loads(tiny_gpt2, cache_dir):
    r = run_cli("steer", "--model", str(tiny_gpt2), "--data", "builtin:corrigible", "--layer", "1", "--alphas=1",
                "--json", cache=cache_dir)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "error: --alphas must give from 2 to 101 finite multipliers, not '1'."
    assert not (cache_dir / "activations").exists()  # nothing was extracted
