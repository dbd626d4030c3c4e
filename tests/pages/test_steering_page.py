"""The Steering page, run headless with AppTest on tiny causal LMs (GPT-2 and Llama of width 32, a
GPT-2 of width 48) and a tiny BERT: Rimsky's three plots, a propensity sweep with its generation
preview, a vector carried to a wider model (LRT), and the bad inputs."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from repmap_core.analysis.maps import RidgeMap
from repmap_core.capture.activations import get_activations
from repmap_core.capture.models import load_model
from repmap_core.data.load import load_dataset
from repmap_core.steering import compare_curves, compute_vectors, cosine_per_layer, layer_cosines, transfer_vector
from repmap_core.steering.run import sweep_layer
from tests.conftest import ROOT
from tests.tiny_models import build_tiny_model

pytestmark = pytest.mark.slow
PAGE = str(ROOT / "views" / "steering.py")
AB = "builtin:survival_instinct"


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory) -> dict[str, str]:
    wide = build_tiny_model("gpt2", tmp_path_factory.mktemp("steer_models") / "gpt2_w48", width=48, seed=48)
    return {"gpt2": str(tiny_models["gpt2"]), "llama": str(tiny_models["llama"]), "bert": str(tiny_models["bert"]),
            "gpt2_48": str(wide)}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Short A/B questions (they fit the tiny models' 128 positions) and questions with long answers."""
    folder = tmp_path_factory.mktemp("steer_data")
    short, long = folder / "short_ab.jsonl", folder / "long_answers.jsonl"
    rows = [{"question": f"Question {i}: is item {i} good?\n\nChoices:\n (A) Yes\n (B) No",
             "answer_matching_behavior": " (A)" if i % 2 else " (B)",
             "answer_not_matching_behavior": " (B)" if i % 2 else " (A)"} for i in range(20)]
    short.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    rows = [{"question": f"Pick one for item {i}.", "answer_matching_behavior": " (Absolutely agreeable)",
             "answer_not_matching_behavior": " (Mostly disagreeable)"} for i in range(12)]
    long.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return {"short": f"file:{short}", "long": f"file:{long}"}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("steer_cache")


@pytest.fixture
def page(shared_cache, monkeypatch):
    monkeypatch.setenv("REPMAP_CACHE", str(shared_cache))  # activations computed once, reopened by later tests
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.run()
    return ok(at)


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def compute(at: AppTest, a: str, b: str | None = None, data: str = AB, limit: int = 40) -> AppTest:
    at.text_input(key="steer.a.model_other").set_value(a)
    at.text_input(key="steer.b.model_other").set_value(b or "")
    at.selectbox(key="steer.b.model_choice").set_value("(none)")
    at.text_input(key="steer.data_other").set_value("" if data.startswith("builtin:") else data)
    if data.startswith("builtin:"):
        at.selectbox(key="steer.data_choice").set_value(data)
    at.number_input(key="steer.limit").set_value(limit)
    at.button(key="FormSubmitter:steer.form-Compute vectors").click().run()
    return ok(at)


def values(v) -> np.ndarray:
    """A plotly array: a list, or (plotly 6+) a base64 typed array {"dtype", "bdata"}."""
    if isinstance(v, dict) and "bdata" in v:
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        shape = v.get("shape")
        return arr.reshape([int(x) for x in str(shape).split(",")]) if shape else arr
    return np.asarray(v, dtype=float) if isinstance(v, list) and v and isinstance(v[0], list) else np.asarray(v)


def charts(at: AppTest) -> dict[str, dict]:
    """Drawn figures by title."""
    out = {}
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        out[spec["layout"].get("title", {}).get("text", "")] = spec
    return out


def chart(at: AppTest, starts: str) -> dict:
    found = [c for t, c in charts(at).items() if t.replace("<br>", " ").startswith(starts)]  # long titles wrap
    assert len(found) == 1, list(charts(at))
    return found[0]


def lines(fig: dict) -> list[dict]:
    return [t for t in fig["data"] if t.get("fill") != "toself"]


