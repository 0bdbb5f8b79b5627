"""``raccordo serve`` as real processes: never frozen by one user; several workers share
sessions and login limits. Slow: each test starts the server."""

from __future__ import annotations

import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from hub.config import Config
from tests.support.web import served, sign_in

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from web_responsive import csv_file

pytestmark = pytest.mark.slow


def test_an_upload_and_failed_logins_do_not_freeze_the_others(web_config: Config) -> None:
    data = csv_file(10_000)  # 0.74 MB; before issue 15, 1.97 MB froze /healthz for 231 s
    with served(web_config) as (base, _):
        op = requests.Session()
        assert sign_in(op, base, "op-a") == 303
        stop = threading.Event()
        latencies: list[float] = []

        def probe() -> None:
            s = requests.Session()
            while not stop.is_set():
                t0 = time.perf_counter()
                s.get(f"{base}/healthz", timeout=60)
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        page = op.get(f"{base}/caricamento", timeout=30)
        m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert m
        with ThreadPoolExecutor(20) as pool:
            logins = pool.map(
                lambda i: sign_in(requests.Session(), base, f"nobody{i}", "wrong-password"),
                range(20),
            )
            r = op.post(
                f"{base}/caricamento",
                data={"csrf_token": m.group(1)},
                files={"file": ("schede.csv", data, "text/csv")},
                allow_redirects=False,
                timeout=60,
            )
            assert set(logins) == {401}
        assert r.status_code == 303
        deadline = time.monotonic() + 300
        while 'id="upload-progress"' in (text := op.get(base + r.headers["location"]).text):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        stop.set()
        prober.join()
    assert "10.000 righe salvate, 0 rifiutate." in text
    assert len(latencies) > 20
    # Generous on a shared machine; the goal (p99 <= 100 ms) is bench/web_responsive.py's.
    assert max(latencies) < 2.0, f"/healthz took {max(latencies):.1f} s"


def test_several_workers_share_sessions_and_login_limits(web_config: Config) -> None:
    with served(web_config, workers=2) as (base, _):
        op = requests.Session()
        assert sign_in(op, base, "op-a") == 303
        # Many requests: some reach each worker; every one knows the session.
        codes = {
            op.get(f"{base}/schede", allow_redirects=False, timeout=30).status_code
            for _ in range(30)
        }
        assert codes == {200}
        attacker = [requests.Session() for _ in range(6)]  # new connections: any worker
        results = [sign_in(s, base, "op-b", "wrong-password") for s in attacker]
        assert results[:3] == [401, 401, 401] and set(results[3:]) == {429}
        # Logging out on one connection ends the session for every worker.
        page = op.get(f"{base}/schede", timeout=30)
        m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert m
        cookie = {"raccordo_session": op.cookies.get("raccordo_session") or ""}
        assert cookie["raccordo_session"]
        copy = requests.get(f"{base}/schede", cookies=cookie, allow_redirects=False, timeout=30)
        assert copy.status_code == 200
        op.post(f"{base}/logout", data={"csrf_token": m.group(1)}, timeout=30)
        for _ in range(10):
            r = requests.get(f"{base}/schede", cookies=cookie, allow_redirects=False, timeout=30)
            assert r.status_code == 303


def test_an_entry_waiting_for_a_sync_does_not_block_the_others(web_config: Config) -> None:
    """A sync's open transaction makes a web entry wait; nobody else waits with it."""
    import sqlite3

    from tests.web.conftest import CF_1, COMUNE

    path = web_config.registry_url.split(":///", 1)[1]
    with served(web_config) as (base, _):
        op = requests.Session()
        assert sign_in(op, base, "op-a") == 303
        page = op.get(f"{base}/schede/nuova", timeout=30)
        m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert m
        lock = sqlite3.connect(path, timeout=1, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # as a sync holding the write lock
        result: list[int] = []

        def submit() -> None:
            r = op.post(
                f"{base}/schede",
                data={
                    "csrf_token": m.group(1),
                    "identifier_kind": "cf",
                    "identifier": CF_1,
                    "comune": COMUNE,
                    "needs": "food",
                    "on": "2026-11-02",
                },
                allow_redirects=False,
                timeout=120,
            )
            result.append(r.status_code)

        writer = threading.Thread(target=submit)
        writer.start()
        time.sleep(1.0)
        other = requests.Session()
        t0 = time.perf_counter()
        assert other.get(f"{base}/login", timeout=30).status_code == 200
        assert other.get(f"{base}/healthz", timeout=30).status_code == 200
        assert time.perf_counter() - t0 < 2.0
        assert not result  # still waiting for the lock
        lock.execute("COMMIT")
        lock.close()
        writer.join(timeout=90)
    assert result == [303]
