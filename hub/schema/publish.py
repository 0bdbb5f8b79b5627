"""Write the JSON Schema of the common schema into ``docs/schema/``.

``python -m hub.schema.publish`` regenerates the files; a test fails when
the committed files differ from what the models produce.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hub.schema.models import json_schemas

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"


def render() -> dict[str, str]:
    """File name → content for every model."""
    return {
        f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in json_schemas().items()
    }


def write(directory: Path = DEFAULT_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in render().items():
        p = directory / name
        p.write_text(text, encoding="utf-8")
        out.append(p)
    return out


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR):
        print(p)
