"""The dlt peer of bench/ingest.py: the same CSV into SQLite with a primary key.

Run by ``bench/ingest.py --dlt`` with the Python of a separate venv that the benchmark
creates (``pip install "dlt[sqlalchemy]" pyarrow``): dlt is not a dependency of Raccordo.

    python bench/dlt_peer.py SOURCE.csv WORKDIR

What a data engineer would write: pyarrow's streaming CSV reader, Arrow batches handed
to dlt, ``merge`` on the source key into a SQLite database; one wide table, no
validation, no pseudonymisation. Prints one JSON line: records, seconds, CPU seconds
(this process and its children), peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def main() -> None:
    source, work = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    import dlt
    import pyarrow as pa
    import pyarrow.csv as pv

    def batches() -> Iterator[pa.RecordBatch]:
        reader = pv.open_csv(
            source,
            read_options=pv.ReadOptions(encoding="cp1252", block_size=1 << 24),
            parse_options=pv.ParseOptions(delimiter=";", newlines_in_values=True),
            convert_options=pv.ConvertOptions(
                column_types={"ID_CARTELLA": pa.string(), "CODICE_FISCALE": pa.string()}
            ),
        )
        yield from reader

    records = dlt.resource(
        batches, name="records", primary_key="ID_CARTELLA", write_disposition="merge"
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench",
        pipelines_dir=str(work / "pipelines"),
        destination=dlt.destinations.sqlalchemy(f"sqlite:///{work / 'dlt.sqlite'}"),
        dataset_name="bench",
    )
    t0, c0 = time.perf_counter(), _cpu()
    pipeline.run(records())
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    with pipeline.sql_client() as client:
        (n,) = client.execute_sql("SELECT count(*) FROM records")[0]
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    print(
        json.dumps(
            {"records": n, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak / 1024}
        )
    )


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


if __name__ == "__main__":
    main()
