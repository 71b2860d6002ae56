"""The registry schema (server/registry/schema.py) against the database: every field is a column,
nullability agrees, and every enum is exactly the set of values the column's CHECK allows; and
the API models, forms, ledger import and listings are the schema's."""

from __future__ import annotations

import re
from typing import Any, get_args

import psycopg
import pytest

from server.registry import (
    import_cases,
    import_identities,
    import_ledger,
    import_prices,
    import_services,
    import_users,
    queries,
    schema,
)
from server.web.api import instruments, people, service_records
from server.web.pages import forms


def _check_values(conn: psycopg.Connection[Any], table: str, column: str) -> set[str]:
    """The values a column's CHECK (col IN (...)) allows, as text ('' when no such CHECK)."""
    found: set[str] = set()
    for (text,) in conn.execute(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_attribute a"
        " ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)"
        " WHERE c.conrelid = %s::regclass AND c.contype = 'c' AND a.attname = %s",
        (table, column),
    ):
        m = re.search(r"= ANY \(\(?ARRAY\[(.*?)\]", text)
        if m:
            found |= {v.strip().strip("'") for v in re.sub(r"::\w+", "", m.group(1)).replace("(", "")
                      .replace(")", "").split(",")}
    return found


@pytest.mark.parametrize("table", schema.TABLES, ids=lambda t: t.name)
def test_schema_fields_are_the_databases(fresh_db: str, table: schema.Table) -> None:
    with psycopg.connect(fresh_db) as conn:
        columns = {r[0]: r[1] == "YES" for r in conn.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = %s", (table.name,))}
        for f in table.fields:
            assert f.name in columns, f"{table.name}.{f.name} is not a column"
            assert columns[f.name] == f.nullable, f"{table.name}.{f.name}: nullable differs"
            allowed = _check_values(conn, table.name, f.name)
            if f.enum:
                assert allowed == {str(v) for v in f.enum}, f"{table.name}.{f.name}: {allowed} != {f.enum}"
            else:
                assert not allowed, f"{table.name}.{f.name} has a CHECK list the schema does not declare"


def test_a_changed_enum_would_be_noticed(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        assert _check_values(conn, "instruments", "category") == {"通用", "专用"}
        assert _check_values(conn, "service_records", "user_type") == {"120", "130"}
        conn.execute("ALTER TABLE instruments DROP CONSTRAINT instruments_category_check")
        conn.execute("ALTER TABLE instruments ADD CONSTRAINT instruments_category_check"
                     " CHECK (category IN ('通用', '专用', '其他'))")
        assert _check_values(conn, "instruments", "category") != set(schema.INSTRUMENT.field("category").enum)


def test_models_forms_imports_and_listings_come_from_the_schema() -> None:
    # API models: every changeable field, with the schema's enum
    patch = instruments.InstrumentPatch.model_fields
    assert set(patch) == set(schema.INSTRUMENT.names()) - {"id"}
    sharing = get_args(get_args(patch["sharing_mode"].annotation)[0])
    assert sharing == schema.SHARING_MODE
    assert set(people.PersonPatch.model_fields) == {"name", "org_id"}
    assert set(service_records.ServiceRecordIn.model_fields) == set(schema.SERVICE_RECORD.names())
    # forms: labels and options are the schema's
    form = {f.name: f for f in forms.INSTRUMENT}
    assert [v for v, _ in form["category"].options] == list(schema.CATEGORY)
    assert form["rated_hours"].zh == schema.INSTRUMENT.field("rated_hours").zh
    assert [v for v, _ in {f.name: f for f in forms.SERVICE}["user_type"].options] == ["120", "130"]
    # the ledger import's columns and the instrument listing's headers
    assert {f.key for f in import_ledger.INSTRUMENT_FIELDS} == {f.name for f in schema.INSTRUMENT.fields if f.headers}
    service_keys = {f.key for f in import_services.SERVICE_FIELDS}
    assert service_keys >= {f.name for f in schema.SERVICE_RECORD.fields if f.headers} | {"instrument"}
    assert set(import_ledger.SHARING.values()) == set(schema.SHARING_MODE)
    # every import's spellings map onto the schema's values, and accept each of them as written
    for spellings, values in ((import_ledger.SOURCES, schema.SOURCE), (import_ledger.CATEGORIES, schema.CATEGORY),
                              (import_ledger.STATUSES, schema.RUNNING_STATUS), (import_ledger.FUNDING, schema.FUNDING),
                              (import_services.WAYS, schema.WAY), (import_cases.CASE_KINDS, schema.CASE_KIND),
                              (import_prices.BASES, schema.PRICE_BASIS), (import_users.ORG_KINDS, schema.ORG_KIND),
                              (import_identities.METHODS, schema.IDENTITY_METHOD),
                              (import_services.USER_TYPES, tuple(map(str, schema.USER_TYPE))),
                              (import_services.DIRECTIONS, tuple(map(str, schema.DIRECTION)))):
        assert set(spellings.values()) == set(values)
        assert all(spellings[str(v)] == str(v) for v in values)
    headers = queries.LISTINGS["instruments"][0]
    assert headers[:3] == ("仪器编号", "单位内部编号", "仪器名称")
    # a figure is a proposal for a unit manager
    assert {"rated_hours", "original_value", "category", "accepted_on", "registered_on", "retired_on", "is_open",
            "sharing_mode"} == schema.INSTRUMENT.proposal_fields()
