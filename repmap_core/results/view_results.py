"""What each view shows, as one frozen dataclass built from the view's request: the page draws it,
the report re-reads it, a bundle stores it, and a rebuild after a refresh makes it again from the
cache (`cached_only=True`: nothing is extracted, None when some activations are missing).

A request is the plain dict the page's form (or a link) makes; the fields keep the names the pages
used when results were dicts, so `result.aset` is what `result["aset"]` was.

Example:
    >>> res = explorer_result({"model": "sentence-transformers/all-MiniLM-L6-v2", "data": "builtin:sentiment",
    ...                        "layers": "all", "position": "auto", "limit": 200})
    >>> res.aset.n, [r.probe_cv_acc for r in res.rows]
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from repmap_core.analysis.separation import LayerSeparation
from repmap_core.analysis.stats import Estimate, accuracy_estimate
from repmap_core.capture.activations import ActivationSet, cached_activations, get_activations
from repmap_core.capture.model_config import FINETUNE_MANIFEST
from repmap_core.data.load import TextDataset, load_dataset, require_both_classes
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress, silent

Separation = Callable[..., list[LayerSeparation]]  # (aset, progress=...) -> one row per layer of aset


def separation_of(aset: ActivationSet, progress: Progress | None = None) -> list[LayerSeparation]:
    """Per-layer separation of the label in `aset`, kept in the cache by the set's key and the scoring settings
    (`scores.layer_scores`): a view of cached activations opens without scoring again."""
    from repmap_core.results.scores import layer_scores

    return layer_scores(aset, progress=progress)


@dataclass(frozen=True, eq=False)
class ExplorerResult:
    """The layer explorer: one model's activations on a data set, and how separable the label is per layer."""

    request: dict  # model, data, layers, position, limit, max_length, text_col, label_col, trust
    dataset: TextDataset
    aset: ActivationSet
    rows: list[LayerSeparation]  # one per layer of `aset`, in order

    @property
    def n_rows(self) -> int:
        """The rows this view was computed on (what a row cap counts)."""
        return len(self.dataset)


@dataclass(frozen=True, eq=False)
class ShiftResult:
    """The finetuning shift: the same rows through a base model and its finetuned version."""

    request: dict  # base, finetuned, data, layers, position, limit
    dataset: TextDataset
    base: ActivationSet
    finetuned: ActivationSet  # same rows, layers and width as `base`
    rows: dict[str, list[LayerSeparation]]  # "base" / "finetuned" -> per-layer separation
    in_sample: bool = False  # the rows are those the model was finetuned on
    # how many of these rows the finetuned model trained on (its checkpoint records which); None when it was
    # finetuned on a data set of the same name without that record, so some may be
    trained_rows: int | None = 0

    @property
    def n_rows(self) -> int:
        """The rows this view was computed on (what a row cap counts)."""
        return len(self.dataset)

    def in_sample_note(self) -> str | None:
        """One sentence when some of these rows are ones the model was finetuned on (or may be); None otherwise."""
        n = len(self.dataset)
        if self.in_sample:
            return ("These are the rows the model was finetuned on, so how far the classes pulled apart is partly "
                    "memorisation; compare on other rows (another data set or split) for what generalises.")
        if self.trained_rows is None:
            return (f"The model was finetuned on {self.dataset.name} too, and its checkpoint does not record which rows: "
                    f"some of these {n:,} rows may be ones it trained on, where how far the classes pulled apart is "
                    "partly memorisation.")
        if self.trained_rows:
            return (f"{self.trained_rows:,} of these {n:,} rows are rows the model was finetuned on (in-sample): there, "
                    "how far the classes pulled apart is partly memorisation. The other "
                    f"{n - self.trained_rows:,} it never saw.")
        return None


@dataclass(frozen=True, eq=False)
class AcrossResult:
    """Across models: two models' (or one model's twice) activations at every layer on the same rows."""

    request: dict  # source, target, data, position, limit
    dataset: TextDataset
    source: ActivationSet
    target: ActivationSet
    sims: dict = field(default_factory=dict)  # metric -> SimilarityMatrix, filled as the page asks for them

    @property
    def n_rows(self) -> int:
        """The rows this view was computed on (what a row cap counts)."""
        return len(self.dataset)

    @property
    def same_model(self) -> bool:
        """Source and target are the same activations (a model against itself)."""
        return self.source.manifest["key"] == self.target.manifest["key"]


