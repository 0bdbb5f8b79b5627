"""The whole contract of a Raccordo connector, in one line (plus a small inbox to read)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from raccordo_sportello import SportelloConfig, SportelloConnector

from hub.sdk.testing import connector_contract_tests


def _inbox() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="sportello-"))
    contacts = [
        {"id": "1", "cf": "RSSMRA80A01F952X", "name": "Mario", "day": "2024-01-02", "need": "ABIT"},
        {"id": "2", "cf": "", "name": "", "day": "2024-01-02", "need": "ALIM"},
        {
            "id": "3",
            "cf": "BNCGNN75B41F952Q",
            "name": "Giovanna",
            "day": "2024-01-03",
            "need": "ALIM",
        },
    ]
    for day in range(1, 4):
        lines = [json.dumps({**c, "id": f"{day}-{c['id']}"}) for c in contacts]
        (folder / f"2024-01-0{day}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


INBOX = _inbox()

TestSportello = connector_contract_tests(lambda: SportelloConnector(SportelloConfig(inbox=INBOX)))
