"""``raccordo demo``: a fictional district loaded through the real connectors.

Writes the demo sources (a CSV export, an inbox of SIUSS XML files, flows
behind a local fake WaaS endpoint — see :mod:`hub.demo.district`), writes a
``raccordo.toml`` that uses them, syncs every connector with the same code
path as ``raccordo sync``, and prints the *prese in carico* tables.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from hub.config import load_config
from hub.demo.district import CONSORTIA, SEED_TABLE, build_sources
from hub.demo.ets import DEMO_PASSWORD, ensure_accounts, seed_entries
from hub.observatory.prese_in_carico import prese_in_carico, render
from hub.plugins import get_plugins
from hub.pseudonyms import Keyring, KeySource
from hub.service import Hub
from hub.web.comuni import load_comuni as load_web_comuni

DEMO_TOKEN = "demo-token-not-a-secret"  # noqa: S105

CONFIG = """\
# Demo district written by `raccordo demo` (rewritten at each run).
# Every key is documented in docs/configuration.md.

[hub]
district = "DEMO-NO"
district_name = "Distretto dimostrativo (provincia di Novara)"
registry_url = "sqlite:///registry.sqlite"
keyring = "keys/keyring.json"
keyring_key_file = "keys/keyring.key"
batch_size = 10000
commit_every = 200000

[organisations.CISS-BORGO]
name = "CISS Borgomanero"
kind = "ente_gestore"

[organisations.CBV]
name = "Consorzio Basso Verbano (fittizio)"
kind = "ente_gestore"

[organisations.COT]
name = "Consorzio Ovest Ticino (fittizio)"
kind = "ente_gestore"

[organisations.UDP-DEMO]
name = "Ufficio di Piano del distretto dimostrativo"
kind = "district"

[organisations.ETS-CARITAS]
name = "Centro d'ascolto parrocchiale (fittizio)"
kind = "ets"

[organisations.ETS-BANCO]
name = "Banco alimentare di zona (fittizio)"
kind = "ets"

[organisations.ETS-ACCOGLIE]
name = "Cooperativa Accoglienza (fittizia)"
kind = "ets"

[web]
host = "127.0.0.1"
port = {web_port}
# The demo is served over plain HTTP on localhost: keep true behind TLS in production.
cookie_secure = false

#@ csv_export
[connectors.ciss_csv]
type = "csv_export"
org = "CISS-BORGO"
mapping = "cartella-esempio.toml"
description = "Export of the cartella sociale (CartellaSociale Esempio layout)"
[connectors.ciss_csv.config]
path = "sources/ciss-borgomanero.csv"
encoding = "cp1252"
delimiter = ";"
source_key = ["ID_CARTELLA", "COD_INTERVENTO", "DATA_INIZIO"]
personal_columns = ["COGNOME", "NOME", "NOTE"]
[connectors.ciss_csv.config.identifier_columns.CODICE_FISCALE]
type_column = "TIPO_DOCUMENTO"
[connectors.ciss_csv.config.identifier_columns.ID_NUCLEO]
type = "LOCAL"
optional = true

#@ siuss_files
[connectors.cbv_files]
type = "siuss_files"
org = "CBV"
description = "SIUSS PS/PSA/SINA flows dropped in an inbox folder"
[connectors.cbv_files.config]
inbox = "sources/cbv-inbox"

#@ siuss_waas
[connectors.cot_waas]
type = "siuss_waas"
org = "COT"
description = "SIUSS flows pulled from the consortium's WaaS e-service (local fake server)"
[connectors.cot_waas.config]
base_url = "{waas_url}"
token = "{token}"
limit = 50

