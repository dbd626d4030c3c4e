"""`ActivationSet` and `get_activations`: cached activations for a model, a data set and layers.

`get_activations` reads whatever layers are already in the cache and computes only the missing
ones, in one forward pass that stops after the deepest of them, under the entry's lock (a second
process asking for the same key waits, then reads). The model is only loaded when something
has to be computed, so a cached view reopens without touching the weights.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repmap_core.capture import store
from repmap_core.capture.extract import check_position, extract_activations, resolve_position
from repmap_core.capture.model_checks import check_memory, check_model_files
from repmap_core.capture.models import (
    LoadedModel,
    ResolvedModel,
    check_trust,
    default_device,
    load_model,
    model_info,
    model_precision,
    resolve_layers,
    resolve_model,
    site_name,
)
from repmap_core.capture.precision import Precision, normalise_dtype
from repmap_core.capture.stream_writer import LayerStreamWriter
from repmap_core.data.load import StreamedDataset, TextDataset, load_dataset, open_stream
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress, silent

Loader = Callable[[ResolvedModel, str, str], LoadedModel]  # (resolved, device, dtype) -> model


@dataclass(frozen=True, eq=False)
class ActivationSet:
    """Pooled activations of one model on one data set: `layer -> (n, d)` float32 arrays.

    Arrays are memory-mapped from the cache (read-only). `labels` (n,) int8 0/1 and `pair_ids`
    (n,) int64 (-1 if unpaired) align with the rows; `manifest` records how they were made
    (model, revision, data fingerprint, position, max length, dtype, versions).
    """

    layers: dict[int, np.ndarray]
    labels: np.ndarray
    pair_ids: np.ndarray
    manifest: dict

    def __getitem__(self, layer: int) -> np.ndarray:
        n_layers = int(self.manifest["n_layers"])
        resolved = int(layer) % n_layers if -n_layers <= int(layer) < n_layers else int(layer)
        if resolved not in self.layers:
            raise RepmapError(f"Layer {layer} was not extracted; extracted layers are {', '.join(map(str, self.layers))}.")
        return self.layers[resolved]

    @property
    def layer_list(self) -> list[int]:
        return sorted(self.layers)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def d(self) -> int:
        return int(self.manifest["d_model"])

    def export(self, folder: str | Path) -> list[Path]:
        """Write `layer_<L>.npy`, `labels.npy`, `pair_ids.npy` and `manifest.json` into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for layer, arr in self.layers.items():
            written.append(folder / f"layer_{layer}.npy")
            np.save(written[-1], np.asarray(arr), allow_pickle=False)
        for name, arr in (("labels", self.labels), ("pair_ids", self.pair_ids)):
            written.append(folder / f"{name}.npy")
            np.save(written[-1], np.asarray(arr), allow_pickle=False)
        manifest = dict(self.manifest, layers=self.layer_list, sites=[site_name(x) for x in self.layer_list])
        written.append(folder / "manifest.json")
        written[-1].write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        return written


def _default_loader(trust_remote_code: bool, device_map: str | None = None, offload: bool = False) -> Loader:
    def loader(resolved: ResolvedModel, device: str, dtype: str) -> LoadedModel:
        return load_model(resolved, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                          device_map=device_map, offload=offload)

    return loader