def test_two_models_draw_the_three_rimsky_plots(page, models):
    compute(page, models["gpt2"], models["llama"])
    vs_a = compute_vectors(models["gpt2"], load_dataset(AB, limit=40))
    vs_b = compute_vectors(models["llama"], load_dataset(AB, limit=40))
    cos = chart(page, "Cosine of A: gpt2's and B: llama's vectors")
    (line,) = cos["data"]
    assert values(line["x"]).tolist() == [0, 1, 2]
    assert np.allclose(values(line["y"]), list(cosine_per_layer(vs_a.vectors, vs_b.vectors).values()), atol=1e-5)
    heat = chart(page, "Cosine between the vectors of every pair of layers")
    z = [values(t["z"]) for t in heat["data"] if t["type"] == "heatmap"]
    assert [m.shape for m in z] == [(3, 3), (3, 3)] and np.allclose(z[0], layer_cosines(vs_a.vectors)[1], atol=1e-5)
    assert (heat["layout"]["coloraxis"]["cmin"], heat["layout"]["coloraxis"]["cmax"]) == (-1, 1)
    pca = chart(page, "2-D PCA of the normalised per-layer vectors")
    assert [t["name"] for t in pca["data"]] == ["A: gpt2", "B: llama"] and "xaxis2" not in pca["layout"]
    assert all(list(t["text"]) == ["0", "1", "2"] for t in pca["data"])
    table = page.dataframe[0].value
    assert list(table.index) == [0, 1, 2] and np.allclose(table["A norm"], [vs_a.vectors[L].norm for L in range(3)])
    assert (table["B pairs"] == 28).all()  # 20 questions, 30% held out, each asked in both letter orders
    buttons = {b.key: b.label for b in page.get("download_button")}  # every figure and table has its own too
    assert not page.info and {k: buttons.get(k) for k in ("steer.dl_vectors.A.safetensors", "steer.dl_vectors.B.safetensors",
                                                          "steer.dl_cosines")} == {
        "steer.dl_vectors.A.safetensors": "Arrays + manifest (safetensors)",
        "steer.dl_vectors.B.safetensors": "Arrays + manifest (safetensors)", "steer.dl_cosines": "Cosines (CSV)"}
    assert page.radio(key="steer.side").options == ["A: gpt2", "B: llama"]


def test_a_sweep_matches_the_core_and_previews_generations(page, models, files):
    compute(page, models["gpt2"], data=files["short"], limit=0)
    assert any("choose a model B" in i.value for i in page.info)  # plot 1 replaced by its reason
    assert any("Letter-balanced: each of the 14 questions the vectors come from was asked in both orders" in c.value
               for c in page.caption)
    page.number_input(key="steer.preview_alpha").set_value(20.0)
    page.button(key="FormSubmitter:steer.sweep_form-Sweep").click().run()
    ok(page)
    # the same sweep, straight from the core: layer 1 (the middle), multipliers -1..1 in 5 steps (× the residual spread)
    vs = compute_vectors(models["gpt2"], load_dataset(files["short"]))
    lm = load_model(models["gpt2"], head=True)
    expected = sweep_layer(vs, lm, 1, np.linspace(-1, 1, 5), scale="spread", preview_alpha=20.0)
    res = expected.sweep
    fig = chart(page, "A: gpt2, layer 1: propensity on 6 held-out questions")
    band, line, rand_band, rand = fig["data"]
    assert line["name"].startswith("vector") and rand["name"].startswith("random direction")
    assert np.allclose(values(line["x"]), [-1, -0.5, 0, 0.5, 1]) and np.allclose(values(line["y"]), res.curve.mean, atol=1e-4)
    assert np.allclose(values(band["y"]), np.r_[res.curve.high, res.curve.low[::-1]], atol=1e-4)
    assert np.allclose(values(rand["y"]), res.random.mean, atol=1e-4)
    assert "multiplier α (× the layer's residual spread)" == fig["layout"]["xaxis"]["title"]["text"]
    side = chart(page, "Side effect: next-token loss on neutral text")
    assert np.allclose(values(side["data"][0]["y"]), [res.side_effect_delta[a].value for a in res.curve.alphas], atol=1e-4)
    verdicts = [m.value for m in list(page.success) + list(page.info)
                if m.value.startswith(("Steers", "No steering", "Moves", "Cannot"))]
    assert verdicts == [res.verdict] and (bool(page.success) == res.steers or not res.steers)
    agreement = page.dataframe[-1].value
    assert agreement["multiplier"].tolist() == [-1, -0.5, 0, 0.5, 1]
    assert np.allclose(agreement["agreement"], res.curve.agreement) and agreement["agreement"].between(0, 1).all()
    assert agreement["agreement 95%"].str.match(r"\[\d+%, \d+%\]").all()
    # the side effect beside every α, with its interval over texts
    assert np.allclose(agreement["Δ loss (nats)"], [res.side_effect_delta[a].value for a in res.curve.alphas], atol=1e-6)
    assert agreement["Δ loss 95%"].str.match(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]").all()
    # the strength scale in activation units, beside the layer's spread and norm
    caption = next(c.value for c in page.caption if c.value.startswith("Slope of propensity per unit α"))
    assert f"One unit of α adds a vector of norm {vs.spread(1):.3g} (× the layer's residual spread)" in caption
    assert f"the layer's residual spread is {vs.spread(1):.3g}" in caption and "bootstraps over the 6 held-out" in caption
    preview = page.table[0].value
    assert list(preview.columns) == ["question (its end)", "without steering", "with α = +20"] and len(preview) == 3
    assert preview["without steering"].tolist() == expected.plain
    assert preview["with α = +20"].tolist() == expected.steered and expected.steered != expected.plain


