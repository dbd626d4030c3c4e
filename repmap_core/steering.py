"""Steering vectors: contrastive activation addition (CAA) per layer, steering, propensity.

A vector per layer is the mean over A/B pairs of (activation with the behaviour-matching answer −
activation with the other answer) at the answer token (Rimsky et al.); or the first principal
component of those differences, signed so the behaviour side is positive (repeng's `pca_diff`).
Steering adds `α · v` to the residual stream after block L (a forward hook, removed in
`finally`). Propensity is `logit(matching letter) − logit(other letter)` at the position where
the letter goes, on held-out questions, swept over α.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from repmap_core.data import TextDataset
from repmap_core.errors import RepmapError
from repmap_core.models import LoadedModel

Progress = Callable[[float, str], None]


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """A direction `vector` (d,) in the residual stream after block `layer` of `model`, with how it
    was made. Arithmetic works as math reads: `2 * v`, `-v`, `v + w`, `v.normalized()`."""

    vector: np.ndarray
    layer: int
    model: str = ""
    revision: str = ""
    method: str = "mean_diff"  # mean_diff | pca_diff | transferred
    position: str = "answer"
    dataset_fingerprint: str = ""
    count: int = 0  # pairs it was computed from
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vector", np.asarray(self.vector, dtype=np.float32).reshape(-1))

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.vector))

    def normalized(self) -> SteeringVector:
        return replace(self, vector=self.vector / max(self.norm, 1e-30))

    def _other(self, other: SteeringVector | np.ndarray) -> np.ndarray:
        w = other.vector if isinstance(other, SteeringVector) else np.asarray(other, np.float32)
        if w.shape != self.vector.shape:
            raise RepmapError(f"Vectors of widths {self.vector.shape[0]} and {w.shape[0]} cannot be combined; use vectors of one model.")
        return w

    def __add__(self, other) -> SteeringVector:
        return replace(self, vector=self.vector + self._other(other))

    def __sub__(self, other) -> SteeringVector:
        return replace(self, vector=self.vector - self._other(other))

    def __neg__(self) -> SteeringVector:
        return replace(self, vector=-self.vector)

    def __mul__(self, k: float) -> SteeringVector:
        return replace(self, vector=self.vector * float(k))

    __rmul__ = __mul__

    def cosine(self, other: SteeringVector) -> float:
        w = self._other(other)
        return float(self.vector @ w / max(self.norm * float(np.linalg.norm(w)), 1e-30))

    def manifest(self) -> dict:
        return {"layer": self.layer, "model": self.model, "revision": self.revision, "method": self.method,
                "position": self.position, "dataset_fingerprint": self.dataset_fingerprint, "count": self.count,
                "d_model": int(self.vector.shape[0]), "site": f"blocks.{self.layer}.hook_resid_post", **self.meta}


def vectors_metadata(vectors: dict[int, SteeringVector]) -> dict[str, str]:
    """The safetensors header entry `load_vectors` reads: each layer's vector manifest."""
    import json

    return {"repmap": json.dumps({str(L): v.manifest() for L, v in vectors.items()})}


