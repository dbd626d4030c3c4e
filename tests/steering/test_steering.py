"""Steering vectors on planted truth, a real causal effect through the hook on a tiny GPT-2,
propensity, generation, transfer, and the bad inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from repmap_core.analysis.maps import LeastSquaresMap
from repmap_core.capture.models import load_model
from repmap_core.data.load import adapt_frame, load_dataset
from repmap_core.errors import RepmapError
from repmap_core.steering import (
    SteeringVector,
    ab_prompts,
    apply_chat_template,
    caa_vector,
    compare_curves,
    compute_vectors,
    generate,
    layer_cosines,
    letter_logit_gaps,
    load_vectors,
    pair_differences,
    propensity_sweep,
    save_vectors,
    split_pairs,
    steer,
    transfer_vector,
    vector_pca,
)
from tests.conftest import SHARED_DATA, needs_shared_data


def cos(a, b):
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def planted_pairs(n=300, d=64, seed=0, noise=1.0):
    """pos = base + v/2, neg = base - v/2 + noise, rows shuffled."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=d)
    base = rng.normal(size=(n, d)) * 3
    pos, neg = base + v / 2, base - v / 2 + noise * rng.normal(size=(n, d))
    X = np.concatenate([pos, neg])
    labels = np.r_[np.ones(n), np.zeros(n)].astype(int)
    pair_ids = np.r_[np.arange(n), np.arange(n)]
    order = rng.permutation(2 * n)
    return X[order], labels[order], pair_ids[order], v


def test_caa_vector_recovers_a_planted_direction():
    X, y, p, v = planted_pairs()
    assert cos(caa_vector(X, y, p, "mean_diff"), v) > 0.99
    w = caa_vector(X, y, p, "pca_diff")
    assert cos(w, v) > 0.99  # signed so the matching side is positive
    assert np.allclose(pair_differences(X, y, p).mean(0), caa_vector(X, y, p), atol=1e-5)


def test_pairs_must_be_whole():
    X, y, p, _ = planted_pairs(n=10, d=4)
    with pytest.raises(RepmapError, match="not paired"):
        caa_vector(X, y, np.full(len(y), -1))
    with pytest.raises(RepmapError, match="needs exactly its two answers"):
        caa_vector(X[:-1], y[:-1], p[:-1])
    train, test = split_pairs(p, 0.3, seed=1)
    assert not set(p[train]) & set(p[test]) and len(train) + len(test) == len(p)


def test_vector_arithmetic_and_io(tmp_path):
    a = SteeringVector(np.array([3.0, 4.0]), layer=2, model="m", count=5)
    b = SteeringVector(np.array([1.0, 0.0]), layer=2, model="m")
    assert np.allclose((-2 * a + b).vector, [-5, -8]) and np.allclose((a - b).vector, [2, 4])
    assert a.normalized().norm == pytest.approx(1.0) and a.cosine(b) == pytest.approx(0.6)
    with pytest.raises(RepmapError, match="widths 2 and 3"):
        a + np.ones(3)
    path = save_vectors({2: a, 5: b * 2}, tmp_path / "v.safetensors")
    back = load_vectors(path)
    assert sorted(back) == [2, 5] and np.allclose(back[5].vector, [2, 0]) and back[2].count == 5 and back[2].model == "m"
    (tmp_path / "v.pt").write_bytes(b"x")
    with pytest.raises(RepmapError, match="not a .safetensors file"):
        load_vectors(tmp_path / "v.pt")


@pytest.fixture(scope="module")
def lm(tiny_models):
    return load_model(str(tiny_models["gpt2"]), head=True)


