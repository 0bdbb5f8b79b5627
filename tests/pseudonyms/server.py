"""A real ``raccordo pseudonymiser serve`` process on 127.0.0.1 for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests


def free_port() -> int:
    """A free port chosen by the kernel (port 0): two test workers, or two test runs on one
    machine, never race for the same one as they would scanning a fixed range."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    url: str
    log_dir: Path
    stderr: Path
    process: subprocess.Popen[bytes]


@contextmanager
def running_service(ws: Path, *, env: dict[str, str] | None = None) -> Iterator[Service]:
    """Serve ``ws``'s keyring and clients file; logs in ``ws/logs/pseudonymiser``."""
    port = free_port()
    stderr = ws / "pseudonymiser.stderr"
    cmd = [sys.executable, "-m", "hub", "pseudonymiser", "serve", "-c", str(ws / "raccordo.toml")]
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)],
            stdout=err,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                requests.get(url + "/v1/session", timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "the pseudonymisation service did not start:\n" + stderr.read_text()
                    ) from None
                time.sleep(0.2)
        yield Service(url, ws / "logs" / "pseudonymiser", stderr, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
