"""Writes ``schemas/<name>.schema.json`` (JSON Schema 2020-12) from the pydantic models.

Run ``python -m schemas.generate`` after changing ``schemas/events.py``;
``tests/unit/schemas/test_generate.py`` fails when the files and the models disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas.events import SCHEMAS

HERE = Path(__file__).resolve().parent
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_document(name: str) -> dict:
    """The JSON Schema of one schema name, with ``$schema`` and ``$id`` set."""
    body = SCHEMAS[name].model_json_schema(mode="validation")
    return {"$schema": DIALECT, "$id": f"https://infertide.dev/schemas/{name}.schema.json", **body}


def render(name: str) -> str:
    return json.dumps(schema_document(name), indent=2, sort_keys=True) + "\n"


def main() -> int:
    for name in SCHEMAS:
        (HERE / f"{name}.schema.json").write_text(render(name))
        print(f"wrote schemas/{name}.schema.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
