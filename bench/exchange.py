"""Exchange benchmark: one record-level package end to end against the local load rate.

District A (SQLite registry) holds N records (N/2 people: a subject row and a case
episode each). The benchmark times:

1. **local load**: the same N rows written into a fresh SQLite registry by
   :func:`hub.exchange.load.load_records` in this process (the reference);
2. **end to end**: ``send_records`` from A to district B's ``raccordo exchange serve``
   (a separate process, its own SQLite registry) through the real pseudonymisation
   service (``raccordo pseudonymiser serve``, a separate process): extract, convert, sign,
   encrypt (HPKE), POST, verify, check the convenzione, load, receipt, cursor.

    .venv/bin/python bench/exchange.py [--records 100000]

It prints both rates and their ratio (goal: end to end >= 50% of the local load rate).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub.exchange import package as pk  # noqa: E402
from hub.exchange.convert import ServiceConverter  # noqa: E402
from hub.exchange.home import init_home  # noqa: E402
from hub.exchange.load import load_records  # noqa: E402
from hub.exchange.send import Outbox, extract_records  # noqa: E402
from hub.registry import Registry  # noqa: E402
from tests.exchange.conftest import share, sign_both, write_convenzione  # noqa: E402
from tests.exchange.support import key_district, seed  # noqa: E402

CONV = "conv-A-B-2026"
# The homes' keys are encrypted with it; the receiving process inherits it.
os.environ.setdefault("RACCORDO_EXCHANGE_PASSPHRASE", "passphrase of the bench homes")


def _cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(pids: list[int]) -> float:
    return _cpu_seconds() + sum(_cpu_seconds(p) for p in pids)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str) -> None:
    for _ in range(300):
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    args = ap.parse_args()
    people = args.records // 2
    tmp = Path(tempfile.mkdtemp(prefix="raccordo-bench-exchange-"))
    port_b, port_s = _port(), _port()
    url_a, url_b = f"sqlite:///{tmp}/a.sqlite", f"sqlite:///{tmp}/b.sqlite"
    a = init_home(tmp / "A", party="DISTRETTO_A", pseudonym_domain="DOM_A", registry_url=url_a)
    b = init_home(
        tmp / "B", party="DISTRETTO_B", pseudonym_domain="DOM_B", registry_url=url_b, port=port_b
    )
    conv = write_convenzione(tmp / "shared", a, b, endpoint_b=f"http://127.0.0.1:{port_b}")
    sign_both(conv, a, b)
    share(conv, a, b)
    reg_a = Registry.open(url_a)
    seed(reg_a, people)
    Registry.open(url_b).close()
    service_ws, token = key_district()
    procs = [
        subprocess.Popen(
            [
                *[sys.executable, "-m", "hub", "pseudonymiser", "serve"],
                *["-c", str(service_ws / "raccordo.toml"), "--port", str(port_s)],
            ],
            cwd=ROOT,
        ),
        subprocess.Popen(
            [
                str(Path(sys.executable).with_name("raccordo")),
                "exchange",
                "serve",
                "--home",
                str(b.path),
            ],
            cwd=tmp,
        ),
    ]
    try:
        _wait(f"http://127.0.0.1:{port_s}/v1/session")
        _wait(f"http://127.0.0.1:{port_b}/v1/status")
        converter = ServiceConverter(f"http://127.0.0.1:{port_s}", token=token)
        cf = a.convenzioni.get(CONV)

        # The rows as they would arrive, for the local reference.
        t0 = time.perf_counter()
        ex = extract_records(reg_a, cf, a, "DISTRETTO_B", converter, limit=args.records)
        t_extract = time.perf_counter() - t0
        n = len(ex.rows)
        # As the recipient sees them: decoded from the payload.
        received = pk.decode_payload(pk.encode_payload(ex.rows)[0])
        ref = Registry.open(f"sqlite:///{tmp}/ref.sqlite")
        pids = [p.pid for p in procs]
        c0 = _cpu(pids)
        t0 = time.perf_counter()
        counts = load_records(
            ref,
            sender="DISTRETTO_A",
            convenzione=CONV,
            convenzione_digest=cf.digest,
            package_id="0" * 32,
            rows=received,
        )
        t_local = time.perf_counter() - t0
        cpu_local = _cpu(pids) - c0
        assert counts.loaded == n, counts

        # End to end, timed as a whole and by step.
        c0 = _cpu(pids)
        per0 = [_cpu_seconds(), *(_cpu_seconds(p) for p in pids)]
        t_start = time.perf_counter()
        ex = extract_records(reg_a, cf, a, "DISTRETTO_B", converter, limit=args.records)
        t1 = time.perf_counter()
        today = dt.date.today()
        pkg = pk.build(a, cf, recipient="DISTRETTO_B", rows=ex.rows, period=(today, today))
        t2 = time.perf_counter()
        outbox = Outbox(a)
        outbox.put(pkg, ex.cursor)
        d = outbox.deliver(pkg.id)
        t_end = time.perf_counter()
        assert d.status == "accepted" and d.counts["loaded"] == n, d
        t_e2e = t_end - t_start
        cpu_e2e = _cpu(pids) - c0
        per = [
            b - a
            for a, b in zip(per0, [_cpu_seconds(), *(_cpu_seconds(p) for p in pids)], strict=True)
        ]
        reg_b = Registry.open(url_b, migrate=False)
        held = reg_b.count("subject") + reg_b.count("case_episode")
        reg_b.close()
        print(f"records: {n:,} ({people:,} people × subject + case episode); held by B: {held:,}")
        print(f"package: {len(pkg.body) / 1e6:.1f} MB sealed")
        print(f"local load (load_records, SQLite): {t_local:.2f} s = {n / t_local:,.0f} rows/s")
        print(
            f"end to end: {t_e2e:.2f} s = {n / t_e2e:,.0f} rows/s — extract + convert "
            f"{t1 - t_start:.2f} s, sign + encrypt {t2 - t1:.2f} s, "
            f"send + verify + load + receipt {t_end - t2:.2f} s "
            f"(first extract, cold: {t_extract:.2f} s)"
        )
        ratio = t_local / t_e2e
        print(f"end to end / local load, wall clock: {ratio:.0%} (goal >= 50%)")
        # CPU seconds of every process involved (this one, B's server, the service):
        # the same comparison, insensitive to other jobs on a shared machine.
        print(
            f"CPU: local load {cpu_local:.2f} s, end to end {cpu_e2e:.2f} s (all processes): "
            f"{cpu_local / cpu_e2e:.0%} — sender {per[0]:.2f} s, service {per[1]:.2f} s, "
            f"recipient {per[2]:.2f} s"
        )
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)


if __name__ == "__main__":
    main()
