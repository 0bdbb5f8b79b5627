"""Is the web app still answering while it works? ``/healthz`` latency under load.

Starts ``raccordo serve`` on a temporary workspace, then, at the same time:
an ETS operator uploads a CSV file of about 2 MB (pseudonymised and stored by the
background job), and 20 clients try wrong passwords; meanwhile ``/healthz`` is
asked every 20 ms. Prints its latency percentiles over the whole run.

    .venv/bin/python bench/web_responsive.py [--rows 26500] [--logins 20] [--workers 1]

A benchmark, not a test: the goal (p99 <= 100 ms) is read by a person.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub.demo.people import codice_fiscale  # noqa: E402
from tests.support.web import served, sign_in, web_workspace  # noqa: E402


def csv_file(rows: int) -> bytes:
    lines = [
        "Tipo identificativo;Identificativo;Comune;Bisogni;Servizi offerti;Data;"
        "Inviato dai servizi sociali;Anno di nascita;Sesso"
    ]
    for i in range(rows):
        if i % 2:
            cf = codice_fiscale(
                "Carico",
                f"Persona{i}",
                dt.date(1940 + i % 60, 1 + i % 12, 1 + i % 28),
                "FM"[i % 2],
                "F952",
            )
            lines.append(f"cf;{cf};003106;Alimentare|Abitativo;Pacco alimentare;20/11/2026;no;;")
        else:
            lines.append("nessuno;;Novara;Lavoro;Ascolto, orientamento;2026-11-20;sì;1970;F")
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=26_500, help="rows of the CSV (26,500 ≈ 1.96 MB)")
    ap.add_argument("--logins", type=int, default=20, help="concurrent failed logins")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    data = csv_file(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = web_workspace(Path(tmp) / "ws")
        with served(cfg, workers=args.workers) as (base, _pid):
            op = requests.Session()
            assert sign_in(op, base, "op-a") == 303
            stop = threading.Event()
            latencies: list[float] = []

            def probe() -> None:
                s = requests.Session()
                while not stop.is_set():
                    t0 = time.perf_counter()
                    s.get(f"{base}/healthz", timeout=60)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.02)

            def bad_login(i: int) -> int:
                return sign_in(requests.Session(), base, f"nobody{i}", "wrong-password")

            prober = threading.Thread(target=probe)
            prober.start()
            t0 = time.perf_counter()
            page = op.get(f"{base}/caricamento", timeout=30)
            m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert m
            with ThreadPoolExecutor(args.logins) as pool:
                logins = pool.map(bad_login, range(args.logins))
                r = op.post(
                    f"{base}/caricamento",
                    data={"csrf_token": m.group(1)},
                    files={"file": ("schede.csv", data, "text/csv")},
                    allow_redirects=False,
                    timeout=120,
                )
                codes = sorted(set(logins))
            assert r.status_code == 303, (r.status_code, r.text[-600:])
            job = f"{base}{r.headers['location']}"
            while 'id="upload-progress"' in (text := op.get(job, timeout=60).text):
                time.sleep(0.5)
            wall = time.perf_counter() - t0
            stop.set()
            prober.join()
        lat = sorted(latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))]

        summary = re.search(r'id="upload-summary">\s*([^<]+)', text)
        print(
            f"upload: {len(data) / 1e6:.2f} MB, {args.rows} rows, done in {wall:.1f} s: "
            f"{summary.group(1).strip() if summary else '?'}"
        )
        print(f"failed logins: {args.logins} concurrent, answers {codes}; workers {args.workers}")
        print(
            f"/healthz latency ms over {len(lat)} probes: p50 {pct(50):.1f}  p95 {pct(95):.1f}  "
            f"p99 {pct(99):.1f}  max {lat[-1]:.1f}  mean {statistics.mean(lat):.1f}"
        )
        print(f"goal p99 <= 100 ms: {'met' if pct(99) <= 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
