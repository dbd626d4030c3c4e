"""`TextDataset`: rows of `(text, label, pair_id)` and the answer's character span, the one shape every
source becomes; and its fingerprint, hashed row by row so a data set streamed in chunks hashes like
the whole of it."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from repmap_core.errors import RepmapError
from repmap_core.pairs import groups_of


@dataclass(frozen=True, eq=False)
class TextDataset:
    """Rows of `(text, label, pair_id)` plus the answer's character span where there is one.

    texts: n strings. labels: (n,) int8 in {0, 1}. pair_ids: (n,) int64, -1 for unpaired rows.
    answer_spans: (n, 2) int64 `[start, end)` character offsets of the answer in the text, -1
    where a row has none. `fingerprint` hashes all of it, so caches key on content, not names.
    """

    name: str
    texts: list[str]
    labels: np.ndarray
    pair_ids: np.ndarray
    answer_spans: np.ndarray
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", _fingerprint(self))

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def is_paired(self) -> bool:
        return bool(len(self.pair_ids)) and bool((self.pair_ids >= 0).all())

    @property
    def has_answers(self) -> bool:
        return bool(len(self.answer_spans)) and bool((self.answer_spans[:, 0] >= 0).all())

    def row_keys(self, rows: np.ndarray | None = None) -> list[str]:
        """A short hash of each row's text and label (of `rows`, default all): what a finetune records of the rows
        it trained on, so a later view of other rows can count how many of them the model has seen."""
        picked = range(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        return [hashlib.blake2b(f"{int(self.labels[i])}\0{self.texts[i]}".encode(), digest_size=6).hexdigest()
                for i in picked]

    def take(self, rows: np.ndarray) -> TextDataset:
        """The sub-data set of the given row indices (in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return TextDataset(
            name=self.name,
            texts=[self.texts[i] for i in rows],
            labels=self.labels[rows],
            pair_ids=self.pair_ids[rows],
            answer_spans=self.answer_spans[rows],
        )

    def subsample(self, limit: int | None, seed: int = 0) -> TextDataset:
        """At most `limit` rows, chosen by a seeded draw of whole pairs, in their original order.

        Pairs stay together (a pair is never split), so the result may hold `limit` rows or one
        fewer. Deterministic: the same data, limit and seed give the same rows everywhere.
        """
        if limit is None or limit >= len(self):
            return self
        if limit <= 0:
            raise RepmapError(f"The row limit must be a positive number, not {limit}.")
        groups = groups_of(self.pair_ids)
        unique, inverse = np.unique(groups, return_inverse=True)
        order = np.random.default_rng(seed).permutation(len(unique))
        sizes = np.bincount(inverse)[order]
        keep_groups = order[np.cumsum(sizes) <= limit]
        if len(keep_groups) == 0:
            raise RepmapError(f"A limit of {limit} row(s) cannot keep a whole pair; use a limit of at least {sizes.min()}.")
        rows = np.flatnonzero(np.isin(inverse, keep_groups))
        return self.take(rows)


def _fingerprint(ds: TextDataset) -> str:
    return RowHasher().update(ds).hexdigest()


class RowHasher:
    """The data fingerprint, row by row, so a data set streamed in chunks hashes to the same value
    as the whole of it in memory (and shares its cache entries)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256(b"repmap.rows/1")
        self.rows = 0

    def update(self, ds: TextDataset) -> RowHasher:
        meta = np.stack([ds.labels.astype(np.int64), ds.pair_ids.astype(np.int64), ds.answer_spans[:, 0].astype(np.int64),
                         ds.answer_spans[:, 1].astype(np.int64)], axis=1)  # (n, 4)
        for text, row in zip(ds.texts, meta):
            b = text.encode("utf-8")
            self._h.update(len(b).to_bytes(8, "little"))
            self._h.update(b)
            self._h.update(row.tobytes())
        self.rows += len(ds)
        return self

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:32]
