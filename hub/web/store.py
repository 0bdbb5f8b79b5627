"""What every worker process of the web app must share: sessions, failed logins, upload jobs.

A small SQLite file in the workspace (``[web] state_file``), in WAL mode so the
workers of ``raccordo serve --workers N`` read and write it at the same time.
It never holds an identifier: session ids and CSRF tokens are random, stored
as SHA-256 hashes (session ids) so a copy of the file gives no live cookie;
login keys hold a user name as typed by whoever tried it (normalised), never a
password.

Sessions are server-side: a cookie carries only a random id. Logging out
deletes the row at once, so a copied cookie stops working; each row also holds
a fingerprint of the user's password hash, so a password change (web or CLI)
ends every session of that user, and a disabled user has none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    user_id INTEGER,
    credential TEXT,
    csrf TEXT NOT NULL,
    flash TEXT,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures (key, at);
CREATE TABLE IF NOT EXISTS upload_jobs (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    status TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    report TEXT,
    created REAL NOT NULL
);
"""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    """One browser's session; ``token`` is the cookie value (never stored)."""

    token: str
    user_id: int | None
    credential: str | None
    csrf: str
    flash: str | None = None


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- sessions -------------------------------------------------------------------
    def new_session(
        self, ttl_s: float, user_id: int | None = None, credential: str | None = None
    ) -> Session:
        token = secrets.token_urlsafe(32)
        s = Session(token, user_id, credential, secrets.token_urlsafe(32))
        now = time.time()
        with self._conn() as conn:
            conn.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            conn.execute(
                "INSERT INTO sessions (id_hash, user_id, credential, csrf, expires)"
                " VALUES (?, ?, ?, ?, ?)",
                (_hash(token), user_id, credential, s.csrf, now + ttl_s),
            )
        return s

    def get_session(self, token: str) -> Session | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT user_id, credential, csrf, flash FROM sessions"
                " WHERE id_hash = ? AND expires >= ?",
                (_hash(token), time.time()),
            ).fetchone()
        return None if row is None else Session(token, row[0], row[1], row[2], row[3])

    def end_session(self, token: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", (_hash(token),))

    def end_sessions_of(self, user_id: int) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def set_flash(self, token: str, message: str | None) -> None:
        with self._conn() as conn:
            conn.execute("UPDATE sessions SET flash = ? WHERE id_hash = ?", (message, _hash(token)))

    # -- failed logins --------------------------------------------------------------
    def failures(self, keys: list[str], window_s: float) -> dict[str, int]:
        since = time.time() - window_s
        with self._conn() as conn:
            return {
                k: int(
                    conn.execute(
                        "SELECT count(*) FROM login_failures WHERE key = ? AND at >= ?",
                        (k, since),
                    ).fetchone()[0]
                )
                for k in keys
            }

    def add_failure(self, keys: list[str], window_s: float) -> None:
        now = time.time()
        with self._conn() as conn:
            conn.execute("DELETE FROM login_failures WHERE at < ?", (now - window_s,))
            conn.executemany(
                "INSERT INTO login_failures (key, at) VALUES (?, ?)", [(k, now) for k in keys]
            )

    def clear_failures(self, key: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM login_failures WHERE key = ?", (key,))

    # -- upload jobs ----------------------------------------------------------------
    def new_job(self, org: str) -> str:
        job = secrets.token_urlsafe(16)
        with self._conn() as conn:
            conn.execute("DELETE FROM upload_jobs WHERE created < ?", (time.time() - 7 * 86400,))
            conn.execute(
                "INSERT INTO upload_jobs (id, org, status, created) VALUES (?, ?, 'queued', ?)",
                (job, org, time.time()),
            )
        return job

    def update_job(
        self,
        job: str,
        *,
        status: str,
        total: int = 0,
        done: int = 0,
        report: list[dict[str, Any]] | None = None,
    ) -> None:
        with self._conn() as conn:
            conn.execute(
                "UPDATE upload_jobs SET status = ?, total = ?, done = ?, report = ? WHERE id = ?",
                (status, total, done, None if report is None else json.dumps(report), job),
            )

    def job(self, job: str, org: str) -> dict[str, Any] | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT status, total, done, report FROM upload_jobs WHERE id = ? AND org = ?",
                (job, org),
            ).fetchone()
        if row is None:
            return None
        return {
            "id": job,
            "status": row[0],
            "total": row[1],
            "done": row[2],
            "report": json.loads(row[3]) if row[3] else None,
        }
