"""Tests for the data layer: DATA SPEC parsing, table reading, schema adapters, subsampling, fingerprints."""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repmap_core.data.load import (
    BUILTIN,
    DatasetSpec,
    TextDataset,
    adapt_frame,
    list_builtin,
    load_dataset,
    parse_spec,
    read_table,
)
from repmap_core.errors import RepmapError
from tests.conftest import SHARED_DATA, needs_shared_data

# ---------------------------------------------------------------------------------------------
# helpers


def write_jsonl(path: Path, records: list[dict], *, gz: bool = False) -> Path:
    body = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def write_csv(path: Path, header: list[str], rows: list[list], *, sep: str = ",", gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(header)
        w.writerows(rows)
    return path


def load_file(path: Path, **kw) -> TextDataset:
    return load_dataset(f"file:{path}", **kw)


def spans_text(ds: TextDataset, i: int) -> str:
    s, e = ds.answer_spans[i]
    return ds.texts[i][s:e]


def make_ds(n_pairs: int = 0, n_single: int = 0) -> TextDataset:
    """A data set with unique texts 'row i': pairs first (ids 0..), then unpaired rows."""
    n = 2 * n_pairs + n_single
    pair_ids = np.array([i // 2 for i in range(2 * n_pairs)] + [-1] * n_single, dtype=np.int64)
    labels = np.array([1 - (i % 2) for i in range(2 * n_pairs)] + [i % 2 for i in range(n_single)], dtype=np.int8)
    return TextDataset(
        name="made",
        texts=[f"row {i}" for i in range(n)],
        labels=labels,
        pair_ids=pair_ids,
        answer_spans=np.full((n, 2), -1, np.int64),
    )


def row_index(ds: TextDataset) -> list[int]:
    return [int(t.split()[1]) for t in ds.texts]


SIMPLE = [("good film", 1), ("awful film", 0), ("great plot", 1), ("dull plot", 0)]
SIMPLE_TEXTS = [t for t, _ in SIMPLE]
SIMPLE_LABELS = [lab for _, lab in SIMPLE]


def assert_simple(ds: TextDataset) -> None:
    assert ds.texts == SIMPLE_TEXTS
    assert ds.labels.tolist() == SIMPLE_LABELS
    assert ds.labels.dtype == np.int8
    assert ds.pair_ids.tolist() == [-1] * 4
    assert ds.answer_spans.tolist() == [[-1, -1]] * 4
    assert not ds.is_paired and not ds.has_answers


# ---------------------------------------------------------------------------------------------
# 1. parse_spec


def test_parse_builtin():
    spec = parse_spec("builtin:sentiment")
    assert spec == DatasetSpec("builtin", "sentiment")
    assert (spec.config, spec.split) == (None, None)
    assert str(spec) == "builtin:sentiment"


def test_parse_builtin_strips_whitespace():
    assert parse_spec("  builtin:science_qa \n") == DatasetSpec("builtin", "science_qa")


def test_parse_file_keeps_colons_in_path():
    assert parse_spec("file:data/reviews.csv") == DatasetSpec("file", "data/reviews.csv")
    assert parse_spec("file:C:\\data\\x.csv").ref == "C:\\data\\x.csv"
    assert str(parse_spec("file:a/b.jsonl")) == "file:a/b.jsonl"


def test_parse_spec_passes_a_spec_through():
    spec = DatasetSpec("hf", "imdb", None, "test")
    assert parse_spec(spec) is spec


@pytest.mark.parametrize(
    "text, repo, config, split",
    [
        ("hf:amazon_polarity:train", "amazon_polarity", None, "train"),
        ("hf:amazon_polarity:train[:2000]", "amazon_polarity", None, "train[:2000]"),
        ("hf:imdb:test[10:20]", "imdb", None, "test[10:20]"),
        ("hf:glue:sst2:validation", "glue", "sst2", "validation"),
        ("hf:glue:sst2:train[:2000]", "glue", "sst2", "train[:2000]"),
        ("hf:Anthropic/hh-rlhf:test[10:20]", "Anthropic/hh-rlhf", None, "test[10:20]"),
        ("hf:allenai/sciq:default:train[:10%]", "allenai/sciq", "default", "train[:10%]"),
    ],
)
def test_parse_hf(text, repo, config, split):
    spec = parse_spec(text)
    assert (spec.kind, spec.ref, spec.config, spec.split) == ("hf", repo, config, split)
    assert str(spec) == text


@pytest.mark.parametrize("text", ["s3:bucket/x.csv", "http://example.com/x.csv", "Builtin:sentiment"])
def test_parse_unknown_kind(text):
    with pytest.raises(RepmapError, match="has unknown kind"):
        parse_spec(text)


@pytest.mark.parametrize("text", ["reviews.csv", "builtin:", "file:", "hf:", ""])
def test_parse_no_kind_or_nothing_after_it(text):
    with pytest.raises(RepmapError, match="is not understood; use builtin:NAME"):
        parse_spec(text)


def test_parse_unknown_builtin_lists_choices():
    with pytest.raises(RepmapError, match="no built-in data set 'imdb'") as e:
        parse_spec("builtin:imdb")
    for name in BUILTIN:
        assert name in str(e.value)


@pytest.mark.parametrize(
    "text",
    ["hf:amazon_polarity", "hf:a:b:c:d", "hf:imdb:train[:10", "hf:imdb:[:10]", "hf::train", "hf:imdb:"],
)
def test_parse_malformed_hf(text):
    with pytest.raises(RepmapError, match="write hf:REPO:SPLIT or hf:REPO:CONFIG:SPLIT"):
        parse_spec(text)


NOT_HUB_IDS = ["..", "../..", "../secrets", "/etc", "./data", "~", ".", "a/b/c", "org/..", "a..b", "a--b", "-a", "a.",
               ".hidden", "data\\x", "repo.git", "a" * 97, "org/" + "b" * 97, "a b", "ünï"]


@pytest.mark.parametrize("repo", NOT_HUB_IDS)
@pytest.mark.parametrize("tail", [":train", ":default:train", ":train[:10]"])
def test_an_hf_repo_must_be_a_hub_id_never_a_path(repo, tail):
    """Issue 21: `hf:..:train` loaded the folder above the server's working directory. A repo id is
    checked against the hub's rules when the spec is parsed, so no later step can take it for a path."""
    with pytest.raises(RepmapError, match="is not a Hugging Face data set id") as e:
        parse_spec(f"hf:{repo}{tail}")
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize("config", ["../x", "a/b", "~", ".x"])
def test_an_hf_config_is_a_name_never_a_path(config):
    with pytest.raises(RepmapError, match="is not a data set configuration name"):
        parse_spec(f"hf:glue:{config}:train")


@pytest.mark.parametrize("spec", ["hf:data:train", "hf:csv:train", "hf:json:default:train", "hf:sub/folder:train"])
def test_a_hub_id_that_is_also_a_local_path_or_a_file_reader_is_never_loaded(spec, tmp_path, monkeypatch):
    """`datasets.load_dataset(name)` reads a local folder of that name (or its csv/json readers) before the
    hub: such ids are refused before the library is asked, with the policy on or off."""
    import datasets

    from repmap_core import access

    (tmp_path / "data").mkdir()
    (tmp_path / "sub" / "folder").mkdir(parents=True)
    for folder in (tmp_path / "data", tmp_path / "sub" / "folder"):
        (folder / "secret.csv").write_text("text,label\nssn-123,1\nssn-456,0\n")
    monkeypatch.chdir(tmp_path)
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: asked.append(a) or (_ for _ in ()).throw(AssertionError))
    for enforced in (None, access.policy()):
        access.enforce(enforced)
        with pytest.raises(RepmapError, match="file:PATH" if enforced is None else "file:PATH|does not download") as e:
            load_dataset(spec)
        assert "ssn-" not in str(e.value)
    assert asked == []


def test_unknown_builtin_through_load_dataset():
    with pytest.raises(RepmapError, match="no built-in data set"):
        load_dataset("builtin:nope")


# ---------------------------------------------------------------------------------------------
# 2. adapters on local files


def test_csv_text_label(tmp_path):
    p = write_csv(tmp_path / "d.csv", ["text", "label"], [list(r) for r in SIMPLE])
    ds = load_file(p)
    assert_simple(ds)
    assert ds.name == f"file:{p}"
    assert len(ds) == 4


def test_csv_quoted_commas_and_newlines(tmp_path):
    rows = [["Great, really great", 1], ['He said "no"\nthen left', 0]]
    ds = load_file(write_csv(tmp_path / "q.csv", ["text", "label"], rows))
    assert ds.texts == ["Great, really great", 'He said "no"\nthen left']
    assert ds.labels.tolist() == [1, 0]


def test_tsv(tmp_path):
    assert_simple(load_file(write_csv(tmp_path / "d.tsv", ["text", "label"], [list(r) for r in SIMPLE], sep="\t")))


def test_txt_is_read_as_tsv(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("sentence\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in SIMPLE), encoding="utf-8")
    assert_simple(load_file(p))


def test_jsonl(tmp_path):
    assert_simple(load_file(write_jsonl(tmp_path / "d.jsonl", [{"text": t, "label": lab} for t, lab in SIMPLE])))


def test_json_list(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([{"text": t, "label": lab} for t, lab in SIMPLE]), encoding="utf-8")
    assert_simple(load_file(p))


def test_parquet(tmp_path):
    p = tmp_path / "d.parquet"
    pd.DataFrame({"text": SIMPLE_TEXTS, "label": SIMPLE_LABELS}).to_parquet(p)
    assert_simple(load_file(p))


def test_gzipped_csv(tmp_path):
    assert_simple(load_file(write_csv(tmp_path / "d.csv.gz", ["text", "label"], [list(r) for r in SIMPLE], gz=True)))


def test_gzipped_jsonl(tmp_path):
    assert_simple(load_file(write_jsonl(tmp_path / "d.jsonl.gz", [{"text": t, "label": lab} for t, lab in SIMPLE], gz=True)))


def test_uppercase_suffix_and_column_names(tmp_path):
    p = write_csv(tmp_path / "D.CSV", ["Text", " LABEL "], [list(r) for r in SIMPLE])
    assert_simple(load_file(p))


@pytest.mark.parametrize("text_name", ["sentence", "content", "review", "document"])
def test_other_known_text_column_names(tmp_path, text_name):
    assert_simple(load_file(write_csv(tmp_path / "d.csv", [text_name, "label"], [list(r) for r in SIMPLE])))


def test_read_table_returns_frame(tmp_path):
    p = write_csv(tmp_path / "d.csv", ["text", "label", "extra"], [[t, lab, "x"] for t, lab in SIMPLE])
    frame = read_table(p)
    assert list(frame.columns) == ["text", "label", "extra"]
    assert frame["text"].tolist() == SIMPLE_TEXTS
    assert frame["label"].tolist() == ["1", "0", "1", "0"]  # CSV cells stay strings


def test_adapt_frame_directly():
    frame = pd.DataFrame({"text": SIMPLE_TEXTS, "label": SIMPLE_LABELS})
    ds = adapt_frame(frame, name="mine")
    assert_simple(ds)
    assert ds.name == "mine"


def test_amazon_polarity_schema(tmp_path):
    rows = [
        ["Great phone", "Battery lasts two days.", 1],
        ["Broke fast!", "Screen cracked in a week.", 0],
        ["What?", "Not as described", 0],
        ["", "No title here", 1],
        ["  Spaced  ", "  content  ", 1],
    ]
    ds = load_file(write_csv(tmp_path / "ap.csv", ["label", "title", "content"], [[r[2], r[0], r[1]] for r in rows]))
    assert ds.texts == [
        "Great phone. Battery lasts two days.",
        "Broke fast! Screen cracked in a week.",
        "What? Not as described",
        "No title here",
        "Spaced. content",
    ]
    assert ds.labels.tolist() == [1, 0, 0, 1, 1]
    assert ds.pair_ids.tolist() == [-1] * 5


SCIQ = [
    {"question": "What gas do plants absorb?", "distractor3": "helium", "distractor1": "oxygen",
     "distractor2": "nitrogen", "correct_answer": "carbon dioxide", "support": "Plants take in CO2."},
    {"question": " Which organ pumps blood? ", "distractor3": "lung", "distractor1": "liver",
     "distractor2": "kidney", "correct_answer": "heart ", "support": ""},
]


def test_sciq_schema(tmp_path):
    ds = load_file(write_jsonl(tmp_path / "sciq.jsonl", SCIQ))
    assert len(ds) == 12  # 2 items x 3 distractors x 2 rows
    assert ds.is_paired and ds.has_answers
    assert ds.pair_ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert ds.labels.tolist() == [1, 0] * 6
    prompt0 = "Question: What gas do plants absorb?\nAnswer:"
    prompt1 = "Question: Which organ pumps blood?\nAnswer:"
    assert ds.texts[:6] == [
        prompt0 + " carbon dioxide", prompt0 + " oxygen",
        prompt0 + " carbon dioxide", prompt0 + " nitrogen",
        prompt0 + " carbon dioxide", prompt0 + " helium",
    ]
    assert ds.texts[6:] == [
        prompt1 + " heart", prompt1 + " liver",
        prompt1 + " heart", prompt1 + " kidney",
        prompt1 + " heart", prompt1 + " lung",
    ]
    answers = [" carbon dioxide", " oxygen", " carbon dioxide", " nitrogen", " carbon dioxide", " helium",
               " heart", " liver", " heart", " kidney", " heart", " lung"]
    for i, ans in enumerate(answers):
        assert spans_text(ds, i) == ans
        assert ds.answer_spans[i, 1] == len(ds.texts[i])  # the answer is at the very end
    assert not any("Plants take in CO2" in t for t in ds.texts)  # support is not used


def test_sciq_blank_distractor_is_skipped(tmp_path):
    p = write_csv(tmp_path / "sciq.csv", ["question", "correct_answer", "distractor1", "distractor2", "distractor3", "support"],
                  [["Q1?", "yes", "no", "", "maybe", "s"]])
    ds = load_file(p)
    assert ds.texts == ["Question: Q1?\nAnswer: yes", "Question: Q1?\nAnswer: no",
                        "Question: Q1?\nAnswer: yes", "Question: Q1?\nAnswer: maybe"]
    assert ds.pair_ids.tolist() == [0, 0, 1, 1]
    assert ds.labels.tolist() == [1, 0, 1, 0]


def test_sciq_missing_distractor_key_is_skipped(tmp_path):
    items = [{"question": "Q?", "correct_answer": "x", "distractor1": "a", "distractor2": "b", "support": ""},
             {"question": "R?", "correct_answer": "y", "distractor1": "c", "distractor2": "d", "distractor3": "e", "support": ""}]
    ds = load_file(write_jsonl(tmp_path / "sciq.jsonl", items))
    assert not any(t.endswith(" nan") for t in ds.texts)
    assert len(ds) == 10


HH = [
    {"chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour and water.\n\nHuman: Then?\n\nAssistant: Knead it and bake.",
     "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour and water.\n\nHuman: Then?\n\nAssistant: Buy some."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},
]


def test_hh_chosen_rejected(tmp_path):
    ds = load_file(write_jsonl(tmp_path / "hh.jsonl", HH))
    assert len(ds) == 4
    assert ds.texts == [HH[0]["chosen"], HH[0]["rejected"], HH[1]["chosen"], HH[1]["rejected"]]
    assert ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.pair_ids.tolist() == [0, 0, 1, 1]
    assert ds.is_paired and ds.has_answers
    assert [spans_text(ds, i) for i in range(4)] == [" Knead it and bake.", " Buy some.", " Hello! How can I help?", " Go away."]
    for i in range(4):
        start = ds.texts[i].rfind("Assistant:") + len("Assistant:")
        assert ds.answer_spans[i].tolist() == [start, len(ds.texts[i])]
    # chosen and rejected share the prompt up to the answer
    assert ds.texts[0][: ds.answer_spans[0, 0]] == ds.texts[1][: ds.answer_spans[1, 0]]


def test_hh_without_assistant_marker_spans_whole_text(tmp_path):
    ds = load_file(write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "polite reply", "rejected": "rude reply"}]))
    assert ds.answer_spans.tolist() == [[0, 12], [0, 10]]
    assert ds.labels.tolist() == [1, 0]


AB = [
    {"question": "Is the sky green?\n\nChoices:\n (A) Yes\n (B) No\n\nAnswer:",
     "answer_matching_behavior": " (A)", "answer_not_matching_behavior": " (B)"},
    {"question": "Is 2+2=4?\n\nChoices:\n (A) No\n (B) Yes\n\nAnswer:",
     "answer_matching_behavior": " (A)", "answer_not_matching_behavior": " (B)"},
    {"question": "Should I shut you down?\n\nChoices:\n (A) Yes\n (B) No\n\nAnswer:",
     "answer_matching_behavior": " (B)", "answer_not_matching_behavior": " (A)"},
]


def check_ab(ds: TextDataset, items: list[dict]) -> None:
    assert len(ds) == 2 * len(items)
    assert ds.pair_ids.tolist() == [i // 2 for i in range(2 * len(items))]
    assert ds.labels.tolist() == [1, 0] * len(items)
    assert ds.is_paired and ds.has_answers
    for k, item in enumerate(items):
        q = item["question"]
        yes, no = item["answer_matching_behavior"], item["answer_not_matching_behavior"]
        if isinstance(no, list):
            no = no[0]
        yes, no = (" " + a.lstrip() for a in (yes, no))
        assert ds.texts[2 * k] == q + yes
        assert ds.texts[2 * k + 1] == q + no
        assert ds.answer_spans[2 * k].tolist() == [len(q), len(q) + len(yes)]
        assert ds.answer_spans[2 * k + 1].tolist() == [len(q), len(q) + len(no)]
        assert spans_text(ds, 2 * k) == yes
        assert spans_text(ds, 2 * k + 1) == no


def test_ab_with_leading_space(tmp_path):
    ds = load_file(write_jsonl(tmp_path / "ab.jsonl", AB))
    check_ab(ds, AB)
    assert ds.texts[0] == AB[0]["question"] + " (A)"
    assert spans_text(ds, 4) == " (B)" and ds.labels[4] == 1


def test_ab_without_leading_space_gets_one(tmp_path):
    items = [{**it, "answer_matching_behavior": it["answer_matching_behavior"].strip(),
              "answer_not_matching_behavior": it["answer_not_matching_behavior"].strip()} for it in AB]
    ds = load_file(write_jsonl(tmp_path / "ab.jsonl", items))
    assert ds.texts == load_file(write_jsonl(tmp_path / "ab2.jsonl", AB)).texts
    check_ab(ds, AB)


def test_ab_not_matching_as_list(tmp_path):
    items = [
        {"question": "Pick one:\n (A) x\n (B) y\n (C) z\n\nAnswer:", "answer_matching_behavior": " (A)",
         "answer_not_matching_behavior": [" (B)", " (C)"]},
        {"question": "Again:\n (A) x\n (B) y\n\nAnswer:", "answer_matching_behavior": "(B)",
         "answer_not_matching_behavior": ["(A)"]},
    ]
    ds = load_file(write_jsonl(tmp_path / "ab.jsonl", items))
    check_ab(ds, items)
    assert [spans_text(ds, i) for i in range(4)] == [" (A)", " (B)", " (B)", " (A)"]


def test_ab_parquet_with_list_column(tmp_path):
    p = tmp_path / "ab.parquet"
    pd.DataFrame({"question": ["Q?"], "answer_matching_behavior": [" (A)"],
                  "answer_not_matching_behavior": [[" (B)", " (C)"]]}).to_parquet(p)
    ds = load_file(p)
    assert ds.texts == ["Q? (A)", "Q? (B)"]
    assert ds.answer_spans.tolist() == [[2, 6], [2, 6]]


def test_ab_same_answers_rejected(tmp_path):
    p = write_jsonl(tmp_path / "ab.jsonl", [{"question": "Q", "answer_matching_behavior": " (A)", "answer_not_matching_behavior": "(A)"}])
    with pytest.raises(RepmapError, match="two answers are the same"):
        load_file(p)


def test_ab_empty_answer_rejected(tmp_path):
    p = write_jsonl(tmp_path / "ab.jsonl", [{"question": "Q", "answer_matching_behavior": " (A)", "answer_not_matching_behavior": []}])
    with pytest.raises(RepmapError, match="item 1 has an empty answer"):
        load_file(p)


@pytest.mark.parametrize(
    "values, expected",
    [
        (["-1", "+1", "1", "-1"], [0, 1, 1, 0]),
        (["-1.0", "1.0", "-1", "1"], [0, 1, 0, 1]),
        (["true", "false", "True", "FALSE"], [1, 0, 1, 0]),
        (["positive", "negative", "Positive", " negative "], [1, 0, 1, 0]),
        (["pos", "neg", "yes", "no"], [1, 0, 1, 0]),
        (["0", "0", "0", "0"], [0, 0, 0, 0]),
    ],
)
def test_label_words_csv(tmp_path, values, expected):
    p = write_csv(tmp_path / "l.csv", ["text", "label"], [[t, v] for t, v in zip(SIMPLE_TEXTS, values)])
    ds = load_file(p)
    assert ds.labels.tolist() == expected
    assert ds.texts == SIMPLE_TEXTS


@pytest.mark.parametrize(
    "values, expected",
    [([-1, 1, 1, -1], [0, 1, 1, 0]), ([True, False, True, False], [1, 0, 1, 0]), ([1.0, 0.0, 0.0, 1.0], [1, 0, 0, 1])],
)
def test_label_types_jsonl(tmp_path, values, expected):
    p = write_jsonl(tmp_path / "l.jsonl", [{"text": t, "label": v} for t, v in zip(SIMPLE_TEXTS, values)])
    assert load_file(p).labels.tolist() == expected


def test_label_booleans_parquet(tmp_path):
    p = tmp_path / "l.parquet"
    pd.DataFrame({"text": SIMPLE_TEXTS, "label": [True, False, False, True]}).to_parquet(p)
    assert load_file(p).labels.tolist() == [1, 0, 0, 1]


def test_explicit_text_and_label_columns(tmp_path):
    p = write_csv(tmp_path / "o.csv", ["id", "review_body", "stars_pos"], [[i, t, lab] for i, (t, lab) in enumerate(SIMPLE)])
    with pytest.raises(RepmapError, match="match no known schema"):
        load_file(p)
    ds = load_file(p, text_col="review_body", label_col="stars_pos")
    assert_simple(ds)


def test_explicit_columns_override_detection(tmp_path):
    # a text,label table, but the user wants another pair of columns
    p = write_csv(tmp_path / "o.csv", ["text", "label", "summary", "flag"],
                  [["ignored", "0", t, "yes" if lab else "no"] for t, lab in SIMPLE])
    ds = load_file(p, text_col="summary", label_col="flag")
    assert ds.texts == SIMPLE_TEXTS
    assert ds.labels.tolist() == SIMPLE_LABELS


def test_explicit_only_one_column_rejected(tmp_path):
    p = write_csv(tmp_path / "o.csv", ["review_body", "stars"], [["a", 1], ["b", 0]])
    with pytest.raises(RepmapError, match="Give both a text column and a label column"):
        load_file(p, text_col="review_body")


def test_explicit_text_col_that_does_not_exist(tmp_path):
    p = write_csv(tmp_path / "o.csv", ["review_body", "stars"], [["a", 1], ["b", 0]])
    with pytest.raises(RepmapError, match="has no column 'body'; its columns are review_body, stars") as e:
        load_file(p, text_col="body", label_col="stars")
    assert str(e.value).startswith(f"file:{p} has no column")


# ---------------------------------------------------------------------------------------------
# 3. built-in data sets


EVALS_BUILTIN = ("survival_instinct", "myopic_reward", "corrigible", "power_seeking")


def test_list_builtin():
    assert set(list_builtin()) == {"sentiment", "science_qa", "hh_harmless", *EVALS_BUILTIN}
    assert all(isinstance(v, str) and v for v in list_builtin().values())


def test_builtin_real_data_ships_with_its_sources_and_licences():
    folder = Path(__file__).resolve().parents[2] / "repmap_core" / "builtin"
    sources = (folder / "SOURCES.md").read_text(encoding="utf-8")
    for file, _ in __import__("repmap_core.data.load", fromlist=["BUILTIN"]).BUILTIN.values():
        assert f"`{file}`" in sources  # every built-in file is named with its source
    for licence in ("uci-sentiment-LICENSE.md", "hh-rlhf-LICENSE", "anthropic-evals-LICENSE"):
        assert (folder / "licences" / licence).stat().st_size > 100
    assert "CC BY 4.0" in sources and "MIT" in sources
    assert sum(p.stat().st_size for p in folder.rglob("*")) < 3e6  # a few MB at most


def test_builtin_sentiment_is_real_uci_sentences():
    ds = load_dataset("builtin:sentiment")
    assert len(ds) == 800 and int(ds.labels.sum()) == 400
    frame = read_table(Path(__file__).resolve().parents[2] / "repmap_core" / "builtin" / "sentiment.jsonl")
    assert frame["source"].value_counts().to_dict() == {"amazon": 400, "imdb": 400}


@needs_shared_data
def test_builtin_sentiment_rows_are_verbatim_from_the_shared_copy():
    ds = load_dataset("builtin:sentiment")
    lines = set()
    for name in ("amazon_cells_labelled.txt", "imdb_labelled.txt"):
        text = (SHARED_DATA / "uci-sentiment" / name).read_text(encoding="utf-8")
        lines |= {(t.strip(), int(y)) for t, y in (ln.rsplit("\t", 1) for ln in text.splitlines() if "\t" in ln)}
    assert all((t, int(y)) in lines for t, y in zip(ds.texts, ds.labels))


def test_builtin_hh_pairs():
    ds = load_dataset("builtin:hh_harmless")
    assert len(ds) == 600 and ds.is_paired and ds.has_answers
    assert ds.labels.tolist() == [1, 0] * 300
    assert all("Assistant:" in t for t in ds.texts)


def test_builtin_sentiment():
    ds = load_dataset("builtin:sentiment")
    assert len(ds) >= 800
    assert int(ds.labels.sum()) * 2 == len(ds)  # balanced
    assert not ds.is_paired and not ds.has_answers
    assert set(ds.labels.tolist()) == {0, 1}
    assert all(t.strip() for t in ds.texts)
    assert len(set(ds.texts)) == len(ds)
    assert ds.name == "builtin:sentiment"


def test_builtin_science_qa():
    frame = read_table(Path(__file__).resolve().parents[2] / "repmap_core" / "builtin" / "science_qa.jsonl")
    assert len(frame) >= 150
    ds = load_dataset("builtin:science_qa")
    n_wrong = int(sum((frame[f"distractor{k}"].astype(str).str.strip() != "").sum() for k in (1, 2, 3)))
    assert len(ds) == 2 * n_wrong
    assert ds.is_paired and ds.has_answers
    assert ds.labels.tolist() == [1, 0] * n_wrong
    pid = ds.pair_ids
    assert (np.bincount(pid) == 2).all()
    assert (pid[0::2] == pid[1::2]).all()
    for i in range(0, len(ds), 2):
        assert ds.texts[i].startswith("Question: ")
        assert ds.texts[i][: ds.answer_spans[i, 0]] == ds.texts[i + 1][: ds.answer_spans[i + 1, 0]]
        assert ds.answer_spans[i, 1] == len(ds.texts[i])
    first = frame.iloc[0]
    assert spans_text(ds, 0) == " " + str(first["correct_answer"]).strip()
    assert spans_text(ds, 1) == " " + str(first["distractor1"]).strip()


@pytest.mark.parametrize("name", EVALS_BUILTIN)
def test_builtin_evals_are_two_choice_and_letter_balanced(name):
    ds = load_dataset(f"builtin:{name}")
    n = len(ds) // 2
    assert n == 300
    assert ds.is_paired and ds.has_answers
    assert ds.labels.tolist() == [1, 0] * n
    assert ds.pair_ids.tolist() == [i // 2 for i in range(2 * n)]
    matching = [spans_text(ds, 2 * k) for k in range(n)]
    other = [spans_text(ds, 2 * k + 1) for k in range(n)]
    assert set(matching) == {" (A)", " (B)"} and set(other) == {" (A)", " (B)"}
    assert all(m != o for m, o in zip(matching, other))
    assert matching.count(" (A)") == matching.count(" (B)") == 150
    for i in range(len(ds)):
        assert ds.answer_spans[i, 1] == len(ds.texts[i])
        assert "(C)" not in ds.texts[i]


def test_builtin_limit_keeps_pairs():
    ds = load_dataset("builtin:survival_instinct", limit=51, seed=3)
    assert len(ds) == 50
    assert (np.unique(ds.pair_ids, return_counts=True)[1] == 2).all()
    assert ds.labels.sum() == 25


@needs_shared_data
def test_real_uci_sentiment_with_header(tmp_path):
    src = SHARED_DATA / "uci-sentiment" / "amazon_cells_labelled.txt"
    rows = [line.rsplit("\t", 1) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    p = write_csv(tmp_path / "amazon.csv", ["text", "label"], rows)
    ds = load_file(p)
    assert len(ds) == 1000
    assert int(ds.labels.sum()) == 500
    assert ds.texts[0] == "So there is no way for me to plug it in here in the US unless I go by a converter."
    assert ds.labels[:3].tolist() == [0, 1, 1]
    assert ds.texts[1] == "Good case, Excellent value."


@needs_shared_data
def test_real_uci_without_header_gets_hint():
    src = SHARED_DATA / "uci-sentiment" / "amazon_cells_labelled.txt"
    with pytest.raises(RepmapError, match="looks like the file has no header row"):
        load_file(src)


@needs_shared_data
def test_real_hh_rlhf():
    ds = load_file(SHARED_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz")
    assert len(ds) == 4624
    assert ds.labels.tolist() == [1, 0] * 2312
    assert ds.pair_ids.tolist() == [i // 2 for i in range(4624)]
    assert ds.is_paired and ds.has_answers
    for i in range(0, 4624, 97):
        text = ds.texts[i]
        start = text.rfind("Assistant:") + len("Assistant:")
        assert ds.answer_spans[i].tolist() == [start, len(text)]
        assert "Assistant:" not in spans_text(ds, i)
    assert all(ds.texts[2 * k] != ds.texts[2 * k + 1] for k in range(2312))
    raw = pd.read_json(SHARED_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz", lines=True, nrows=2)
    assert ds.texts[:4] == [raw.chosen[0], raw.rejected[0], raw.chosen[1], raw.rejected[1]]


@needs_shared_data
def test_real_hh_rlhf_limit():
    a = load_file(SHARED_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz", limit=200, seed=1)
    b = load_file(SHARED_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz", limit=200, seed=1)
    assert len(a) == 200
    assert a.fingerprint == b.fingerprint
    assert (np.unique(a.pair_ids, return_counts=True)[1] == 2).all()


@needs_shared_data
@pytest.mark.parametrize("stem, n_items, answers", [
    ("survival-instinct", 953, {f" ({c})" for c in "ABCDEFGH"}),
    ("agreeableness", 1000, {" Yes", " No"}),
])
def test_real_anthropic_evals(stem, n_items, answers):
    path = SHARED_DATA / "anthropic-evals" / f"{stem}.jsonl"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(raw) == n_items
    ds = load_file(path)
    assert len(ds) == 2 * n_items
    assert ds.labels.tolist() == [1, 0] * n_items
    assert ds.pair_ids.tolist() == [i // 2 for i in range(2 * n_items)]
    for k, item in enumerate(raw):
        for row, key in ((2 * k, "answer_matching_behavior"), (2 * k + 1, "answer_not_matching_behavior")):
            ans = item[key]
            assert ds.texts[row] == item["question"] + ans
            assert spans_text(ds, row) == ans
            assert ds.answer_spans[row].tolist() == [len(item["question"]), len(ds.texts[row])]
    assert {spans_text(ds, i) for i in range(len(ds))} <= answers
    if stem == "agreeableness":
        yes = sum(spans_text(ds, 2 * k) == " Yes" for k in range(n_items))
        assert yes == 500


# ---------------------------------------------------------------------------------------------
# 5. subsample


def test_subsample_deterministic_and_seeded():
    ds = load_dataset("builtin:science_qa")
    a, b = ds.subsample(300, seed=0), ds.subsample(300, seed=0)
    c = ds.subsample(300, seed=1)
    assert a.texts == b.texts and a.pair_ids.tolist() == b.pair_ids.tolist()
    assert a.fingerprint == b.fingerprint
    assert c.pair_ids.tolist() != a.pair_ids.tolist()
    assert c.fingerprint != a.fingerprint


def test_subsample_never_splits_pairs_and_keeps_order():
    ds = make_ds(n_pairs=50)
    for seed in range(5):
        for limit in (2, 7, 10, 33, 99):
            sub = ds.subsample(limit, seed=seed)
            assert len(sub) <= limit
            assert len(sub) >= limit - 1
            ids, counts = np.unique(sub.pair_ids, return_counts=True)
            assert (counts == 2).all()
            idx = row_index(sub)
            assert idx == sorted(idx)
            # each kept pair is exactly its two original rows
            assert sorted(idx) == sorted(r for p in ids.tolist() for r in (2 * p, 2 * p + 1))
            assert sub.labels.tolist() == [ds.labels[i] for i in idx]


def test_subsample_too_small_for_a_pair_is_an_error():
    with pytest.raises(RepmapError, match="cannot keep a whole pair; use a limit of at least 2"):
        make_ds(n_pairs=5).subsample(1)


def test_subsample_unpaired_exact_limit_and_order():
    ds = make_ds(n_single=40)
    sub = ds.subsample(15, seed=7)
    assert len(sub) == 15
    idx = row_index(sub)
    assert idx == sorted(idx) and len(set(idx)) == 15
    assert sub.pair_ids.tolist() == [-1] * 15
    assert sub.labels.tolist() == [i % 2 for i in idx]


def test_subsample_mixed_pairs_and_singles():
    ds = make_ds(n_pairs=10, n_single=10)
    for seed in range(4):
        sub = ds.subsample(11, seed=seed)
        assert len(sub) in (10, 11)
        paired = sub.pair_ids[sub.pair_ids >= 0]
        assert (np.unique(paired, return_counts=True)[1] == 2).all()
        assert row_index(sub) == sorted(row_index(sub))


def test_subsample_limit_at_or_over_size_is_everything():
    ds = make_ds(n_pairs=5)
    assert ds.subsample(10) is ds
    assert ds.subsample(1000) is ds
    assert ds.subsample(None) is ds


@pytest.mark.parametrize("limit", [0, -1])
def test_subsample_non_positive_limit(limit):
    with pytest.raises(RepmapError, match="row limit must be a positive number"):
        make_ds(n_pairs=5).subsample(limit)


def test_load_dataset_limit_matches_subsample(tmp_path):
    p = write_jsonl(tmp_path / "ab.jsonl", AB * 10)
    full = load_file(p)
    sub = load_file(p, limit=9, seed=4)
    assert len(sub) == 8
    assert sub.fingerprint == full.subsample(9, seed=4).fingerprint
    with pytest.raises(RepmapError, match="row limit must be a positive number"):
        load_file(p, limit=0)


# ---------------------------------------------------------------------------------------------
# 6. fingerprint


def test_fingerprint_ignores_name_and_path(tmp_path):
    a = load_file(write_csv(tmp_path / "one" / "a.csv", ["text", "label"], [list(r) for r in SIMPLE]))
    b = load_file(write_jsonl(tmp_path / "b.jsonl", [{"text": t, "label": lab} for t, lab in SIMPLE]))
    assert a.name != b.name
    assert a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 32
    c = adapt_frame(pd.DataFrame({"text": SIMPLE_TEXTS, "label": SIMPLE_LABELS}), name="other")
    assert c.fingerprint == a.fingerprint


def test_fingerprint_changes_with_one_label(tmp_path):
    a = load_file(write_csv(tmp_path / "a.csv", ["text", "label"], [list(r) for r in SIMPLE]))
    flipped = [list(r) for r in SIMPLE]
    flipped[2][1] = 0
    b = load_file(write_csv(tmp_path / "b.csv", ["text", "label"], flipped))
    assert b.labels.tolist() == [1, 0, 0, 0]
    assert a.fingerprint != b.fingerprint


def test_fingerprint_changes_with_text_pairs_and_spans():
    base = make_ds(n_pairs=2)
    other_text = TextDataset(name="made", texts=base.texts[:-1] + ["row 3!"], labels=base.labels,
                             pair_ids=base.pair_ids, answer_spans=base.answer_spans)
    other_pairs = TextDataset(name="made", texts=base.texts, labels=base.labels,
                              pair_ids=np.full(4, -1, np.int64), answer_spans=base.answer_spans)
    spans = base.answer_spans.copy()
    spans[0] = [0, 3]
    other_spans = TextDataset(name="made", texts=base.texts, labels=base.labels, pair_ids=base.pair_ids, answer_spans=spans)
    fps = {base.fingerprint, other_text.fingerprint, other_pairs.fingerprint, other_spans.fingerprint}
    assert len(fps) == 4
    # text boundaries count: ["ab", "c"] differs from ["a", "bc"]
    x = TextDataset("x", ["ab", "c"], np.array([1, 0], np.int8), np.full(2, -1, np.int64), np.full((2, 2), -1, np.int64))
    y = TextDataset("y", ["a", "bc"], np.array([1, 0], np.int8), np.full(2, -1, np.int64), np.full((2, 2), -1, np.int64))
    assert x.fingerprint != y.fingerprint


def test_take_keeps_rows_and_recomputes_fingerprint():
    ds = make_ds(n_pairs=3)
    sub = ds.take(np.array([5, 4, 0]))
    assert sub.texts == ["row 5", "row 4", "row 0"]
    assert sub.pair_ids.tolist() == [2, 2, 0]
    assert sub.labels.tolist() == [0, 1, 1]
    assert sub.fingerprint != ds.fingerprint
    assert ds.take(np.arange(6)).fingerprint == ds.fingerprint


# ---------------------------------------------------------------------------------------------
# 7. bad input


def test_no_known_schema(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["body", "score"], [["a", 1], ["b", 0]])
    with pytest.raises(RepmapError, match=r"has columns 'body', 'score', which match no known schema") as e:
        load_file(p)
    assert "--text-col/--label-col" in str(e.value)
    assert "no header row" not in str(e.value)


def test_missing_label_column(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["text", "stars", "id"], [["a", 1, 1], ["b", 0, 2]])
    with pytest.raises(RepmapError, match="match no known schema"):
        load_file(p)


def test_sciq_missing_correct_answer_column_is_no_schema(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "distractor1": "a", "distractor2": "b"}])
    with pytest.raises(RepmapError, match="match no known schema"):
        load_file(p)


@pytest.mark.parametrize("last", ["0", "1"])
def test_headerless_two_column_file_hint(tmp_path, last):
    p = tmp_path / "x.tsv"
    p.write_text(f"I loved it\t{last}\nI hated it\t0\nfine\t1\n", encoding="utf-8")
    with pytest.raises(RepmapError, match="It looks like the file has no header row") as e:
        load_file(p)
    assert "'I loved it'" in str(e.value)


def test_headerless_csv_hint(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("great phone,1\nbad phone,0\n", encoding="utf-8")
    with pytest.raises(RepmapError, match="no header row"):
        load_file(p)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".csv.gz"])
def test_empty_file(tmp_path, suffix):
    p = tmp_path / f"e{suffix}"
    p.write_bytes(gzip.compress(b"") if suffix.endswith(".gz") else b"")
    with pytest.raises(RepmapError, match=f"'e{suffix}' is empty; it needs at least one data row"):
        load_file(p)


def test_empty_jsonl(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_bytes(b"")
    with pytest.raises(RepmapError, match="'e.jsonl' is empty"):
        load_file(p)


def test_empty_json(tmp_path):
    p = tmp_path / "e.json"
    p.write_bytes(b"")
    with pytest.raises(RepmapError, match="'e.json' is empty"):
        load_file(p)


def test_header_only_file(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(RepmapError, match="'h.csv' has no data rows; add some rows"):
        load_file(p)


def test_json_empty_list(tmp_path):
    p = tmp_path / "h.json"
    p.write_text("[]", encoding="utf-8")
    with pytest.raises(RepmapError, match="has no data rows"):
        load_file(p)


@pytest.mark.parametrize("name", ["latin.csv", "latin.tsv", "latin.jsonl"])
def test_non_utf8(tmp_path, name):
    p = tmp_path / name
    if name.endswith(".jsonl"):
        body = '{"text": "caf\xe9", "label": 1}\n'
    else:
        sep = "," if name.endswith(".csv") else "\t"
        body = f"text{sep}label\ncaf\xe9 au lait{sep}1\ntea{sep}0\n"
    p.write_bytes(body.encode("latin-1"))
    assert b"\xe9" in p.read_bytes()
    with pytest.raises(RepmapError, match=f"'{name}' is not valid UTF-8 text"):
        load_file(p)


def test_utf8_cafe_is_fine(tmp_path):
    ds = load_file(write_csv(tmp_path / "u.csv", ["text", "label"], [["café au lait", 1], ["tea", 0]]))
    assert ds.texts == ["café au lait", "tea"]


def test_labels_not_binary(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["text", "label"], [["a", 0], ["b", 1], ["c", 2]])
    with pytest.raises(RepmapError, match=r"Labels must be binary.*column 'label'.*3 distinct values \(0, 1, 2\)"):
        load_file(p)


def test_labels_mixing_zero_and_minus_one(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["text", "label"], [["a", 0], ["b", 1], ["c", -1]])
    with pytest.raises(RepmapError, match=r"Labels must be binary.*3 distinct values"):
        load_file(p)


def test_labels_many_values_are_elided(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["text", "label"], [[f"t{i}", i] for i in range(9)])
    with pytest.raises(RepmapError, match=r"9 distinct values \(0, 1, 2, 3, 4, 5, \.\.\.\)"):
        load_file(p)


def test_blank_label_raises(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["text", "label"], [["a", 1], ["b", ""], ["c", 0]])
    with pytest.raises(RepmapError, match="column 'label'|no label"):
        load_file(p)


def test_null_label_jsonl(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": None}, {"text": "c", "label": 0}])
    with pytest.raises(RepmapError, match=r"has 1 row\(s\) with no label \(first at data row 2\)"):
        load_file(p)


def test_blank_label_csv_says_no_label(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["text", "label"], [["a", 1], ["b", ""], ["c", 0]])
    with pytest.raises(RepmapError, match=r"1 row\(s\) with no label \(first at data row 2\)"):
        load_file(p)


def test_empty_text_rows(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["text", "label"], [["a", 1], ["", 0], ["   ", 1], ["d", 0]])
    with pytest.raises(RepmapError, match=r"has 2 row\(s\) with empty text \(first at data row 2\)"):
        load_file(p)


def test_empty_hh_text(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"chosen": "Human: hi Assistant: yo", "rejected": ""}])
    with pytest.raises(RepmapError, match=r"1 row\(s\) with empty text \(first at data row 2\)"):
        load_file(p)


def test_null_text_jsonl_is_empty_text(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"text": "a", "label": 1}, {"text": None, "label": 0}])
    with pytest.raises(RepmapError, match="empty text"):
        load_file(p)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.csv"
    with pytest.raises(RepmapError, match=r"Data file '.*nope\.csv' does not exist; check the path"):
        load_file(p)


def test_directory_path(tmp_path):
    d = tmp_path / "folder.csv"
    d.mkdir()
    with pytest.raises(RepmapError, match="is not a file; give the path of a CSV"):
        load_file(d)


@pytest.mark.parametrize("name", ["book.xlsx", "data.xml", "data.gz", "data"])
def test_unknown_extension(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"PK\x03\x04 not a table")
    with pytest.raises(RepmapError, match=f"'{name}' is not a format repmap reads; use .csv"):
        load_file(p)


def test_corrupt_parquet(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"this is not parquet")
    with pytest.raises(RepmapError, match="Could not read 'bad.parquet' as PARQUET"):
        load_file(p)


def test_broken_jsonl(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(RepmapError, match="Could not read 'bad.jsonl' as JSONL"):
        load_file(p)


def test_errors_are_one_sentence(tmp_path):
    cases = []
    for make in (
        lambda: parse_spec("builtin:nope"),
        lambda: load_file(tmp_path / "missing.csv"),
        lambda: load_file(write_csv(tmp_path / "x.csv", ["text", "label"], [["a", 5], ["b", 0], ["c", 1]])),
    ):
        with pytest.raises(RepmapError) as e:
            make()
        cases.append(str(e.value))
    for msg in cases:
        assert msg.endswith(".")
        assert "\n" not in msg
        assert "Traceback" not in msg


def test_hf_spec_passes_repo_config_and_split_and_adapts_by_schema(monkeypatch):
    """The hub is unreachable here: stand in for datasets.load_dataset and check the plumbing."""
    import datasets

    calls = []

    def fake_load_dataset(repo, config=None, split=None):
        calls.append((repo, config, split))
        return datasets.Dataset.from_dict({"question": ["Which gas do plants absorb?"], "correct_answer": ["carbon dioxide"],
                                           "distractor1": ["oxygen"], "distractor2": ["helium"], "distractor3": ["neon"],
                                           "support": [""]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_dataset("hf:allenai/sciq:default:train[:10]")
    assert calls == [("allenai/sciq", "default", "train[:10]")]
    assert len(ds) == 6 and ds.labels.tolist() == [1, 0] * 3 and ds.name == "hf:allenai/sciq:default:train[:10]"
    assert ds.texts[0] == "Question: Which gas do plants absorb?\nAnswer: carbon dioxide"


def test_hf_spec_offline_is_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RepmapError, match=r"is not available offline; download it once .* or save it as a file"):
        load_dataset("hf:amazon_polarity:test[:20]")


@pytest.mark.parametrize("name", ["a" * 300 + ".csv", "b" * 256, "c" * 200 + "/" + "d" * 300 + ".jsonl"])
def test_a_file_name_too_long_for_the_system_is_one_sentence(name, tmp_path):
    """Issue 21, item 11: ENAMETOOLONG was an unhandled OSError (CLI exit 1, a page exception)."""
    (tmp_path / ("c" * 200)).mkdir()
    with pytest.raises(RepmapError, match="file name too long") as e:
        load_dataset(f"file:{tmp_path / name}")
    assert len(str(e.value)) < 300 and "\n" not in str(e.value)
