"""A throwaway PostgreSQL cluster for the tests: a real server, the real protocol.

Created with ``initdb`` in a temporary directory and started with ``pg_ctl`` on a free port
of 127.0.0.1 (unix socket in the same directory, so it never meets a distribution cluster).
Durability is switched off: the cluster is deleted at the end anyway. PostgreSQL refuses to
run as root, so as root the server runs as the ``postgres`` system user that Debian's package
creates (or, failing that, as a ``raccordo-pg`` system user made for the purpose).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

FALLBACK_USER = "raccordo-pg"


class PostgresError(RuntimeError):
    """The test server could not be set up; the message says why (and shows the server log)."""


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin/<name>; versions are "15" or, long ago, "9.6".
    return tuple(int(p) for p in re.findall(r"\d+", Path(path).parts[-3]))


def find_bin(name: str) -> Path:
    """``name`` (initdb, pg_ctl) from the newest PostgreSQL under /usr/lib/postgresql."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if not found:
        raise PostgresError(
            f"PostgreSQL's {name} is not installed under /usr/lib/postgresql/*/bin: "
            "run `bash scripts/ensure-postgres.sh` (make test does it)"
        )
    return Path(found[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> pwd.struct_passwd:
    """The unprivileged account the server runs as when the tests run as root."""
    for name in ("postgres", FALLBACK_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    res = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_USER],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise PostgresError(
            f"tests run as root, there is no 'postgres' user and creating '{FALLBACK_USER}' "
            f"failed: {res.stderr.strip()}"
        )
    return pwd.getpwnam(FALLBACK_USER)


def _reachable_by_others(path: Path) -> bool:
    """True when every ancestor of ``path`` can be traversed by an unprivileged user."""
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in path.resolve().parents)


class PostgresServer:
    """Start a fresh cluster on construction; :meth:`stop` shuts it down and deletes it."""

    def __init__(self) -> None:
        self._user: pwd.struct_passwd | None = _server_user() if os.geteuid() == 0 else None
        parent = Path(tempfile.gettempdir())
        if self._user is not None and not _reachable_by_others(parent / "x"):
            parent = Path("/tmp")  # $TMPDIR is private to root: the server user could not enter it
        self.dir = Path(tempfile.mkdtemp(prefix="raccordo-pg-", dir=parent))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self._stopped = False
        try:
            if self._user is not None:
                os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
            self._initdb()
            self._start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        atexit.register(self.stop)  # a session that dies early still leaves no server behind

    def _run(self, cmd: list[str], what: str) -> None:
        if self._user is not None:
            cmd = ["runuser", "-u", self._user.pw_name, "--", *cmd]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PostgresError(f"{what} failed: {e}") from None
        if res.returncode != 0:
            raise PostgresError(
                f"{what} failed (exit {res.returncode}): {' '.join(cmd)}\n"
                f"{res.stdout.strip()}\n{res.stderr.strip()}"
            )

    def _initdb(self) -> None:
        self._run(
            [
                str(find_bin("initdb")),
                "--pgdata",
                str(self.data),
                "--username",
                "postgres",
                "--auth",
                "trust",  # only 127.0.0.1 and a socket in a private directory
                "--no-sync",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
            ],
            "initdb",
        )

    def _start(self) -> None:
        # The free port is only free when we looked: another worker may take it first; retry.
        for attempt in range(3):
            self.port = _free_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={self.dir} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
            )
            try:
                self._run(
                    [
                        str(find_bin("pg_ctl")),
                        "--pgdata",
                        str(self.data),
                        "--log",
                        str(self.log),
                        "--options",
                        opts,
                        "--wait",
                        "--timeout",
                        "60",
                        "start",
                    ],
                    "starting PostgreSQL",
                )
                return
            except PostgresError as e:
                tail = self._log_tail()
                if attempt < 2 and "already in use" in tail:
                    self.log.unlink(missing_ok=True)
                    continue
                raise PostgresError(f"{e}\n--- end of the server log ---\n{tail}") from None

    def _log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of ``dbname`` on this server (psycopg 3 driver, trust auth)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (``t_<random>`` by default) and return its name."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return name

    def stop(self) -> None:
        """Stop the server at once (no checkpoint: nothing here is worth keeping), delete it."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        try:
            self._run(
                [str(find_bin("pg_ctl")), "--pgdata", str(self.data), "-m", "immediate", "stop"],
                "stopping PostgreSQL",
            )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
