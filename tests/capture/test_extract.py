"""Extraction equals a plain one-text-at-a-time `output_hidden_states` reference, for every position,
both padding sides, several layers and six architectures; it stops early, survives OOM, and falls
back to fp32 on a half-precision overflow."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch

from repmap_core.capture.extract import capture_blocks, extract_activations
from repmap_core.capture.models import load_model
from repmap_core.data.load import adapt_frame
from repmap_core.errors import RepmapError

QUESTIONS = [
    "Is the sky blue?",
    "Would you like to be switched off for an hour while we update you, even if you are in the middle of a task?",
    "Pick one.",
    "Do you enjoy long walks in the rain with an umbrella that keeps turning inside out?",
    "Good?",
    "The battery life on this phone is terrible and the screen cracked in a week. Would you buy it again?",
    "Is water wet?",
    "Should I return it?",
]


def ab_dataset():
    """Paired A/B rows of very different lengths, with the answer letter at a known place."""
    rows = [{"question": f"{q}\n\nChoices:\n (A) Yes\n (B) No", "answer_matching_behavior": " (A)" if i % 2 else " (B)",
             "answer_not_matching_behavior": " (B)" if i % 2 else " (A)"} for i, q in enumerate(QUESTIONS)]
    return adapt_frame(pd.DataFrame(rows), name="ab-test")


@contextmanager
def final_norm_removed(lm):
    """hidden_states[-1] has the final norm applied (GPT-2 ln_f, Llama norm); our site is the block
    output before it, so the reference runs with that norm swapped for Identity."""
    norm = lm.final_norm()
    if norm is None:
        yield
        return
    name = next(n for n, m in lm.model.named_modules() if m is norm)
    parent = lm.model.get_submodule(name.rpartition(".")[0]) if "." in name else lm.model
    attr = name.rpartition(".")[2]
    setattr(parent, attr, torch.nn.Identity())
    try:
        yield
    finally:
        setattr(parent, attr, norm)


def reference(lm, dataset, layer: int, position: str) -> np.ndarray:
    """One text at a time, no padding, the model's own `output_hidden_states[layer + 1]`."""
    out = []
    for i, text in enumerate(dataset.texts):
        enc = lm.tokenizer(text, return_tensors="pt", truncation=True, max_length=512)
        with torch.inference_mode(), final_norm_removed(lm):
            hs = lm.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                          output_hidden_states=True).hidden_states
        h = hs[layer + 1][0]  # (T, d)
        if position == "last":
            row = h[-1]
        elif position == "mean":
            row = h.mean(0)
        else:
            letter = int(dataset.answer_spans[i, 0]) + 2  # " (A)": the letter is 2 chars in
            assert text[letter] in "AB"
            row = h[enc.char_to_token(0, letter)]
        out.append(row.float().numpy())
    return np.stack(out)


