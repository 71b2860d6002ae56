"""Examples in the OpenAPI description: every JSON answer and every JSON request body has one.

Request bodies mostly carry theirs in the pydantic models (`Field(examples=...)`); the answers'
examples are in static/openapi-examples.json by "METHOD path", taken from the real app's answers
on the test seed (tests/web/conftest.py), lists cut to one item. `install(app)` adds them when the
description is first built; tests/web/test_audit_gaps.py checks that none is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI

EXAMPLES_FILE = Path(__file__).parent / "static" / "openapi-examples.json"

# request bodies whose models carry no example (every field optional)
REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "PATCH /api/v1/accounts/{account_id}": {"role": "evaluator", "unit_id": None, "disabled": False},
    "PATCH /api/v1/organisations/{org_id}": {"name": "内蒙古大学（本部）", "kind": "university"},
    "PATCH /api/v1/units/{unit_id}": {"name": "内蒙古大学", "region": "呼和浩特"},
    "POST /api/v1/registrations/{reg_id}/confirm": {"note": "已核实单位信息"},
    "POST /api/v1/registrations/{reg_id}/decline": {"note": "单位信息不符"},
}


def add_examples(schema: dict[str, Any], examples: dict[str, Any]) -> None:
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            key = f"{method.upper()} {path}"
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and key in REQUEST_EXAMPLES and "example" not in body:
                body["example"] = REQUEST_EXAMPLES[key]
            if key not in examples:
                continue
            for status, resp in op.get("responses", {}).items():
                content = resp.get("content", {}).get("application/json")
                if status.startswith("2") and content is not None:
                    if "example" not in content and "examples" not in content:
                        content["example"] = examples[key]
                    break


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            add_examples(schema, json.loads(EXAMPLES_FILE.read_text(encoding="utf-8")))
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