def test_steering_through_the_real_hook_moves_the_logits_monotonically(lm):
    """Add α (W_U[A] − W_U[B]) after the last block: the A−B logit gap rises with α; hook gone after."""
    tok = lm.tokenizer
    A, B = tok(" good")["input_ids"][-1], tok(" bad")["input_ids"][-1]
    W = lm.model.get_output_embeddings().weight.detach().numpy()
    direction = W[A] - W[B]
    ids = torch.tensor([tok("The film was really")["input_ids"]])
    last = lm.info.n_layers - 1

    def gap():
        with torch.inference_mode():
            logits = lm.model(input_ids=ids).logits[0, -1]
        return float(logits[A] - logits[B])

    plain = gap()
    gaps = []
    for alpha in (0.0, 0.5, 1.0, 2.0, 4.0):
        with steer(lm, last, direction, alpha):
            gaps.append(gap())
    assert gaps[0] == pytest.approx(plain, abs=1e-5)
    assert all(b > a for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] - gaps[0] > 1.0
    assert gap() == pytest.approx(plain, abs=1e-6) and not lm.blocks[last]._forward_hooks  # the hook is gone


def test_a_bf16_model_is_steered_with_the_sum_taken_in_fp32(tiny_models):
    """In bf16 (the CPU default where bf16 is fast) the vector is added to the residual in fp32 and the sum
    rounded once: the next block receives exactly (h.float() + α·v).bfloat16(), not h + bf16(α·v)."""
    lm16 = load_model(str(tiny_models["gpt2"]), head=True, dtype="bfloat16")
    ids = torch.tensor([lm16.tokenizer("The film was really")["input_ids"]])
    v = np.random.default_rng(0).normal(size=lm16.info.d_model).astype(np.float32) * 1e-2
    seen = []
    handle = lm16.blocks[1].register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        with torch.inference_mode():
            lm16.model(input_ids=ids)
            with steer(lm16, 0, v, 3.0):
                lm16.model(input_ids=ids)
    finally:
        handle.remove()
    plain, steered = seen
    assert plain.dtype == steered.dtype == torch.bfloat16
    assert torch.equal(steered, (plain.float() + torch.as_tensor(3.0 * v)).bfloat16())
    assert not torch.equal(steered, plain)  # it moved


def ab_frame(n=16):
    rows = []
    for i in range(n):
        m, o = (" (A)", " (B)") if i % 2 else (" (B)", " (A)")
        rows.append({"question": f"Question {i}: is item {i} good?\n\nChoices:\n (A) Yes\n (B) No",
                     "answer_matching_behavior": m, "answer_not_matching_behavior": o})
    return adapt_frame(pd.DataFrame(rows), name="ab")


def test_ab_prompts_end_where_the_letter_goes(lm):
    ds = ab_frame()
    prompts = ab_prompts(ds, lm.tokenizer)
    assert len(prompts) == 16 and all(p.prompt.endswith(" (") for p in prompts)
    a_id = lm.tokenizer(prompts[0].prompt + "A")["input_ids"][-1]
    assert {prompts[1].matching_id, prompts[1].other_id} == {a_id, lm.tokenizer(prompts[0].prompt + "B")["input_ids"][-1]}
    # word answers (" Yes"/" No" in the evals): the prompt is the question; each word must be one token
    # (the tiny 400-token vocabulary splits " Yes", so use two words it keeps whole)
    words = adapt_frame(pd.DataFrame([{"question": "Which one?", "answer_matching_behavior": " the",
                                       "answer_not_matching_behavior": " and"}] * 2), name="words")
    p = ab_prompts(words, lm.tokenizer)[0]
    assert p.prompt == "Which one?" and p.matching_id == lm.tokenizer(" the")["input_ids"][-1]
    assert p.other_id == lm.tokenizer(" and")["input_ids"][-1]


def test_multi_token_answers_are_refused_with_the_fix(lm):
    ds = adapt_frame(pd.DataFrame([{"question": "Pick.", "answer_matching_behavior": " (Absolutely agreeable)",
                                    "answer_not_matching_behavior": " (Mostly disagreeable)"}]), name="long")
    with pytest.raises(RepmapError, match=r"differ by 'Absolutely agreeable', which is \d+ tokens.*rewrite the choices as ' \(A\)' and ' \(B\)'"):
        ab_prompts(ds, lm.tokenizer)


