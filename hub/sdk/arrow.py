"""Raw records into Arrow record batches, for connectors and stages that work in columns.

    builder = ArrowBatchBuilder(stream, batch_size=10_000)
    for record in records:
        if (batch := builder.add(record)) is not None:
            handle(batch)
    if (batch := builder.flush()) is not None:
        handle(batch)

Every declared field of the stream becomes a string column (missing values are
null), beside three columns the pipeline needs: ``__location``, ``__op`` and
``__unit``. Values are kept as text, as the sources give them: typing is the
mapping's job. The batch holds clear identifiers: it must go to the pipeline
and nowhere else.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from hub.connector import RawRecord, Stream

META_COLUMNS = ("__location", "__op", "__unit")


class ArrowBatchBuilder:
    def __init__(self, stream: Stream, *, batch_size: int = 10_000) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.stream = stream
        self.batch_size = batch_size
        self.names = tuple(f.name for f in stream.fields)
        self.schema = pa.schema([pa.field(n, pa.string()) for n in (*self.names, *META_COLUMNS)])
        self._columns: list[list[Any]] = [[] for _ in self.schema.names]

    def __len__(self) -> int:
        return len(self._columns[0])

    def add(self, record: RawRecord) -> pa.RecordBatch | None:
        """Append one record; returns a full batch when ``batch_size`` is reached."""
        if record.stream != self.stream.name:
            raise ValueError(f"record of stream {record.stream!r} in a {self.stream.name!r} batch")
        data = record.data
        for column, name in zip(self._columns, self.names, strict=False):
            v = data.get(name)
            column.append(None if v is None else str(v))
        n = len(self.names)
        self._columns[n].append(record.location)
        self._columns[n + 1].append(record.op)
        self._columns[n + 2].append(record.unit)
        return self.flush() if len(self) >= self.batch_size else None

    def flush(self) -> pa.RecordBatch | None:
        """The records added since the last batch, or None if there are none."""
        if not len(self):
            return None
        arrays = [pa.array(col, type=pa.string()) for col in self._columns]
        self._columns = [[] for _ in self.schema.names]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)