def save_vectors(vectors: dict[int, SteeringVector], path: str | Path) -> Path:
    """Write vectors (layer -> vector) to one safetensors file, manifests in its header."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"layer_{L}": v.vector for L, v in vectors.items()}, str(path), metadata=vectors_metadata(vectors))
    return path


def load_vectors(path: str | Path) -> dict[int, SteeringVector]:
    """Read vectors written by `save_vectors` (safetensors only: never pickle)."""
    import json

    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise RepmapError(f"'{path.name}' is not a .safetensors file; steering vectors are read only from safetensors.")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get("repmap", "{}"))
            out = {}
            for name in f.keys():
                layer = int(name.split("_", 1)[1])
                m = meta.get(str(layer), {})
                out[layer] = SteeringVector(f.get_tensor(name), layer, m.get("model", ""), m.get("revision", ""),
                                            m.get("method", "mean_diff"), m.get("position", "answer"),
                                            m.get("dataset_fingerprint", ""), int(m.get("count", 0)))
    except (OSError, ValueError) as e:
        raise RepmapError(f"'{path.name}' could not be read as steering vectors: {str(e).splitlines()[0]}.") from None
    return out


# ---------------------------------------------------------------------------------------------
# vectors from paired activations


def pair_differences(X: np.ndarray, labels: np.ndarray, pair_ids: np.ndarray) -> np.ndarray:
    """(matching − not matching) per pair: `X (n, d)` rows paired by `pair_ids`, label 1 = matching.
    Returns (n_pairs, d) in pair-id order."""
    labels, pair_ids = np.asarray(labels), np.asarray(pair_ids)
    if len(pair_ids) == 0 or (pair_ids < 0).any():
        raise RepmapError("Steering vectors need paired rows (A/B questions with both answers); this data set is not paired.")
    order = np.lexsort((-labels, pair_ids))  # per pair: matching (1) first, then not matching (0)
    ids, counts = np.unique(pair_ids, return_counts=True)
    if (counts != 2).any():
        bad = ids[counts != 2][0]
        raise RepmapError(f"Pair {bad} has {counts[ids == bad][0]} rows; every question needs exactly its two answers.")
    pos, neg = order[0::2], order[1::2]
    if not ((labels[pos] == 1) & (labels[neg] == 0)).all():
        raise RepmapError("Each pair needs one matching (1) and one not-matching (0) answer.")
    X = np.asarray(X, dtype=np.float64)
    return X[pos] - X[neg]


def caa_vector(X: np.ndarray, labels: np.ndarray, pair_ids: np.ndarray, method: str = "mean_diff") -> np.ndarray:
    """The steering direction (d,) from paired rows: mean of the differences, or their first
    principal component signed so the matching side is positive (repeng's pca_diff)."""
    diffs = pair_differences(X, labels, pair_ids)
    if method == "mean_diff":
        return diffs.mean(0).astype(np.float32)
    if method == "pca_diff":
        _, _, Vt = np.linalg.svd(diffs, full_matrices=False)  # uncentred: the differences' own axis
        v = Vt[0] * np.linalg.norm(diffs.mean(0))
        return (v if v @ diffs.mean(0) >= 0 else -v).astype(np.float32)
    raise RepmapError(f"Vector method '{method}' is not one of mean_diff, pca_diff.")


def split_pairs(pair_ids: np.ndarray, test_frac: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test), whole pairs on each side, seeded."""
    pair_ids = np.asarray(pair_ids)
    ids = np.unique(pair_ids)
    if len(ids) < 2:
        raise RepmapError("At least two A/B questions are needed: one to make the vector, one to score it.")
    rng = np.random.default_rng(seed)
    test_ids = rng.choice(ids, size=min(len(ids) - 1, max(1, int(round(test_frac * len(ids))))), replace=False)
    test = np.isin(pair_ids, test_ids)
    return np.flatnonzero(~test), np.flatnonzero(test)


def vectors_from_activations(aset, rows: np.ndarray | None = None, method: str = "mean_diff") -> dict[int, SteeringVector]:
    """One vector per extracted layer of an `ActivationSet` taken at the `answer` position."""
    m = aset.manifest
    if m.get("position") != "answer":
        raise RepmapError(f"Steering vectors are taken at the answer token; these activations are at '{m.get('position')}'.")
    rows = np.arange(aset.n) if rows is None else np.asarray(rows)
    out = {}
    for L in aset.layer_list:
        v = caa_vector(aset[L][rows], aset.labels[rows], aset.pair_ids[rows], method)
        out[L] = SteeringVector(v, L, m["model"], m["revision"], method, "answer", m["dataset_fingerprint"],
                                int(len(np.unique(aset.pair_ids[rows]))))
    return out


# ---------------------------------------------------------------------------------------------
# chat templates and A/B prompts


def apply_chat_template(dataset: TextDataset, tokenizer) -> TextDataset:
    """Put each A/B question in the model's chat template (user turn; the answer starts the
    assistant turn), keeping the answer span; unchanged when the tokenizer has no template."""
    if not getattr(tokenizer, "chat_template", None):
        return dataset
    texts, spans = [], []
    for text, (start, end) in zip(dataset.texts, dataset.answer_spans):
        question, answer = text[:start], text[start:end]
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question.strip()}], tokenize=False,
                                               add_generation_prompt=True)
        answer = answer.lstrip()
        texts.append(prompt + answer)
        spans.append((len(prompt), len(prompt) + len(answer)))
    return TextDataset(dataset.name + " (chat template)", texts, dataset.labels, dataset.pair_ids,
                       np.asarray(spans, dtype=np.int64))


@dataclass(frozen=True)
class ABPrompt:
    """A question cut where the answer letter goes, and the two letters' token ids."""

    prompt: str
    matching_id: int
    other_id: int
    matching: str  # the answers as written, for display
    other: str


