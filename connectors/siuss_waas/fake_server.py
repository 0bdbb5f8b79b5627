"""A local stand-in for an ente's WaaS e-service (``GET /flussi``, ``GET /status``,
``POST /esiti`` of the official OpenAPI), for tests and for ``raccordo demo``.

Binds to 127.0.0.1 only. Faults can be injected while it runs: slow answers,
a queue of error statuses (429/503 with ``Retry-After``), truncated base64 for
given flows, and going down (connection refused) and up again on the same port.

    python -m connectors.siuss_waas.fake_server --dir FOLDER --port 8765 --token T
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

BASE_PATH = "/waas/v1"
BASE_TS_MS = 1_700_000_000_000


@dataclass(frozen=True)
class Flow:
    id: str
    tipo: str  # PS_PSA_SINA | SINBA
    ts_ms: int
    xml: bytes
    codice_ente: str = "H501"
    denominazione_ente: str = "Ente dimostrativo"


@dataclass
class Faults:
    slow_s: float = 0.0  # sleep before answering /flussi
    slow_requests: int = 0  # how many requests are slow (0 = none)
    statuses: list[tuple[int, str | None]] = field(default_factory=list)  # (code, Retry-After)
    truncate: set[str] = field(default_factory=set)  # flow ids served with cut base64
    fail_after: int | None = None  # serve this many /flussi requests, then go down


def flow_from_xml(xml: bytes, ts_ms: int, fallback_id: str) -> Flow:
    name = re.search(rb'IdentificazioneFlusso[^>]*Nome="([^"]+)"', xml)
    ente = re.search(rb'<Ente[^>]*Codice="([^"]+)"', xml)
    tipo = "SINBA" if re.search(rb"<(\w+:)?SINBA[\s>]", xml) else "PS_PSA_SINA"
    code = ente.group(1).decode() if ente else "H501"
    return Flow(
        name.group(1).decode() if name else fallback_id,
        tipo,
        ts_ms,
        xml,
        code if re.fullmatch(r"[A-Z][0-9]{3}", code) else "H501",
    )


def flows_from_dir(folder: Path) -> list[Flow]:
    """One flow per XML file, in name order, one second apart."""
    return [
        flow_from_xml(p.read_bytes(), BASE_TS_MS + i * 1000, p.stem)
        for i, p in enumerate(sorted(folder.glob("*.xml")))
    ]


class FakeWaaS:
    def __init__(self, flows: Iterable[Flow], *, token: str, port: int = 0) -> None:
        self.flows = sorted(flows, key=lambda f: f.ts_ms)
        self.token = token
        self.faults = Faults()
        self.requests: list[tuple[float, str, dict[str, str]]] = []
        self.esiti: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._served = 0

    # -- life cycle ---------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{BASE_PATH}"

    def start(self) -> FakeWaaS:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    down = stop

    def up(self) -> None:
        if self._server is None:
            self.start()

    def __enter__(self) -> FakeWaaS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour ----------------------------------------------------------------
    def page(self, since: int, limit: int) -> list[dict[str, Any]]:
        out = []
        for f in self.flows:
            if f.ts_ms <= since:
                continue
            b64 = base64.b64encode(f.xml).decode()
            if f.id in self.faults.truncate:
                b64 = b64[: len(b64) // 2 - 1]
            out.append(
                {
                    "codice_ente": f.codice_ente,
                    "denominazione_ente": f.denominazione_ente,
                    "id_flusso": f.id,
                    "tipo": f.tipo,
                    "ts_flusso": dt.datetime.fromtimestamp(f.ts_ms / 1000, dt.UTC)
                    .isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
                    "flusso": b64,
                }
            )
            if len(out) >= limit:
                break
        return out


def _make_handler(srv: FakeWaaS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _send(
            self,
            code: int,
            body: Any,
            ctype: str = "application/json",
            headers: dict[str, str] | None = None,
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _problem(self, code: int, title: str, headers: dict[str, str] | None = None) -> None:
            self._send(code, {"status": code, "title": title}, "application/problem+json", headers)

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {srv.token}":
                self._problem(401, "Token mancante o non valido")
                return False
            return True

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            with srv._lock:
                srv.requests.append((time.monotonic(), url.path, query))
            if url.path == f"{BASE_PATH}/status":
                self._problem(200, "Servizio attivo")
                return
            if url.path != f"{BASE_PATH}/flussi":
                self._problem(404, "Risorsa non trovata")
                return
            if not self._authorised():
                return
            f = srv.faults
            with srv._lock:
                status = f.statuses.pop(0) if f.statuses else None
                slow = f.slow_requests > 0
                if slow:
                    f.slow_requests -= 1
                srv._served += 1
                served = srv._served
            if slow:
                time.sleep(f.slow_s)
            if status is not None:
                code, retry_after = status
                self._problem(
                    code, "Errore simulato", {"Retry-After": retry_after} if retry_after else None
                )
                return
            try:
                since = int(query["since"])
                limit = int(query.get("limit", "10"))
            except (KeyError, ValueError):
                self._problem(400, "Parametro since mancante o non valido")
                return
            if not 0 <= limit <= 100:
                self._problem(400, "Parametro limit fuori intervallo")
                return
            self._send(200, {"elenco_flussi": srv.page(since, limit)})
            if f.fail_after is not None and served >= f.fail_after:
                f.fail_after = None
                threading.Thread(target=srv.stop, daemon=True).start()

        def do_POST(self) -> None:
            if urlparse(self.path).path != f"{BASE_PATH}/esiti":
                self._problem(404, "Risorsa non trovata")
                return
            if not self._authorised():
                return
            size = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(min(size, 10_000_000)) or b"{}")
            with srv._lock:
                srv.esiti.extend(body.get("elenco_esiti", []))
            self.send_response(204)
            self.end_headers()

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(
        description="Serve a folder of SIUSS XML flows as a WaaS "
        "e-service on 127.0.0.1 (for demos and tests)."
    )
    ap.add_argument("--dir", type=Path, required=True, help="folder of *.xml flows")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--token", required=True, help="bearer token clients must send")
    args = ap.parse_args()
    with FakeWaaS(flows_from_dir(args.dir), token=args.token, port=args.port) as srv:
        print(f"WaaS fake server on {srv.url} ({len(srv.flows)} flows); Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
