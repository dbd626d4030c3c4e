"""A table's decoded size is capped in a served app, for every format (issue 21, item 7): the cap counted only
`.gz` uploads, so a 48 KB zstd parquet that decodes to 1 GB of strings was accepted in shared mode (RSS 1.3 ->
4.4 GB) and a plain 56 MB CSV passed a 50 MB cap. Each variant here is refused at the cap, with memory flat."""
from __future__ import annotations

import dataclasses
import gzip
import json
import resource

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repmap_core import access
from repmap_core.data.load import load_dataset
from repmap_core.data.table_size import check_decoded_size
from repmap_core.data.tables import decoded_limit, read_hf, read_table
from repmap_core.errors import RepmapError

MB = 2**20
CAP = 8 * MB


def cap_at(limit: int = CAP) -> None:
    access.enforce(dataclasses.replace(access.policy(), max_table_bytes=limit))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def repeated_string_parquet(path, value_mb: int, rows: int, compression: str = "zstd") -> None:
    """One long string used by every row through the column's dictionary: tiny on disk, `value_mb * rows` decoded."""
    column = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * (value_mb * MB)]))
    pq.write_table(pa.table({"text": column, "label": pa.array([i % 2 for i in range(rows)])}), path,
                   compression=compression)


BOMBS = {
    "parquet: one 1 MB string repeated 1,000 times (1 GB decoded)": lambda p: repeated_string_parquet(p / "a.parquet", 1, 1000),
    "parquet: zstd, no dictionary, 12 MB of one letter": lambda p: pq.write_table(
        pa.table({"text": ["a" * (12 * MB)], "label": [1]}), p / "b.parquet", compression="zstd", use_dictionary=False),
    "parquet: many small row groups adding up": lambda p: pq.write_table(
        pa.table({"text": ["b" * 4096] * 3000, "label": [1, 0] * 1500}), p / "c.parquet", row_group_size=100,
        use_dictionary=False),
    "csv: plain, over the cap": lambda p: (p / "d.csv").write_text("text,label\n" + ("c" * 1000 + ",1\n") * 9000),
    "tsv.gz: a gzip bomb": lambda p: (p / "e.tsv.gz").write_bytes(gzip.compress(b"text\tlabel\n" + b"d" * (40 * MB))),
    "jsonl: over the cap": lambda p: (p / "f.jsonl").write_text(json.dumps({"text": "e" * 1000, "label": 1}) + "\n" * 1
                                                                 + (json.dumps({"text": "e" * 1000, "label": 0}) + "\n") * 9000),
    "json list: one long string": lambda p: (p / "g.json").write_text(json.dumps([{"text": "f" * (9 * MB), "label": 1}])),
    "jsonl.gz: a gzip bomb": lambda p: (p / "h.jsonl.gz").write_bytes(gzip.compress(
        (json.dumps({"text": "g" * 10_000, "label": 1}) + "\n").encode() * 2000)),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_every_format_is_refused_at_the_cap_while_it_is_decoded(case, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    BOMBS[case](folder)
    path = next(folder.iterdir())
    assert path.stat().st_size < 12 * MB
    cap_at()
    before = rss_mb()
    with pytest.raises(RepmapError, match="expands to more than 8 MB once decoded") as e:
        load_dataset(f"file:{path}")
    assert "\n" not in str(e.value)
    assert rss_mb() - before < 200  # refused at the cap: nothing near the decoded size was ever held
    with pytest.raises(RepmapError, match="expands to more than 8 MB once decoded"):  # the upload check, on its bytes
        check_decoded_size(path.read_bytes(), "." + path.name.split(".", 1)[1], CAP, path.name)


def test_the_shared_modes_own_cap_stops_a_plain_56_mb_csv(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + ("h" * 1000 + ",1\n") * 57_000)
    assert path.stat().st_size > 56 * 10**6
    monkeypatch.setenv("REPMAP_MODE", "shared")
    access.enforce(access.policy())
    with pytest.raises(RepmapError, match="expands to more than 50 MB once decoded"):
        read_table(path)


def test_tables_under_the_cap_read_as_before(tmp_path):
    pq.write_table(pa.table({"text": ["x" * MB] * 4, "label": [1, 0, 1, 0]}), tmp_path / "small.parquet")  # 4 MB decoded
    (tmp_path / "small.csv").write_text("text,label\ngood,1\nbad,0\n")
    cap_at()
    frame = read_table(tmp_path / "small.parquet")
    uncapped = pq.read_table(tmp_path / "small.parquet").to_pandas()
    assert frame.dtypes.to_dict() == uncapped.dtypes.to_dict()  # plain text, as without a cap: not a Categorical
    assert len(frame) == 4 and frame["text"][0] == "x" * MB
    assert load_dataset(f"file:{tmp_path / 'small.csv'}").texts == ["good", "bad"]


def test_the_cli_reads_without_a_cap(tmp_path):
    assert decoded_limit() is None  # no policy: a user's own shell reads what it is given
    repeated_string_parquet(tmp_path / "a.parquet", 1, 12)
    assert len(read_table(tmp_path / "a.parquet")) == 12


def test_a_hub_data_set_is_capped_by_its_arrow_size(monkeypatch):
    import datasets

    from repmap_core.data.data_spec import parse_spec

    big = datasets.Dataset.from_dict({"text": ["i" * 1000] * 10_000, "label": [1, 0] * 5000})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: big)
    cap_at()
    with pytest.raises(RepmapError, match="over this server's limit of 8 MB for a table; take a slice"):
        read_hf(parse_spec("hf:someone/big:train"))