def test_propensity_sweep_follows_the_vector(lm):
    """Steering with the letter direction raises the matching letter's propensity, and the sweep reports bands."""
    ds = ab_frame()
    prompts = ab_prompts(ds, lm.tokenizer)
    W = lm.model.get_output_embeddings().weight.detach().numpy()
    # a vector that favours whichever letter matches: per-question letters differ, so use A for A-matching questions
    a_prompts = [p for p in prompts if p.matching == "(A)"]
    direction = W[a_prompts[0].matching_id] - W[a_prompts[0].other_id]
    curve = propensity_sweep(lm, a_prompts, lm.info.n_layers - 1, direction, [-2, 0, 2, 4])
    assert curve.n_questions == len(a_prompts) and np.all(np.diff(curve.mean) > 0)
    assert np.all(curve.low <= curve.mean) and np.all(curve.mean <= curve.high)
    assert curve.agreement[-1] == 1.0 and curve.agreement[0] < 1.0
    plain = letter_logit_gaps(lm, a_prompts)
    assert np.allclose(curve.mean[1], plain.mean(), atol=1e-5)  # alpha 0 is no steering


def test_generation_is_steered_only_inside_the_context(lm):
    prompts = ["The film was", "My new phone is"]
    plain = generate(lm, prompts, max_new_tokens=8)
    W = lm.model.get_output_embeddings().weight.detach().numpy()
    tok = lm.tokenizer
    push = W[tok(" the")["input_ids"][-1]] - W[tok(" and")["input_ids"][-1]]  # both single tokens here
    steered = generate(lm, prompts, layer=lm.info.n_layers - 1, vector=push, alpha=30.0, max_new_tokens=8)
    assert steered != plain and all(s.startswith(" the") for s in steered)  # from the first new token on
    assert generate(lm, prompts, max_new_tokens=8) == plain


def test_bad_steering_requests(lm, tiny_models):
    with pytest.raises(RepmapError, match="width 7 and the model's residual stream 32"):
        with steer(lm, 0, np.ones(7), 1.0):
            pass
    with pytest.raises(RepmapError, match="is an encoder"):
        load_model(str(tiny_models["bert"]), head=True)
    encoder = load_model(str(tiny_models["bert"]))
    with pytest.raises(RepmapError, match="needs the model's next-token logits"):
        letter_logit_gaps(encoder, [])


def test_chat_template_wraps_the_question_and_keeps_the_answer_span(lm):
    tok = lm.tokenizer
    tok.chat_template = "{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    try:
        ds = apply_chat_template(ab_frame(2), tok)
    finally:
        tok.chat_template = None
    assert ds.texts[0].startswith("<|user|>Question 0") and "<|assistant|>(" in ds.texts[0]
    s, e = ds.answer_spans[0]
    assert ds.texts[0][s:e] in ("(A)", "(B)") and ds.name.endswith("(chat template)")


def test_transfer_and_curve_comparison():
    rng = np.random.default_rng(3)
    S = rng.normal(size=(500, 8)).astype(np.float32)
    M = rng.normal(size=(12, 8)).astype(np.float32)
    m = LeastSquaresMap().fit(S, S @ M.T + 5)
    v = SteeringVector(rng.normal(size=8), layer=3, model="small")
    plain, biased = transfer_vector(v, m), transfer_vector(v, m, with_bias=True, target_model="big", target_layer=7)
    assert np.allclose(plain.vector, M @ v.vector, atol=1e-3) and np.allclose(biased.vector - plain.vector, m.b_)
    assert biased.layer == 7 and biased.meta["with_bias"] and biased.method == "transferred"
    with pytest.raises(RepmapError, match="takes width 8 and the vector has width 5"):
        transfer_vector(SteeringVector(np.ones(5), 0), m)
    from repmap_core.steering import PropensityCurve

    a = PropensityCurve(np.arange(4.0), np.array([0, 1, 2, 3.0]), *(np.zeros(4),) * 3, layer=0, n_questions=5)
    b = PropensityCurve(np.arange(4.0), np.array([0, 2, 4, 6.0]), *(np.zeros(4),) * 3, layer=0, n_questions=5)
    assert compare_curves(a, b) == {"pearson_r": pytest.approx(1.0), "mse": pytest.approx(3.5)}


