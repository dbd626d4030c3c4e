"""Finetuning: tiny GPT-2 (last-token pooling) and BERT (mean pooling) learn separable data; the
folder is a complete model that loads and extracts like any other and is reused; runs are seeded;
a cancel leaves nothing; early stopping; predictions, weak labels and their saved data set; the
validation split; the one-sentence errors."""
from __future__ import annotations

import json
import math
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from repmap_core.capture.extract import extract_activations
from repmap_core.capture.models import EMBEDDED_MODEL_ID, load_model
from repmap_core.data.load import TextDataset, load_dataset
from repmap_core.errors import RepmapError
from repmap_core.finetune.checkpoints import FORMAT, check_base, list_finetuned, predict, save_dataset, weak_labels
from repmap_core.finetune.train import Cancelled, FinetuneConfig, FinetuneResult, finetune, validation_split

GOOD = ["great", "good", "lovely", "excellent", "wonderful", "perfect", "nice", "fantastic"]
BAD = ["awful", "bad", "terrible", "horrible", "poor", "broken", "boring", "worst"]
THINGS = ["food", "phone", "film", "book"]
# a tiny random model needs a bigger step than a pretrained one: up to 20 epochs of 3 steps at 3e-3 (its
# tokenizer is trained on the built-in reviews, which split some of the words below into pieces)
FAST = FinetuneConfig(epochs=20, lr=3e-3, val_frac=0.25, patience=3)
QUICK = FinetuneConfig(epochs=2, lr=3e-3, val_frac=0.25)  # where only the mechanics matter


def separable(n_pairs: int = 32) -> TextDataset:
    """64 rows in pairs: 'The <thing> was <good word>' (1) vs '... <bad word>' (0)."""
    texts, labels, pairs = [], [], []
    for i in range(n_pairs):
        thing = THINGS[i % len(THINGS)]
        texts += [f"The {thing} was {GOOD[i % 8]}", f"The {thing} was {BAD[(3 * i) % 8]}"]
        labels += [1, 0]
        pairs += [i, i]
    n = len(texts)
    return TextDataset("separable", texts, np.array(labels, np.int8), np.array(pairs, np.int64), np.full((n, 2), -1))


@dataclass
class Run:
    result: FinetuneResult
    steps: list[tuple[int, float]]
    fractions: list[float]


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
    """`trained(kind)`: tiny `kind` finetuned once per module on `separable()` with FAST, in a
    cache of its own, with what on_step and progress saw."""
    runs: dict[str, Run] = {}

    def get(kind: str) -> Run:
        if kind not in runs:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("REPMAP_CACHE", str(tmp_path_factory.mktemp(f"cache-{kind}")))
                steps, fractions = [], []
                result = finetune(str(tiny_models[kind]), separable(), FAST,
                                  on_step=lambda s, loss: steps.append((s, loss)),
                                  progress=lambda f, m: fractions.append(f))
            runs[kind] = Run(result, steps, fractions)
        return runs[kind]

    return get


def head_weights(path: str) -> dict[str, np.ndarray]:
    return load_file(str(Path(path) / "classifier.safetensors"))


def model_folders(cache_dir: Path) -> list[str]:
    folder = cache_dir / "models"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("kind, pooling", [("gpt2", "last"), ("bert", "mean")])
def test_finetuning_learns_separable_data(trained, kind, pooling):
    run = trained(kind)
    m = run.result.manifest
    metrics = m["metrics"]
    assert not run.result.reused and m["pooling"] == pooling
    assert metrics["val_acc"] >= 0.9 and metrics["train_acc"] >= 0.9  # chance is 0.5
    assert metrics["val_loss"] < 0.5 * math.log(2)  # chance is ln 2
    losses = [h["loss"] for h in m["history"]]
    third = len(losses) // 3
    assert np.mean(losses[-third:]) < 0.5 * np.mean(losses[:third])
    # on_step saw every step with the loss the history records; progress rose to 1
    assert [s for s, _ in run.steps] == list(range(1, metrics["steps"] + 1)) == [h["step"] for h in m["history"]]
    assert np.allclose([loss for _, loss in run.steps], losses, atol=1e-5)
    assert len(run.fractions) >= metrics["steps"] and run.fractions[-1] == 1.0
    assert all(0 <= a <= b <= 1 for a, b in zip(run.fractions, run.fractions[1:]))


