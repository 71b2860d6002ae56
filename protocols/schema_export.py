"""Write (or, with --check, compare) the JSON Schemas in protocols/schemas/ from the models.

python -m protocols.schema_export           # regenerate
python -m protocols.schema_export --check   # exit 1 if a file is missing or stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import TypeAdapter

from protocols.records import MESSAGE_MODELS, Record

SCHEMA_DIR = Path(__file__).parent / "schemas"


def render() -> dict[str, str]:
    """File name -> schema text, for every message kind and for a single record."""
    docs: dict[str, object] = {f"{kind}.json": model.model_json_schema() for kind, model in MESSAGE_MODELS.items()}
    docs["record.json"] = TypeAdapter(Record).json_schema()
    out: dict[str, str] = {}
    for name, schema in docs.items():
        assert isinstance(schema, dict)
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"jishi/v1/{name}", **schema}
        out[name] = json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the files differ from the models")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = SCHEMA_DIR / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            SCHEMA_DIR.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale schemas: {', '.join(stale)}; run: python -m protocols.schema_export", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
