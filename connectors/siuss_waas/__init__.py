"""``siuss_waas``: SIUSS flows pulled from an ente's WaaS e-service, the way INPS pulls them.

``GET {base_url}/flussi?since=<ms>&limit=<n>`` returns the flows updated after
``since`` in chronological order, each an XML flow in base64 (official
OpenAPI: ``api-comuni.yaml``). The cursor is the timestamp of the last flow
fully handed to the pipeline plus the ids already seen at that timestamp, so
flows sharing a timestamp are neither lost nor read twice. Timeouts and
429/502/503/504 answers are retried with exponential backoff, honouring
``Retry-After``; a refused token stops at once.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field, SecretStr

from connectors.siuss.flows import STREAMS, iter_flow
from hub import hookimpl
from hub.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    JSONState,
    ReadItem,
    SourceError,
    StateCheckpoint,
    Stream,
)
from hub.errors import SourceUnavailable

if TYPE_CHECKING:
    import requests

RACCORDO_HOOK_API = 1
RETRY_STATUSES = {429, 502, 503, 504}
TIPO_OF_STREAM = {"ps": "PS_PSA_SINA", "sinba": "SINBA"}


class SiussWaasConfig(ConnectorConfig):
    #: e.g. https://api.comune.example.it/waas/v1 (the e-service published on PDND)
    base_url: Annotated[str, Field(pattern=r"^https?://")]
    #: Bearer token (in production the PDND voucher); never printed.
    token: SecretStr
    limit: Annotated[int, Field(ge=1, le=100)] = 10
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    max_retries: Annotated[int, Field(ge=0, le=20)] = 5
    backoff_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    max_backoff_s: Annotated[float, Field(ge=0, le=600)] = 60.0
    max_flow_mb: Annotated[int, Field(ge=1, le=64)] = 10
    verify_tls: bool = True
    ca_bundle: str | None = None


def _ts_ms(value: str) -> int:
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class SiussWaasConnector(Connector):
    name = "siuss_waas"
    summary = "SIUSS flows pulled from an ente's WaaS e-service (GET /flussi?since=&limit=)"
    config_class = SiussWaasConfig
    default_mapping: ClassVar[dict[str, str]] = {"ps": "siuss_ps.toml", "sinba": "siuss_sinba.toml"}
    config: SiussWaasConfig

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        # Imported here: every sync, of any connector, loads this plugin, and requests costs
        # about 0.1 s of CPU to import, which a sync making no HTTP request need not pay.
        import requests

        self._session = requests.Session()
        self._session.headers["Accept"] = "application/json"
        self.sleep: Callable[[float], None] = time.sleep

    @property
    def _endpoint(self) -> str:
        return self.config.base_url.rstrip("/")

    def _verify(self) -> bool | str:
        return self.config.ca_bundle or self.config.verify_tls

    def _get(self, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        import requests

        c = self.config
        url = f"{self._endpoint}{path}"
        headers = {"Authorization": f"Bearer {c.token.get_secret_value()}"}
        last = ""
        for attempt in range(c.max_retries + 1):
            wait = min(c.max_backoff_s, c.backoff_s * 2**attempt) * (0.5 + random.random() / 2)  # noqa: S311 - jitter
            try:
                resp = self._session.get(
                    url, params=params, headers=headers, timeout=c.timeout_s, verify=self._verify()
                )
            except requests.Timeout:
                last = f"no answer within {c.timeout_s:g} s"
            except requests.ConnectionError:
                last = "connection refused or network unreachable"
            else:
                if resp.status_code in (401, 403):
                    raise SourceUnavailable(
                        f"the WaaS endpoint refused the token (HTTP {resp.status_code})",
                        where=url,
                        hint="renew the PDND voucher / token in the connection",
                    )
                if resp.status_code not in RETRY_STATUSES:
                    return resp
                last = f"HTTP {resp.status_code}"
                after = _retry_after(resp.headers.get("Retry-After"))
                if after is not None:
                    wait = min(after, c.max_backoff_s)
            if attempt < c.max_retries:
                self.sleep(wait)
        raise SourceUnavailable(
            f"the WaaS endpoint did not answer after {c.max_retries + 1} attempts ({last})",
            where=url,
            hint="the next sync resumes from the last committed flow",
        )

    def check(self) -> CheckResult:
        try:
            resp = self._get("/status")
        except SourceUnavailable as e:
            return CheckResult(False, str(e))
        try:
            title = resp.json().get("title", "")
        except ValueError:
            title = ""
        ok = resp.status_code == 200
        return CheckResult(ok, f"GET /status: HTTP {resp.status_code} {title}".strip())

    def streams(self) -> tuple[Stream, ...]:
        return (STREAMS["ps"], STREAMS["sinba"])

    def read(self, stream: str, state: JSONState) -> Iterator[ReadItem]:
        self.stream(stream)
        since = int(state.get("since", 0))
        seen: set[str] = set(state.get("seen", []))
        tipo = TIPO_OF_STREAM[stream]
        max_bytes = self.config.max_flow_mb * 1024 * 1024
        limit = self.config.limit
        while True:
            # Ask from one millisecond earlier, skipping what was already seen at `since`,
            # so flows sharing a timestamp across two pages are not lost.
            query_since = max(since - 1, 0) if seen else since
            resp = self._get("/flussi", {"since": query_since, "limit": limit})
            if resp.status_code != 200:
                raise SourceUnavailable(
                    f"GET /flussi answered HTTP {resp.status_code}",
                    where=f"{self._endpoint}/flussi",
                )
            try:
                entries = resp.json().get("elenco_flussi", [])
            except ValueError:
                raise SourceUnavailable(
                    "GET /flussi did not answer JSON", where=f"{self._endpoint}/flussi"
                ) from None
            fresh = [
                e
                for e in entries
                if e.get("id_flusso") not in seen
                or _ts_ms(e.get("ts_flusso", "1970-01-01T00:00:00Z")) > since
            ]
            if not fresh:
                if len(entries) < limit:
                    break
                if limit < 100:
                    # A full page of flows already seen, all sharing one timestamp: ask
                    # for a larger page to get past them (the API's `since` is strict).
                    limit = min(100, limit * 2)
                    continue
                yield SourceError(
                    "more than 100 flows share one timestamp: the WaaS API cannot page "
                    "through them, some may be skipped",
                    f"GET /flussi since={since}",
                    rule="waas_paging",
                )
                seen = set()
                continue
            limit = self.config.limit
            for entry in fresh:
                flow_id = str(entry.get("id_flusso", "?"))[:64]
                try:
                    ts = _ts_ms(str(entry["ts_flusso"]))
                except (KeyError, ValueError):
                    yield SourceError("the flow has no valid ts_flusso", f"WaaS flow {flow_id}")
                    continue
                if entry.get("tipo") == tipo:
                    yield from self._flow(entry, stream, flow_id, max_bytes)
                if ts > since:
                    since, seen = ts, set()
                seen.add(flow_id)
                yield StateCheckpoint({"since": since, "seen": sorted(seen)})
        yield StateCheckpoint({"since": since, "seen": sorted(seen)})

    def _flow(
        self, entry: dict[str, Any], stream: str, flow_id: str, max_bytes: int
    ) -> Iterator[ReadItem]:
        where = f"WaaS flow {flow_id}"
        b64 = str(entry.get("flusso", ""))
        if len(b64) > max_bytes * 4 // 3 + 4:
            yield SourceError(f"the flow is larger than {self.config.max_flow_mb} MiB", where)
            return
        try:
            xml = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            yield SourceError(
                "the base64 content is truncated or corrupt: the flow was not "
                "loaded (ask the ente to publish it again)",
                where,
                rule="base64",
            )
            return
        yield from iter_flow(
            xml, stream=stream, unit=flow_id, location_prefix=where, max_bytes=max_bytes
        )


@hookimpl
def raccordo_register_connectors(register: Callable[[type[Connector]], None]) -> None:
    register(SiussWaasConnector)
