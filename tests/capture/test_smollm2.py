"""Real weights: the embedded SmolLM2-135M-Instruct through the GGUF path (slow, part of the default run).

Each check compares repmap with an independent computation (plain HF forwards on hand-built
prompts, the steering-vectors library, scikit-learn) or with what real weights are known to show;
planted truth on tiny random models cannot reveal letter bias or a flat layer curve.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from repmap_core.analysis.separation import layer_separation
from repmap_core.capture.activations import get_activations
from repmap_core.capture.models import EMBEDDED_MODEL_ID, load_model, resolve_model
from repmap_core.data.load import BUILTIN_DIR, load_dataset
from repmap_core.steering import compute_vectors

pytestmark = pytest.mark.slow


def test_gguf_resolves_to_a_converted_folder_with_its_hash_and_quantization(smollm2):
    r = resolve_model(smollm2)
    assert r.source == "embedded-gguf" and r.quantization == "Q4_1"
    assert r.revision.startswith("gguf-sha256:") and r.display.endswith("(Q4_1 GGUF)")
    cfg = json.loads(open(os.path.join(r.path, "config.json")).read())
    assert cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 30 and cfg["hidden_size"] == 576
    aset = get_activations(smollm2, "builtin:sentiment", [0], "last", limit=8)
    assert aset.manifest["quantization"] == "Q4_1" and aset.manifest["revision"] == r.revision
    # the Finetune page's "auto": SmolLM2's last 4 blocks on this CPU, every weight of MiniLM
    from repmap_core.finetune.train import auto_train_last

    assert auto_train_last(r, "cpu") == 4 and auto_train_last(resolve_model(EMBEDDED_MODEL_ID), "cpu") is None


def test_the_layer_curve_on_real_reviews_rises(smollm2):
    """Probe accuracy at the last token, real UCI reviews: block 0 near .6, middle blocks near .9."""
    aset = get_activations(smollm2, "builtin:sentiment", [0, 7, 14], "last", limit=400, seed=0)
    rows = layer_separation(aset.layers, aset.labels, aset.pair_ids)
    acc = {r.layer: r.probe_cv_acc for r in rows}
    assert max(acc.values()) - acc[0] >= 0.15, acc
    assert max(acc, key=acc.get) != 0


def _independent_caa(model_path: str, questions: list[dict], layer: int) -> np.ndarray:
    """Mean over questions of (hidden state at the matching letter − at the other letter), block
    `layer`'s output, from plain `output_hidden_states` forwards on prompts built here by hand."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    diffs = []
    for q in questions:
        prompt = tok.apply_chat_template([{"role": "user", "content": q["question"].strip()}], tokenize=False,
                                         add_generation_prompt=True)
        states = []
        for answer in (q["answer_matching_behavior"], q["answer_not_matching_behavior"]):
            letter_prefix = prompt + answer.strip()[:2]  # "(A": the letter is the last token of this
            ids = tok(letter_prefix, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                hs = model(input_ids=ids, output_hidden_states=True).hidden_states
            states.append(hs[layer + 1][0, -1].double().numpy())  # hidden_states[L + 1] = block L's output (not the last block)
        diffs.append(states[0] - states[1])
    return np.mean(diffs, axis=0)


def test_caa_vector_equals_an_independent_forward_and_the_steering_vectors_library(smollm2):
    questions = [json.loads(line) for line in (BUILTIN_DIR / "corrigible.jsonl").open(encoding="utf-8")]
    ds = load_dataset("builtin:corrigible", limit=48, seed=0)
    L = 14
    vs = compute_vectors(smollm2, ds, [L], test_frac=0.25, balance=False, seed=0)
    train_q = sorted(set(vs.question_ids[vs.train_rows].tolist()))
    by_text = {q["question"]: q for q in questions}
    first_row = {int(p): i for i, p in reversed(list(enumerate(ds.pair_ids)))}
    picked = [by_text[ds.texts[first_row[q]][: ds.answer_spans[first_row[q]][0]]] for q in train_q]
    ref = _independent_caa(resolve_model(smollm2).path, picked, L)
    v = vs.vectors[L].vector.astype(np.float64)
    assert v @ ref / np.linalg.norm(v) / np.linalg.norm(ref) > 0.999
    assert np.linalg.norm(v - ref) / np.linalg.norm(ref) < 1e-3

    # the steering-vectors library (read at the letter, decoder_block layers) gives the same vector
    pytest.importorskip("steering_vectors")
    from steering_vectors import train_steering_vector

    lm = load_model(smollm2, head=True)
    prompts = [(t[: s + 2], u[: s2 + 2]) for t, u, s, s2 in
               ((vs.dataset.texts[i], vs.dataset.texts[j], vs.dataset.answer_spans[i][0], vs.dataset.answer_spans[j][0])
                for i, j in _train_pairs(vs))]
    sv = train_steering_vector(lm.model, lm.tokenizer, prompts, layers=[L], layer_type="decoder_block",
                               read_token_index=-1, show_progress=False)
    theirs = sv.layer_activations[L].double().numpy()
    assert v @ theirs / np.linalg.norm(v) / np.linalg.norm(theirs) > 0.999999


def _train_pairs(vs):
    rows = vs.train_rows
    match = {int(vs.dataset.pair_ids[r]): int(r) for r in rows if vs.dataset.labels[r] == 1}
    other = {int(vs.dataset.pair_ids[r]): int(r) for r in rows if vs.dataset.labels[r] == 0}
    return [(match[p], other[p]) for p in sorted(match)]


def test_letter_balancing_keeps_unrelated_behaviours_from_being_antiparallel(smollm2):
    """Without balancing, CAA vectors are mostly 'B minus A': two unrelated behaviours whose training
    questions lean to opposite letters come out antiparallel. Both letter orders cancel the letter."""
    layers = list(range(10, 21, 2))
    sets = {name: compute_vectors(smollm2, load_dataset(f"builtin:{name}", limit=60, seed=1), layers, test_frac=0.2)
            for name in ("survival_instinct", "myopic_reward")}
    for vs in sets.values():
        assert vs.balance.swapped and len(set(vs.balance.counts.values())) == 1
    balanced = {L: sets["survival_instinct"].vectors[L].cosine(sets["myopic_reward"].vectors[L]) for L in layers}
    assert min(balanced.values()) > -0.5, balanced

    # the same activations, original letter order only, training questions matching on (A) for one
    # behaviour and (B) for the other: the letter axis dominates, as on an unbalanced split
    from repmap_core.steering import caa_vector

    skewed = {}
    for name, letter in (("survival_instinct", "A"), ("myopic_reward", "B")):
        vs = sets[name]
        aset = get_activations(smollm2, vs.dataset, layers, "answer")
        original = vs.dataset.pair_ids < (vs.question_ids.max() + 1)
        keep_pairs = {int(p) for p, y, t, s in zip(vs.dataset.pair_ids, vs.dataset.labels, vs.dataset.texts,
                                                   vs.dataset.answer_spans[:, 0]) if y == 1 and t[s:].strip().startswith(f"({letter}")}
        rows = np.flatnonzero(original & np.isin(vs.dataset.pair_ids, list(keep_pairs)))
        skewed[name] = {L: caa_vector(aset[L][rows], aset.labels[rows], aset.pair_ids[rows]) for L in layers}
    cos = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in
           ((skewed["survival_instinct"][L], skewed["myopic_reward"][L]) for L in layers)]
    assert np.median(cos) < -0.5, cos  # the failure the balancing prevents is real on these weights