#@ ets_form
[connectors.ets_intake]
type = "ets_form"
org = "UDP-DEMO"
description = "Entries of the Third Sector organisations (web form, CSV upload, API)"
[connectors.ets_intake.config]
database_url = "sqlite:///registry.sqlite"
"""


@contextlib.contextmanager
def _fake_waas(folder: Path, available: bool) -> Iterator[str]:
    if not available:
        yield "http://127.0.0.1:9/unavailable"
        return
    from connectors.siuss_waas.fake_server import FakeWaaS, flows_from_dir

    with FakeWaaS(flows_from_dir(folder), token=DEMO_TOKEN) as server:
        yield server.url


def _config_text(waas_url: str, installed: set[str], web_port: int = 8000) -> str:
    """The demo configuration, with only the connectors whose plugins are installed."""
    text = CONFIG.format(waas_url=waas_url, token=DEMO_TOKEN, web_port=web_port)
    head, *sections = text.split("#@ ")
    kept = [s.split("\n", 1)[1] for s in sections if s.split("\n", 1)[0].strip() in installed]
    return head + "".join(kept)


def prepare_workspace(
    workspace: Path, waas_url: str, installed: set[str], web_port: int = 8000
) -> Path:
    """Create the keyring once and (re)write the configuration."""
    keys = workspace / "keys"
    keys.mkdir(exist_ok=True, mode=0o700)
    if not (keys / "keyring.json").exists():
        Keyring.create(keys / "keyring.json", KeySource.generate_key_file(keys / "keyring.key"))
    (workspace / "mappings").mkdir(exist_ok=True)
    cfg = workspace / "raccordo.toml"
    cfg.write_text(_config_text(waas_url, installed, web_port), encoding="utf-8")
    return cfg


def run_demo(workspace: Path, *, serve: bool, console: Console, port: int = 8000) -> None:
    workspace = workspace.resolve()
    sources = workspace / "sources"
    if not sources.exists():
        console.print("Writing the demo district's sources (CSV export, SIUSS XML, WaaS flows)…")
        build_sources(sources)
    console.print(f"Demo district workspace: [bold]{workspace}[/bold]")
    installed = set(get_plugins().connectors())
    for c in CONSORTIA:
        if c.channel not in installed:
            console.print(
                f"[yellow]The {c.channel} connector is not installed: {c.name}'s "
                "data is not loaded.[/yellow]"
            )
    with _fake_waas(sources / "cot-waas", "siuss_waas" in installed) as waas_url:
        cfg_path = prepare_workspace(workspace, waas_url, installed, port)
        cfg = load_config(cfg_path)
        hub = Hub.open(cfg)
        registry = hub.registry
        new = seed_entries(
            registry.engine,
            hub.pseudonymiser,
            load_web_comuni(),
            sources / "ciss-borgomanero.csv",
        )
        if new:
            console.print(f"Third Sector: {new} demo entries made through the web app's intake")
        for name in cfg.settings.connectors:
            for s in hub.sync(name):
                console.print(
                    f"run {s.id} {s.connector}/{s.mapping}: read {s.read:,} = loaded {s.loaded:,}"
                    f" + unchanged {s.unchanged:,} + quarantined {s.quarantined:,}"
                    + (f"  (source units refused: {s.source_errors})" if s.source_errors else "")
                )
    years = sorted(SEED_TABLE)
    for c in CONSORTIA:
        console.print(f"\n[bold]{c.name}[/bold] ({c.code}) — prese in carico al 31 ottobre")
        console.print(
            render(prese_in_carico(registry.engine, years, org=c.code)),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    console.print("\n[bold]Distretto[/bold] — prese in carico al 31 ottobre")
    console.print(
        render(prese_in_carico(registry.engine, years)),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    users = ensure_accounts(registry.engine)
    hub.close()
    console.print(f"Why records were refused: raccordo quarantine list --config {cfg_path}")
    console.print(
        "The same table from the registry: raccordo report prese-in-carico "
        f"--org CISS-BORGO --config {cfg_path}"
    )
    if serve:
        from hub.web.serve import serve_app

        console.print(
            "\n[bold]Web app[/bold] — demo accounts (password for all: "
            f"[bold]{DEMO_PASSWORD}[/bold])"
        )
        for username, role, org in users:
            console.print(f"  {username:<10} {role:<8} {org or ''}")
        serve_app(load_config(cfg_path), console=console)