@pytest.mark.slow
def test_folder_holds_a_complete_model_head_and_manifest(trained, tiny_gpt2):
    run = trained("gpt2")
    folder = Path(run.result.path)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "classifier.safetensors", "repmap_finetune.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl")) or n.startswith(".tmp")]
    assert folder.parent.name == "models" and len(folder.name) == 32
    m = json.loads((folder / "repmap_finetune.json").read_text())
    assert m == run.result.manifest and m["format"] == FORMAT
    assert (m["base_model"], m["base_source"]) == (str(tiny_gpt2), "folder") and m["base_revision"].startswith("sha256:")
    ds = separable()
    assert m["dataset"]["name"] == "separable" and m["dataset"]["fingerprint"] == ds.fingerprint
    assert (m["dataset"]["rows"], m["dataset"]["train_rows"] + m["dataset"]["val_rows"]) == (64, 64)
    assert m["config"] == asdict(FAST)
    assert set(m["metrics"]) >= {"train_loss", "val_loss", "val_acc", "train_acc", "epochs_run", "steps", "seconds",
                                 "stopped_early"}
    assert m["metrics"]["epochs_run"] == 20 and m["metrics"]["stopped_early"] is False
    assert len(m["history"]) == m["metrics"]["steps"] == 60 and m["created"] and m["versions"]["torch"]
    head = head_weights(run.result.path)
    assert head["weight"].shape == (2, 32) and head["bias"].shape == (2,)


@pytest.mark.slow
@pytest.mark.parametrize("kind, position", [("gpt2", "last"), ("bert", "mean")])
def test_finetuned_folder_loads_and_extracts_like_any_model(trained, tiny_models, kind, position):
    ds = separable()
    tuned = load_model(trained(kind).result.path)
    base = load_model(str(tiny_models[kind]))
    assert (tuned.info.n_layers, tuned.info.d_model, tuned.info.is_encoder) == (base.info.n_layers, 32, kind == "bert")
    after = extract_activations(tuned, ds, [2], position).activations[2]
    before = extract_activations(base, ds, [2], position).activations[2]
    assert after.shape == before.shape == (64, 32) and np.isfinite(after).all()
    assert np.abs(after - before).mean() > 0.05 * np.abs(before).mean()


@pytest.mark.slow
def test_same_request_is_reused_and_force_retrains(tiny_gpt2, cache_dir):
    ds = separable()
    first = finetune(str(tiny_gpt2), ds, QUICK)
    steps: list[int] = []
    again = finetune(str(tiny_gpt2), ds, QUICK, on_step=lambda s, loss: steps.append(s))
    assert again.reused and steps == [] and again.path == first.path and again.manifest == first.manifest
    forced = finetune(str(tiny_gpt2), ds, QUICK, force=True, on_step=lambda s, loss: steps.append(s))
    assert not forced.reused and forced.path == first.path and steps == list(range(1, forced.manifest["metrics"]["steps"] + 1))
    assert forced.manifest["created"] >= first.manifest["created"]
    # another config is another model
    other = finetune(str(tiny_gpt2), ds, FinetuneConfig(**dict(asdict(QUICK), seed=1)))
    assert other.path != first.path and not other.reused
    assert model_folders(cache_dir) == sorted(Path(p).name for p in (first.path, other.path))
    assert len(list_finetuned()) == 2


@pytest.mark.slow
def test_same_seed_gives_the_same_weights(tiny_gpt2):
    ds = separable()
    a = head_weights(finetune(str(tiny_gpt2), ds, QUICK).path)
    b_result = finetune(str(tiny_gpt2), ds, QUICK, force=True)
    b = head_weights(b_result.path)
    assert not b_result.reused
    assert torch.allclose(torch.from_numpy(a["weight"]), torch.from_numpy(b["weight"]))
    assert torch.allclose(torch.from_numpy(a["bias"]), torch.from_numpy(b["bias"]))
    c = head_weights(finetune(str(tiny_gpt2), ds, FinetuneConfig(**dict(asdict(QUICK), seed=1))).path)
    assert not torch.allclose(torch.from_numpy(a["weight"]), torch.from_numpy(c["weight"]))