@dataclass(frozen=True, eq=False)
class SteeringResult:
    """Steering: CAA vectors per layer for model A (and optionally B) on the same A/B questions."""

    request: dict  # A, B (or None), data, layers, method, test_frac, limit
    sets: dict  # "A" / "B" -> VectorSet
    models: dict  # "A" / "B" -> (ResolvedModel, ModelInfo)
    labels: dict  # "A" / "B" -> "A: <short name>", for legends
    relation: str = ""  # how A and B are related, and what a base-vs-chat reading of them can show

    @property
    def n_rows(self) -> int:
        """The rows the vectors were computed on (each question in both letter orders: an upper bound of the cap's count)."""
        return max(len(v.dataset) for v in self.sets.values())


def _activations(model: str, dataset: TextDataset, layers, position: str, cached_only: bool, **kw) -> ActivationSet | None:
    if cached_only:
        return cached_activations(model, dataset, layers, position, max_length=kw.get("max_length", 512))
    return get_activations(model, dataset, layers, position, **kw)


def _part(progress: Progress, i: int, n: int) -> Progress:
    """Progress of step `i` of `n`, reported as a share of the whole."""
    return lambda f, m: progress(min(max((i + f) / n, 0.0), 1.0), m)


def explorer_result(req: dict, *, cached_only: bool = False, loader=None, progress: Progress | None = None,
                    separation: Separation = separation_of) -> ExplorerResult | None:
    """Load the request's data, read or extract the activations, score each layer."""
    progress = progress or silent
    dataset = load_dataset(req["data"], text_col=req.get("text_col") or None, label_col=req.get("label_col") or None,
                           limit=req.get("limit") or None)
    require_both_classes(dataset)  # before any extraction: separation is undefined with one class
    aset = _activations(req["model"], dataset, req["layers"], req["position"], cached_only,
                        max_length=req.get("max_length", 512), trust_remote_code=bool(req.get("trust")), loader=loader,
                        progress=progress)
    if aset is None:
        return None
    return ExplorerResult(req, dataset, aset, separation(aset, progress=progress))


def _trained_on(finetuned: str) -> dict | None:
    from repmap_core.finetune.checkpoints import read_finetune_manifest

    return read_finetune_manifest(finetuned)["dataset"] if (Path(finetuned) / FINETUNE_MANIFEST).exists() else None


def shift_result(req: dict, *, cached_only: bool = False, loader=None, progress: Progress | None = None,
                 separation: Separation = separation_of) -> ShiftResult | None:
    """Both models' activations on the same rows, checked to belong together, with separation before and after."""
    from repmap_core.finetune.checkpoints import check_base

    progress = progress or silent
    if req["base"] == req["finetuned"]:
        raise RepmapError("The base and finetuned models are the same; pick a finetuned checkpoint to compare.")
    if (Path(req["finetuned"]) / FINETUNE_MANIFEST).exists():
        check_base(req["finetuned"], req["base"])
    dataset = load_dataset(req["data"], limit=req.get("limit") or None)
    sets = {}
    for i, side in enumerate(("base", "finetuned")):
        sets[side] = _activations(req[side], dataset, req["layers"], req["position"], cached_only, loader=loader,
                                  progress=_part(progress, i, 2))
        if sets[side] is None:
            return None
    base, ft = sets["base"], sets["finetuned"]
    if base.d != ft.d or base.layer_list != ft.layer_list:
        raise RepmapError(
            f"The finetuned model (width {ft.d}, {ft.manifest['n_layers']} blocks) does not match the base (width "
            f"{base.d}, {base.manifest['n_layers']} blocks); pick the finetuned version of the base model.")
    trained_on = _trained_on(req["finetuned"])
    rows = {k: separation(v, progress=_part(progress, i, 2)) for i, (k, v) in enumerate(sets.items())}
    return ShiftResult(req, dataset, base, ft, rows,
                       bool(trained_on) and trained_on.get("fingerprint") == dataset.fingerprint,
                       rows_trained_on(trained_on, dataset))


def rows_trained_on(trained_on: dict | None, dataset: TextDataset) -> int | None:
    """How many of `dataset`'s rows a finetune trained on (`trained_on`: its manifest's data record): counted
    from the row keys it records; None when it records none but trained on a data set of the same name."""
    if not trained_on:
        return 0
    keys = trained_on.get("trained_row_keys")
    if isinstance(keys, list):
        seen = set(keys)
        return sum(k in seen for k in dataset.row_keys())
    return None if trained_on.get("name") == dataset.name else 0


