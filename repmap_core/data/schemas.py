"""Schemas: a table's columns recognised by name and turned into `TextDataset` rows.

`text,label` (or sentence/content/review/document); `title,content,label`; `chosen,rejected` (HH);
`question,answer_matching_behavior,answer_not_matching_behavior` (A/B behaviour questions); SciQ's
`question,correct_answer,distractor1..3`. Paired schemas give two rows per item sharing a
`pair_id`, labels 1/0, with the answer's character span; anything else needs the columns named.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from repmap_core.data.text_dataset import TextDataset
from repmap_core.errors import RepmapError

SCHEMAS_HINT = (
    "text,label; title,content,label; chosen,rejected; "
    "question,answer_matching_behavior,answer_not_matching_behavior; "
    "or SciQ's question,correct_answer,distractor1..3"
)


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
