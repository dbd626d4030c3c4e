"""Data sets read in chunks, never whole: `StreamedDataset` re-reads its source chunk by chunk (pair ids
kept global, a row limit never splitting a pair), for data larger than memory. `data.open_stream`
makes one."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from repmap_core.data.data_spec import BUILTIN, BUILTIN_DIR, DatasetSpec
from repmap_core.data.schemas import adapt_frame
from repmap_core.data.tables import iter_hf, iter_table, read_table
from repmap_core.data.text_dataset import TextDataset


def _iter_frames(spec: DatasetSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if spec.kind == "builtin":
        yield read_table(BUILTIN_DIR / BUILTIN[spec.ref][0])
    elif spec.kind == "file":
        yield from iter_table(Path(spec.ref).expanduser(), chunk_rows)
    else:
        yield from iter_hf(spec, chunk_rows)


@dataclass(frozen=True, eq=False)
class StreamedDataset:
    """A data set read in chunks of `chunk_rows` (each a `TextDataset` with global pair ids), for
    data larger than memory. `fingerprint` and `len` come from one reading pass and equal those of
    the same rows loaded whole; `limit` takes the first rows (whole pairs), not a random sample."""

    spec: DatasetSpec
    name: str
    fingerprint: str
    n_rows: int
    has_answers: bool
    is_paired: bool
    chunk_rows: int
    text_col: str | None = None
    label_col: str | None = None
    limit: int | None = None

    def __len__(self) -> int:
        return self.n_rows

    def chunks(self) -> Iterator[TextDataset]:
        """The rows again, chunk by chunk (the source is re-read each time)."""
        pair_offset, taken = 0, 0
        for frame in _iter_frames(self.spec, self.chunk_rows):
            ds = adapt_frame(frame, name=self.name, text_col=self.text_col, label_col=self.label_col)
            if ds.is_paired or (ds.pair_ids >= 0).any():
                pairs = np.where(ds.pair_ids >= 0, ds.pair_ids + pair_offset, -1)
                pair_offset = int(pairs.max()) + 1 if (pairs >= 0).any() else pair_offset
                ds = TextDataset(ds.name, ds.texts, ds.labels, pairs, ds.answer_spans)
            if self.limit is not None and taken + len(ds) > self.limit:
                keep = self.limit - taken
                if (ds.pair_ids >= 0).any():  # never split a pair
                    while keep > 0 and keep < len(ds) and ds.pair_ids[keep] >= 0 and ds.pair_ids[keep] == ds.pair_ids[keep - 1]:
                        keep -= 1
                ds = ds.take(np.arange(keep))
            if len(ds):
                yield ds
                taken += len(ds)
            if self.limit is not None and taken >= self.limit:
                return
