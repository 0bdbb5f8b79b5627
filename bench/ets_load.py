"""Load benchmark of the Third Sector intake: concurrent submissions to a running server.

Starts ``raccordo serve`` (uvicorn, one process) on a temporary workspace with a
SQLite registry, then sends N entries through the JSON API from C concurrent
clients (each entry once, plus a share re-sent as a client retry would), and
prints lost / duplicated counts and latency percentiles.

    .venv/bin/python bench/ets_load.py [--entries 200] [--concurrency 200] [--resend 0.1]
        [--workers 1] [--rate 0] [--py-spy FILE]

By default each client sends its next entry as soon as the last is answered (closed
loop: the server is saturated); ``--rate R`` makes submissions due at R per second in
all (open loop), latency counted from each one's due time. Beside the latency it prints
the CPU time per submission of the server and of the load generator (both on this
machine), and what that CPU allows at most. ``--py-spy FILE`` profiles the server.

A benchmark, not a test: it prints figures; the goal (0 lost, 0 duplicated,
p95 <= 100 ms on the project machine) is read by a person.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub.demo.people import codice_fiscale  # noqa: E402
from hub.registry import Registry  # noqa: E402
from hub.registry import tables as t  # noqa: E402
from hub.web import accounts  # noqa: E402
from tests.support.leakscan import scan_database, scan_paths  # noqa: E402
from tests.support.web import free_port, process_tree_cpu, web_workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--resend", type=float, default=0.1, help="share of entries sent twice")
    ap.add_argument("--workers", type=int, default=1, help="worker processes of raccordo serve")
    ap.add_argument(
        "--rate",
        type=float,
        default=0,
        help="open loop: submissions per second in all (0: each client sends as soon as its "
        "last submission is answered); latency then counts from each submission's due time",
    )
    ap.add_argument(
        "--py-spy",
        metavar="FILE",
        help="profile the server with py-spy (pip install py-spy) into FILE (raw stacks)",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = web_workspace(Path(tmp) / "ws")
        engine = Registry.open(cfg.registry_url).engine
        token = accounts.create_token(engine, "ETS-A", "bench")
        port = free_port()
        log = (cfg.base_dir / "server.log").open("w")
        prefix = []
        if args.py_spy:
            spy = str(Path(sys.executable).parent / "py-spy")
            prefix = [spy, "record", "--format", "raw", "--rate", "250", "-o", args.py_spy, "--"]
        server = subprocess.Popen(
            [
                *prefix,
                str(Path(sys.executable).parent / "raccordo"),
                "serve",
                "--config",
                str(cfg.path),
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
            start_new_session=True,  # its own process group, stopped whole at the end
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{base}/healthz", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.1)
            bodies = []
            for i in range(args.entries):
                cf = codice_fiscale(
                    "Bench",
                    f"Persona{i}",
                    dt.date(1950 + i % 50, 1 + i % 12, 1 + i % 28),
                    "FM"[i % 2],
                    "F952",
                )
                bodies.append(
                    {
                        "entry_id": str(uuid.uuid4()),
                        "identifier_kind": "cf",
                        "identifier": cf,
                        "comune_istat": "003106",
                        "needs": ["food"],
                        "services_given": ["food_parcel"],
                        "on": "2026-11-01",
                    }
                )
            sends = bodies + bodies[: int(len(bodies) * args.resend)]
            headers = {"Authorization": f"Bearer {token}"}
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=args.concurrency)
            session.mount("http://", adapter)

            def send(item: tuple[int, dict[str, object]]) -> tuple[float, int]:
                i, body = item
                due = time.perf_counter()
                if args.rate:
                    due = start + i / args.rate
                    time.sleep(max(0.0, due - time.perf_counter()))
                r = session.post(f"{base}/api/v1/entries", json=body, headers=headers, timeout=60)
                return (time.perf_counter() - due) * 1000, r.status_code

            if args.rate:  # the re-sent entries come back later, not at the end
                sends = [sends[i] for i in random.Random(1).sample(range(len(sends)), len(sends))]
            start = time.perf_counter() + 0.2  # the first submission's due time
            cpu0 = process_tree_cpu(server.pid)
            client0 = time.process_time()
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                results = list(pool.map(send, enumerate(sends)))
            wall = time.perf_counter() - t0
            server_cpu = process_tree_cpu(server.pid) - cpu0
            client_cpu = time.process_time() - client0
        finally:
            if args.py_spy:
                server.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            else:
                server.terminate()
            server.wait(timeout=60)
            with contextlib.suppress(ProcessLookupError):  # what py-spy may leave behind
                os.killpg(server.pid, signal.SIGTERM)
        with engine.connect() as conn:
            stored = conn.execute(sa.select(t.ets_entries.c.entry_uuid)).scalars().all()
        sent_ids = {b["entry_id"] for b in bodies}
        lost = len(sent_ids - set(stored))
        duplicated = len(stored) - len(set(stored))
        lat = sorted(ms for ms, _ in results)
        codes: dict[int, int] = {}
        for _, c in results:
            codes[c] = codes.get(c, 0) + 1

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))]

        print(
            f"entries: {args.entries} unique + {len(sends) - len(bodies)} re-sent, "
            f"concurrency {args.concurrency}, "
            f"{f'open loop at {args.rate:g}/s' if args.rate else 'closed loop'}, "
            f"workers {args.workers}, wall {wall:.2f} s "
            f"({len(sends) / wall:.0f} req/s)"
        )
        print(f"status codes: {dict(sorted(codes.items()))}")
        print(
            f"server CPU (all worker processes): {server_cpu * 1000 / len(sends):.2f} ms "
            "per submission (goal <= 1 ms)"
        )
        print(
            f"load generator CPU (this process): {client_cpu * 1000 / len(sends):.2f} ms "
            "per submission"
        )
        print(f"lost: {lost}   duplicated: {duplicated}   stored: {len(stored)}")
        print(
            f"latency ms: p50 {pct(50):.1f}  p95 {pct(95):.1f}  p99 {pct(99):.1f}  "
            f"max {lat[-1]:.1f}  mean {statistics.mean(lat):.1f}"
        )
        print(f"goal p95 <= 100 ms: {'met' if pct(95) <= 100 else 'NOT met'}")
        # Closed loop: each client sends its next entry when the last is answered, so the
        # mean latency is concurrency / throughput (Little's law) whatever the server does;
        # server and load generator share the machine's cores.
        per_request = (server_cpu + client_cpu) / len(sends)
        cores = os.cpu_count() or 1
        if not args.rate:
            print(
                f"bound on this machine: {cores} cores / {per_request * 1000:.2f} ms CPU per "
                f"request (server + load generator) = {cores / per_request:.0f} req/s at most, "
                f"so once all {args.concurrency} clients are sending (entries >> concurrency) "
                f"a mean latency of at least {args.concurrency * per_request / cores * 1000:.0f} ms"
            )
        log.close()
        cfs = [str(b["identifier"]) for b in bodies]
        leaks = scan_paths([cfg.base_dir], values=cfs) + scan_database(cfg.registry_url, values=cfs)
        print(f"leak scan of the workspace (database, server log): {len(leaks)} clear identifiers")


if __name__ == "__main__":
    main()