def test_cancel_during_training_leaves_nothing(tiny_gpt2, cache_dir):
    cancel = threading.Event()
    steps: list[int] = []

    def on_step(step: int, loss: float) -> None:
        steps.append(step)
        if step == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        finetune(str(tiny_gpt2), separable(), FAST, on_step=on_step, cancel=cancel)
    assert steps == [1, 2]
    assert [n for n in model_folders(cache_dir) if not n.startswith(".tmp-")] == []
    assert list_finetuned() == []


def test_cancel_while_saving_removes_the_temp_folder(tiny_gpt2, cache_dir):
    cancel = threading.Event()

    def progress(fraction: float, message: str) -> None:
        if message.startswith("Saving"):
            cancel.set()

    with pytest.raises(Cancelled):
        finetune(str(tiny_gpt2), separable(), QUICK, progress=progress, cancel=cancel)
    assert model_folders(cache_dir) == [] and list_finetuned() == []
    # and the same request then trains and saves normally
    assert not finetune(str(tiny_gpt2), separable(), QUICK).reused and len(list_finetuned()) == 1


def test_early_stopping_on_a_tiny_learning_rate(tiny_gpt2):
    config = FinetuneConfig(epochs=20, lr=1e-7, val_frac=0.25, patience=2)
    m = finetune(str(tiny_gpt2), separable(), config).manifest
    metrics = m["metrics"]
    # the first evaluation sets the best; two more without improvement stop it
    assert metrics["stopped_early"] is True and metrics["epochs_run"] == 3 and metrics["steps"] == 9
    assert [e["step"] for e in m["evaluations"]] == [3, 6, 9] and metrics["best_step"] == 3
    assert metrics["val_loss"] == m["evaluations"][0]["val_loss"]


def test_early_stopping_on_random_labels_keeps_the_best_weights(tiny_gpt2):
    ds = separable()
    noise = TextDataset("random labels", ds.texts, np.random.default_rng(0).integers(0, 2, 64).astype(np.int8),
                        ds.pair_ids, ds.answer_spans)
    config = FinetuneConfig(epochs=20, lr=1e-2, val_frac=0.25, patience=3, eval_every=1)
    result = finetune(str(tiny_gpt2), noise, config)
    metrics, evaluations = result.manifest["metrics"], result.manifest["evaluations"]
    assert metrics["stopped_early"] and metrics["steps"] < 60
    assert [e["step"] for e in evaluations] == list(range(1, metrics["steps"] + 1))  # eval_every=1
    assert metrics["best_step"] == metrics["steps"] - 3
    assert evaluations[-1]["val_loss"] > metrics["val_loss"] + 0.01
    # the saved model is the best one, not the last: its validation loss is the best recorded
    _, val_rows = validation_split(noise, config.val_frac, config.seed)
    p = predict(result.path, noise)[val_rows]
    y = noise.labels[val_rows]
    saved_loss = -np.mean(np.log(np.where(y == 1, p, 1 - p)))
    assert saved_loss == pytest.approx(metrics["val_loss"], abs=1e-4)


