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
    assert len(vector["mean"]) == len(random["mean"]) == 3 and len(out["side_effect_nats"]["steered"]) == 3
    # at α = 0 nothing is added, so the vector and the random direction read the same unsteered model
    assert vector["mean"][1] == pytest.approx(random["mean"][1], abs=1e-6)
    assert out["side_effect_nats"]["steered"][1] == pytest.approx(out["side_effect_nats"]["base"], abs=1e-6)
    assert np.isfinite(out["slope"]["value"]) and out["verdict"]


def test_bad_multipliers_are_refused_before_the_model_loads(tiny_gpt2, cache_dir):
    r = run_cli("steer", "--model", str(tiny_gpt2), "--data", "builtin:corrigible", "--layer", "1", "--alphas=1",
                "--json", cache=cache_dir)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "error: --alphas must give from 2 to 101 finite multipliers, not '1'."
    assert not (cache_dir / "activations").exists()  # nothing was extracted
