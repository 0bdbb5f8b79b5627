"""TEST DOUBLE of the pseudonymisation service's ``POST /v1/convert``, as a separate process.

Run: ``python -m tests.exchange.fake_pseudonym_service PORT COUNTER_FILE``. It appends the
number of pseudonyms of each call to COUNTER_FILE so a test can see what was converted.
Used only by tests until the pseudonyms work provides the real service.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException

from tests.exchange.support import double_convert


def create_app(counter: str) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/convert")
    def convert(body: dict[str, Any]) -> dict[str, Any]:
        for k in ("from_domain", "to_domain", "purpose", "convenzione", "pseudonyms"):
            if k not in body:
                raise HTTPException(422, f"missing {k}")
        values = [str(p) for p in body["pseudonyms"]]
        with open(counter, "a") as fh:
            fh.write(
                f"{body['convenzione']} {body['from_domain']}->{body['to_domain']} {len(values)}\n"
            )
        return {"pseudonyms": [double_convert(body["to_domain"], p) for p in values]}

    return app


if __name__ == "__main__":
    uvicorn.run(
        create_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning"
    )