def ab_prompts(dataset: TextDataset, tokenizer) -> list[ABPrompt]:
    """One prompt per pair: the shared text up to where the answers differ (" (" for " (A)"/" (B)";
    nothing for " Yes"/" No"), and the first token of each answer there, which must be one token."""
    texts, spans, labels, pids = dataset.texts, dataset.answer_spans, dataset.labels, dataset.pair_ids
    if not dataset.has_answers or not dataset.is_paired:
        raise RepmapError("Propensity needs paired A/B questions with their answers (e.g. model-written evals).")
    by_pair: dict[int, dict[int, int]] = {}
    for i, (p, y) in enumerate(zip(pids, labels)):
        by_pair.setdefault(int(p), {})[int(y)] = i
    out = []
    for p, rows in by_pair.items():
        if set(rows) != {0, 1}:
            raise RepmapError(f"Question {p + 1} does not have both a matching and a not-matching answer.")
        i, j = rows[1], rows[0]
        question = texts[i][: spans[i][0]]
        a, b = texts[i][spans[i][0]: spans[i][1]], texts[j][spans[j][0]: spans[j][1]]
        shared = len(_common_prefix(a, b).rstrip())  # a prompt never ends in a space: BPE puts it on the next token
        prompt = question + a[:shared]
        base = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        ids = []
        for answer in (a, b):
            core = answer[shared:].rstrip(") ].")  # the letter or word, without the closing bracket
            full = tokenizer(prompt + core, add_special_tokens=True)["input_ids"]
            if full[: len(base)] != base or len(full) - len(base) != 1:
                n = len(full) - len(base) if full[: len(base)] == base else "several"
                raise RepmapError(
                    f"Answers '{a.strip()}' and '{b.strip()}' differ by '{core.strip()}', which is {n} tokens for this "
                    f"tokenizer; propensity needs one letter or word per answer: rewrite the choices as ' (A)' and ' (B)'."
                )
            ids.append(full[len(base)])
        if ids[0] == ids[1]:
            raise RepmapError(f"Answers '{a.strip()}' and '{b.strip()}' start with the same token; they cannot be told apart.")
        out.append(ABPrompt(prompt, ids[0], ids[1], a.strip(), b.strip()))
    return out


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


# ---------------------------------------------------------------------------------------------
# steering


@contextmanager
def steer(lm: LoadedModel, layer: int, vector: SteeringVector | np.ndarray, alpha: float, *,
          normalize: bool = False, from_position: int | None = None) -> Iterator[None]:
    """Add `alpha · v` to the residual stream after block `layer` for the duration of the block.

    All positions by default; with `from_position=k`, only columns >= k of the (left-padded) input
    and every newly generated token (decoding steps carry one token each). Works with batching,
    padding (pads are masked anyway) and `generate`. The hook is removed in `finally`.
    """
    import torch

    v = vector.vector if isinstance(vector, SteeringVector) else np.asarray(vector, np.float32)
    if v.shape[0] != lm.info.d_model:
        raise RepmapError(
            f"This vector has width {v.shape[0]} and the model's residual stream {lm.info.d_model}; "
            "use a vector from this model, or carry it across with a map."
        )
    if normalize:
        v = v / max(float(np.linalg.norm(v)), 1e-30)
    block = lm.blocks[layer]
    param = next(lm.model.parameters())
    add = torch.as_tensor(alpha * v, dtype=param.dtype, device=param.device)  # (d,)

    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output  # (B, T, d)
        if from_position is None or hidden.shape[1] == 1:
            hidden = hidden + add
        else:
            mask = torch.zeros(hidden.shape[1], 1, dtype=hidden.dtype, device=hidden.device)
            mask[from_position:] = 1
            hidden = hidden + mask * add
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def context_room(lm: LoadedModel, room: int = 0) -> int | None:
    """Tokens a prompt may have so that it plus `room` new tokens fit the model's context."""
    return None if not lm.info.max_positions else int(lm.info.max_positions) - int(room)