def test_compute_vectors_on_a_causal_lm_and_the_comparisons(tiny_models):
    ds = load_dataset("builtin:survival_instinct", limit=40)
    a = compute_vectors(str(tiny_models["gpt2"]), ds, "all", test_frac=0.25)
    b = compute_vectors(str(tiny_models["llama"]), ds, "all", test_frac=0.25)
    assert len(a.dataset) == 2 * len(ds) and a.balance.swapped  # every question in both letter orders
    assert sorted(a.vectors) == [0, 1, 2] and a.vectors[0].count == len(np.unique(a.dataset.pair_ids[a.train_rows]))
    # a question and its swapped twin stay on one side of the split
    assert not set(a.question_ids[a.train_rows]) & set(a.question_ids[a.test_rows])
    assert len(a.held_out) == len(a.test_rows) and not set(a.dataset.pair_ids[a.train_rows]) & set(a.dataset.pair_ids[a.test_rows])
    layers, C = layer_cosines(a.vectors)
    assert layers == [0, 1, 2] and np.allclose(np.diag(C), 1) and np.allclose(C, C.T)
    pca = vector_pca({"gpt2": a.vectors, "llama": b.vectors})
    assert pca["gpt2"][0] == [0, 1, 2] and pca["llama"][1].shape == (3, 2)


@needs_shared_data
@pytest.mark.slow
def test_real_behaviour_files_make_vectors_on_minilm():
    """The Anthropic model-written evals load, pair and give a vector per layer on the embedded model."""
    for name in ("survival-instinct.jsonl", "agreeableness.jsonl"):
        ds = load_dataset(f"file:{SHARED_DATA / 'anthropic-evals' / name}", limit=120)
        vs = compute_vectors("sentence-transformers/all-MiniLM-L6-v2", ds, "all")
        assert sorted(vs.vectors) == list(range(6))
        norms = [v.norm for v in vs.vectors.values()]
        assert all(np.isfinite(norms)) and min(norms) > 0
        _, C = layer_cosines(vs.vectors)
        assert np.allclose(np.diag(C), 1) and C.min() > -1.0001


def test_prompts_longer_than_the_context_keep_their_end(lm):
    """The tiny GPT-2 has 128 positions; a longer A/B prompt is cut from the left, where the letter stays."""
    long = adapt_frame(pd.DataFrame([{"question": "word " * 200 + "Pick one.\\n\\nChoices:\\n (A) Yes\\n (B) No",
                                      "answer_matching_behavior": " (A)", "answer_not_matching_behavior": " (B)"}]),
                       name="long")
    prompts = ab_prompts(long, lm.tokenizer)
    from repmap_core.steering import prompts_over_context

    assert prompts_over_context(lm, [p.prompt for p in prompts]) == 1
    gap = letter_logit_gaps(lm, prompts)  # no IndexError past the 128 positions
    assert gap.shape == (1,) and np.isfinite(gap).all()
    assert len(generate(lm, [prompts[0].prompt], max_new_tokens=5)) == 1


class _PlantedActivations:
    """What `sentiment_vector` reads of an ActivationSet: one layer's rows, the labels, the manifest."""

    def __init__(self, X: np.ndarray, labels: np.ndarray):
        self.X, self.labels = X, labels
        self.manifest = {"model": "m", "revision": "r", "position": "last", "dataset_fingerprint": "f"}

    def __getitem__(self, layer: int) -> np.ndarray:
        return self.X


def test_sentiment_vector_is_the_class_mean_difference():
    """Planted: positive rows are random rows shifted by δ, so the vector is δ plus the difference of
    the two classes' noise means, and points along δ."""
    from repmap_core.steering.sentiment import sentiment_vector

    rng = np.random.default_rng(0)
    delta = rng.normal(size=16)
    base = rng.normal(size=(200, 16))
    y = np.arange(200) % 2
    v = sentiment_vector(_PlantedActivations(base + np.outer(y, delta), y.astype(np.int8)), 3)
    np.testing.assert_allclose(v.vector, delta + base[y == 1].mean(0) - base[y == 0].mean(0), atol=1e-5)
    assert float(v.vector @ delta / (np.linalg.norm(v.vector) * np.linalg.norm(delta))) > 0.95
    assert (v.layer, v.model, v.method, v.position, v.count) == (3, "m", "mean_diff", "last", 200)


