"""A table's decoded size, capped while it is decoded: a small file that expands to gigabytes (a gzip or zstd
bomb, a parquet column of one long string repeated through its dictionary) stops at the cap instead of filling
memory. A served app sets the cap (`access.Policy.max_table_bytes`); the CLI reads without one.

- CSV, TSV, JSON and JSONL (gzipped or not) are read through `CappedReader`, which counts the bytes as they are
  decompressed and refuses at the cap, before the parser holds more.
- Parquet: the footer's uncompressed sizes are checked before any column is read, then each record batch's decoded
  size is counted before it is decoded (dictionary columns by their values' lengths times their uses).
"""
from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from repmap_core.errors import RepmapError

__all__ = ["CappedReader", "capped_open", "parquet_frames", "check_decoded_size"]


def too_big(name: str, limit: int) -> RepmapError:
    return RepmapError(f"'{name}' expands to more than {limit / 2**20:.0f} MB once decoded, over this server's limit "
                       "for a table; use a smaller table (or fewer rows of it).")


class CappedReader(io.RawIOBase):
    """A binary stream that refuses (`RepmapError`) once more than `limit` bytes have been read from it."""

    def __init__(self, raw: BinaryIO, limit: int, name: str) -> None:
        super().__init__()
        self.raw, self.limit, self.name, self.count = raw, int(limit), name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.count += n or 0
        if self.count > self.limit:
            raise too_big(self.name, self.limit)
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def capped_open(source: Path | bytes, gzipped: bool, limit: int, name: str) -> io.BufferedReader:
    """`source` (a path or the bytes of an upload), decompressed when `gzipped`, read through a `limit`."""
    raw = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    return io.BufferedReader(CappedReader(gzip.GzipFile(fileobj=raw) if gzipped else raw, limit, name), 1 << 16)


def _decoded_nbytes(batch) -> int:
    """Bytes the batch takes once every dictionary column is decoded (the dictionary's values times their uses)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            lengths = pc.binary_length(column.dictionary) if pa.types.is_binary(column.dictionary.type) or \
                pa.types.is_string(column.dictionary.type) or pa.types.is_large_string(column.dictionary.type) else None
            used = pc.take(lengths, column.indices) if lengths is not None else None
            total += column.indices.nbytes + (int(pc.sum(used).as_py() or 0) if used is not None else column.nbytes)
        else:
            total += column.nbytes
    return total


def parquet_frames(source: Path | bytes, limit: int | None, batch_rows: int, name: str) -> Iterator:
    """The parquet file as pandas frames of up to `batch_rows` rows; with `limit`, its footer's uncompressed sizes
    are checked before anything is read and each batch's decoded size before it is decoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    if limit is None:
        yield from (b.to_pandas() for b in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows))
        return
    first = pq.ParquetFile(handle)
    meta, schema = first.metadata, first.schema_arrow
    declared = sum(max(meta.row_group(g).total_byte_size, sum(meta.row_group(g).column(c).total_uncompressed_size
                                                               for c in range(meta.num_columns)))
                   for g in range(meta.num_row_groups))
    if declared > limit:
        raise too_big(name, limit)
    texts = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
             or pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    used = 0
    for batch in pq.ParquetFile(handle, read_dictionary=texts).iter_batches(batch_size=min(batch_rows, 4096)):
        used += _decoded_nbytes(batch)  # counted while still dictionary-encoded: nothing big is built yet
        if used > limit:
            raise too_big(name, limit)
        columns = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
        yield pa.RecordBatch.from_arrays(columns, names=batch.schema.names).to_pandas()


def check_decoded_size(source: Path | bytes, suffix: str, limit: int, name: str) -> None:
    """Refuse a table (a path, or an upload's bytes) whose decoded size passes `limit`, reading it only as far as
    the cap: text formats by their decompressed bytes, parquet by its footer and its batches' decoded sizes."""
    try:
        if suffix.removesuffix(".gz").endswith(".parquet"):
            for _ in parquet_frames(source, limit, 4096, name):
                pass
            return
        with capped_open(source, suffix.endswith(".gz"), limit, name) as f:
            while f.read(1 << 20):
                pass
    except RepmapError:
        raise
    except (OSError, EOFError, ValueError):
        kind = "gzip" if suffix.endswith(".gz") else suffix.lstrip(".").upper()
        raise RepmapError(f"'{name}' is not a valid {kind} file; save it again or upload it uncompressed.") from None
