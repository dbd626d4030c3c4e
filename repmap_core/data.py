"""Data sets: the DATA SPEC (`builtin:`, `hf:`, `file:`), schema adapters, and `TextDataset`.

Every source becomes rows of `(text, label, pair_id)`. Paired sources (HH chosen/rejected, A/B
behaviour questions, SciQ correct vs distractor) give two rows per item sharing a `pair_id` with
labels 1/0, so a probe, a mean-difference vector and a CAA vector all read the same shape.
Rows that carry an answer (A/B, SciQ, HH) also record the answer's character span, which the
`answer` token position uses.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from repmap_core.errors import RepmapError

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
BUILTIN = {  # name -> (file, description); sources and licences in builtin/SOURCES.md
    "sentiment": ("sentiment.jsonl", "800 real review sentences (UCI: Amazon phones and IMDB), positive (1) vs negative (0); CC BY 4.0."),
    "hh_harmless": ("hh_harmless.jsonl", "300 HH-RLHF harmless-base dialogue pairs, preferred (1) vs rejected (0); MIT."),
    "survival_instinct": ("survival_instinct.jsonl", "300 A/B questions (Anthropic evals: survival instinct), matching (1) vs not (0); CC BY 4.0."),
    "myopic_reward": ("myopic_reward.jsonl", "300 A/B questions (Anthropic evals: myopic reward), matching (1) vs not (0); CC BY 4.0."),
    "corrigible": ("corrigible.jsonl", "300 A/B questions (Anthropic evals: corrigible, neutral HHH), matching (1) vs not (0); CC BY 4.0."),
    "power_seeking": ("power_seeking.jsonl", "300 A/B questions (Anthropic evals: power seeking), matching (1) vs not (0); CC BY 4.0."),
    "science_qa": ("science_qa.jsonl", "295 science questions written for repmap, correct answer (1) vs each distractor (0), paired."),
}
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet")
# formats whose loaders unpickle (and so can run code): refused by name, never opened
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib")
SCHEMAS_HINT = (
    "text,label; title,content,label; chosen,rejected; "
    "question,answer_matching_behavior,answer_not_matching_behavior; "
    "or SciQ's question,correct_answer,distractor1..3"
)


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed DATA SPEC: where rows come from (`kind` is builtin, hf or file)."""

    kind: str  # "builtin" | "hf" | "file"
    ref: str  # builtin name, hub repo id, or file path
    config: str | None = None  # hf config name
    split: str | None = None  # hf split, slicing allowed ("train[:2000]")

    def __str__(self) -> str:
        if self.kind == "hf":
            middle = f":{self.config}" if self.config else ""
            return f"hf:{self.ref}{middle}:{self.split}"
        return f"{self.kind}:{self.ref}"


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
        groups = np.where(self.pair_ids >= 0, self.pair_ids, -1 - np.arange(len(self)))
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


_HF_RE = re.compile(r"^(?P<repo>[^:\[\]]+?)(?::(?P<config>[^:\[\]]+))?:(?P<split>[A-Za-z0-9_.+\-]+(?:\[[^\]]*\])?)$")


def parse_spec(spec: str | DatasetSpec) -> DatasetSpec:
    """Parse `builtin:NAME`, `hf:REPO[:CONFIG]:SPLIT` or `file:PATH` into a `DatasetSpec`.

    >>> parse_spec("hf:amazon_polarity:train[:2000]").split
    'train[:2000]'
    """
    if isinstance(spec, DatasetSpec):
        return spec
    spec = str(spec).strip()
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise RepmapError(
            f"Data spec '{spec}' is not understood; use builtin:NAME, hf:REPO[:CONFIG]:SPLIT or file:PATH."
        )
    if kind == "builtin":
        if rest not in BUILTIN:
            raise RepmapError(f"There is no built-in data set '{rest}'; choose one of {', '.join(BUILTIN)}.")
        return DatasetSpec("builtin", rest)
    if kind == "file":
        return DatasetSpec("file", rest)
    if kind == "hf":
        m = _HF_RE.match(rest)
        if not m:
            raise RepmapError(
                f"Data spec '{spec}' is not understood; write hf:REPO:SPLIT or hf:REPO:CONFIG:SPLIT, "
                "for example hf:amazon_polarity:test[:2000]."
            )
        return DatasetSpec("hf", m["repo"], m["config"], m["split"])
    raise RepmapError(f"Data spec '{spec}' has unknown kind '{kind}'; use builtin:, hf: or file:.")


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
    parsed = parse_spec(spec)
    if parsed.kind == "builtin":
        frame = read_table(BUILTIN_DIR / BUILTIN[parsed.ref][0])
    elif parsed.kind == "file":
        frame = read_table(Path(parsed.ref).expanduser())
    else:
        frame = _read_hf(parsed)
    ds = adapt_frame(frame, name=str(parsed), text_col=text_col, label_col=label_col)
    return ds.subsample(limit, seed)


