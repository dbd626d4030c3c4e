"""Data sets: a DATA SPEC (`builtin:`, `hf:`, `file:`) loaded whole (`load_dataset`) or in chunks
(`open_stream`) and adapted by schema to `TextDataset` rows.

Every source becomes rows of `(text, label, pair_id)`. Paired sources (HH chosen/rejected, A/B
behaviour questions, SciQ correct vs distractor) give two rows per item sharing a `pair_id` with
labels 1/0, so a probe, a mean-difference vector and a CAA vector all read the same shape.
Rows that carry an answer (A/B, SciQ, HH) also record the answer's character span, which the
`answer` token position uses.

The parts: `data_spec.py` (the spec, built-in sets), `tables.py` (reading files and hub data sets),
`schemas.py` (columns -> rows), `text_dataset.py` (the row type, its fingerprint), `streaming.py`
(chunked reading). Their public names are importable from here too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from repmap_core.data.data_spec import BUILTIN, BUILTIN_DIR, DatasetSpec, list_builtin, parse_spec
from repmap_core.data.schemas import SCHEMAS_HINT, adapt_frame
from repmap_core.data.streaming import StreamedDataset
from repmap_core.data.tables import PICKLE_SUFFIXES, TABLE_SUFFIXES, iter_table, read_hf, read_table
from repmap_core.data.text_dataset import RowHasher, TextDataset
from repmap_core.errors import RepmapError

__all__ = ["BUILTIN", "BUILTIN_DIR", "PICKLE_SUFFIXES", "SCHEMAS_HINT", "TABLE_SUFFIXES", "DatasetSpec", "RowHasher",
           "StreamedDataset", "TextDataset", "adapt_frame", "iter_table", "list_builtin", "load_dataset", "open_stream",
           "parse_spec", "read_table", "require_both_classes"]


def load_dataset(
    spec: str | DatasetSpec,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> TextDataset:
    """Load a data set from a DATA SPEC and adapt it by schema to `TextDataset` rows.

    `text_col`/`label_col` override schema detection for tables with other column names.
    `limit` keeps a seeded, deterministic subsample (whole pairs).
    """
    parsed = check_access(spec)
    if parsed.kind == "builtin":
        frame = read_table(BUILTIN_DIR / BUILTIN[parsed.ref][0])
    elif parsed.kind == "file":
        frame = read_table(Path(parsed.ref).expanduser())
    else:
        frame = read_hf(parsed)
    ds = adapt_frame(frame, name=str(parsed), text_col=text_col, label_col=label_col)
    return ds.subsample(limit, seed)


def check_access(spec: str | DatasetSpec) -> DatasetSpec:
    """The parsed spec, refused in one sentence when a served app may not read it: a file outside
    the allowed roots, or a hub data set that is not here while downloads are off (see access.py)."""
    from repmap_core import access

    parsed = parse_spec(spec)
    if parsed.kind == "file":
        access.check_data_path(Path(parsed.ref).expanduser())
    elif parsed.kind == "hf" and access.active() is not None and not hf_dataset_cached(parsed.ref):
        access.check_download(f"Data set '{parsed.ref}'")
    return parsed


def hf_dataset_cached(repo: str) -> bool:
    """True when the hub data set `repo` is in the local Hugging Face caches."""
    import os

    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}"
    processed = Path(os.environ.get("HF_DATASETS_CACHE", Path(constants.HF_HOME) / "datasets")) / repo.replace("/", "___")
    return hub.exists() or processed.exists()


def require_both_classes(ds: TextDataset) -> None:
    """Raise unless `ds` has rows of both labels: call it before computing anything for a probe,
    fit or finetune, so one-class data is refused at once and nothing is cached for it."""
    values = np.unique(ds.labels)
    if len(values) == 1:
        raise RepmapError(
            f"{ds.name} has only one class (all {len(ds)} rows are labelled {int(values[0])}); "
            "repmap needs rows labelled 0 and rows labelled 1, so use data with both (or a larger row limit)."
        )


def open_stream(spec: str | DatasetSpec, *, chunk_rows: int = 10_000, text_col: str | None = None,
                label_col: str | None = None, limit: int | None = None) -> StreamedDataset:
    """A data set to read in chunks; one first pass counts rows and takes the fingerprint."""
    parsed = check_access(spec)
    if chunk_rows < 1:
        raise RepmapError(f"Chunks must hold at least one row, not {chunk_rows}.")
    draft = StreamedDataset(parsed, str(parsed), "", 0, True, True, int(chunk_rows), text_col, label_col, limit)
    hasher, answers, paired = RowHasher(), True, True
    for chunk in draft.chunks():
        hasher.update(chunk)
        answers = answers and chunk.has_answers
        paired = paired and chunk.is_paired
    if hasher.rows == 0:
        raise RepmapError(f"{parsed} has no data rows.")
    return StreamedDataset(parsed, str(parsed), hasher.hexdigest(), hasher.rows, answers, paired, int(chunk_rows),
                           text_col, label_col, limit)
