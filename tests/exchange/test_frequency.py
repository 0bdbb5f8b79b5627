"""A convenzione's frequency, enforced at send and at receive (in one process).

The end-to-end scenario, with ``raccordo exchange send`` and ``serve`` as processes, is
``test_processes.py::test_a_flow_sooner_than_the_frequency_is_held_back_but_erasures_go``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hub.exchange import frequency
from hub.exchange import package as pk
from hub.exchange.errors import PackageRefused
from hub.exchange.home import Home, init_home
from hub.exchange.receive import Receiver
from hub.exchange.send import Outbox
from hub.registry import Registry
from tests.exchange.conftest import RECORD_FLOW, TODAY, share, sign_both, write_convenzione
from tests.exchange.test_package import episodes

CONV = "conv-A-B-2026"
DEC_3 = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("freq", "when", "span"),
    [
        ("daily", DEC_3, ("2026-12-03", "2026-12-04")),
        ("weekly", DEC_3, ("2026-11-30", "2026-12-07")),  # Monday to Monday
        ("monthly", DEC_3, ("2026-12-01", "2027-01-01")),
        ("monthly", dt.datetime(2026, 2, 28, 23, 59, tzinfo=dt.UTC), ("2026-02-01", "2026-03-01")),
        ("quarterly", DEC_3, ("2026-10-01", "2027-01-01")),
        ("quarterly", dt.datetime(2026, 4, 1, tzinfo=dt.UTC), ("2026-04-01", "2026-07-01")),
        ("yearly", DEC_3, ("2026-01-01", "2027-01-01")),
    ],
)
def test_periods_are_calendar_periods_in_utc(
    freq: str, when: dt.datetime, span: tuple[str, str]
) -> None:
    got = frequency.period(freq, when)
    assert got is not None
    assert (got[0].isoformat(), got[1].isoformat()) == span


def test_on_demand_sets_no_period() -> None:
    assert frequency.period("on_demand", DEC_3) is None


def _homes(tmp_path: Path, freq: str) -> tuple[Home, Home]:
    a = init_home(tmp_path / "A", party="DISTRETTO_A", pseudonym_domain="DOM_A")
    b = init_home(tmp_path / "B", party="DISTRETTO_B", pseudonym_domain="DOM_B")
    conv = write_convenzione(
        tmp_path / "shared",
        a,
        b,
        start=dt.date(2026, 1, 1),
        expiry=max(TODAY, dt.date(2027, 6, 30)) + dt.timedelta(days=400),
        flows=[{**RECORD_FLOW, "frequency": freq}],
    )
    sign_both(conv, a, b)
    share(conv, a, b)
    return a, b


def _rows(n: int = 2, start: int = 0) -> list[pk.Row]:
    return episodes(n, start)


def _build(
    a: Home,
    now: dt.datetime,
    rows: list[pk.Row] | None = None,
    flow: str | None = None,
) -> pk.Package:
    return pk.build(
        a,
        a.convenzioni.get(CONV),
        recipient="DISTRETTO_B",
        rows=_rows() if rows is None else rows,
        period=(now.date(), now.date()),
        flow=flow,
        now=now,
    )


def test_the_sender_refuses_a_second_flow_in_the_same_month(tmp_path: Path) -> None:
    a, _ = _homes(tmp_path, "monthly")
    first = _build(a, DEC_3)
    Outbox(a).put(first, None)  # pending counts: it will be delivered
    with pytest.raises(PackageRefused) as e:
        _build(a, DEC_3 + dt.timedelta(days=10), _rows(start=5))
    (reason,) = e.value.errors
    assert reason == (
        "convenzione conv-A-B-2026 lets records flow from DISTRETTO_A to DISTRETTO_B once a "
        f"calendar month: a flow already went on 2026-12-03 (package {first.id[:12]}); the next "
        "may go from 2027-01-01 (erasures go at once)"
    )
    refused = [x for x in a.log.entries() if x["kind"] == "refused"]
    assert refused and refused[-1]["reason"] == reason and refused[-1]["direction"] == "out"
    # The same sending run goes on (several packages, one flow) ...
    second = _build(a, DEC_3 + dt.timedelta(minutes=5), _rows(start=5), flow=first.id)
    assert second.manifest["flow"] == first.id
    # ... but not for ever: a flow lasts a day at most.
    with pytest.raises(PackageRefused, match="started more than a day before it"):
        _build(a, DEC_3 + dt.timedelta(days=2), _rows(start=7), flow=first.id)
    with pytest.raises(PackageRefused, match="is not known here"):
        _build(a, DEC_3, _rows(start=7), flow="0" * 32)
    # Erasures go at once, and the next month a new flow may go.
    _build(a, DEC_3 + dt.timedelta(days=1), [pk.Row("case_episode", "key0", {}, "delete")])
    _build(a, dt.datetime(2027, 1, 1, 0, 5, tzinfo=dt.UTC), _rows(start=9))


def test_refused_and_expired_packages_use_up_nothing(tmp_path: Path) -> None:
    a, _ = _homes(tmp_path, "monthly")
    outbox = Outbox(a)
    for state in ("refused", "expired"):
        p = _build(a, DEC_3)
        outbox.put(p, None)
        _, meta = outbox.load(p.id)
        meta["state"] = state
        outbox._save(p.id, meta)
    _build(a, DEC_3 + dt.timedelta(days=1))


def test_on_demand_lets_every_flow_go(tmp_path: Path) -> None:
    a, _ = _homes(tmp_path, "on_demand")
    for i in range(3):
        Outbox(a).put(_build(a, DEC_3 + dt.timedelta(minutes=i), _rows(start=i)), None)


def test_the_recipient_refuses_a_second_flow_the_same_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Times near now: the recipient checks the JWS validity (7 days) against its clock.
    a, b = _homes(tmp_path, "daily")
    receiver = Receiver(b, Registry.open(f"sqlite:///{tmp_path}/b.sqlite"))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def lawless(*args: object, **kwargs: object) -> pk.Package:
        """A sender that does not keep the rule: only the recipient's check is left."""
        with monkeypatch.context() as m:
            m.setattr(frequency, "refusal", lambda *a, **k: None)
            return _build(*args, **kwargs)  # type: ignore[arg-type]

    yesterday = _build(a, now - dt.timedelta(hours=26))
    today = _build(a, now - dt.timedelta(minutes=1), _rows(start=2))
    for p in (yesterday, today):
        Outbox(a).put(p, None)
        status, receipt = receiver.handle(p.headers, p.body)
        assert status == 200, receipt
    sneaky = lawless(a, now, _rows(start=4))
    status, receipt = receiver.handle(sneaky.headers, sneaky.body)
    assert status == 422
    day = today.manifest["created_at"][:10]
    next_day = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    assert receipt["reasons"] == [
        "convenzione conv-A-B-2026 lets records flow from DISTRETTO_A to DISTRETTO_B once a "
        f"day: a flow already went on {day} (package {today.id[:12]}); the next may go from "
        f"{next_day} (erasures go at once)"
    ]
    assert b.log.entries()[-1]["kind"] == "refused"
    # A package that claims to continue a flow that started more than a day before.
    liar = lawless(a, now, _rows(start=6), flow=yesterday.id)
    status, receipt = receiver.handle(liar.headers, liar.body)
    assert status == 422 and "started more than a day before it" in receipt["reasons"][0]
    # The same run goes on, and an erasure goes at once.
    for p in (
        _build(a, now, _rows(start=8), flow=today.id),
        _build(a, now, [pk.Row("case_episode", "key0", {}, "delete")]),
    ):
        status, receipt = receiver.handle(p.headers, p.body)
        assert status == 200, receipt
    received = [e for e in b.log.entries() if e["kind"] == "received"]
    flows = [yesterday.id, today.id, today.id, received[3]["package"]]
    assert [e["flow"] for e in received] == flows
    assert [e["erasure_only"] for e in received] == [False, False, False, True]
