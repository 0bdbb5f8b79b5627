"""A unit's rows cut into :class:`~hub.connector.RecordPart` s where their content says.

So that re-reading a changed file costs what changed in it: the pipeline skips a part
the registry holds as it is (see :class:`hub.connector.RecordPart`). The cuts depend on
the rows alone (content-defined chunking, as rsync and backup tools cut files): a part
ends after a row whose content hash has its low bits zero, so inserting or deleting a
row moves the cuts of its own part only, and the parts after it are found again.

    for part in in_parts(rows, unit=name, seed=settings, content=text_of, build=records_of):
        yield part

``rows`` are whatever the connector reads (lists of values, say); ``content(row)`` the
bytes that stand for a row (everything of it that decides its record: two rows with the
same content must give the same record, given the same ``seed``); ``build(rows)`` the
records (and record-scope source errors) of a part's rows, called only if the pipeline
reads the part.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from hub.connector import RawRecord, RecordPart, SourceError

T = TypeVar("T")

#: Rows per part on average (a power of two: a row ends its part when its content's
#: CRC-32 has this many low bits zero).
AVERAGE_ROWS = 1024
#: No part is cut before this many rows (a run of cut rows makes no tiny parts)...
MIN_ROWS = 64
#: ... nor grows beyond this many, or beyond this many bytes of content (bounds on what
#: the connector holds: an XML element held whole takes several times its text).
MAX_ROWS = 8192
MAX_BYTES = 256 * 1024


def in_parts(
    rows: Iterable[T],
    *,
    unit: str,
    seed: bytes,
    content: Callable[[T], bytes],
    build: Callable[[Sequence[T]], Iterable[RawRecord | SourceError]],
    average: int = AVERAGE_ROWS,
    min_rows: int = MIN_ROWS,
    max_rows: int = MAX_ROWS,
    max_bytes: int = MAX_BYTES,
) -> Iterator[RecordPart]:
    """The parts of ``rows`` (see the module's docstring); ``seed``: the bytes of whatever
    else decides the records (the connector's settings, the file's header...)."""
    if average & (average - 1) or not 0 < min_rows <= max_rows:
        raise ValueError("average must be a power of two and min_rows <= max_rows")
    mask = average - 1
    crc32 = zlib.crc32
    buffer: list[T] = []
    contents: list[bytes] = []
    size = 0
    for row in rows:
        data = content(row)
        buffer.append(row)
        contents.append(data)
        size += len(data)
        if (
            len(buffer) >= max_rows
            or size >= max_bytes
            or (len(buffer) >= min_rows and not crc32(data) & mask)
        ):
            yield _part(unit, seed, contents, buffer, build)
            buffer, contents, size = [], [], 0
    if buffer:
        yield _part(unit, seed, contents, buffer, build)


def _part(
    unit: str,
    seed: bytes,
    contents: list[bytes],
    rows: Sequence[T],
    build: Callable[[Sequence[T]], Iterable[RawRecord | SourceError]],
) -> RecordPart:
    digest = hashlib.blake2b(
        len(seed).to_bytes(8, "big") + seed, digest_size=16, person=b"raccordo.part1"
    )
    # A row's content may hold any byte: the lengths go first, so no two lists of rows
    # give the same digested bytes.
    digest.update(struct.pack(f">{len(contents)}I", *map(len, contents)))
    digest.update(b"".join(contents))
    return RecordPart(unit, digest.digest(), lambda: build(rows))
