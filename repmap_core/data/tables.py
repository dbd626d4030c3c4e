"""Reading tables: CSV/TSV (with a header), JSONL, a JSON list or parquet, optionally gzipped, and hub
data sets (`datasets`), whole or in chunks. Pickle-based formats are refused by name, never opened."""
from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pandas as pd

from repmap_core.data.data_spec import DatasetSpec
from repmap_core.data.table_size import capped_open, parquet_frames
from repmap_core.errors import RepmapError, path_error, shown_path

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet")
# formats whose loaders unpickle (and so can run code): refused by name, never opened
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib")


def decoded_limit() -> int | None:
    """The most bytes a table may decode to here: the served app's cap, or None (the CLI reads any size)."""
    from repmap_core import access

    p = access.active()
    return None if p is None else p.max_table_bytes


def read_table(path: Path) -> pd.DataFrame:
    """Read CSV/TSV (with a header), JSONL, a JSON list, or parquet, optionally gzipped."""
    return next(iter_table(path))


def iter_table(path: Path, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The table as one frame, or (with `chunk_rows`) as frames of that many rows read one at a
    time: CSV/TSV/JSONL by pandas chunks, parquet by record batches; a JSON list is read whole."""
    path = Path(path)
    try:
        if not path.exists():
            raise RepmapError(f"Data file '{shown_path(path)}' does not exist; check the path.")
        if not path.is_file():
            raise RepmapError(f"'{shown_path(path)}' is not a file; give the path of a CSV, TSV, JSONL, JSON or parquet file.")
        empty = path.stat().st_size == 0
    except OSError as e:  # a name too long for the system, a folder it may not enter: the user's path, in one sentence
        raise path_error(path, e, "a data file") from None
    if empty:
        raise RepmapError(f"'{shown_path(path.name)}' is empty; it needs at least one data row.")
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
    limit = decoded_limit()
    opened = None if limit is None or suffix == ".parquet" else capped_open(path, compression is not None, limit, path.name)
    source, compression = (path, compression) if opened is None else (opened, None)  # decompressed by the reader
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "," if suffix == ".csv" else "\t"
            frames = pd.read_csv(source, sep=sep, compression=compression, dtype=str, keep_default_na=False,
                                 encoding="utf-8", encoding_errors="strict", chunksize=chunk_rows)
        elif suffix == ".jsonl":
            frames = pd.read_json(source, lines=True, compression=compression, dtype=False, encoding="utf-8",
                                  chunksize=chunk_rows)
        elif suffix == ".json":
            frames = pd.read_json(source, compression=compression, dtype=False, encoding="utf-8")
        elif chunk_rows or limit is not None:  # batch by batch, each counted before it is decoded
            frames = parquet_frames(path, limit, chunk_rows or 65_536, path.name)
            frames = frames if chunk_rows else iter([pd.concat(list(frames), ignore_index=True)])
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
    except (ValueError, OSError, EOFError, pd.errors.ParserError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RepmapError(f"Could not read '{path.name}' as {suffix[1:].upper()}: {first[:200]}.") from None
    finally:
        if opened is not None:
            opened.close()
    if seen == 0:
        raise RepmapError(f"'{path.name}' has no data rows; add some rows and try again.")


def _hub_only(spec: DatasetSpec) -> None:
    """Refuse a repo id that `datasets` would not look up on the hub: the name of one of its own file
    builders (csv, json, parquet, ...) or of a folder here, which it would read from disk instead."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    if spec.ref.lower() in _PACKAGED_DATASETS_MODULES:
        raise RepmapError(f"'{spec.ref}' names one of the datasets library's file readers, not a hub data set; give a "
                          "local table as file:PATH.")
    try:
        local = Path(spec.ref).exists()
    except OSError:
        local = True
    if local:
        raise RepmapError(f"hf:{spec.ref} names a hub data set, but '{spec.ref}' is also a path here, which the datasets "
                          "library would read instead of the hub's; give a local table as file:PATH.")


def read_hf(spec: DatasetSpec) -> pd.DataFrame:
    import datasets  # heavy import: only when a hub data set is asked for

    _hub_only(spec)
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
    if (limit := decoded_limit()) is not None and ds.data.nbytes > limit:  # arrow's size, before pandas copies it
        raise RepmapError(f"Data set '{spec}' takes {ds.data.nbytes / 2**20:.0f} MB, over this server's limit of "
                          f"{limit / 2**20:.0f} MB for a table; take a slice of it, e.g. {spec.split.split('[')[0]}[:2000].")
    return ds.to_pandas()


def iter_hf(spec: DatasetSpec, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import datasets

    split, _, rows = spec.split.partition("[")
    start, stop = 0, None
    if rows:  # "train[:2000]" / "train[100:200]": streaming takes the slice as a range of rows
        a, _, b = rows.rstrip("]").partition(":")
        if "%" in rows or not _:
            raise RepmapError(f"Streaming reads row ranges like {split}[100:2000], not '{spec.split}'.")
        start, stop = int(a or 0), (int(b) if b else None)
    _hub_only(spec)
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
