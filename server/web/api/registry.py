"""Registry resources: organisations, units and their affiliated organisations. Instruments and
price lists are in routes/instruments.py, people and identity maps in routes/people.py, service
records in routes/service_records.py, proposals in routes/proposals.py.

Request models are generated from the registry schema (server/registry/schema.py) and every write
goes through the registry's data layer (server/registry/queries.py). Operators change everything;
unit managers their own unit's; evaluators read, and see people only as pseudonyms (art. 17).
Every change goes through `Database.write`, hence into the audit log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from server.registry import proposals, queries, schema
from server.store.conn import Conn
from server.web import scope
from server.web.auth import Principal, require_role
from server.web.db import one, rows
from server.web.deps import Db, Who
from server.web.errors import ApiError, not_found

router = APIRouter(prefix="/api/v1", tags=["registry"])

if TYPE_CHECKING:
    OrganisationIn = schema.Model
    OrganisationPatch = schema.Model
    UnitIn = schema.Model
    UnitPatch = schema.Model
else:
    OrganisationIn = schema.api_model("OrganisationIn", schema.ORGANISATION, "create")
    OrganisationPatch = schema.api_model("OrganisationPatch", schema.ORGANISATION, "patch")
    UnitIn = schema.api_model("UnitIn", schema.UNIT, "create")
    UnitPatch = schema.api_model("UnitPatch", schema.UNIT, "patch")


def _org_view(p: Principal, conn: Conn, r: dict[str, Any]) -> dict[str, Any]:
    # An "organisation" of kind individual is a person: evaluators see a pseudonym.
    if not p.sees_names and r["kind"] == "individual":
        r = {**r, "name": scope.pseudonymizer(conn).user("org:" + r["id"])}
    return r


def _set(body: BaseModel) -> dict[str, Any]:
    return body.model_dump(exclude_unset=True, exclude_none=True)


# -- organisations ----------------------------------------------------------------------------


@router.get("/organisations", summary="List organisations")
def list_organisations(
    who: Who, db: Db, q: Annotated[str | None, Query(max_length=100)] = None
) -> list[dict[str, Any]]:
    with db.read() as conn:
        found = rows(conn, "SELECT id, name, kind FROM organisations"
                           " WHERE %(q)s::text IS NULL OR name ILIKE '%%' || %(q)s || '%%' OR id = %(q)s ORDER BY id",
                     {"q": q})
        return [_org_view(who, conn, r) for r in found]


@router.post("/organisations", status_code=201, summary="Create an organisation (operator, unit manager)")
def create_organisation(body: OrganisationIn, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator", "unit_manager")
    values = body.model_dump()
    with db.write(who.actor) as conn:
        if queries.exists(conn, schema.ORGANISATION, "id", values["id"]):
            raise ApiError(409, "exists", "err.exists", what="what.organisation", id=values["id"])
        queries.insert_row(conn, schema.ORGANISATION, values)
    return values


@router.patch("/organisations/{org_id}", summary="Change an organisation (operator)")
def patch_organisation(org_id: str, body: OrganisationPatch, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        if not queries.exists(conn, schema.ORGANISATION, "id", org_id):
            raise not_found("what.organisation", org_id)
        queries.update_row(conn, schema.ORGANISATION, "id", org_id, _set(body))
        got = one(conn, "SELECT id, name, kind FROM organisations WHERE id = %s", (org_id,))
    assert got is not None
    return got


# -- units --------------------------------------------------------------------------------------


@router.get("/units", summary="List the units the caller may see")
def list_units(who: Who, db: Db) -> list[dict[str, Any]]:
    with db.read() as conn:
        return rows(
            conn,
            "SELECT u.id, u.org_id, u.name, u.region,"
            " (SELECT count(*) FROM instruments i WHERE i.unit_id = u.id) AS instruments"
            " FROM units u WHERE %(s)s::text[] IS NULL OR u.id = ANY(%(s)s::text[]) ORDER BY u.id",
            {"s": who.unit_scope()},
        )


@router.get("/units/{unit_id}", summary="One unit")
def get_unit(unit_id: str, who: Who, db: Db) -> dict[str, Any]:
    with db.read() as conn:
        return scope.unit(conn, who, unit_id)


@router.post("/units", status_code=201, summary="Create a unit (operator)")
def create_unit(body: UnitIn, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator")
    values = body.model_dump()
    with db.write(who.actor) as conn:
        if queries.exists(conn, schema.UNIT, "id", values["id"]):
            raise ApiError(409, "exists", "err.exists", what="what.unit", id=values["id"])
        queries.insert_row(conn, schema.UNIT, values)
    return values


@router.patch("/units/{unit_id}", summary="Change a unit (operator)")
def patch_unit(unit_id: str, body: UnitPatch, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        scope.unit(conn, who, unit_id)
        queries.update_row(conn, schema.UNIT, "id", unit_id, _set(body))
        return scope.unit(conn, who, unit_id)


# Affiliated organisations (附属单位): their users count as the unit's own, never as external (art. 4).
# Operator only; a unit manager asks for a change with a proposal (below).
_AFFILIATIONS = ("SELECT o.id AS org_id, o.name, o.kind FROM unit_affiliations a"
                 " JOIN organisations o ON o.id = a.org_id WHERE a.unit_id = %s ORDER BY o.id")
_AFF_EXAMPLE: dict[int | str, dict[str, Any]] = {200: {"content": {"application/json": {"example": [
    {"org_id": "imu-hospital", "name": "内蒙古大学附属医院", "kind": "hospital"}]}}}}


@router.get("/units/{unit_id}/affiliations", summary="The unit's affiliated organisations (their users are internal)",
            responses=_AFF_EXAMPLE)
def list_affiliations(unit_id: str, who: Who, db: Db) -> list[dict[str, Any]]:
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        return rows(conn, _AFFILIATIONS, (unit_id,))


def _affiliable(conn: Conn, who: Principal, unit_id: str, org_id: str) -> None:
    u = scope.unit(conn, who, unit_id)
    if not queries.exists(conn, schema.ORGANISATION, "id", org_id):
        raise not_found("what.organisation", org_id)
    if u["org_id"] == org_id:
        raise ApiError(409, "exists", "err.exists", what="what.organisation", id=org_id)


@router.put("/units/{unit_id}/affiliations/{org_id}", summary="Affiliate an organisation with the unit (operator)",
            responses=_AFF_EXAMPLE)
def put_affiliation(unit_id: str, org_id: str, who: Who, db: Db) -> list[dict[str, Any]]:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        _affiliable(conn, who, unit_id, org_id)
        queries.set_affiliation(conn, unit_id, org_id, True)
        return rows(conn, _AFFILIATIONS, (unit_id,))


@router.delete("/units/{unit_id}/affiliations/{org_id}", status_code=204,
               summary="End an organisation's affiliation with the unit (operator)")
def delete_affiliation(unit_id: str, org_id: str, who: Who, db: Db) -> None:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        scope.unit(conn, who, unit_id)
        if queries.set_affiliation(conn, unit_id, org_id, False) == 0:
            raise not_found("what.organisation", org_id)


@router.post("/units/{unit_id}/affiliations/{org_id}/proposal", status_code=201,
             summary="Ask the operator to affiliate (affiliated=true) or unaffiliate an organisation (unit manager)",
             responses={201: {"content": {"application/json": {"example": {
                 "id": 13, "unit_id": "ua", "target": "unit_affiliations", "row_key": "imu-hospital",
                 "field": "affiliated", "before": False, "after": True, "status": "pending",
                 "proposed_by": "account:mgr-a", "proposed_at": "2026-01-08T10:12:03+08:00", "decided_by": None,
                 "decided_at": None, "note": ""}}}}})
def propose_affiliation(unit_id: str, org_id: str, who: Who, db: Db,
                        affiliated: Annotated[bool, Query()] = True) -> dict[str, Any]:
    scope.writable_unit(who, unit_id)
    with db.write(who.actor) as conn:
        _affiliable(conn, who, unit_id, org_id)
        now = org_id in queries.affiliations(conn, unit_id)
        pid = proposals.propose(conn, unit_id, "unit_affiliations", org_id, "affiliated", now, affiliated, who.actor)
        if pid is None:
            raise ApiError(409, "exists", "err.exists", what="what.organisation", id=org_id)
        return proposals.listing(conn, None, None, pid)[0]