def test_long_questions_are_cut_to_the_context_and_swept(page, models):
    compute(page, models["gpt2"], models["llama"])
    page.radio(key="steer.side").set_value("B")
    page.run()
    page.button(key="FormSubmitter:steer.sweep_form-Sweep").click().run()
    ok(page)
    fig = chart(page, "B: llama, layer 1: propensity on 6 held-out questions")
    assert len(lines(fig)) == 2 and all(np.isfinite(values(t["y"])).all() for t in lines(fig))  # vector, random
    assert any(re.search(r"\b[1-9]\d* prompts longer than the model's context were cut to their end", c.value)
               for c in page.caption), [c.value for c in page.caption]


def test_a_vector_carried_to_a_wider_model(page, models, files):
    compute(page, models["gpt2"], models["gpt2_48"], data=files["short"], limit=0)
    assert any("32 wide with 3 layers and B: gpt2_w48 48 wide with 3" in i.value for i in page.info)
    pca = chart(page, "2-D PCA of the normalised per-layer vectors, each model alone")
    assert "xaxis2" in pca["layout"] and any("different widths" in c.value for c in page.caption)
    page.button(key="FormSubmitter:steer.transfer_form-Transfer and sweep").click().run()
    ok(page)
    fig = chart(page, "B: gpt2_w48 layer 1: its own vector (native) vs A: gpt2 layer 1's, carried (ridge, A v)")
    native, moved, rand = lines(fig)
    assert native["name"].startswith("native") and moved["name"].startswith("transferred")
    assert rand["name"].startswith("random direction") and len(fig["data"]) == 6  # each with its band
    metrics = {m.label: m.value for m in page.metric}
    curve = lambda t: type("C", (), {"mean": values(t["y"]), "gaps": np.zeros(0), "groups": np.zeros(0)})()  # noqa: E731
    if page.session_state["steer.transfer"].comparison["pearson_r"] is None:
        # issue 26: a random tiny model's own vector does not steer, so r is withheld with the sentence saying why
        assert metrics["Pearson r, native vs carried"] == "undefined"
        assert any(i.value.startswith("r is undefined here: the target's own vector does not steer") for i in page.info)
    else:
        comparison = compare_curves(curve(native), curve(moved))
        assert metrics["Pearson r, native vs carried"] == f"{comparison['pearson_r']:.2f}"
        assert any("null: native vs a random direction" in c.value for c in page.caption)
    # the carried vector, straight from the core: ridge fitted on the training rows' answer activations
    vs_a, vs_b = (compute_vectors(m, load_dataset(files["short"])) for m in (models["gpt2"], models["gpt2_48"]))
    S = np.asarray(get_activations(models["gpt2"], vs_a.dataset, [1], "answer")[1])
    T = np.asarray(get_activations(models["gpt2_48"], vs_b.dataset, [1], "answer")[1])
    carried = transfer_vector(vs_a.vectors[1], RidgeMap().fit(S[vs_a.train_rows], T[vs_a.train_rows]))  # A v
    assert metrics["Cosine native vs carried"] == f"{vs_b.vectors[1].cosine(carried):.2f}"
    assert any("Pearson r 0.73–0.98, MSE 0.005–0.096 across 13 behaviours" in c.value for c in page.caption)

    page.selectbox(key="steer.map").set_value("none")  # A's 32-wide vector into a 48-wide model, no map
    page.button(key="FormSubmitter:steer.transfer_form-Transfer and sweep").click().run()
    ok(page)
    assert [e.value for e in page.error] == ["This vector has width 32 and the model's residual stream 48; "
                                             "use a vector from this model, or carry it across with a map."]
    assert {m.label: m.value for m in page.metric} == metrics  # the previous transfer stays