def across_result(req: dict, *, cached_only: bool = False, loader=None, progress: Progress | None = None
                  ) -> AcrossResult | None:
    """Both models' activations at every layer on the same rows (one data set: both sides get the same rows)."""
    progress = progress or silent
    dataset = load_dataset(req["data"], limit=req.get("limit") or None)
    sets = {}
    for i, side in enumerate(("source", "target")):
        sets[side] = _activations(req[side], dataset, "all", req["position"], cached_only, loader=loader,
                                  progress=_part(progress, i, 2))
        if sets[side] is None:
            return None
    return AcrossResult(req, dataset, sets["source"], sets["target"], {})


def steering_result(req: dict, *, cached_only: bool = False, loader=None, progress: Progress | None = None
                    ) -> SteeringResult | None:
    """CAA vectors of model A (and B when given) on the same rows and held-out split (None with `cached_only`
    when some of their activations are not in the cache)."""
    from repmap_core.capture.model_config import short_name
    from repmap_core.capture.models import model_info, resolve_model
    from repmap_core.steering import compute_vectors
    from repmap_core.steering.compare import vectors_cached

    progress = progress or silent
    dataset = load_dataset(req["data"], limit=req.get("limit") or None)
    sides = [s for s in ("A", "B") if req.get(s)]
    if cached_only and not all(vectors_cached(req[s], dataset, req["layers"]) for s in sides):
        return None
    sets, models = {}, {}
    for i, side in enumerate(sides):
        models[side] = (resolved := resolve_model(req[side]), model_info(resolved))
        sets[side] = compute_vectors(req[side], dataset, req["layers"], method=req["method"], test_frac=req["test_frac"],
                                     loader=loader, progress=_part(progress, i, len(sides)))
    relation = pair_relation(req["A"], models["A"], req["B"], models["B"]) if "B" in models else ""
    return SteeringResult(req, sets, models, {s: f"{s}: {short_name(req[s])}" for s in sets}, relation)


RIMSKY = ("Rimsky compares Llama-2-7b with Llama-2-7b-chat, made from it by instruction tuning and RLHF, so there the "
          "cosines show what that tuning changed.")


def pair_relation(name_a: str, model_a: tuple, name_b: str, model_b: tuple) -> str:
    """One paragraph on how model B relates to model A (`(ResolvedModel, ModelInfo)` each) and what comparing
    their steering vectors can and cannot show about chat tuning: the same weights, B finetuned from A in
    repmap (and on what), two families, or two models whose relation repmap cannot check."""
    from repmap_core.capture.model_config import FINETUNE_MANIFEST, short_name
    from repmap_core.finetune.checkpoints import read_manifest

    (res_a, info_a), (res_b, info_b) = model_a, model_b
    a, b = short_name(name_a), short_name(name_b)
    if res_a.path == res_b.path and res_a.revision == res_b.revision:
        return (f"A and B are the same weights ({a}): every cosine between them is 1 by construction, whatever the "
                "data. For a base-vs-chat reading, B must be another model. " + RIMSKY)
    for x, res_x, y, name_y, res_y in ((a, res_a, b, name_b, res_b), (b, res_b, a, name_a, res_a)):
        if (Path(res_x.path) / FINETUNE_MANIFEST).exists() and (m := read_manifest(Path(res_x.path))) is not None:
            if m.get("base_model") in (name_y, res_y.name):
                data = m.get("dataset", {})
                return (f"{x} was finetuned from {y} in repmap, with a classification head, on {data.get('rows', '?')} "
                        f"rows of {data.get('name', 'its data')}: the cosines show what that finetune moved at each "
                        "layer. It is not chat tuning or RLHF, so it stands in for Rimsky's base-vs-chat question only "
                        "in form. " + RIMSKY)
    if info_a.model_type != info_b.model_type or info_a.d_model != info_b.d_model:
        return (f"A ({a}, {info_a.model_type}, width {info_a.d_model}) and B ({b}, {info_b.model_type}, width "
                f"{info_b.d_model}) are different families, trained apart: their vectors live in different spaces, so "
                "the per-layer cosine is not drawn, and nothing here isolates what chat tuning does. " + RIMSKY +
                " No base/chat pair of one family ships offline here (SmolLM2-135M-Instruct's base model is not "
                "installed).")
    return (f"A ({a}) and B ({b}) are one family ({info_a.model_type}, width {info_a.d_model}); repmap cannot check "
            "whether B was made from A, so read the cosines as two models' vectors. If B is A's chat version, they "
            "show what chat tuning changed. " + RIMSKY)