@dataclass(frozen=True, eq=False)
class ActivationPlan:
    """What a request for activations resolves to before anything is computed: the model, the
    rows, the layers, and the cache identity and key that name the result."""

    resolved: ResolvedModel
    info: object  # models.ModelInfo
    dataset: TextDataset
    layers: list[int]
    position: str
    max_length: int
    device: str
    dtype: str
    identity: dict
    key: str
    precision: dict = field(default_factory=dict)  # how dtype was chosen and the rates measured for it

    def read(self, layer: int):
        return store.read_layer(self.key, layer, self.identity)

    def manifest(self, layer: int, *, device: str, tokens: int, seconds: float, created: str,
                 fp32_recomputed_rows: int = 0, **extra) -> dict:
        """The manifest written with one layer's file (`created`: one time for one extraction)."""
        quant = {"quantization": self.resolved.quantization} if self.resolved.quantization else {}
        return dict(self.identity, key=self.key, model_source=self.resolved.source, **quant, n_layers=self.info.n_layers,
                    d_model=self.info.d_model, model_type=self.info.model_type, dataset_spec=self.dataset.name,
                    n_rows=len(self.dataset), device=device, versions=store.library_versions(), created=created,
                    tokens=tokens, seconds=round(seconds, 3), fp32_recomputed_rows=fp32_recomputed_rows,
                    layer=layer, site=site_name(layer), **({"precision": self.precision} if self.precision else {}),
                    **extra)

    def write(self, layer: int, activations: np.ndarray, manifest: dict) -> None:
        store.write_file(store.layer_path(self.key, layer), {"activations": activations, "labels": self.dataset.labels,
                                                             "pair_ids": self.dataset.pair_ids}, manifest)

    def assemble(self, found: dict) -> ActivationSet:
        first_tensors, first_manifest = found[self.layers[0]]
        manifest = {k: v for k, v in first_manifest.items() if k not in ("layer", "site")}
        return ActivationSet(layers={layer: found[layer][0]["activations"] for layer in self.layers},
                             labels=first_tensors["labels"], pair_ids=first_tensors["pair_ids"], manifest=manifest)


def plan_activations(model: str | ResolvedModel, data: str | TextDataset, layers: str | Sequence[int] | None = "all",
                     position: str = "auto", *, max_length: int = 512, limit: int | None = None, seed: int = 0,
                     device: str | None = None, dtype: str | None = None, progress: Progress | None = None
                     ) -> ActivationPlan:
    """Resolve a request (no weights loaded, though a GGUF file is converted on first use): layers,
    position, rows, and the cache key."""
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model, progress=progress)
    info = model_info(resolved)
    position = resolve_position(position, info.is_encoder)
    wanted = resolve_layers(layers, info.n_layers, f"model '{resolved.name}'")
    dataset = data if isinstance(data, (TextDataset, StreamedDataset)) else load_dataset(data, limit=limit, seed=seed)
    check_position(dataset, position)  # before any model is loaded
    device = device or default_device()
    asked = normalise_dtype(dtype)
    chosen = Precision(asked, "asked for") if asked else model_precision(device, resolved)
    dtype = chosen.dtype
    if info.max_positions:
        max_length = min(max_length, int(info.max_positions))
    identity = {
        "format": store.FORMAT, "model": resolved.name, "revision": resolved.revision,
        "dataset_fingerprint": dataset.fingerprint, "position": position, "max_length": int(max_length),
        "dtype": dtype,
    }
    return ActivationPlan(resolved, info, dataset, wanted, position, int(max_length), device, dtype, identity,
                          store.entry_key(identity), chosen.as_json())


def _check_before_loading(plan: ActivationPlan, trust_remote_code: bool, device_map: str | None) -> None:
    """What can be refused about the model before a lock, a file or a "Loading" line: its files
    (tokenizer, damaged or mismatched weights, NaN weights) and, from its config, its size."""
    if not device_map:  # a device_map load checks the weights against every device's memory itself
        check_memory(plan.resolved, plan.device, plan.dtype)
    check_model_files(plan.resolved, trust_remote_code)


def estimate_seconds(plan: ActivationPlan) -> float | None:
    """About how long extracting `plan` will take here: a forward through its deepest layer over the
    rows' tokens (about 4 characters a token), at this machine's matmul rate measured for the precision
    the plan runs in (`plan.precision`); None when the model's size cannot be read from its weights' headers."""
    from repmap_core.capture.models import weights_bytes
    from repmap_core.capture.speed import forward_seconds

    try:
        params = weights_bytes(plan.resolved, "float32") / 4
    except (OSError, ValueError, KeyError):
        return None
    if not params:
        return None
    texts = plan.dataset.texts if isinstance(plan.dataset, TextDataset) else []
    tokens = sum(min(len(t) / 4, plan.max_length) for t in texts) or 20.0 * len(plan.dataset)
    depth = (max(plan.layers) + 1) / max(plan.info.n_layers, 1)
    return forward_seconds(params * depth, tokens, plan.device, plan.precision)