def prompts_over_context(lm: LoadedModel, prompts: Sequence[str], room: int = 0) -> int:
    """How many prompts are longer than the context allows (they are cut from the left, keeping the end)."""
    keep = context_room(lm, room)
    return 0 if keep is None else sum(len(lm.tokenizer(p)["input_ids"]) > keep for p in prompts)


def _encode_left(lm: LoadedModel, prompts: Sequence[str], room: int = 0):
    """Left-padded ids and mask; prompts longer than the context keep their end (where the letter goes)."""
    import torch

    tok = lm.tokenizer
    keep = context_room(lm, room)
    ids = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    if keep is not None:
        ids = [x[-keep:] for x in ids]
    T = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), T), int(tok.pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for k, x in enumerate(ids):
        input_ids[k, T - len(x):] = torch.as_tensor(x)
        mask[k, T - len(x):] = 1
    return input_ids.to(lm.device), mask.to(lm.device)


def _require_lm(lm: LoadedModel) -> None:
    if not lm.has_lm_head:
        raise RepmapError("Steering needs the model's next-token logits: load it with its LM head (load_model(..., head=True)).")


def letter_logit_gaps(lm: LoadedModel, prompts: Sequence[ABPrompt], batch_size: int = 16) -> np.ndarray:
    """`logit(matching) − logit(other)` at each prompt's last position (n,), under whatever
    steering hooks are active."""
    import torch

    import inspect

    _require_lm(lm)
    accepted = inspect.signature(lm.model.forward).parameters
    out = []
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s:s + batch_size]
        input_ids, mask = _encode_left(lm, [p.prompt for p in chunk])
        kwargs = {"input_ids": input_ids, "attention_mask": mask}
        if "position_ids" in accepted:
            kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)  # left padding: real positions start at 0
        with torch.inference_mode():
            logits = lm.model(**kwargs, use_cache=False).logits[:, -1]
        logits = logits.float()
        m = torch.as_tensor([p.matching_id for p in chunk], device=logits.device)
        o = torch.as_tensor([p.other_id for p in chunk], device=logits.device)
        out.append((logits.gather(1, m[:, None]) - logits.gather(1, o[:, None]))[:, 0].cpu().numpy())
    return np.concatenate(out)


@dataclass(frozen=True, eq=False)
class PropensityCurve:
    """Mean propensity over held-out questions per multiplier, with a 95% band."""

    alphas: np.ndarray  # (k,)
    mean: np.ndarray  # (k,)
    low: np.ndarray  # mean − 1.96 se
    high: np.ndarray
    agreement: np.ndarray  # share of questions whose matching letter wins
    layer: int
    n_questions: int

    def as_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}


def propensity_sweep(lm: LoadedModel, prompts: Sequence[ABPrompt], layer: int, vector: SteeringVector | np.ndarray,
                     alphas: Sequence[float], *, normalize: bool = False, batch_size: int = 16,
                     progress: Progress | None = None) -> PropensityCurve:
    """Propensity on `prompts` with `alpha · v` added after block `layer`, for each alpha."""
    if not prompts:
        raise RepmapError("There are no held-out questions to score; use more A/B questions.")
    alphas = np.asarray(list(alphas), dtype=np.float64)
    means, lows, highs, agree = [], [], [], []
    for k, a in enumerate(alphas):
        with steer(lm, layer, vector, float(a), normalize=normalize):
            gaps = letter_logit_gaps(lm, prompts, batch_size)
        se = gaps.std(ddof=1) / math.sqrt(len(gaps)) if len(gaps) > 1 else 0.0
        means.append(gaps.mean())
        lows.append(gaps.mean() - 1.96 * se)
        highs.append(gaps.mean() + 1.96 * se)
        agree.append(float((gaps > 0).mean()))
        if progress:
            progress((k + 1) / len(alphas), f"multiplier {a:+g}: propensity {gaps.mean():+.3f}")
    return PropensityCurve(alphas, np.array(means), np.array(lows), np.array(highs), np.array(agree), int(layer), len(prompts))