@dataclass(frozen=True, eq=False)
class SteeringSweep:
    """A propensity sweep of one model's vector at one layer (with a random direction and previews)."""

    label: str  # the model's legend label, "A: <short name>"
    out: object  # a `steering.run.LayerSweep`


@dataclass(frozen=True, eq=False)
class SteeringTransfer:
    """Model A's vector carried to model B across a map, swept beside B's own (LRT)."""

    request: dict  # source (A's layer), target (B's layer), method (a map, or "none"), bias, alphas
    curves: dict  # "native" / "transferred" / "random direction" -> PropensityCurve
    r2: float | None  # the map's held-out R² (None without a map)
    comparison: dict  # pearson_r (with its interval), mse, null_pearson_r: native vs carried
    cosine: float  # native vs carried vector
    carried: object = None  # the carried `SteeringVector`


def steering_sweep(result: SteeringResult, side: str, layer: int, alphas, lm, *, scale: str = "relative",
                   preview_alpha: float | None = None, progress: Progress | None = None) -> SteeringSweep:
    """Sweep `side`'s vector at `layer` over `alphas` with its causal LM `lm` (loaded with its head)."""
    from repmap_core.steering.run import sweep_layer

    out = sweep_layer(result.sets[side], lm, layer, alphas, scale=scale, preview_alpha=preview_alpha, progress=progress)
    return SteeringSweep(result.labels[side], out)


def steering_transfer(result: SteeringResult, req: dict, lm_b, *, loader=None) -> SteeringTransfer:
    """Carry A's vector at `req["source"]` to B's layer `req["target"]` with map `req["method"]` ("none":
    as it is) and sweep both on B's held-out questions; `lm_b` is model B with its head."""
    from repmap_core.steering import transfer_and_compare

    A, B = result.sets["A"], result.sets["B"]
    rank = min(32, A.vectors[req["source"]].vector.shape[0], B.vectors[req["target"]].vector.shape[0])
    params = {"gd": {"max_steps": 500, "val_frac": 0.1}, "lowrank": {"rank": rank}}
    out = transfer_and_compare(A, B, lm_b, req["source"], req["target"], req["alphas"],
                               map_method=None if req["method"] == "none" else req["method"],
                               map_params=params.get(req["method"]), with_bias=req["bias"], loader=loader)
    curves = {"native": out.native, "transferred": out.transferred}
    if out.random is not None:
        curves["random direction"] = out.random
    return SteeringTransfer(req, curves, out.map_r2_test, out.comparison, out.cosine, out.carried)


@dataclass(frozen=True, eq=False)
class WeakLabelResult:
    """A data set relabelled by a finetuned (weak) model's predictions (Gao et al.'s Table 2)."""

    spec: str  # the saved data set, as any data picker takes it
    rows: int
    ones: int  # rows the weak model labels 1
    model: str  # the weak model, as the page names it
    source: str  # the data set relabelled
    agreement: Estimate  # with the true labels (over pairs when rows come in pairs)
    in_sample: bool  # the weak model was finetuned on these rows: agreement is mostly in-sample


def weak_label_result(model_path: str, model_name: str, dataset: TextDataset) -> WeakLabelResult:
    """Relabel `dataset` with the finetuned model at `model_path` and save it as a data set."""
    from repmap_core.finetune.checkpoints import read_finetune_manifest, save_dataset, weak_labels
    from repmap_core.pairs import groups_of

    relabelled = weak_labels(model_path, dataset)
    spec = save_dataset(relabelled, relabelled.name)
    in_sample = read_finetune_manifest(model_path)["dataset"]["fingerprint"] == dataset.fingerprint
    agreement = accuracy_estimate(relabelled.labels == dataset.labels, groups_of(dataset.pair_ids))  # pairs whole
    return WeakLabelResult(spec, len(dataset), int(relabelled.labels.sum()), model_name, dataset.name, agreement,
                           in_sample)
