"""A folder (or glob) of files read as units, with the content-hash cursor.

What ``csv_export`` and ``siuss_files`` each used to write by hand: every file
matching the pattern is a unit; its SHA-256 (computed streaming, so a large
file is never held in memory) is kept in the state under ``files``; an
unchanged file is not read again, a changed one is read again (and, if the
reader ends it with :class:`~hub.connector.UnitComplete`, what it no longer
holds is removed). A state checkpoint follows every file, so a crash resumes
with the next file. A file that cannot be read becomes a :class:`SourceError`
and is tried again next time.

    inbox = FileInbox("exports/*.csv")
    yield from inbox.read(state, lambda path: my_reader(path))
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

from hub.connector import JSONState, ReadItem, SourceError, StateCheckpoint

#: The state key holding ``{file name: sha256}`` (kept as the built-in connectors had it).
STATE_KEY = "files"


def file_digest(path: Path, *, chunk: int = 1024 * 1024) -> str:
    """SHA-256 of a file's content, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class FileInbox:
    """The files matching ``pattern`` (a glob; or ``pattern`` inside ``folder``), by name."""

    def __init__(self, pattern: str, *, folder: Path | None = None) -> None:
        self.pattern = pattern
        self.folder = folder

    def files(self) -> list[Path]:
        if self.folder is not None:
            return sorted(p for p in self.folder.glob(self.pattern) if p.is_file())
        return sorted(Path(p) for p in glob.glob(self.pattern) if Path(p).is_file())

    def read(
        self, state: JSONState, read_file: Callable[[Path], Iterator[ReadItem]]
    ) -> Iterator[ReadItem]:
        """Every new or changed file through ``read_file``, each followed by a checkpoint;
        a final checkpoint at the end (also when nothing changed)."""
        done: dict[str, str] = dict(state.get(STATE_KEY, {}))
        for path in self.files():
            try:
                digest = file_digest(path)
            except OSError as e:
                yield SourceError(f"cannot read the file: {e.strerror}", path.name)
                continue
            if done.get(path.name) == digest:
                continue
            yield from read_file(path)
            # A refused file is remembered too: it is not tried again until it changes.
            done[path.name] = digest
            yield StateCheckpoint({STATE_KEY: dict(done)})
        yield StateCheckpoint({STATE_KEY: dict(done)})