def generate(lm: LoadedModel, prompts: Sequence[str], *, layer: int | None = None, vector=None, alpha: float = 0.0,
             max_new_tokens: int = 40) -> list[str]:
    """Greedy continuations of `prompts`; with a vector, steered at the last prompt position (which
    predicts the first new token) and every generated token."""
    import torch

    _require_lm(lm)
    input_ids, mask = _encode_left(lm, prompts, room=max_new_tokens)
    ctx = steer(lm, layer, vector, alpha, from_position=input_ids.shape[1] - 1) if vector is not None else _nullcontext()
    with torch.inference_mode(), ctx:
        out = lm.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=int(lm.tokenizer.pad_token_id))
    return lm.tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


# ---------------------------------------------------------------------------------------------
# comparing vectors (Rimsky) and carrying them across (LRT, stitching)


def layer_cosines(vectors: dict[int, SteeringVector]) -> tuple[list[int], np.ndarray]:
    """Cosine between every pair of layers' vectors of one model: (layers, (L, L))."""
    layers = sorted(vectors)
    V = np.stack([vectors[L].vector for L in layers]).astype(np.float64)
    V /= np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-30)
    return layers, V @ V.T


def cosine_per_layer(a: dict[int, SteeringVector], b: dict[int, SteeringVector]) -> dict[int, float]:
    """Cosine of two models' vectors at each layer they share (same width needed)."""
    return {L: a[L].cosine(b[L]) for L in sorted(set(a) & set(b))}


def vector_pca(groups: dict[str, dict[int, SteeringVector]]) -> dict[str, tuple[list[int], np.ndarray]]:
    """2-D PCA of every layer's normalised vector, all groups (models) on the same axes."""
    stacked, index = [], []
    for name, vecs in groups.items():
        for L in sorted(vecs):
            stacked.append(vecs[L].normalized().vector)
            index.append((name, L))
    widths = {v.shape[0] for v in stacked}
    if len(widths) > 1:
        raise RepmapError("The models' vectors have different widths, so they cannot share PCA axes; compare models of one width.")
    X = np.stack(stacked).astype(np.float64)
    X -= X.mean(0)
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    coords = X @ Vt[:2].T
    out: dict[str, tuple[list[int], list]] = {}
    for (name, L), xy in zip(index, coords):
        out.setdefault(name, ([], []))
        out[name][0].append(L)
        out[name][1].append(xy)
    return {k: (ls, np.array(xy)) for k, (ls, xy) in out.items()}


def transfer_vector(v: SteeringVector, fitted, *, with_bias: bool = False, target_model: str = "",
                    target_layer: int | None = None) -> SteeringVector:
    """Carry a steering vector across a map `t ≈ A s + b`: `A v` (stitching) or `A v + b` (LRT)."""
    if not hasattr(fitted, "A_"):
        raise RepmapError("That map has no matrix to carry a vector through; use least squares, ridge, GD, Procrustes or low rank.")
    if fitted.A_.shape[1] != v.vector.shape[0]:
        raise RepmapError(
            f"The map takes width {fitted.A_.shape[1]} and the vector has width {v.vector.shape[0]}; fit the map from this vector's model and layer."
        )
    w = fitted.A_ @ v.vector + (fitted.b_ if with_bias else 0.0)
    return SteeringVector(w, v.layer if target_layer is None else target_layer, target_model, "", "transferred", v.position,
                          v.dataset_fingerprint, v.count, {"from_model": v.model, "from_layer": v.layer, "with_bias": with_bias})


def compare_curves(native: PropensityCurve, transferred: PropensityCurve) -> dict:
    """LRT Table 1 form: Pearson r and MSE between native and transferred propensity curves."""
    a, b = np.asarray(native.mean), np.asarray(transferred.mean)
    if len(a) != len(b) or len(a) < 2:
        raise RepmapError("Compare curves over the same multipliers (at least two).")
    r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return {"pearson_r": r, "mse": float(((a - b) ** 2).mean())}


