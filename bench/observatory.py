"""Observatory query speed on a large registry, on SQLite and on PostgreSQL.

    .venv/bin/python bench/observatory.py [--subjects 1000000] [--db sqlite|postgres|both]
                                          [--no-live] [--refresh-only]

Builds a synthetic registry of N subjects, 5·N interventions, N case episodes,
N/5 assessments and N/5 Third Sector contacts by **bulk insert with SQLAlchemy
Core executemany** (not through the pipeline: ingestion speed is
bench/ingest.py's subject; here only the query side matters). Pseudonyms are
random tokens of the registry's shape, not derived from any identifier.

Then it times ``refresh(engine)`` (the pre-computed tables, run after each
sync), then a refresh of only the (organisation × year) slices touched by a sync
of one consortium changing 1% of the records (its interventions of the last full
year; then the same spread over every year), as a share of the full refresh, and
every query the dashboard calls, for the last full year, for the
district and for single organisations, each the median of 5 runs:

* from the pre-computed tables (what the dashboard gets while no sync ran
  since the last refresh) — goal ≤ 300 ms each;
* computed live from the registry (``use_cache=False``, one run each; what a
  period that is not a calendar year costs) unless ``--no-live``.

PostgreSQL runs on a throw-away local cluster (tests/support/postgres.py).
Figures and how to read them: docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from hub.observatory import indicators as ind  # noqa: E402
from hub.observatory.aggregates import refresh, touched_months  # noqa: E402
from hub.observatory.disclosure import Ledger, protect  # noqa: E402
from hub.observatory.table import Period  # noqa: E402
from hub.registry import Registry  # noqa: E402
from hub.registry import tables as t  # noqa: E402

CONSORTIA = ["CISS-A", "CISS-B", "CISS-C", "CONS-D", "CONS-E", "COMUNE-F"]
ETS = ["ETS-1", "ETS-2", "ETS-3", "ETS-4"]
AREAS = {
    "FAM": ["A1.01", "A2.02", "A2.06"],
    "DIS": ["A1.09", "A1.16", "B1.01"],
    "ADD": ["A1.01", "A2.12"],
    "ELD": ["A2.14", "A2.15", "C1.02"],
    "IMMNOM": ["A2.08"],
    "POV": ["A1.02", "A2.10", "A2.16"],
    "MULBEN": ["A1.01"],
}
NEEDS = ["economic", "housing", "work", "food", "health", "loneliness", "family", "legal"]
SERVICES = ["food_parcel", "clothing", "listening", "housing_support", "job_orientation"]
COMUNI = [f"003{n:03d}" for n in range(1, 41)]
FIRST, LAST = 2019, 2024
BATCH = 50_000


def pseudonym(i: int) -> int:
    # Storage v2: a person is an integer (the id of its row in ``pseudonyms``; the queries
    # never read the pseudonym itself, so those rows are not written here).
    return i + 1


def _common(org: str, i: int, now: dt.datetime) -> dict[str, Any]:
    del now  # rows name their run (run 1), which carries the time
    return {
        "org": org,
        "key_hash": i.to_bytes(16, "big"),
        "source_record": i + 1,
        "run_id": 1,
    }


def _day(rng: random.Random) -> dt.date:
    return dt.date(FIRST, 1, 1) + dt.timedelta(days=rng.randint(0, (LAST - FIRST + 1) * 365 - 1))


def _batches(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for r in rows:
        batch.append(r)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def build(engine: sa.Engine, n: int, seed: int = 7) -> dict[str, float]:
    """Fill an empty registry; returns seconds per table."""
    rng = random.Random(seed)
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    timings: dict[str, float] = {}
    home = [CONSORTIA[rng.randrange(len(CONSORTIA))] for _ in range(n)]

    def subjects() -> Iterator[dict[str, Any]]:
        for i in range(n):
            yield {
                **_common(home[i], i, now),
                "subject": pseudonym(i),
                "household": 10_000_000 + i // 3,
                "birth_year": rng.randint(1925, 2022),
                "sex": rng.choice("FM"),
                "residence_comune_istat": rng.choice(COMUNI),
            }
        # 5% of people are also known to a second consortium (same district pseudonym).
        for j, i in enumerate(range(0, n, 20)):
            other = CONSORTIA[(CONSORTIA.index(home[i]) + 1) % len(CONSORTIA)]
            yield {
                **_common(other, n + j, now),
                "subject": pseudonym(i),
                "household": None,
                "birth_year": None,
                "sex": None,
                "residence_comune_istat": None,
            }

    def episodes() -> Iterator[dict[str, Any]]:
        for i in range(n):
            opened = _day(rng)
            closed = (
                opened + dt.timedelta(days=rng.randint(30, 900)) if rng.random() < 0.6 else None
            )
            yield {
                **_common(home[i], i, now),
                "subject": pseudonym(i),
                "area": rng.choice(list(AREAS)),
                "opened_on": opened,
                "closed_on": closed,
            }

    def assessments() -> Iterator[dict[str, Any]]:
        for j, i in enumerate(range(0, n, 5)):
            yield {
                **_common(home[i], j, now),
                "subject": pseudonym(i),
                "assessed_on": _day(rng),
                "valid_until": None,
                "disability": rng.random() < 0.5,
                "non_self_sufficient": rng.random() < 0.3,
            }

    def interventions() -> Iterator[dict[str, Any]]:
        areas = list(AREAS)
        for j in range(5 * n):
            i = rng.randrange(n)
            area = rng.choice(areas)
            start = _day(rng)
            yield {
                **_common(home[i], j, now),
                "subject": pseudonym(i),
                "service_code": rng.choice(AREAS[area]),
                "area": area,
                "started_on": start,
                "ended_on": start + dt.timedelta(days=rng.randint(0, 365))
                if rng.random() < 0.7
                else None,
                "amount": Decimal(rng.randint(0, 500_000)) / 100 if rng.random() < 0.8 else None,
                "amount_co_paid": None,
                "comune_istat": rng.choice(COMUNI),
            }

    def need_signals() -> Iterator[dict[str, Any]]:
        for j in range(n // 5):
            roll = rng.random()
            subject = (
                pseudonym(rng.randrange(n))
                if roll < 0.3
                else (pseudonym(n + rng.randrange(n // 10 + 1)) if roll < 0.7 else None)
            )
            yield {
                **_common(ETS[j % len(ETS)], j, now),
                "subject": subject,
                "needs": "|".join(rng.sample(NEEDS, rng.randint(1, 3))),
                "services_given": "|".join(rng.sample(SERVICES, rng.randint(0, 2))),
                "comune_istat": rng.choice(COMUNI),
                "on": _day(rng),
                "referred_by_social_services": rng.random() < 0.2,
                "birth_year": None,
                "sex": None,
            }

    with engine.begin() as conn:
        conn.execute(
            t.districts.insert().values(code="BENCH", name="Bench", pseudonym_domain="BENCH")
        )
        conn.execute(
            t.organisations.insert(),
            [{"code": c, "name": c, "kind": "ente_gestore", "district": "BENCH"} for c in CONSORTIA]
            + [{"code": c, "name": c, "kind": "ets", "district": "BENCH"} for c in ETS],
        )
        conn.execute(
            t.runs.insert().values(
                id=1,
                connector="bench",
                connector_type="bench",
                org="BENCH",
                mapping="bench",
                mapping_version="1",
                started_at=now,
                finished_at=now,
                status="succeeded",
            )
        )
    for name, table, rows in (
        ("subjects", t.subjects, subjects()),
        ("case_episodes", t.case_episodes, episodes()),
        ("assessments", t.assessments, assessments()),
        ("interventions", t.interventions, interventions()),
        ("need_signals", t.need_signals, need_signals()),
    ):
        start = time.perf_counter()
        for batch in _batches(rows):
            with engine.begin() as conn:
                conn.execute(table.insert(), batch)
        timings[name] = time.perf_counter() - start
        print(f"  inserted {name} in {timings[name]:.0f} s", flush=True)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    return timings


def queries(year: int) -> dict[str, Callable[[sa.Engine, bool], object]]:
    p = Period.year(year)
    org, ets = CONSORTIA[0], ETS[0]
    return {
        "prese in carico, district": lambda e, c: ind.prese_in_carico_table(e, year, use_cache=c),
        "prese in carico, one org": lambda e, c: ind.prese_in_carico_table(
            e, year, org=org, use_cache=c
        ),
        "interventions by area, district": lambda e, c: ind.interventions(e, p, use_cache=c),
        "interventions by SIUSS code, district": lambda e, c: ind.interventions(
            e, p, by="service", use_cache=c
        ),
        "interventions by area, one org": lambda e, c: ind.interventions(
            e, p, org=org, use_cache=c
        ),
        "Third Sector by comune and month, district": lambda e, c: ind.third_sector(
            e, p, use_cache=c
        ),
        "Third Sector, one entity": lambda e, c: ind.third_sector(e, p, org=ets, use_cache=c),
        "overlaps": lambda e, c: ind.overlaps(e, p, use_cache=c),
        "data-provider coverage": lambda e, c: ind.coverage(e, p, use_cache=c),
    }


def _ms(value: float) -> str:
    """A duration in the tables (``--no-live`` leaves the live column empty)."""
    return "" if math.isnan(value) else f"{value:,.0f} ms"


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def touch(engine: sa.Engine, share: float, spread: bool, seed: int = 11) -> int:
    """A sync of one consortium (one run) changing ``share`` of the registry's records:
    interventions of ``CONSORTIA[0]`` started in the last full year (``spread``: in any
    year) get a new amount. Returns the number of rows changed."""
    rng = random.Random(seed)
    iv = t.interventions
    with engine.connect() as conn:
        total = sum(
            int(conn.execute(sa.select(sa.func.count()).select_from(tb)).scalar() or 0)
            for tb in t.RECORD_TABLES.values()
        )
        q = sa.select(iv.c.id).where(iv.c.org == CONSORTIA[0])
        if not spread:
            q = q.where(
                iv.c.started_on >= dt.date(LAST - 1, 1, 1),
                iv.c.started_on <= dt.date(LAST - 1, 12, 31),
            )
        ids = [int(i) for (i,) in conn.execute(q)]
    want = min(len(ids), round(total * share))
    chosen = rng.sample(ids, want)
    now = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        # build() inserted run 1 with an explicit id (a PostgreSQL sequence did not move).
        next_id = int(conn.execute(sa.select(sa.func.max(t.runs.c.id))).scalar() or 0) + 1
        run_id = int(
            conn.execute(
                t.runs.insert()
                .values(
                    id=next_id,
                    connector="bench", connector_type="bench", org=CONSORTIA[0], mapping="bench",
                    mapping_version="1", started_at=now, finished_at=now, status="succeeded",
                )
                .returning(t.runs.c.id)
            ).scalar_one()
        )  # fmt: skip
        for k in range(0, len(chosen), 900):
            conn.execute(
                iv.update()
                .where(iv.c.id.in_(chosen[k : k + 900]))
                .values(amount=iv.c.amount + 1, run_id=run_id)
            )
    print(f"  sync touching {want:,} of {total:,} records ({want / total:.1%})", flush=True)
    return want


def refresh_ratio(engine: sa.Engine, full_s: float, spread: bool) -> None:
    """Time a refresh of only the slices a 1% sync touched, against ``full_s``."""
    touch(engine, 0.01, spread)
    start = time.perf_counter()
    work = touched_months(engine)
    found = time.perf_counter() - start
    assert work is not None
    stored = refresh(engine, touched=work)
    took = time.perf_counter() - start
    months = sum(len(v) for v in work.months.values())
    years = sorted(work.years())
    print(
        f"  refresh of the touched months ({months} (organisation, month) slices, years "
        f"{years}; prese in carico recomputed for {len(work.pic)} (organisation, year)): "
        f"{took:.1f} s ({found:.1f} s finding them), {stored} rows; "
        f"**{took / full_s:.1%} of the full refresh** ({full_s:.1f} s)",
        flush=True,
    )


def period_queries() -> dict[str, Period]:
    """A quarter and a custom range of whole months across a year end."""
    return {
        f"Q2 {LAST - 1}": Period(dt.date(LAST - 1, 4, 1), dt.date(LAST - 1, 6, 30)),
        f"Nov {LAST - 2} – Feb {LAST - 1}": Period(
            dt.date(LAST - 2, 11, 1), dt.date(LAST - 1, 2, 28)
        ),
    }


def any_period(engine: sa.Engine, live: bool) -> None:
    """The dashboard's queries for periods that are not calendar years, from the monthly
    aggregates (median of 5; goal ≤ 300 ms each) and live (one run) unless ``live`` is off."""
    org = CONSORTIA[0]
    print("\n| query (any period of whole months) | period | from the months, median of 5 | live |")
    print("|---|---|---|---|")
    for label, p in period_queries().items():
        qs: dict[str, Callable[[bool], object]] = {
            "interventions by area, district": lambda c, p=p: ind.interventions(
                engine, p, use_cache=c
            ),
            "interventions by SIUSS code, district": lambda c, p=p: ind.interventions(
                engine, p, by="service", use_cache=c
            ),
            "interventions by area, one org": lambda c, p=p: ind.interventions(
                engine, p, org=org, use_cache=c
            ),
            "Third Sector, district": lambda c, p=p: ind.third_sector(engine, p, use_cache=c),
            "overlaps": lambda c, p=p: ind.overlaps(engine, p, use_cache=c),
            "data-provider coverage": lambda c, p=p: ind.coverage(engine, p, use_cache=c),
        }
        assert ind.monthly_span(engine, p, None) is not None, "the months do not cover it"
        for name, q in qs.items():
            ms = _median_ms(lambda q=q: q(True), 5)  # type: ignore[misc]
            live_ms = _median_ms(lambda q=q: q(False), 1) if live else float("nan")  # type: ignore[misc]
            print(f"| {name} | {label} | {ms:,.0f} ms | {_ms(live_ms)} |", flush=True)
        ms = _median_ms(lambda p=p: ind.release_tables(engine, p), 5)  # type: ignore[misc]
        print(f"| every table of the district release | {label} | {ms:,.0f} ms | |")
        sensitive = [tb for tb in ind.release_tables(engine, p) if tb.sensitive]
        ms = _median_ms(lambda s=sensitive: protect(s, 5, Ledger()), 5)  # type: ignore[misc]
        print(
            f"| disclosure control of that release ({len(sensitive)} tables) | {label} "
            f"| {ms:,.0f} ms | |"
        )


def run(url: str, n: int, live: bool, touched_only: bool = False) -> None:
    print(f"\n## {url.split(':')[0]} — {n:,} subjects, {5 * n:,} interventions", flush=True)
    reg = Registry.open(url)
    engine = reg.engine
    build(engine, n)
    start = time.perf_counter()
    stored = refresh(engine)
    full_s = time.perf_counter() - start
    print(f"  refresh(engine): {full_s:.1f} s ({stored} rows)", flush=True)
    with engine.connect() as conn:
        n_months = conn.execute(sa.select(sa.func.count()).select_from(t.obs_months)).scalar()
        size = conn.execute(sa.select(sa.func.sum(sa.func.length(t.obs_months.c.people)))).scalar()
    print(f"  monthly aggregates: {n_months:,} rows, bitmaps {int(size or 0) / 2**20:.1f} MiB")
    refresh_ratio(engine, full_s, spread=False)
    refresh_ratio(engine, full_s, spread=True)
    any_period(engine, live and not touched_only)
    if touched_only:
        reg.close()
        return
    year = LAST - 1
    print(f"\n| query ({year}) | pre-computed, median of 5 | live |")
    print("|---|---|---|")
    for name, q in queries(year).items():
        cached = _median_ms(lambda q=q: q(engine, True), 5)  # type: ignore[misc]
        live_ms = _median_ms(lambda q=q: q(engine, False), 1) if live else float("nan")  # type: ignore[misc]
        print(f"| {name} | {cached:,.0f} ms | {_ms(live_ms)} |", flush=True)
    release = ind.release_tables(engine, Period.year(year))
    ms = _median_ms(lambda: protect([tb for tb in release if tb.sensitive], 5, Ledger()), 5)
    print(
        f"| disclosure control of the district release ({len(release)} tables) | {ms:,.0f} ms | |"
    )
    ms = _median_ms(lambda: ind.release_tables(engine, Period.year(year)), 5)
    print(f"| every table of the district release | {ms:,.0f} ms | |", flush=True)
    reg.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--subjects", type=int, default=1_000_000)
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--no-live", action="store_true", help="skip the live (uncached) timings")
    ap.add_argument(
        "--refresh-only",
        action="store_true",
        help="only the refreshes (full, after a 1%% sync) and the any-period queries from the "
        "monthly aggregates (no calendar-year or live timings)",
    )
    args = ap.parse_args()
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="raccordo-bench-") as d:
            run(
                f"sqlite:///{d}/registry.sqlite", args.subjects, not args.no_live, args.refresh_only
            )
    if args.db in ("postgres", "both"):
        from tests.support.postgres import PostgresServer

        server = PostgresServer()
        try:
            run(
                server.url(server.create_database()),
                args.subjects,
                not args.no_live,
                args.refresh_only,
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