def _fill_missing(plan: ActivationPlan, compute: Callable[[LoadedModel, list[int]], None], loader: Loader, *,
                  check: bool, trust_remote_code: bool, device_map: str | None, report: Progress) -> dict:
    """`layer -> cached arrays` for every layer of `plan`, computing the missing ones first.

    What is missing is checked before loading anything (`check`: the model's files and memory) and
    then again under the entry's lock, since another process may have written those layers while we
    waited; only then is the model loaded and `compute(lm, missing)` asked to write them.
    """
    found = {layer: plan.read(layer) for layer in plan.layers}
    missing = [layer for layer, hit in found.items() if hit is None]
    if not missing:
        return found
    if check:
        _check_before_loading(plan, trust_remote_code, device_map)
    # room in the cache for what will be written (float32 rows, labels, pair ids), before any model loads
    store.check_room(len(missing) * len(plan.dataset) * (4 * plan.info.d_model + 9) + (64 << 10) * len(missing),
                     f"the activations of {len(missing)} layer(s) of {plan.resolved.name}")
    with store.entry_lock(plan.key):
        found.update({layer: plan.read(layer) for layer in missing})
        missing = [layer for layer, hit in found.items() if hit is None]
        if missing:
            store.clean_temp_files(plan.key)
            report(0.0, f"Loading {plan.resolved.display}")
            lm = loader(plan.resolved, plan.device, plan.dtype)
            if getattr(lm, "dtype", plan.dtype) != plan.dtype:  # rows keyed bf16 must be bf16 rows, and so on
                raise RepmapError(f"Model '{plan.resolved.name}' was loaded in {lm.dtype}, but these activations are "
                                  f"asked for in {plan.dtype}; ask for dtype={lm.dtype!r} (a loader must load the "
                                  "precision it is given).")
            compute(lm, missing)
            found.update({layer: plan.read(layer) for layer in missing})
    return found


def cached_activations(model: str | ResolvedModel, data: str | TextDataset, layers: str | Sequence[int] | None = "all",
                       position: str = "auto", *, max_length: int = 512, limit: int | None = None, seed: int = 0,
                       device: str | None = None, dtype: str | None = None) -> ActivationSet | None:
    """What `get_activations` would return when every layer is in the cache already, else None:
    nothing is extracted (a view rebuilt after a refresh, or for Share, computes nothing new)."""
    plan = plan_activations(model, data, layers, position, max_length=max_length, limit=limit, seed=seed,
                            device=device, dtype=dtype)
    found = {layer: plan.read(layer) for layer in plan.layers}
    if any(hit is None for hit in found.values()):
        return None
    return plan.assemble(found)