@pytest.mark.slow
def test_predict_and_weak_labels_round_trip_through_a_saved_data_set(trained):
    path = trained("gpt2").result.path
    ds = separable()
    p = predict(path, ds)
    assert p.shape == (64,) and p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    assert ((p >= 0.5) == (ds.labels == 1)).mean() > 0.8
    # on the validation rows, predict agrees with the accuracy training recorded
    _, val_rows = validation_split(ds, FAST.val_frac, FAST.seed)
    val_acc = ((p[val_rows] >= 0.5) == (ds.labels[val_rows] == 1)).mean()
    assert val_acc == pytest.approx(trained("gpt2").result.manifest["metrics"]["val_acc"], abs=1e-6)

    # relabel data whose own labels are flipped: weak labels follow the model, not the data
    flipped = TextDataset("flipped", ds.texts, (1 - ds.labels).astype(np.int8), ds.pair_ids, ds.answer_spans)
    weak = weak_labels(path, flipped)
    assert weak.texts == ds.texts and (weak.pair_ids == ds.pair_ids).all()
    assert (weak.labels == (p >= 0.5)).all() and (weak.labels != flipped.labels).mean() > 0.8
    spec = save_dataset(weak, "separable, weak labels from tiny gpt2")
    assert spec.startswith("file:") and spec.endswith(f"{weak.fingerprint}.jsonl")
    back = load_dataset(spec)
    assert back.texts == weak.texts and (back.labels == weak.labels).all()
    assert (back.pair_ids == weak.pair_ids).all()  # pair ids survive the round trip
    about = json.loads(Path(spec[len("file:"):]).with_suffix(".json").read_text())
    assert about["name"] == "separable, weak labels from tiny gpt2" and about["rows"] == 64
    assert save_dataset(weak, "again") == spec  # content-addressed


@pytest.mark.slow
def test_check_base_names_the_real_base(trained, tiny_gpt2, tiny_bert):
    path = trained("gpt2").result.path
    assert check_base(path, str(tiny_gpt2))["base_model"] == str(tiny_gpt2)
    with pytest.raises(RepmapError, match=rf"was finetuned from {tiny_gpt2}, not gpt2-medium"):
        check_base(path, "gpt2-medium")
    with pytest.raises(RepmapError, match="was finetuned from"):
        check_base(path, str(tiny_bert))
    with pytest.raises(RepmapError, match="is not a finetuned model folder"):
        check_base(str(tiny_gpt2), str(tiny_gpt2))


@pytest.mark.parametrize("labels, n, phrase", [
    ([1], 64, "has only rows labelled 1; finetuning a classifier needs rows of both labels"),
    ([0, 1], 6, "has 6 row\\(s\\); finetuning needs at least 8"),
])
def test_unusable_data_is_refused_in_one_sentence(tiny_gpt2, cache_dir, labels, n, phrase):
    ds = separable()
    rows = np.arange(n)
    bad = TextDataset("tiny set", [ds.texts[i] for i in rows], np.resize(np.array(labels, np.int8), n),
                      np.full(n, -1), np.full((n, 2), -1))
    with pytest.raises(RepmapError, match=phrase):
        finetune(str(tiny_gpt2), bad, QUICK)
    assert model_folders(cache_dir) == []


def test_bad_settings_are_refused():
    with pytest.raises(RepmapError, match="learning rate must be positive"):
        FinetuneConfig(lr=0)
    with pytest.raises(RepmapError, match="validation fraction must be in"):
        FinetuneConfig(val_frac=1.0)


def test_validation_split_keeps_pairs_whole_and_balances_labels():
    ds = separable()
    train, val = validation_split(ds, 0.25, seed=0)
    assert sorted([*train, *val]) == list(range(64)) and len(val) == 16
    assert not set(ds.pair_ids[train]) & set(ds.pair_ids[val])
    again, _ = validation_split(ds, 0.25, seed=0)
    other, _ = validation_split(ds, 0.25, seed=1)
    assert (again == train).all() and not np.array_equal(other, train)
    # unpaired and imbalanced (48 vs 16): validation keeps the 3:1 ratio
    n = 64
    labels = np.array([1] * 48 + [0] * 16, np.int8)
    unpaired = TextDataset("unpaired", ds.texts, labels, np.full(n, -1), np.full((n, 2), -1))
    for seed in range(5):
        _, val = validation_split(unpaired, 0.25, seed=seed)
        assert len(val) == 16 and int(labels[val].sum()) in (11, 12, 13)
    assert len(validation_split(unpaired, 0.0)[1]) == 0


