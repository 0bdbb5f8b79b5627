"""Cost per *distinct* identifier of v2 pseudonyms, embedded and remote.

    .venv/bin/python bench/pseudonyms.py [--ids 20000] [--batch 10000]

* **v1 HMAC** (reference): what v1 did per identifier (HMAC-SHA256);
* **embedded**: ``Pseudonymiser(keyring).pseudonymise_many`` — hash-to-group + one
  scalar multiplication per identifier;
* **remote**: the worker's client against a real ``raccordo pseudonymiser serve`` process
  on 127.0.0.1, batches of ``--batch`` — per identifier the worker hashes, blinds and
  unblinds (two multiplications and an inversion), the service checks and multiplies once,
  plus JSON over HTTP. Both run on this machine, so the figure is their sum.

``--rotation N`` also times ``rotate_columns`` (what ``raccordo keys rotate`` runs) over a
SQLite table of N pseudonyms (random group elements of epoch 1, one per subject).

Each identifier is new to the pseudonymiser (its cache is empty): the pipeline computes
each distinct identifier once per run, so this is the cost that scales with people, not
with records.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.pseudonyms import (  # noqa: E402
    IdentifierType,
    Keyring,
    KeySource,
    Pseudonymiser,
    parse_identifier,
)
from hub.pseudonyms.identifiers import cf_check_character  # noqa: E402


def cfs(n: int) -> list[str]:
    rnd = random.Random(5)
    out: set[str] = set()
    while len(out) < n:
        first = (
            "".join(rnd.choices("BCDFGLMNPRSTVZ", k=6))
            + f"{rnd.randrange(100):02d}{rnd.choice('ABCDEHLMPRST')}{rnd.randint(1, 28):02d}"
            + f"{rnd.choice('ABCDEFGHILM')}{rnd.randrange(1000):03d}"
        )
        out.add(first + cf_check_character(first))
    return sorted(out)


def free_port() -> int:
    for port in range(18100, 18200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free port in 18100-18199")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--rotation", type=int, default=0, help="also time a rotation of N rows")
    ap.add_argument("--postgres", action="store_true", help="rotate on PostgreSQL, not SQLite")
    args = ap.parse_args()
    if args.rotation:
        bench_rotation(args.rotation, postgres=args.postgres)
    idents = [parse_identifier(c, IdentifierType.CF) for c in cfs(args.ids)]
    n = len(idents)

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        from hub.pseudonyms.service import add_client
        from hub.workspace import init_workspace

        init_workspace(ws, district="BENCH", district_name="bench", extra="")
        cfg_keys = ws / "keys"
        ring = Keyring.open(cfg_keys / "keyring.json", KeySource.from_env(cfg_keys / "keyring.key"))

        key = os.urandom(32)
        t = time.perf_counter()
        for i in idents:
            hmac.digest(key, f"v1|CF||{i.value}".encode(), hashlib.sha256)
        v1 = (time.perf_counter() - t) / n

        t = time.perf_counter()
        embedded = Pseudonymiser(ring, "BENCH").pseudonymise_many(idents)
        emb = (time.perf_counter() - t) / n

        token = add_client(
            cfg_keys / "pseudonymiser-clients.json",
            {"id": "bench", "domain": "BENCH", "daily_quota": 10 * n, "per_minute": 10 * n},
        )
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub",
                "pseudonymiser",
                "serve",
                "-c",
                str(ws / "raccordo.toml"),
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            import requests

            from hub.pseudonyms.remote import RemotePseudonymiser

            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    requests.get(url + "/v1/session", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            client = RemotePseudonymiser(url, token, batch_size=args.batch)
            t, c = time.perf_counter(), time.process_time()
            remote = client.pseudonymise_many(idents)
            rem, rem_cpu = (time.perf_counter() - t) / n, (time.process_time() - c) / n
        finally:
            proc.terminate()
            proc.wait(10)
        assert remote == embedded, "remote and embedded pseudonyms differ"

    print(f"{n:,} distinct identifiers (codici fiscali), batches of {args.batch:,}")
    print(f"  v1 HMAC-SHA256 (reference) {v1 * 1e6:8.1f} µs/id")
    print(f"  v2 embedded                {emb * 1e6:8.1f} µs/id  ({1 / emb:,.0f} ids/s)")
    print(
        f"  v2 remote (worker+service) {rem * 1e6:8.1f} µs/id  ({1 / rem:,.0f} ids/s; "
        f"worker CPU {rem_cpu * 1e6:.1f} µs/id)"
    )
    print("  remote == embedded: yes")


def bench_rotation(n: int, *, postgres: bool = False) -> None:
    import sqlalchemy as sa

    from hub.pseudonyms import group, pseudonym_text
    from hub.pseudonyms.rotation import keyring_converter, rotate_columns

    server = None
    with tempfile.TemporaryDirectory() as tmp:
        ring = Keyring.create(Path(tmp) / "k.json", KeySource(key=os.urandom(32)))
        if postgres:
            from tests.support.postgres import PostgresServer

            server = PostgresServer()
            engine = sa.create_engine(server.url(server.create_database("rotation_bench")))
            ddl = "CREATE TABLE subjects (id SERIAL PRIMARY KEY, subject VARCHAR(80))"
        else:
            engine = sa.create_engine(f"sqlite:///{tmp}/r.sqlite")
            ddl = "CREATE TABLE subjects (id INTEGER PRIMARY KEY, subject TEXT)"
        with engine.begin() as conn:
            conn.execute(sa.text(ddl))
            for start in range(0, n, 50_000):
                rows = [
                    {"s": pseudonym_text(1, group.hash_to_group(os.urandom(16)))}
                    for _ in range(min(50_000, n - start))
                ]
                conn.execute(sa.text("INSERT INTO subjects (subject) VALUES (:s)"), rows)
        to = ring.rotate()
        t = time.perf_counter()
        report = rotate_columns(
            engine, [("subjects", "subject")], keyring_converter(ring, "BENCH", to), to
        )
        took = time.perf_counter() - t
        engine.dispose()
        if server is not None:
            server.stop()
    print(
        f"rotation of {report.converted:,} pseudonyms ({'PostgreSQL' if postgres else 'SQLite'}, "
        f"batches of 10,000): {took:.1f} s "
        f"({took / n * 1e6:.1f} µs/pseudonym)"
    )


if __name__ == "__main__":
    main()