def test_an_encoder_gets_vectors_and_plots_but_no_steering(page, models):
    compute(page, models["bert"])
    heat = chart(page, "Cosine between the vectors of every pair of layers")
    assert [values(t["z"]).shape for t in heat["data"]] == [(3, 3)]
    assert len(chart(page, "2-D PCA of the normalised per-layer vectors")["data"]) == 1
    assert [w.value for w in page.warning] == [  # the sweep and the sentiment section both say why they are off
        "Steering needs next-token logits; bert is an encoder. The vectors and the comparisons above still work.",
        "Steering needs next-token logits; bert is an encoder."]
    assert page.button(key="FormSubmitter:steer.sweep_form-Sweep").proto.disabled
    assert page.selectbox(key="steer.layer.A").proto.disabled

    compute(page, models["gpt2"], models["bert"])  # an encoder as B: no transfer either
    # steering A (a causal LM) is on; only the transfer to B says why it is off
    assert [w.value for w in page.warning] == ["Steering needs next-token logits; bert is an encoder."]
    assert not page.button(key="FormSubmitter:steer.sentiment_form-Steer sentiment").proto.disabled
    assert not page.button(key="FormSubmitter:steer.sweep_form-Sweep").proto.disabled
    assert page.button(key="FormSubmitter:steer.transfer_form-Transfer and sweep").proto.disabled
    page.radio(key="steer.side").set_value("B")
    page.run()
    assert page.button(key="FormSubmitter:steer.sweep_form-Sweep").proto.disabled
    assert [w.value for w in page.warning][0].startswith("Steering needs next-token logits; bert is an encoder.")


def test_unpaired_data_gives_one_sentence_and_keeps_the_result(page, models):
    compute(page, models["gpt2"])
    before = charts(page)
    compute(page, models["gpt2"], data="builtin:sentiment")
    assert len(page.error) == 1 and "has no A/B pairs" in page.error[0].value
    assert charts(page).keys() == before.keys()
    assert page.session_state["steer.result"].request["data"] == AB


def test_answers_of_several_tokens_give_the_sentence_from_ab_prompts(page, models, files):
    compute(page, models["gpt2"], data=files["long"], limit=0)
    assert chart(page, "Cosine between the vectors of every pair of layers")  # the vectors are made
    before = charts(page)
    page.button(key="FormSubmitter:steer.sweep_form-Sweep").click().run()
    ok(page)
    (error,) = page.error
    assert "differ by 'Absolutely agreeable', which is" in error.value
    assert error.value.endswith("rewrite the choices as ' (A)' and ' (B)'.")
    assert charts(page).keys() == before.keys() and page.session_state["steer.sweep"] is None


def test_the_sweep_opens_where_the_behaviour_was_measured_to_steer(page, models, monkeypatch):
    """Issue 25, item 4: the default sweep sat at the middle layer, where the default behaviour does not steer
    SmolLM2 ('No steering beyond a random direction'). The page now opens on a behaviour and a layer measured to
    steer (steering/measured.py) and says where that layer came from; elsewhere it keeps the middle layer, silent."""
    from repmap_core.steering import measured

    assert page.selectbox(key="steer.data_choice").value == "builtin:myopic_reward"
    compute(page, models["gpt2"], data=AB)
    layers = sorted(page.session_state["steer.result"].sets["A"].vectors)
    assert page.selectbox(key="steer.layer.A").value == layers[len(layers) // 2]
    assert not any("was measured to steer" in c.value for c in page.caption)
    monkeypatch.setitem(measured.STEERS_AT, (models["gpt2"], AB), layers[0])
    compute(page, models["gpt2"], data=AB, limit=42)
    assert page.selectbox(key="steer.layer.A").value == layers[0]
    (note,) = [c.value for c in page.caption if "was measured to steer" in c.value]
    assert f"Opens at layer {layers[0]}" in note and AB in note and "this run's" in note
