"""Where the feeds come from. Each source turns into one PCollection of Arrow tables per feed.

Jobs only see `FeedSource.read(pipeline)`, so the local files source and the production BigQuery
source are swappable behind one flag.
"""
from __future__ import annotations

import glob
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pacsv

from transforms import feeds


def _read_csv_as_strings(path: str) -> pa.Table:
    """Every column as text: validation types it and rejects what does not parse."""
    names = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20)).column_names
    opts = pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                strings_can_be_null=True, quoted_strings_can_be_null=False)
    return pacsv.read_csv(path, convert_options=opts)


class LocalFilesSource:
    """`<feeds_dir>/<feed>/*.parquet` (typed) or `*.csv` (text) — the embedded default."""

    def __init__(self, feeds_dir: str):
        self.feeds_dir = feeds_dir

    def _files(self, feed: str, ext: str) -> list[str]:
        return sorted(glob.glob(os.path.join(self.feeds_dir, feed, f"*.{ext}")))

    def check(self) -> None:
        """Fail before the pipeline starts when a feed folder is absent or empty."""
        missing = [f for f in feeds.FEEDS if not (self._files(f, "parquet") or self._files(f, "csv"))]
        if missing:
            raise FileNotFoundError(
                f"no Parquet or CSV files for feeds {missing} under {self.feeds_dir!r} "
                f"(expected <feeds_dir>/<feed>/*.parquet); run `smescore generate` to make some")

    def read(self, pipeline: beam.Pipeline) -> dict[str, beam.PCollection]:
        out = {}
        for feed in feeds.FEEDS:
            parts = []
            if self._files(feed, "parquet"):
                parts.append(pipeline | f"ReadParquet[{feed}]" >> beam.io.ReadFromParquetBatched(
                    os.path.join(self.feeds_dir, feed, "*.parquet")))
            if self._files(feed, "csv"):
                parts.append(pipeline | f"ListCsv[{feed}]" >> beam.Create(self._files(feed, "csv"))
                             | f"ReadCsv[{feed}]" >> beam.Map(_read_csv_as_strings))
            out[feed] = parts[0] if len(parts) == 1 else (
                parts | f"Merge[{feed}]" >> beam.Flatten())
        return out