@pytest.mark.slow
def test_list_finetuned_skips_partial_and_broken_folders(trained, cache_dir):
    source = Path(trained("gpt2").result.path)
    models = cache_dir / "models"
    good = shutil.copytree(source, models / source.name)
    shutil.copytree(source, models / f".tmp-{source.name}-abc")  # a writer still at work
    broken = shutil.copytree(source, models / ("b" * 32))
    (broken / "repmap_finetune.json").write_text("{not json")
    headless = shutil.copytree(source, models / ("c" * 32))
    (headless / "classifier.safetensors").unlink()
    found = list_finetuned()
    assert [f.path for f in found] == [str(good)]
    assert (found[0].base_model, found[0].dataset) == (trained("gpt2").result.manifest["base_model"], "separable")
    assert found[0].val_acc == trained("gpt2").result.manifest["metrics"]["val_acc"]


@pytest.mark.slow
def test_embedded_model_finetunes_on_builtin_sentiment():
    """The real MiniLM on the 800 built-in reviews with the default config."""
    result = finetune(EMBEDDED_MODEL_ID, load_dataset("builtin:sentiment"))
    metrics = result.manifest["metrics"]
    assert result.manifest["pooling"] == "mean" and metrics["steps"] == 3 * math.ceil(result.manifest["dataset"]["train_rows"] / 16)
    assert metrics["val_acc"] >= 0.75 and metrics["train_acc"] >= 0.85  # chance is 0.5


def test_models_made_within_one_second_list_newest_first(tiny_gpt2):
    """`created` has microseconds, so two checkpoints made in the same second still sort by age."""
    ds = separable()
    first = finetune(str(tiny_gpt2), ds, QUICK)
    second = finetune(str(tiny_gpt2), ds, FinetuneConfig(epochs=1, lr=3e-3, val_frac=0.25, seed=1))
    assert [m.path for m in list_finetuned()] == [second.path, first.path]
    assert first.manifest["created"] < second.manifest["created"]


def test_auto_trains_every_weight_of_a_small_model_and_the_last_blocks_of_a_large_one_on_cpu(tiny_gpt2, tmp_path):
    from repmap_core.capture.models import resolve_model
    from repmap_core.finetune.train import AUTO_LAST_BLOCKS, auto_train_last

    small = resolve_model(str(tiny_gpt2))
    assert auto_train_last(small, "cpu") is None
    # 64M float32 parameters in a sparse file: weights_bytes reads the header only, so nothing is written
    big = tmp_path / "big"
    shutil.copytree(tiny_gpt2, big)
    for f in big.glob("*.safetensors"):
        f.unlink()
    size = 8000 * 8000 * 4
    header = json.dumps({"w": {"dtype": "F32", "shape": [8000, 8000], "data_offsets": [0, size]}}).encode()
    with open(big / "model.safetensors", "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + size)
    large = resolve_model(str(big))
    assert auto_train_last(large, "cpu") == AUTO_LAST_BLOCKS
    assert auto_train_last(large, "cuda") is None  # a GPU trains every weight


def test_a_cpu_where_bf16_measured_fast_trains_under_bf16_autocast_in_an_entry_of_its_own(tiny_gpt2, monkeypatch):
    """fp32 master weights, bf16 autocast forward: named in the manifest and the key, so a cached fp32
    finetune is never returned for a bf16 request (the tests otherwise force fp32 via REPMAP_DTYPE)."""
    from repmap_core.finetune import classifier, train

    fp32 = finetune(str(tiny_gpt2), separable(), QUICK)
    seen = []
    real = torch.autocast

    def spy(device_type, dtype=None, enabled=True, **kw):
        seen.append((device_type, dtype, enabled))
        return real(device_type, dtype=dtype, enabled=enabled, **kw)

    for module in (classifier, train):  # the key (train) and the forward (classifier) ask the same question
        monkeypatch.setattr(module, "cpu_bf16", lambda resolved: True)
    monkeypatch.setattr(torch, "autocast", spy)
    bf16 = finetune(str(tiny_gpt2), separable(), QUICK)
    assert fp32.manifest["precision"] == "float32" and bf16.manifest["precision"] == "bf16-autocast"
    assert bf16.manifest["key"] != fp32.manifest["key"] and not bf16.reused
    assert seen and all(s == ("cpu", torch.bfloat16, True) for s in seen)
    weights = load_file(str(Path(bf16.path) / "model.safetensors"))
    assert all(w.dtype == np.float32 for w in weights.values())  # the master copy stays fp32