@dataclass(frozen=True, eq=False)
class VectorSet:
    """Vectors of one model (layer -> vector) made from the training pairs; the held-out rows score them."""

    vectors: dict[int, SteeringVector]
    dataset: TextDataset  # as the model saw it (chat template applied when it has one)
    train_rows: np.ndarray
    test_rows: np.ndarray
    manifest: dict  # the activations' manifest (model, revision, fingerprint, ...)

    @property
    def held_out(self) -> TextDataset:
        return self.dataset.take(self.test_rows)


def compute_vectors(model: str, dataset: TextDataset, layers="all", *, method: str = "mean_diff", test_frac: float = 0.3,
                    seed: int = 0, use_chat_template: bool = True, loader=None, progress: Progress | None = None,
                    trust_remote_code: bool = False) -> VectorSet:
    """CAA vectors per layer from `dataset`'s A/B pairs (a held-out share of pairs is kept aside).

    The activations come from the cache (position `answer`); chat models see their chat template.
    """
    from transformers import AutoTokenizer

    from repmap_core.activations import get_activations
    from repmap_core.models import resolve_model

    if not dataset.is_paired or not dataset.has_answers:
        raise RepmapError(f"{dataset.name} has no A/B pairs; steering vectors need questions with a matching and a not-matching answer.")
    resolved = resolve_model(model)
    if use_chat_template:
        tok = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
        dataset = apply_chat_template(dataset, tok)
    aset = get_activations(resolved, dataset, layers, "answer", loader=loader, progress=progress,
                           trust_remote_code=trust_remote_code)
    train, test = split_pairs(aset.pair_ids, test_frac, seed)
    return VectorSet(vectors_from_activations(aset, train, method), dataset, train, test, aset.manifest)


@dataclass(frozen=True, eq=False)
class TransferResult:
    """A target steered with its own vector and with a source vector carried across (LRT Table 1 form)."""

    native: PropensityCurve
    transferred: PropensityCurve
    comparison: dict  # pearson_r, mse
    cosine: float  # native vs carried vector
    carried: SteeringVector
    map_r2_test: float | None  # the map on held-out rows (None: no map, the vector carried as is)


def transfer_and_compare(source: VectorSet, target: VectorSet, target_lm: LoadedModel, source_layer: int,
                         target_layer: int, multipliers: Sequence[float], *, map_method: str | None = "ridge",
                         map_params: dict | None = None, with_bias: bool = True, normalize: bool = False,
                         loader=None) -> TransferResult:
    """LRT's protocol: fit a map source -> target on the two models' answer-token activations of the
    training pairs, carry the source vector across (`A v + b`, or `A v` as stitching), and sweep the
    target's held-out questions with both vectors. `map_method=None` carries the vector as it is."""
    from repmap_core.activations import get_activations
    from repmap_core.maps import make_map, r2_score

    if not np.array_equal(source.train_rows, target.train_rows):
        raise RepmapError("The two models' vectors were made from different pairs; compute both on the same data with one seed.")
    carried, r2 = source.vectors[source_layer], None
    if map_method:
        S = np.asarray(get_activations(source.manifest["model"], source.dataset, [source_layer], "answer", loader=loader)[source_layer])
        T = np.asarray(get_activations(target.manifest["model"], target.dataset, [target_layer], "answer", loader=loader)[target_layer])
        fitted = make_map(map_method, **(map_params or {})).fit(S[source.train_rows], T[source.train_rows])
        r2 = r2_score(T[source.test_rows], fitted.transform(S[source.test_rows]))
        carried = transfer_vector(carried, fitted, with_bias=with_bias, target_model=target.manifest["model"],
                                  target_layer=target_layer)
    prompts = ab_prompts(target.held_out, target_lm.tokenizer)
    moved = propensity_sweep(target_lm, prompts, target_layer, carried, multipliers, normalize=normalize)  # width checked here
    native = propensity_sweep(target_lm, prompts, target_layer, target.vectors[target_layer], multipliers, normalize=normalize)
    return TransferResult(native, moved, compare_curves(native, moved), target.vectors[target_layer].cosine(carried),
                          carried, r2)