def get_activations(
    model: str | ResolvedModel,
    data: str | TextDataset,
    layers: str | Sequence[int] | None = "all",
    position: str = "auto",
    *,
    max_length: int = 512,
    limit: int | None = None,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    loader: Loader | None = None,
    progress: Progress | None = None,
    device_map: str | None = None,
    offload: bool = False,
) -> ActivationSet:
    """Activations of `model` on `data` at `layers`, from the cache or computed and cached.

    `model` is a hub id, a folder or a `ResolvedModel`; `data` a DATA SPEC or a `TextDataset`.
    `position` is last, mean, answer, or auto (mean for encoders, last for causal LMs).
    `loader` lets the app share one loaded model across calls (it is only called on a miss).
    `device_map="auto"` spreads a big model over the GPUs (and the CPU with `offload`).
    """
    plan = plan_activations(model, data, layers, position, max_length=max_length, limit=limit, seed=seed,
                            device=device, dtype=dtype, progress=progress)
    check_trust(plan.resolved, trust_remote_code)  # before any lock or file: a refused model leaves nothing
    report = progress or silent

    def compute(lm: LoadedModel, missing: list[int]) -> None:
        result = extract_activations(lm, plan.dataset, missing, plan.position, max_length=plan.max_length,
                                     progress=lambda f, m: report(0.05 + 0.95 * f, m))
        created = store.now_iso()
        for layer in missing:
            placement = {"placement": lm.placement} if getattr(lm, "placement", None) else {}
            plan.write(layer, result.activations[layer],
                       plan.manifest(layer, device=lm.device, tokens=result.n_tokens, seconds=result.seconds,
                                     created=created, fp32_recomputed_rows=result.fp32_recomputed_rows, **placement))

    found = _fill_missing(plan, compute, loader or _default_loader(trust_remote_code, device_map, offload),
                          check=loader is None, trust_remote_code=trust_remote_code, device_map=device_map, report=report)
    report(1.0, "Done")
    return plan.assemble(found)


def stream_activations(model: str | ResolvedModel, data: str | StreamedDataset, layers="all", position: str = "auto", *,
                       chunk_rows: int = 10_000, max_length: int = 512, limit: int | None = None, device: str | None = None,
                       dtype: str | None = None, trust_remote_code: bool = False, loader: Loader | None = None,
                       progress: Progress | None = None) -> ActivationSet:
    """`get_activations` for data larger than memory: rows are read `chunk_rows` at a time, run
    through the model, and written straight into the cache files (memory stays flat as rows grow).
    The entry is the same one a whole-data run makes (same fingerprint, same key); the result is
    memory-mapped. `limit` takes the first rows (whole pairs)."""
    stream = data if isinstance(data, StreamedDataset) else open_stream(data, chunk_rows=chunk_rows, limit=limit)
    plan = plan_activations(model, stream, layers, position, max_length=max_length, device=device, dtype=dtype)
    check_trust(plan.resolved, trust_remote_code)
    report = progress or silent

    def compute(lm: LoadedModel, missing: list[int]) -> None:
        created, n = store.now_iso(), len(stream)
        first = {layer: plan.manifest(layer, device=lm.device, tokens=0, seconds=0.0, created=created, streamed=True)
                 for layer in missing}
        writers = {layer: LayerStreamWriter(store.layer_path(plan.key, layer), n, plan.info.d_model, m)
                   for layer, m in first.items()}
        try:
            offset, tokens, seconds, recomputed = 0, 0, 0.0, 0
            for chunk in stream.chunks():
                result = extract_activations(lm, chunk, missing, plan.position, max_length=plan.max_length)
                for layer, writer in writers.items():
                    writer.write_rows(offset, result.activations[layer], chunk.labels, chunk.pair_ids)
                offset += len(chunk)
                tokens, seconds = tokens + result.n_tokens, seconds + result.seconds
                recomputed += result.fp32_recomputed_rows
                report(0.05 + 0.95 * offset / n, f"{offset}/{n} rows · {int(tokens / max(seconds, 1e-9))} tokens/s")
            if offset != n:
                raise RepmapError(f"{stream.name} gave {offset} rows on the second reading and {n} on the first; "
                                  "the data changed while it was read, so nothing was cached: run it again.")
            for layer, writer in writers.items():
                writer.commit(dict(first[layer], tokens=tokens, seconds=round(seconds, 3), fp32_recomputed_rows=recomputed))
        finally:
            for writer in writers.values():
                writer.abort()  # no-op after a commit; removes the temp file otherwise

    found = _fill_missing(plan, compute, loader or _default_loader(trust_remote_code), check=loader is None,
                          trust_remote_code=trust_remote_code, device_map=None, report=report)
    report(1.0, "Done")
    return plan.assemble(found)
