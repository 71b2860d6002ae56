"""Instruments and their price lists. Models from the registry schema, writes through the data
layer (server/registry/queries.py). A unit manager's change of a figure the unit is graded on
(schema fields marked `proposal`) is stored as a proposal, not written (server/registry/proposals.py);
the answer lists what waits in `proposed`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query

from server.registry import proposals, queries, schema
from server.web import scope
from server.web.auth import require_role
from server.web.db import one, rows
from server.web.deps import Db, Who
from server.web.errors import ApiError, not_found

router = APIRouter(prefix="/api/v1", tags=["registry"])

if TYPE_CHECKING:
    InstrumentIn = schema.Model
    InstrumentPatch = schema.Model
    PriceIn = schema.Model
    PricePatch = schema.Model
else:
    InstrumentIn = schema.api_model("InstrumentIn", schema.INSTRUMENT, "create")
    InstrumentPatch = schema.api_model("InstrumentPatch", schema.INSTRUMENT, "patch")
    PriceIn = schema.api_model("PriceIn", schema.PRICE, "create")
    PricePatch = schema.api_model("PricePatch", schema.PRICE, "patch")


@router.get("/instruments", summary="List instruments (own unit for unit managers)")
def list_instruments(
    who: Who,
    db: Db,
    unit_id: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[dict[str, Any]]:
    with db.read() as conn:
        if unit_id is not None:
            scope.unit(conn, who, unit_id)
        return rows(
            conn,
            "SELECT i.*, (SELECT count(*) FROM agents a WHERE a.instrument_id = i.id AND a.revoked_at IS NULL)"
            " AS agents FROM instruments i"
            " WHERE (%(s)s::text[] IS NULL OR i.unit_id = ANY(%(s)s::text[]))"
            " AND (%(u)s::text IS NULL OR i.unit_id = %(u)s)"
            " AND (%(q)s::text IS NULL OR i.name ILIKE '%%' || %(q)s || '%%' OR i.id = %(q)s"
            "      OR i.classification_code LIKE %(q)s || '%%')"
            " ORDER BY i.unit_id, i.id LIMIT %(l)s OFFSET %(o)s",
            {"s": who.unit_scope(), "u": unit_id, "q": q, "l": limit, "o": offset},
        )


@router.get("/instruments/{instrument_id}", summary="One instrument (with its open proposals)")
def get_instrument(instrument_id: str, who: Who, db: Db) -> dict[str, Any]:
    with db.read() as conn:
        row = scope.instrument(conn, who, instrument_id)
        return {**row, "proposed": proposals.pending_for(conn, "instruments", instrument_id)}


@router.post("/instruments", status_code=201, summary="Register an instrument (operator, own unit's manager)")
def create_instrument(body: InstrumentIn, who: Who, db: Db) -> dict[str, Any]:
    values = body.model_dump()
    scope.writable_unit(who, values["unit_id"])
    with db.write(who.actor) as conn:
        if not queries.exists(conn, schema.UNIT, "id", values["unit_id"]):
            raise not_found("what.unit", values["unit_id"])
        if queries.exists(conn, schema.INSTRUMENT, "id", values["id"]):
            raise ApiError(409, "exists", "err.exists", what="what.instrument", id=values["id"])
        queries.insert_row(conn, schema.INSTRUMENT, values)
        return scope.instrument(conn, who, values["id"])


@router.patch("/instruments/{instrument_id}", summary="Change an instrument (figures: a unit's proposal)")
def patch_instrument(instrument_id: str, body: InstrumentPatch, who: Who, db: Db) -> dict[str, Any]:
    changes = schema.with_changes(schema.INSTRUMENT, body)
    with db.write(who.actor) as conn:
        row = scope.instrument(conn, who, instrument_id, write=True)
        scope.writable_unit(who, row["unit_id"])
        if "unit_id" in changes and changes["unit_id"] != row["unit_id"]:
            require_role(who, "operator")
            if not queries.exists(conn, schema.UNIT, "id", changes["unit_id"]):
                raise not_found("what.unit", changes["unit_id"])
        if who.role != "operator":
            changes, proposed = proposals.split(schema.INSTRUMENT, changes, row)
            for field, value in proposed.items():
                proposals.propose(conn, row["unit_id"], "instruments", instrument_id, field, row[field], value,
                                  who.actor)
        queries.update_instrument(conn, instrument_id, changes)
        got = scope.instrument(conn, who, instrument_id)
        return {**got, "proposed": proposals.pending_for(conn, "instruments", instrument_id)}


# -- price list -----------------------------------------------------------------------------------

_PRICE_COLS = ("id, instrument_id, item, basis, internal_price, external_price, valid_from, valid_to,"
               " published_on, note")


@router.get("/instruments/{instrument_id}/prices", summary="An instrument's price list")
def list_prices(instrument_id: str, who: Who, db: Db) -> list[dict[str, Any]]:
    with db.read() as conn:
        scope.instrument(conn, who, instrument_id)
        return rows(conn, f"SELECT {_PRICE_COLS} FROM price_list WHERE instrument_id = %s ORDER BY valid_from, item",
                    (instrument_id,))


@router.post("/instruments/{instrument_id}/prices", status_code=201, summary="Add a price item")
def create_price(instrument_id: str, body: PriceIn, who: Who, db: Db) -> dict[str, Any]:
    with db.write(who.actor) as conn:
        row = scope.instrument(conn, who, instrument_id, write=True)
        scope.writable_unit(who, row["unit_id"])
        got = queries.insert_row(conn, schema.PRICE, {"instrument_id": instrument_id, **body.model_dump()},
                                 returning=_PRICE_COLS)
    assert got is not None
    return got


def _price_instrument(conn: Any, who: Any, price_id: int) -> None:
    row = one(conn, "SELECT instrument_id FROM price_list WHERE id = %s", (price_id,))
    if row is None:
        raise not_found("what.price", price_id)
    inst = scope.instrument(conn, who, row["instrument_id"], write=True)
    scope.writable_unit(who, inst["unit_id"])


@router.delete("/prices/{price_id}", status_code=204, summary="Remove a price item")
def delete_price(price_id: int, who: Who, db: Db) -> None:
    with db.write(who.actor) as conn:
        _price_instrument(conn, who, price_id)
        queries.delete_row(conn, schema.PRICE, "id", price_id)


@router.patch("/prices/{price_id}", summary="Change a price item (own unit)")
def patch_price(price_id: int, body: PricePatch, who: Who, db: Db) -> dict[str, Any]:
    changes = schema.with_changes(schema.PRICE, body)
    with db.write(who.actor) as conn:
        _price_instrument(conn, who, price_id)
        queries.update_row(conn, schema.PRICE, "id", price_id, changes)
        got = one(conn, f"SELECT {_PRICE_COLS} FROM price_list WHERE id = %s", (price_id,))
    assert got is not None
    return got