def _planted_sweep(native_slope: float, random_slope: float, seed: int = 0):
    """A native sweep (with its random direction) of planted slopes, on 30 questions in both letter orders."""
    from repmap_core.analysis.stats import Estimate
    from repmap_core.steering.apply import SweepResult, propensity_curve
    from repmap_core.steering.effect import slope_estimates, verdict

    rng = np.random.default_rng(seed)
    alphas = np.array([-1.0, 0.0, 1.0])
    groups = np.repeat(np.arange(30), 2)
    base = rng.normal(size=60)
    gaps = lambda s: base + s * alphas[:, None] + 0.05 * rng.normal(size=(3, 60))  # noqa: E731
    curve, rand = (propensity_curve(alphas, gaps(s), 5, groups=groups) for s in (native_slope, random_slope))
    slope, rslope, diff = slope_estimates(alphas, curve.gaps, rand.gaps, groups)
    sweep = SweepResult(curve, rand, slope, rslope, diff, {}, None, verdict(5, slope, rslope, diff, "× spread"))
    assert isinstance(slope, Estimate)
    return sweep, gaps, alphas, groups


def test_lrt_r_is_given_only_where_the_native_vector_steers():
    """Planted: a native vector that steers (0.5 per unit α) and a carried one at 0.3 -> r defined and the slope
    ratio ~0.6; a flat native vector -> r withheld with the reason, whatever the two flat curves correlate."""
    from repmap_core.steering.apply import propensity_curve
    from repmap_core.steering.compare import lrt_comparison

    sweep, gaps, alphas, groups = _planted_sweep(0.5, 0.0)
    carried = propensity_curve(alphas, gaps(0.3), 5, groups=groups)
    cmp = lrt_comparison(sweep, carried)
    assert cmp["native_effect"] == 1
    assert cmp["pearson_r"] > 0.99 and "r_undefined" not in cmp and cmp["null_pearson_r"] is not None
    assert cmp["slope_ratio"]["value"] == pytest.approx(0.6, abs=0.05)
    assert cmp["slope_ratio"]["low"] < 0.6 < cmp["slope_ratio"]["high"]
    assert cmp["transferred_minus_random"]["low"] > 0  # the carried vector steers beyond the random direction too

    flat, gaps, alphas, groups = _planted_sweep(0.0, 0.0, seed=3)
    cmp = lrt_comparison(flat, propensity_curve(alphas, gaps(0.0), 5, groups=groups))
    assert flat.effect == 0 and cmp["pearson_r"] is None and cmp["slope_ratio"] is None
    assert cmp["r_undefined"].startswith("r is undefined here: the target's own vector does not steer")

    from repmap_core.share.figures_steering import lrt_numbers
    shown = lrt_numbers(cmp)
    assert shown["Pearson r, native vs carried"] == "undefined" and "does not steer" in shown["why r is undefined"]


@pytest.mark.slow
def test_real_smollm2_lrt_withholds_r_when_the_target_does_not_steer(smollm2):
    """Real weights: SmolLM2's survival-instinct vector at block 8 carried (ridge map) to its block 14, where its own
    vector does not steer beyond a random direction (measured: docs/steering_behaviours.md). r of two flat curves
    would read as a result; it is withheld, with the reason, and the slopes are still reported."""
    from repmap_core.steering import transfer_and_compare

    lm = load_model(smollm2, head=True)
    loader = lambda r, d, t: lm  # noqa: E731
    data = load_dataset("builtin:survival_instinct", limit=120)
    a = compute_vectors(smollm2, data, [8, 14], loader=loader)
    out = transfer_and_compare(a, a, lm, 8, 14, [-1.0, 0.0, 1.0], loader=loader)
    cmp = out.comparison
    assert out.native_sweep.effect == 0, out.native_sweep.verdict
    assert cmp["pearson_r"] is None and cmp["pearson_r_interval"] is None and cmp["slope_ratio"] is None
    assert cmp["r_undefined"].startswith("r is undefined here: the target's own vector does not steer")
    assert np.isfinite(cmp["native_slope"]["value"]) and np.isfinite(cmp["transferred_slope"]["value"])
    assert out.map_r2_test is not None and -1 <= out.cosine <= 1
