"""A throwaway PostgreSQL cluster for the tests: real server, real protocol.

Created with ``initdb`` in a temporary directory and started with ``pg_ctl``
on a free port of 127.0.0.1. PostgreSQL refuses to run as root, so as root
the server runs as the ``postgres`` system user (created by the package).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa


def find_bin(name: str) -> Path:
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3])
    )
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: run scripts/ensure-postgres.sh "
            "(make test does it)"
        )
    return Path(found[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="raccordo-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                pw = pwd.getpwnam(self.user)
            except KeyError as e:
                raise RuntimeError(
                    "running as root but there is no 'postgres' system user; "
                    "install the postgresql package"
                ) from e
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(
            [
                str(find_bin("initdb")),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        log = self.dir / "server.log"
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        try:
            self._run(
                [
                    str(find_bin("pg_ctl")),
                    "-D",
                    str(self.data),
                    "-l",
                    str(log),
                    "-o",
                    opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
        except RuntimeError as e:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{e}\nserver log:\n{tail}") from None

    def _run(self, cmd: list[str]) -> None:
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return name

    def stop(self) -> None:
        try:
            self._run(
                [str(find_bin("pg_ctl")), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
            )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