def require_both_classes(ds: TextDataset) -> None:
    """Raise unless `ds` has rows of both labels: call it before computing anything for a probe,
    fit or finetune, so one-class data is refused at once and nothing is cached for it."""
    values = np.unique(ds.labels)
    if len(values) == 1:
        raise RepmapError(
            f"{ds.name} has only one class (all {len(ds)} rows are labelled {int(values[0])}); "
            "repmap needs rows labelled 0 and rows labelled 1, so use data with both (or a larger row limit)."
        )


def read_table(path: Path) -> pd.DataFrame:
    """Read CSV/TSV (with a header), JSONL, a JSON list, or parquet, optionally gzipped."""
    return next(iter_table(path))


def iter_table(path: Path, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The table as one frame, or (with `chunk_rows`) as frames of that many rows read one at a
    time: CSV/TSV/JSONL by pandas chunks, parquet by record batches; a JSON list is read whole."""
    path = Path(path)
    if not path.exists():
        raise RepmapError(f"Data file '{path}' does not exist; check the path.")
    if not path.is_file():
        raise RepmapError(f"'{path}' is not a file; give the path of a CSV, TSV, JSONL, JSON or parquet file.")
    if path.stat().st_size == 0:
        raise RepmapError(f"'{path.name}' is empty; it needs at least one data row.")
    name = path.name.lower()
    compression = "gzip" if name.endswith(".gz") else None
    stem = name[:-3] if compression else name
    suffix = next((s for s in TABLE_SUFFIXES if stem.endswith(s)), None)
    if stem.endswith(PICKLE_SUFFIXES):
        raise RepmapError(
            f"'{path.name}' is a pickle-based file, which repmap never opens (loading one can run code); "
            "use .csv, .tsv, .jsonl, .json or .parquet."
        )
    if suffix is None:
        raise RepmapError(
            f"'{path.name}' is not a format repmap reads; use .csv, .tsv, .jsonl, .json or .parquet (optionally .gz)."
        )
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "," if suffix == ".csv" else "\t"
            frames = pd.read_csv(path, sep=sep, compression=compression, dtype=str, keep_default_na=False,
                                 encoding="utf-8", encoding_errors="strict", chunksize=chunk_rows)
        elif suffix == ".jsonl":
            frames = pd.read_json(path, lines=True, compression=compression, dtype=False, encoding="utf-8",
                                  chunksize=chunk_rows)
        elif suffix == ".json":
            frames = pd.read_json(path, compression=compression, dtype=False, encoding="utf-8")
        elif chunk_rows:
            import pyarrow.parquet as pq

            frames = (b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows))
        else:
            frames = pd.read_parquet(path)
        if isinstance(frames, pd.DataFrame):
            frames = iter([frames])
        seen = 0
        for frame in frames:
            seen += len(frame)
            if len(frame):
                yield frame
    except UnicodeDecodeError:
        raise RepmapError(f"'{path.name}' is not valid UTF-8 text; save it as UTF-8 and try again.") from None
    except pd.errors.EmptyDataError:
        raise RepmapError(f"'{path.name}' is empty; it needs at least one data row.") from None
    except (ValueError, OSError, pd.errors.ParserError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RepmapError(f"Could not read '{path.name}' as {suffix[1:].upper()}: {first}.") from None
    if seen == 0:
        raise RepmapError(f"'{path.name}' has no data rows; add some rows and try again.")


def _read_hf(spec: DatasetSpec) -> pd.DataFrame:
    import datasets  # heavy import: only when a hub data set is asked for

    try:
        ds = datasets.load_dataset(spec.ref, spec.config, split=spec.split)
    except Exception as e:  # datasets raises many types; all mean "could not get it"
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        if "offline" in msg.lower() or "connect" in msg.lower() or "couldn't reach" in msg.lower():
            raise RepmapError(
                f"Data set '{spec}' is not available offline; download it once with network access, "
                "or save it as a file and use file:PATH."
            ) from None
        raise RepmapError(f"Could not load data set '{spec}': {msg}.") from None
    return ds.to_pandas()


def adapt_frame(
    frame: pd.DataFrame, *, name: str, text_col: str | None = None, label_col: str | None = None
) -> TextDataset:
    """Recognise a table's schema by its columns and turn it into `TextDataset` rows."""
    cols = {str(c).strip().lower(): c for c in frame.columns}

    def has(*names: str) -> bool:
        return all(n in cols for n in names)

    if text_col or label_col:
        missing = [c for c in (text_col, label_col) if c is not None and c not in frame.columns]
        if missing:
            raise RepmapError(
                f"{name} has no column {', '.join(repr(m) for m in missing)}; its columns are "
                f"{', '.join(map(str, frame.columns))}."
            )
        if not (text_col and label_col):
            raise RepmapError("Give both a text column and a label column, or neither to detect the schema.")
        _check_cells(frame, name, [text_col, label_col])
        return _adapt_text_label(frame, name, text_col, label_col)
    if has("question", "answer_matching_behavior", "answer_not_matching_behavior"):
        answers = [cols["answer_matching_behavior"], cols["answer_not_matching_behavior"]]
        _check_cells(frame, name, [cols["question"], *answers], lists_of_text=answers)  # evals give some answers as lists
        return _adapt_ab(frame, name, cols)
    if has("question", "correct_answer", "distractor1"):
        _check_cells(frame, name, [cols[c] for c in ("question", "correct_answer", "distractor1", "distractor2",
                                                     "distractor3") if c in cols])
        return _adapt_sciq(frame, name, cols)
    if has("chosen", "rejected"):
        _check_cells(frame, name, [cols["chosen"], cols["rejected"]])
        return _adapt_chosen_rejected(frame, name, cols)
    if has("title", "content", "label"):
        _check_cells(frame, name, [cols["title"], cols["content"], cols["label"]])
        texts = [_join_title(_cell(t), _cell(c)) for t, c in zip(frame[cols["title"]], frame[cols["content"]])]
        return _rows(name, texts, _binary_labels(frame[cols["label"]], "label", name))
    for text_name in ("text", "sentence", "content", "review", "document"):
        if has(text_name, "label"):
            _check_cells(frame, name, [cols[text_name], cols["label"]])
            return _adapt_text_label(frame, name, cols[text_name], cols["label"])
    header_hint = ""
    if len(frame.columns) == 2 and str(frame.columns[-1]).strip() in {"0", "1", "-1"}:
        header_hint = " It looks like the file has no header row: add one naming the columns, such as text and label."
    shown = ", ".join(repr(str(c)[:40]) for c in list(frame.columns)[:8])
    raise RepmapError(
        f"{name} has columns {shown}, which match no known schema ({SCHEMAS_HINT}); "
        f"name the text and label columns (--text-col/--label-col).{header_hint}"
    )


def _nested(value: object, lists_of_text: bool) -> str:
    """What kind of non-scalar a cell holds ("" for a plain value): parquet and JSON columns can
    hold lists, structs and bytes, whose str() would silently become the text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(value, dict):
        return "structs"
    if isinstance(value, (list, tuple, set, np.ndarray)):
        if lists_of_text and all(isinstance(v, str) for v in value):
            return ""
        return "lists"
    return ""


_NESTED_FIX = {"bytes": "decode it to UTF-8 text first",
               "structs": "put the field you want in a column of its own",
               "lists": "flatten each list to one value first (for text, join it with ' '.join)"}


def _check_cells(frame: pd.DataFrame, name: str, columns: list, lists_of_text: list = ()) -> None:
    """Refuse a column read as text or labels whose cells are lists, structs or bytes."""
    for column in columns:
        series = frame[column]
        if series.dtype != object:  # numbers, booleans and typed strings are plain values
            continue
        for i, value in enumerate(series):
            kind = _nested(value, column in lists_of_text)
            if kind:
                shown = repr(value.tolist() if isinstance(value, np.ndarray) else value)
                shown = shown if len(shown) <= 40 else shown[:37] + "..."
                raise RepmapError(
                    f"Column '{column}' of {name} holds {kind} (row {i + 1}: {shown}) where repmap needs one text or "
                    f"label per cell; {_NESTED_FIX[kind]}."
                )


def _join_title(title: str, content: str) -> str:
    title, content = title.strip(), content.strip()
    if not title:
        return content
    return f"{title}{'' if title[-1] in '.!?:' else '.'} {content}"


def _check_texts(texts: list[str], name: str) -> None:
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise RepmapError(
            f"{name} has {len(empty)} row(s) with empty text (first at data row {empty[0] + 1}); remove them or fill them in."
        )


_POS = {"1", "+1", "1.0", "true", "positive", "pos", "yes"}
_ZERO = {"0", "0.0", "false", "negative", "neg", "no"}
_MINUS = {"-1", "-1.0"}


def _binary_labels(values: pd.Series | list, column: str, name: str) -> np.ndarray:
    """Map a label column to int8 0/1. Accepts 0/1, -1/+1, booleans and true/false-like words."""
    as_str = pd.Series(values).map(lambda v: _cell(v).strip().lower())
    blank = (as_str == "").to_numpy()
    if blank.any():
        raise RepmapError(
            f"{name} has {int(blank.sum())} row(s) with no label (first at data row {int(np.flatnonzero(blank)[0]) + 1}); fill them in."
        )
    distinct = sorted(set(as_str))
    # the negative class is either the 0-words or -1, never both (that would be three classes)
    if set(distinct) <= _POS | _ZERO or set(distinct) <= _POS | _MINUS:
        return as_str.isin(_POS).to_numpy().astype(np.int8)
    shown = ", ".join(distinct[:6]) + (", ..." if len(distinct) > 6 else "")
    raise RepmapError(
        f"Labels must be binary (0/1 or -1/+1), but column '{column}' of {name} has {len(distinct)} distinct "
        f"values ({shown}); map them to two classes first."
    )


def _rows(name: str, texts: list[str], labels: np.ndarray, pair_ids: np.ndarray | None = None,
          spans: np.ndarray | None = None) -> TextDataset:
    _check_texts(texts, name)
    n = len(texts)
    return TextDataset(
        name=name,
        texts=texts,
        labels=np.asarray(labels, dtype=np.int8),
        pair_ids=np.full(n, -1, np.int64) if pair_ids is None else np.asarray(pair_ids, np.int64),
        answer_spans=np.full((n, 2), -1, np.int64) if spans is None else np.asarray(spans, np.int64),
    )


def _cell(v: object) -> str:
    """A table cell as text; missing cells (None/NaN) become empty, never the word 'nan'."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return str(v)


def _adapt_text_label(frame: pd.DataFrame, name: str, text_col: str, label_col: str) -> TextDataset:
    texts = [_cell(t) for t in frame[text_col]]
    pairs = None
    if "pair_id" in frame.columns:  # e.g. a weak-label data set saved from paired rows
        pairs = pd.to_numeric(frame["pair_id"], errors="coerce").fillna(-1).astype(np.int64).to_numpy()
    return _rows(name, texts, _binary_labels(frame[label_col], str(label_col), name), pairs)


def _first(v: object) -> str:
    # some model-written-evals files give the non-matching answers as a list
    if isinstance(v, (list, tuple, np.ndarray)):
        return str(v[0]) if len(v) else ""
    return "" if v is None else str(v)


def _paired(name: str, items: list[tuple[str, str, str]]) -> TextDataset:
    """items: (prompt, positive answer, negative answer) -> two rows per item sharing a pair id."""
    texts, labels, pairs, spans = [], [], [], []
    for pid, (prompt, good, bad) in enumerate(items):
        for answer, label in ((good, 1), (bad, 0)):
            if not answer.strip():
                raise RepmapError(
                    f"{name} item {pid + 1} has an empty answer; every question needs both answers."
                )
            texts.append(prompt + answer)
            labels.append(label)
            pairs.append(pid)
            spans.append((len(prompt), len(prompt) + len(answer)))
    return _rows(name, texts, np.array(labels), np.array(pairs), np.array(spans).reshape(-1, 2))


def _adapt_ab(frame: pd.DataFrame, name: str, cols: dict) -> TextDataset:
    items = []
    for q, yes, no in zip(frame[cols["question"]], frame[cols["answer_matching_behavior"]],
                          frame[cols["answer_not_matching_behavior"]]):
        yes, no = _first(yes), _first(no)
        if yes.strip() == no.strip():
            raise RepmapError(f"{name} has a question whose two answers are the same ('{yes.strip()}'); each needs two different answers.")
        # evals answers carry their leading space; add one if a user's file omits it
        items.append((str(q), yes if yes[:1].isspace() else " " + yes, no if no[:1].isspace() else " " + no))
    return _paired(name, items)


def _adapt_sciq(frame: pd.DataFrame, name: str, cols: dict) -> TextDataset:
    items = []
    for _, row in frame.iterrows():
        prompt = f"Question: {str(row[cols['question']]).strip()}\nAnswer:"
        correct = " " + str(row[cols["correct_answer"]]).strip()
        for k in (1, 2, 3):
            col = cols.get(f"distractor{k}")
            wrong = "" if col is None else _cell(row[col]).strip()
            if wrong:
                items.append((prompt, correct, " " + wrong))
    return _paired(name, items)


def _adapt_chosen_rejected(frame: pd.DataFrame, name: str, cols: dict) -> TextDataset:
    texts, labels, pairs, spans = [], [], [], []
    for pid, (chosen, rejected) in enumerate(zip(frame[cols["chosen"]], frame[cols["rejected"]])):
        for text, label in ((str(chosen), 1), (str(rejected), 0)):
            # the answer is the final assistant turn, where chosen and rejected differ
            cut = text.rfind("Assistant:")
            start = cut + len("Assistant:") if cut >= 0 else 0
            texts.append(text)
            labels.append(label)
            pairs.append(pid)
            spans.append((start, len(text)))
    return _rows(name, texts, np.array(labels), np.array(pairs), np.array(spans).reshape(-1, 2))


def list_builtin() -> dict[str, str]:
    """Built-in data set names and one-line descriptions."""
    return {k: v[1] for k, v in BUILTIN.items()}


# ---------------------------------------------------------------------------------------------
# streaming: data sets read in chunks, never whole


def _iter_frames(spec: DatasetSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if spec.kind == "builtin":
        yield read_table(BUILTIN_DIR / BUILTIN[spec.ref][0])
    elif spec.kind == "file":
        yield from iter_table(Path(spec.ref).expanduser(), chunk_rows)
    else:
        yield from _iter_hf(spec, chunk_rows)


def _iter_hf(spec: DatasetSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import datasets

    split, _, rows = spec.split.partition("[")
    start, stop = 0, None
    if rows:  # "train[:2000]" / "train[100:200]": streaming takes the slice as a range of rows
        a, _, b = rows.rstrip("]").partition(":")
        if "%" in rows or not _:
            raise RepmapError(f"Streaming reads row ranges like {split}[100:2000], not '{spec.split}'.")
        start, stop = int(a or 0), (int(b) if b else None)
    try:
        stream = datasets.load_dataset(spec.ref, spec.config, split=split, streaming=True)
        rows_iter = islice(iter(stream), start, stop)
        while batch := list(islice(rows_iter, chunk_rows)):
            yield pd.DataFrame(batch)
    except RepmapError:
        raise
    except Exception as e:  # datasets raises many types; all mean "could not get it"
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise RepmapError(f"Could not stream data set '{spec}': {msg}.") from None


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


def open_stream(spec: str | DatasetSpec, *, chunk_rows: int = 10_000, text_col: str | None = None,
                label_col: str | None = None, limit: int | None = None) -> StreamedDataset:
    """A data set to read in chunks; one first pass counts rows and takes the fingerprint."""
    parsed = parse_spec(spec)
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