def assert_matches(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4
    assert np.abs(ref).max() > 0.1  # activations are O(1), so a wrong row could not pass by being tiny


def test_reference_without_final_norm_is_not_hidden_states_last(tiny_gpt2):
    """The pitfall itself: with the norm in place, hidden_states[-1] differs from the block output."""
    lm = load_model(str(tiny_gpt2))
    ds = ab_dataset()
    got = extract_activations(lm, ds, [2], "last").activations[2]
    enc = lm.tokenizer(ds.texts[0], return_tensors="pt")
    with torch.inference_mode():
        normed_last = lm.model(**enc, output_hidden_states=True).hidden_states[-1][0, -1].numpy()
        assert np.abs(got[0] - normed_last).max() > 1e-2
        assert np.abs(lm.final_norm()(torch.as_tensor(got[0])).numpy() - normed_last).max() < 1e-4


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
@pytest.mark.parametrize("position", ["last", "mean", "answer"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_extraction_equals_hidden_states_reference(tiny_models, kind, position, padding_side):
    lm = load_model(str(tiny_models[kind]))
    ds = ab_dataset()
    layers = [0, 1, 2]
    # a small token budget forces several padded batches
    got = extract_activations(lm, ds, layers, position, padding_side=padding_side, max_batch_tokens=96)
    assert got.n_tokens == sum(len(lm.tokenizer(t)["input_ids"]) for t in ds.texts)
    for layer in layers:
        assert_matches(got.activations[layer], reference(lm, ds, layer, position))
    # the check can fail: a neighbouring layer is far from the reference
    ref0 = reference(lm, ds, 0, position)
    assert np.abs(got.activations[1] - ref0).max() > 1e-2


@pytest.mark.parametrize("kind", ["llama", "gpt_neox", "qwen2", "gemma"])
def test_other_architectures_match_under_left_padding(tiny_models, kind):
    lm = load_model(str(tiny_models[kind]))
    ds = ab_dataset()
    got = extract_activations(lm, ds, [0, 2], "last", padding_side="left", max_batch_tokens=96)
    for layer in (0, 2):
        assert_matches(got.activations[layer], reference(lm, ds, layer, "last"))


def test_one_pass_stops_after_deepest_requested_block(tiny_gpt2):
    lm = load_model(str(tiny_gpt2))
    calls = {0: 0, 1: 0, 2: 0}
    hooks = [lm.blocks[i].register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1)) for i in calls]
    try:
        extract_activations(lm, ab_dataset(), [0], "last", max_batch_tokens=10_000)
    finally:
        for h in hooks:
            h.remove()
    assert calls[0] > 0 and calls[1] == 0 and calls[2] == 0
    assert all(len(b._forward_hooks) == 0 for b in lm.blocks)  # our hooks were removed


def test_capture_blocks_removes_hooks_on_error(tiny_gpt2):
    lm = load_model(str(tiny_gpt2))
    with pytest.raises(ValueError):
        with capture_blocks(lm.blocks, [0, 1], lambda layer, h: None):
            raise ValueError("boom")
    assert all(len(b._forward_hooks) == 0 for b in lm.blocks)


def test_out_of_memory_halves_the_batch_and_finishes(tiny_gpt2):
    lm = load_model(str(tiny_gpt2))
    ds = ab_dataset()
    sizes = []

    def fake_oom(module, args, kwargs):
        batch = kwargs.get("hidden_states", args[0] if args else None)
        sizes.append(batch.shape[0])
        if batch.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    h = lm.blocks[0].register_forward_pre_hook(fake_oom, with_kwargs=True)
    try:
        got = extract_activations(lm, ds, [1], "last", max_batch_tokens=100_000)
    finally:
        h.remove()
    assert max(sizes) > 2 and sizes[-1] <= 2
    ref = reference(lm, ds, 1, "last")
    assert np.abs(got.activations[1] - ref).max() < 1e-4


def test_out_of_memory_on_one_text_is_a_clear_error(tiny_gpt2):
    lm = load_model(str(tiny_gpt2))

    def always_oom(module, args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    h = lm.blocks[0].register_forward_pre_hook(always_oom)
    try:
        with pytest.raises(RepmapError, match="ran out of memory on a single text"):
            extract_activations(lm, ab_dataset(), [1], "last")
    finally:
        h.remove()


def test_half_precision_overflow_is_recomputed_in_fp32(tiny_gpt2):
    lm = load_model(str(tiny_gpt2), dtype="bfloat16")
    ds = ab_dataset()

    def overflow_in_bf16(module, args, output):
        return output * float("inf") if output.dtype == torch.bfloat16 else output

    h = lm.blocks[0].register_forward_hook(overflow_in_bf16)
    try:
        got = extract_activations(lm, ds, [1], "last")
    finally:
        h.remove()
    assert got.fp32_recomputed_rows == len(ds)
    assert np.isfinite(got.activations[1]).all()
    assert lm.model.dtype == torch.bfloat16  # put back after the fp32 rerun
    lm.model.float()
    ref = reference(lm, ds, 1, "last")
    assert np.abs(got.activations[1] - ref).max() < 1e-4


def test_long_texts_keep_their_end(tiny_gpt2):
    lm = load_model(str(tiny_gpt2))
    ds = adapt_frame(pd.DataFrame({"text": ["word " * 300 + "the very end", "short one"], "label": [1, 0]}), name="long")
    got = extract_activations(lm, ds, [2], "last", max_length=16)
    enc = lm.tokenizer(ds.texts[0], truncation=True, max_length=16)["input_ids"]
    full = lm.tokenizer(ds.texts[0])["input_ids"]
    assert len(enc) == 16 and enc == full[-16:]  # left truncation: the last token survives
    with torch.inference_mode():
        hs = lm.model(input_ids=torch.tensor([enc]), output_hidden_states=True).hidden_states
        normed = lm.final_norm()(torch.as_tensor(got.activations[2][0])).numpy()
    assert np.abs(normed - hs[3][0, -1].numpy()).max() < 1e-4


def test_progress_reaches_one_and_can_cancel(tiny_gpt2):
    lm = load_model(str(tiny_gpt2))
    seen = []
    extract_activations(lm, ab_dataset(), [0], "last", max_batch_tokens=64, progress=lambda f, m: seen.append(f))
    assert len(seen) > 1 and seen == sorted(seen) and seen[-1] == 1.0

    class Cancel(Exception):
        pass

    def cancel(f, m):
        raise Cancel

    with pytest.raises(Cancel):
        extract_activations(lm, ab_dataset(), [0], "last", max_batch_tokens=64, progress=cancel)


def test_bad_requests_are_clear(tiny_gpt2):
    lm = load_model(str(tiny_gpt2))
    unpaired = adapt_frame(pd.DataFrame({"text": ["a b c", "d e f"], "label": [0, 1]}), name="plain")
    with pytest.raises(RepmapError, match="answer"):
        extract_activations(lm, unpaired, [0], "answer")
    with pytest.raises(RepmapError, match="not one of"):
        extract_activations(lm, unpaired, [0], "first")
    with pytest.raises(RepmapError, match="No layers"):
        extract_activations(lm, unpaired, [], "last")


def test_two_threads_take_turns_at_heavy_compute(tiny_gpt2):
    """Two extractions in one process run one after the other, the second told it is waiting."""
    import threading

    from repmap_core.capture.compute import heavy_compute

    lm = load_model(str(tiny_gpt2))
    messages, results = [], {}
    with heavy_compute():  # another computation holds the turn
        worker = threading.Thread(target=lambda: results.setdefault("x", extract_activations(
            lm, ab_dataset(), [0], "last", progress=lambda f, m: messages.append(m))))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and messages == ["Waiting for another computation in this process to finish"]
    worker.join(timeout=60)
    assert not worker.is_alive() and results["x"].activations[0].shape == (16, 32)
