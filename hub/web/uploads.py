"""CSV uploads of Third Sector entries, read in a worker process as a background job.

The web worker only stores the file's bytes in a job and answers at once; a
separate process (lower priority) parses, checks, pseudonymises and stores the
rows in batches, writing its progress and the final report (one line per row,
never an identifier) to the shared state store, where any web worker can show it.

The file may name its columns by the template's Italian labels or by their
internal names, write dates as ``dd/mm/yyyy`` or ``yyyy-mm-dd``, and give needs
and services by their Italian labels or codes.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import logging
import os
import pickle
import subprocess
import sys
import unicodedata
import uuid
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from hub.config import Config
from hub.web import intake
from hub.web.i18n import gettext
from hub.web.labels import CSV_COLUMNS, NEED_LABELS, SERVICE_LABELS

#: Italian header of each column in the template (message ids translated at use).
COLUMN_LABELS = {
    "tipo_identificativo": "Identifier type",
    "identificativo": "Identifier",
    "comune_istat": "Comune",
    "bisogni": "Needs",
    "servizi": "Services given",
    "data": "Date",
    "inviato_dai_servizi": "Referred by the social services",
    "anno_nascita": "Birth year",
    "sesso": "Sex",
}
KIND_WORDS = {
    "cf": "cf",
    "codice fiscale": "cf",
    "stp_eni": "stp_eni",
    "stp": "stp_eni",
    "eni": "stp_eni",
    "stp/eni": "stp_eni",
    "none": "none",
    "nessuno": "none",
    "non disponibile": "none",
    "": "none",
}
YES = {"1", "si", "sì", "s", "yes", "true", "vero", "x"}
BATCH = 200


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.strip().casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.replace("_", " ").split())


def header_map() -> dict[str, str]:
    out = {_norm(c): c for c in CSV_COLUMNS}
    out |= {_norm(gettext(label)): c for c, label in COLUMN_LABELS.items()}
    out |= {_norm(label): c for c, label in COLUMN_LABELS.items()}
    return out


def _vocabulary(labels: dict[Any, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for code, label in labels.items():
        out[_norm(code.value)] = code.value
        out[_norm(gettext(label))] = code.value
    return out


def parse_date(value: str) -> str | None:
    value = value.strip()
    if not value:
        return dt.date.today().isoformat()
    for fmt in ("%d/%m/%Y", "%Y-%m-%d", "%d-%m-%Y", "%d.%m.%Y"):
        with contextlib.suppress(ValueError):
            return dt.datetime.strptime(value, fmt).date().isoformat()
    return None


def template_rows(first_comune: str) -> list[list[str]]:
    header = [gettext(COLUMN_LABELS[c]) for c in CSV_COLUMNS]
    food = gettext(NEED_LABELS[next(n for n in NEED_LABELS if n.value == "food")])
    housing = gettext(NEED_LABELS[next(n for n in NEED_LABELS if n.value == "housing")])
    parcel = gettext(SERVICE_LABELS[next(s for s in SERVICE_LABELS if s.value == "food_parcel")])
    today = dt.date.today().strftime("%d/%m/%Y")
    return [
        header,
        ["nessuno", "", first_comune, f"{food}|{housing}", parcel, today, "no", "1980", "F"],
    ]


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def check_rows(
    data: bytes, *, org: str, comuni: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[tuple[int, intake.EntryInput]]]:
    """Problems found by reading (line, message) and the entries to prepare, in order."""
    text = _decode(data)
    sample = text[:2000]
    delimiter = ";" if sample.count(";") >= sample.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    headers = header_map()
    try:
        first = next(reader)
    except StopIteration:
        return [{"line": 1, "ok": False, "message": gettext("The file is empty.")}], []
    columns = [headers.get(_norm(h)) for h in first]
    missing = [c for c in CSV_COLUMNS if c not in columns and c not in ("anno_nascita", "sesso")]
    if missing:
        names = ", ".join(f"«{gettext(COLUMN_LABELS[c])}»" for c in missing)
        return [
            {
                "line": 1,
                "ok": False,
                "message": gettext("Missing columns: ")
                + names
                + ". "
                + gettext("Download the template and keep its first line."),
            }
        ], []
    needs_vocab = _vocabulary(NEED_LABELS)
    services_vocab = _vocabulary(SERVICE_LABELS)
    by_name = {_norm(c.name): code for code, c in comuni.items()}
    digest = hashlib.sha256(data).hexdigest()[:32]
    problems: list[dict[str, Any]] = []
    entries: list[tuple[int, intake.EntryInput]] = []
    for n, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        row = {col: cells[i] if i < len(cells) else "" for i, col in enumerate(columns) if col}
        errs: list[str] = []
        kind = KIND_WORDS.get(_norm(row.get("tipo_identificativo", "")))
        if kind is None:
            errs.append(
                gettext("«%(column)s»: write one of %(values)s.")
                % {
                    "column": gettext(COLUMN_LABELS["tipo_identificativo"]),
                    "values": "cf, stp_eni, nessuno",
                }
            )
        needs, bad_needs = _items(row.get("bisogni", ""), needs_vocab)
        services, bad_services = _items(row.get("servizi", ""), services_vocab)
        if bad_needs or not needs:
            errs.append(
                gettext("«%(column)s»: write one or more of %(values)s, separated by |.")
                % {
                    "column": gettext(COLUMN_LABELS["bisogni"]),
                    "values": ", ".join(f"«{gettext(v)}»" for v in NEED_LABELS.values()),
                }
            )
        if bad_services:
            errs.append(
                gettext("«%(column)s»: write one or more of %(values)s, separated by |.")
                % {
                    "column": gettext(COLUMN_LABELS["servizi"]),
                    "values": ", ".join(f"«{gettext(v)}»" for v in SERVICE_LABELS.values()),
                }
            )
        on = parse_date(row.get("data", ""))
        if on is None:
            errs.append(
                gettext("«%(column)s»: write the date as dd/mm/yyyy, for example %(example)s.")
                % {"column": gettext(COLUMN_LABELS["data"]), "example": "20/11/2026"}
            )
        comune = row.get("comune_istat", "").strip()
        comune = comune if comune in comuni else by_name.get(_norm(comune), comune)
        if errs:
            problems.append({"line": n, "ok": False, "message": " ".join(errs)})
            continue
        try:
            entry = intake.EntryInput.model_validate(
                {
                    "identifier_kind": kind,
                    "identifier": row.get("identificativo", "") if kind != "none" else "",
                    "comune_istat": comune,
                    "needs": needs,
                    "services_given": services,
                    "on": on,
                    "referred_by_social_services": _norm(row.get("inviato_dai_servizi", "")) in YES,
                    "birth_year": row.get("anno_nascita", "").strip() or None,
                    "sex": row.get("sesso", "").strip().upper() or None,
                    # one idempotency key per (organisation, file content, line): a file
                    # uploaded twice is stored once
                    "entry_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{org}:{digest}:{n}")),
                }
            )
        except ValidationError as e:
            problems.append({"line": n, "ok": False, "message": _row_errors(e)})
            continue
        entries.append((n, entry))
    return problems, entries


def _items(cell: str, vocab: dict[str, str]) -> tuple[list[str], list[str]]:
    good: list[str] = []
    bad: list[str] = []
    for part in cell.split("|"):
        if not part.strip():
            continue
        code = vocab.get(_norm(part))
        (good if code else bad).append(code or part)
    return good, bad


def _row_errors(e: ValidationError) -> str:
    from hub.web.routers.entries import form_errors

    labels = {
        "identifier": COLUMN_LABELS["identificativo"],
        "comune": COLUMN_LABELS["comune_istat"],
        "on": COLUMN_LABELS["data"],
        "birth_year": COLUMN_LABELS["anno_nascita"],
        "sex": COLUMN_LABELS["sesso"],
        "needs": COLUMN_LABELS["bisogni"],
    }
    return " ".join(
        f"«{gettext(labels[k])}»: {v}" if k in labels else v for k, v in form_errors(e).items()
    )


def run_job(config: Config, job: str, org: str, user_id: int, data: bytes) -> None:
    """The job itself, in a worker process: read, check, pseudonymise, store, report."""
    from hub.observatory.comuni import load_comuni
    from hub.pipeline import open_keyring
    from hub.pseudonyms import open_pseudonymiser
    from hub.registry import Registry
    from hub.web.store import StateStore

    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)  # the web workers keep answering first
    web = config.settings.web
    store = StateStore(config.resolve(web.state_file))
    try:
        registry = Registry.open(config.registry_url)
        pseudonymiser = open_pseudonymiser(config, open_keyring(config))
        comuni = load_comuni(config.resolve(web.comuni_file) if web.comuni_file else None)
        problems, entries = check_rows(data, org=org, comuni=comuni)
        total = len(problems) + len(entries)
        report = list(problems)
        store.update_job(job, status="running", total=total, done=len(problems))
        for start in range(0, len(entries), BATCH):
            batch = entries[start : start + BATCH]
            ready: list[tuple[int, intake.Prepared]] = []
            for n, entry in batch:
                try:
                    ready.append(
                        (
                            n,
                            intake.prepare(
                                entry, org=org, pseudonymiser=pseudonymiser, comuni=comuni
                            ),
                        )
                    )
                except intake.IntakeProblem as p:
                    report.append({"line": n, "ok": False, "message": gettext(p.message)})
            results = intake.store_many(registry.engine, [(p, org, user_id) for _, p in ready])
            for (n, _), res in zip(ready, results, strict=True):
                if isinstance(res, Exception):
                    report.append({"line": n, "ok": False, "message": gettext(res.message)})
                else:
                    report.append(
                        {
                            "line": n,
                            "ok": True,
                            "created": res[1],
                            "message": gettext("saved") if res[1] else gettext("already loaded"),
                        }
                    )
            store.update_job(job, status="running", total=total, done=len(report))
        report.sort(key=lambda r: r["line"])
        store.update_job(job, status="done", total=total, done=total, report=report)
        registry.close()
    except Exception as e:  # the report says so; the log line holds no row content
        logging.getLogger("raccordo.web").error("upload job failed: %s", type(e).__name__)
        store.update_job(job, status="failed")


def run_in_process(config: Config, job: str, org: str, user_id: int, data: bytes) -> None:
    """Run :func:`run_job` in a fresh ``python -m hub.web.uploads`` process and wait for it.

    A process of its own (not a fork of the web worker, not a pool that re-imports the
    caller's main module) so parsing never competes with the web worker for its GIL.
    """
    payload = pickle.dumps((config, job, org, user_id, data))
    proc = subprocess.run(
        [sys.executable, "-m", "hub.web.uploads"],
        input=payload,
        capture_output=True,
        check=False,
        timeout=3600,
    )
    if proc.returncode != 0:
        logging.getLogger("raccordo.web").error(
            "upload job process ended with code %s", proc.returncode
        )
        from hub.web.store import StateStore

        StateStore(config.resolve(config.settings.web.state_file)).update_job(job, status="failed")


def make_executor() -> Executor:
    """Upload jobs of one web worker, one at a time (each in its own process)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="raccordo-upload")


if __name__ == "__main__":
    run_job(*pickle.loads(sys.stdin.buffer.read()))  # noqa: S301 - written by our parent
