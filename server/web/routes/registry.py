"""Registry resources: organisations, units, instruments, price lists, people (instrument users)
and their identity mappings, service records.

Operators change everything; unit managers their own unit's; evaluators read, and see people only
as pseudonyms (art. 17). Every change goes through `Database.write`, hence into the audit log.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from server.evaluation.period import TZ
from server.registry.import_identities import card_hash
from server.registry.urls import http_url
from server.web import scope
from server.web.auth import Principal, require_role
from server.web.db import Conn, one, rows
from server.web.deps import Db, Settings, Who
from server.web.errors import ApiError, field_error, not_found
from server.web.routes.imports import card_key
from server.web.settings import WebSettings

router = APIRouter(prefix="/api/v1", tags=["registry"])

ID = r"^[A-Za-z0-9_-]{1,64}$"
IdStr = Annotated[str, Field(pattern=ID, examples=["XRD-01"])]
Text = Annotated[str, Field(max_length=2000)]
Short = Annotated[str, Field(max_length=200)]
HttpUrl = Annotated[str, Field(max_length=200), AfterValidator(http_url)]  # issue 13: http(s) only


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _changes(body: Model, nullable: set[str]) -> dict[str, Any]:
    """The fields a PATCH sent; a null clears only the columns in `nullable`, elsewhere it is ignored."""
    return {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k in nullable}


def _update(conn: Conn, table: str, key: str, key_value: object, changes: dict[str, Any]) -> None:
    """UPDATE only the given columns (names come from a pydantic model, never from the client)."""
    if not changes:
        return
    cols = ", ".join(f"{c} = %({c})s" for c in changes)
    conn.execute(f"UPDATE {table} SET {cols} WHERE {key} = %(_key)s".encode(), {**changes, "_key": key_value})


# -- organisations ----------------------------------------------------------------------------


class OrganisationIn(Model):
    id: IdStr
    name: Short = Field(min_length=1, examples=["内蒙古大学"])
    kind: Literal["university", "institute", "enterprise", "startup", "hospital", "individual", "other"] = "other"


class OrganisationPatch(Model):
    name: Short | None = Field(default=None, min_length=1)
    kind: Literal["university", "institute", "enterprise", "startup", "hospital", "individual", "other"] | None = None


def _org_view(p: Principal, conn: Conn, r: dict[str, Any]) -> dict[str, Any]:
    # An "organisation" of kind individual is a person: evaluators see a pseudonym.
    if not p.sees_names and r["kind"] == "individual":
        r = {**r, "name": scope.pseudonymizer(conn).user("org:" + r["id"])}
    return r


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
    with db.write(who.actor) as conn:
        if one(conn, "SELECT 1 AS x FROM organisations WHERE id = %s", (body.id,)):
            raise ApiError(409, "exists", "err.exists", what="what.organisation", id=body.id)
        conn.execute("INSERT INTO organisations (id, name, kind) VALUES (%s, %s, %s)", (body.id, body.name, body.kind))
    return body.model_dump()


@router.patch("/organisations/{org_id}", summary="Change an organisation (operator)")
def patch_organisation(org_id: str, body: OrganisationPatch, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        if one(conn, "SELECT 1 AS x FROM organisations WHERE id = %s", (org_id,)) is None:
            raise not_found("what.organisation", org_id)
        _update(conn, "organisations", "id", org_id, body.model_dump(exclude_unset=True, exclude_none=True))
        got = one(conn, "SELECT id, name, kind FROM organisations WHERE id = %s", (org_id,))
    assert got is not None
    return got


# -- units --------------------------------------------------------------------------------------


class UnitIn(Model):
    id: IdStr = Field(examples=["imu"])
    org_id: IdStr = Field(examples=["imu"])
    name: Short = Field(min_length=1, examples=["内蒙古大学"])
    region: Short = Field(default="", examples=["呼和浩特市"])


class UnitPatch(Model):
    name: Short | None = Field(default=None, min_length=1)
    region: Short | None = None


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
    with db.write(who.actor) as conn:
        if one(conn, "SELECT 1 AS x FROM units WHERE id = %s", (body.id,)):
            raise ApiError(409, "exists", "err.exists", what="what.unit", id=body.id)
        conn.execute("INSERT INTO units (id, org_id, name, region) VALUES (%s, %s, %s, %s)",
                     (body.id, body.org_id, body.name, body.region))
    return body.model_dump()


@router.patch("/units/{unit_id}", summary="Change a unit (operator)")
def patch_unit(unit_id: str, body: UnitPatch, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        scope.unit(conn, who, unit_id)
        _update(conn, "units", "id", unit_id, body.model_dump(exclude_unset=True, exclude_none=True))
        return scope.unit(conn, who, unit_id)


# Affiliated organisations (附属单位): their users count as the unit's own, never as external (art. 4).
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


@router.put("/units/{unit_id}/affiliations/{org_id}", summary="Affiliate an organisation with the unit (operator)",
            responses=_AFF_EXAMPLE)
def put_affiliation(unit_id: str, org_id: str, who: Who, db: Db) -> list[dict[str, Any]]:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        u = scope.unit(conn, who, unit_id)
        if one(conn, "SELECT 1 AS x FROM organisations WHERE id = %s", (org_id,)) is None:
            raise not_found("what.organisation", org_id)
        if u["org_id"] == org_id:
            raise ApiError(409, "exists", "err.exists", what="what.organisation", id=org_id)
        conn.execute("INSERT INTO unit_affiliations (unit_id, org_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                     (unit_id, org_id))
        return rows(conn, _AFFILIATIONS, (unit_id,))


@router.delete("/units/{unit_id}/affiliations/{org_id}", status_code=204,
               summary="End an organisation's affiliation with the unit (operator)")
def delete_affiliation(unit_id: str, org_id: str, who: Who, db: Db) -> None:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        scope.unit(conn, who, unit_id)
        cur = conn.execute("DELETE FROM unit_affiliations WHERE unit_id = %s AND org_id = %s", (unit_id, org_id))
        if cur.rowcount == 0:
            raise not_found("what.organisation", org_id)


# -- instruments -------------------------------------------------------------------------------

Category = Literal["通用", "专用"]
Source = Literal["购置", "研制", "赠送", "其他"]
RunningStatus = Literal["正常", "偶有故障", "故障频繁", "待修", "待报废"]
SharingMode = Literal["内部共享", "外部共享", "不共享"]
Funding = Literal["中央财政", "地方财政", "单位自有", "其他"]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("999999999999.99"), decimal_places=2)]


class InstrumentFields(Model):
    name: Short | None = Field(default=None, min_length=1, examples=["X射线衍射仪"])
    name_en: Short | None = Field(default=None, examples=["X-ray diffractometer"])
    internal_no: Short | None = None
    classification_code: Short | None = Field(default=None, examples=["03040702"])
    location: Short | None = Field(default=None, examples=["化学楼 201"])
    original_value: Money | None = Field(default=None, examples=["1250000.00"])
    category: Category | None = None
    accepted_on: date | None = None
    registered_on: date | None = None
    retired_on: date | None = None
    rated_hours: Annotated[Decimal, Field(gt=0, le=8784, decimal_places=1)] | None = None
    is_open: bool | None = None
    source: Source | None = None
    running_status: RunningStatus | None = None
    sharing_mode: SharingMode | None = None
    model: Short | None = None
    manufacturer: Short | None = None
    country: Short | None = None
    booked_on: date | None = None
    funding_source: Funding | None = None
    fee_standard: Text | None = None
    service_content: Text | None = None
    main_functions: Text | None = None
    specs: Text | None = None
    booking_url: HttpUrl | None = None
    contact_name: Short | None = None
    contact_phone: Short | None = None
    contact_email: Short | None = None


class InstrumentIn(InstrumentFields):
    id: IdStr
    unit_id: IdStr = Field(examples=["imu"])
    name: Short = Field(min_length=1, examples=["X射线衍射仪"])


class InstrumentPatch(InstrumentFields):
    unit_id: IdStr | None = Field(default=None, description="moving an instrument: operator only")


# Columns a change may set; nullable ones may be set to null explicitly.
_NULLABLE = {"accepted_on", "registered_on", "retired_on", "rated_hours", "booked_on"}


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


@router.get("/instruments/{instrument_id}", summary="One instrument")
def get_instrument(instrument_id: str, who: Who, db: Db) -> dict[str, Any]:
    with db.read() as conn:
        return scope.instrument(conn, who, instrument_id)


@router.post("/instruments", status_code=201, summary="Register an instrument (operator, own unit's manager)")
def create_instrument(body: InstrumentIn, who: Who, db: Db) -> dict[str, Any]:
    scope.writable_unit(who, body.unit_id)
    values = body.model_dump(exclude_none=True)
    with db.write(who.actor) as conn:
        if one(conn, "SELECT 1 AS x FROM units WHERE id = %s", (body.unit_id,)) is None:
            raise not_found("what.unit", body.unit_id)
        if one(conn, "SELECT 1 AS x FROM instruments WHERE id = %s", (body.id,)):
            raise ApiError(409, "exists", "err.exists", what="what.instrument", id=body.id)
        cols = ", ".join(values)
        ph = ", ".join(f"%({c})s" for c in values)
        conn.execute(f"INSERT INTO instruments ({cols}) VALUES ({ph})".encode(), values)
        return scope.instrument(conn, who, body.id)


@router.patch("/instruments/{instrument_id}", summary="Change an instrument")
def patch_instrument(instrument_id: str, body: InstrumentPatch, who: Who, db: Db) -> dict[str, Any]:
    changes = _changes(body, _NULLABLE)
    with db.write(who.actor) as conn:
        row = scope.instrument(conn, who, instrument_id, write=True)
        scope.writable_unit(who, row["unit_id"])
        if "unit_id" in changes and changes["unit_id"] != row["unit_id"]:
            require_role(who, "operator")
            if one(conn, "SELECT 1 AS x FROM units WHERE id = %s", (changes["unit_id"],)) is None:
                raise not_found("what.unit", changes["unit_id"])
        if changes:
            changes["updated_at"] = datetime.now().astimezone()
        _update(conn, "instruments", "id", instrument_id, changes)
        return scope.instrument(conn, who, instrument_id)


# -- price list -----------------------------------------------------------------------------------


class PriceIn(Model):
    item: Short = Field(min_length=1, examples=["物相分析"])
    basis: Literal["per_hour", "per_sample", "per_item"] = "per_sample"
    internal_price: Money | None = Field(default=None, examples=["80.00"])
    external_price: Money | None = Field(default=None, examples=["150.00"])
    valid_from: date = Field(examples=["2025-01-01"])
    valid_to: date | None = None
    published_on: date | None = None
    note: Short = ""


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
        got = one(
            conn,
            f"INSERT INTO price_list (instrument_id, item, basis, internal_price, external_price, valid_from,"
            f" valid_to, published_on, note) VALUES (%(i)s, %(item)s, %(basis)s, %(internal_price)s,"
            f" %(external_price)s, %(valid_from)s, %(valid_to)s, %(published_on)s, %(note)s) RETURNING {_PRICE_COLS}",
            {"i": instrument_id, **body.model_dump()},
        )
    assert got is not None
    return got


@router.delete("/prices/{price_id}", status_code=204, summary="Remove a price item")
def delete_price(price_id: int, who: Who, db: Db) -> None:
    with db.write(who.actor) as conn:
        row = one(conn, "SELECT instrument_id FROM price_list WHERE id = %s", (price_id,))
        if row is None:
            raise not_found("what.price", price_id)
        inst = scope.instrument(conn, who, row["instrument_id"], write=True)
        scope.writable_unit(who, inst["unit_id"])
        conn.execute("DELETE FROM price_list WHERE id = %s", (price_id,))


class PricePatch(Model):
    item: Short | None = Field(default=None, min_length=1, examples=["物相分析"])
    basis: Literal["per_hour", "per_sample", "per_item"] | None = None
    internal_price: Money | None = None
    external_price: Money | None = None
    valid_from: date | None = None
    valid_to: date | None = None
    published_on: date | None = None
    note: Short | None = None


_PRICE_NULLABLE = {"internal_price", "external_price", "valid_to", "published_on"}


@router.patch("/prices/{price_id}", summary="Change a price item (own unit)")
def patch_price(price_id: int, body: PricePatch, who: Who, db: Db) -> dict[str, Any]:
    changes = _changes(body, _PRICE_NULLABLE)
    with db.write(who.actor) as conn:
        row = one(conn, "SELECT instrument_id FROM price_list WHERE id = %s", (price_id,))
        if row is None:
            raise not_found("what.price", price_id)
        inst = scope.instrument(conn, who, row["instrument_id"], write=True)
        scope.writable_unit(who, inst["unit_id"])
        _update(conn, "price_list", "id", price_id, changes)
        got = one(conn, f"SELECT {_PRICE_COLS} FROM price_list WHERE id = %s", (price_id,))
    assert got is not None
    return got


# -- people (instrument users) and identity mapping ------------------------------------------------


class IdentityIn(Model):
    method: Literal["os", "checkin", "card", "booking"] = Field(examples=["os"])
    identifier: Short = Field(min_length=1, examples=["LAB\\zhangsan"])


class PersonIn(Model):
    id: IdStr = Field(examples=["p-0001"])
    name: Short = Field(min_length=1, examples=["张三"])
    org_id: IdStr = Field(examples=["imu"])
    unit_id: IdStr | None = Field(default=None, description="unit whose identity map gets `identities`")
    identities: list[IdentityIn] = Field(default_factory=list, max_length=20)


# People a unit may see: of its own or affiliated organisations, mapped in its identity map, or
# named in its service records.
_PEOPLE = """
SELECT DISTINCT p.id, p.name, p.org_id, o.name AS org_name
FROM platform_users p JOIN organisations o ON o.id = p.org_id
WHERE %(s)s::text[] IS NULL
   OR p.org_id IN (SELECT org_id FROM units WHERE id = ANY(%(s)s::text[])
                   UNION SELECT org_id FROM unit_affiliations WHERE unit_id = ANY(%(s)s::text[]))
   OR p.id IN (SELECT user_id FROM identity_map WHERE unit_id = ANY(%(s)s::text[]))
   OR p.id IN (SELECT applicant_user_id FROM service_records WHERE unit_id = ANY(%(s)s::text[])
               AND applicant_user_id IS NOT NULL)
"""


def _person_view(p: Principal, pseudo: Any, r: dict[str, Any]) -> dict[str, Any]:
    if p.sees_names:
        return r
    return {"id": pseudo.user(r["id"]), "name": None, "org_id": r["org_id"], "org_name": r["org_name"]}


@router.get("/people", summary="People who use the instruments (pseudonyms for evaluators)")
def list_people(who: Who, db: Db) -> list[dict[str, Any]]:
    with db.read() as conn:
        found = rows(conn, _PEOPLE + " ORDER BY p.id", {"s": who.unit_scope()})
        pseudo = scope.pseudonymizer(conn) if not who.sees_names else None
        return [_person_view(who, pseudo, r) for r in found]


@router.post("/people", status_code=201, summary="Register a person and their identities in a unit")
def create_person(body: PersonIn, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    require_role(who, "operator", "unit_manager")
    unit_id = body.unit_id or who.unit_id
    if body.identities and unit_id is None:
        raise field_error("unit_id", "identities need a unit_id / 登记身份需要单位")
    if unit_id is not None:
        scope.writable_unit(who, unit_id)
    idents = [(i.method, stored_identifier(settings, i, f"identities.{n}.identifier"))
              for n, i in enumerate(body.identities)]
    with db.write(who.actor) as conn:
        if one(conn, "SELECT 1 AS x FROM platform_users WHERE id = %s", (body.id,)):
            raise ApiError(409, "exists", "err.exists", what="what.person", id=body.id)
        conn.execute("INSERT INTO platform_users (id, name, org_id) VALUES (%s, %s, %s)",
                     (body.id, body.name, body.org_id))
        for method, identifier in idents:
            _map_identity(conn, unit_id or "", method, identifier, body.id)
    return {**body.model_dump(), "identities": [{"method": m, "identifier": i} for m, i in idents]}


class PersonPatch(Model):
    name: Short | None = Field(default=None, min_length=1, examples=["张三"])
    org_id: IdStr | None = Field(default=None, examples=["imu"])


@router.patch("/people/{person_id}", summary="Change a person (operator; a unit manager for people of their unit)")
def patch_person(person_id: str, body: PersonPatch, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator", "unit_manager")
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    with db.write(who.actor) as conn:
        seen = one(conn, "SELECT x.id FROM (" + _PEOPLE + ") x WHERE x.id = %(id)s",
                   {"s": who.unit_scope(), "id": person_id})
        if seen is None:
            raise not_found("what.person", person_id)
        if "org_id" in changes and one(conn, "SELECT 1 AS x FROM organisations WHERE id = %s",
                                       (changes["org_id"],)) is None:
            raise field_error("org_id", "no such organisation / 组织不存在")
        _update(conn, "platform_users", "id", person_id, changes)
        got = one(conn, "SELECT p.id, p.name, p.org_id, o.name AS org_name FROM platform_users p"
                        " JOIN organisations o ON o.id = p.org_id WHERE p.id = %s", (person_id,))
    assert got is not None
    return got


class MappingIn(IdentityIn):
    user_id: IdStr


_CARD_HASH = re.compile(r"^hmac-sha256:[0-9a-f]{64}$")


def stored_identifier(settings: WebSettings, ident: IdentityIn, field: str) -> str:
    """The identifier as the agents report it. Card numbers travel only as `hmac-sha256:<hex>` keyed
    with the deployment's card key: a raw number is hashed with the configured key (`card_key_file`,
    as the agents' card readers do), and refused without one — stored raw it would never match."""
    if ident.method != "card" or _CARD_HASH.match(ident.identifier):
        return ident.identifier
    key = card_key(settings)
    if key is None:
        raise field_error(field, "card numbers as the agents send them (hmac-sha256:…); the server has no card key"
                                 " / 卡号须为采集端上报的哈希值（hmac-sha256:…），服务器未配置卡号密钥")
    return card_hash(key, ident.identifier)


def _map_identity(conn: Conn, unit_id: str, method: str, identifier: str, user_id: str) -> None:
    conn.execute(
        "INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (unit_id, method, identifier) DO UPDATE SET user_id = EXCLUDED.user_id",
        (unit_id, method, identifier, user_id),
    )


@router.get("/units/{unit_id}/identities", summary="A unit's identity map (managers and operators)")
def list_identities(unit_id: str, who: Who, db: Db) -> list[dict[str, Any]]:
    require_role(who, "operator", "unit_manager")
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        return rows(conn, "SELECT m.method, m.identifier, m.user_id, p.name FROM identity_map m"
                          " JOIN platform_users p ON p.id = m.user_id WHERE m.unit_id = %s ORDER BY 1, 2", (unit_id,))


@router.put("/units/{unit_id}/identities", summary="Map an identity the agents see to a person")
def put_identity(unit_id: str, body: MappingIn, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    identifier = stored_identifier(settings, body, "identifier")
    with db.write(who.actor) as conn:
        scope.unit(conn, who, unit_id)
        scope.writable_unit(who, unit_id)
        if one(conn, "SELECT 1 AS x FROM platform_users WHERE id = %s", (body.user_id,)) is None:
            raise not_found("what.person", body.user_id)
        _map_identity(conn, unit_id, body.method, identifier, body.user_id)
    return {"unit_id": unit_id, **body.model_dump(), "identifier": identifier}


@router.delete("/units/{unit_id}/identities/{method}/{identifier:path}", status_code=204, summary="Remove a mapping",
               description="`identifier` may contain `/` (a check-in account or booking code); percent-encode it.")
def delete_identity(unit_id: str, method: str, identifier: str, who: Who, db: Db) -> None:
    with db.write(who.actor) as conn:
        scope.unit(conn, who, unit_id)
        scope.writable_unit(who, unit_id)
        cur = conn.execute("DELETE FROM identity_map WHERE unit_id = %s AND method = %s AND identifier = %s",
                           (unit_id, method, identifier))
        if cur.rowcount == 0:
            raise not_found("what.identity", f"{method}:{identifier}")


# -- service records -----------------------------------------------------------------------------


class ServiceRecordIn(Model):
    instrument_id: IdStr
    record_no: Short = Field(min_length=1, examples=["2025-0001"])
    start_at: datetime = Field(examples=["2025-03-01T09:00:00+08:00"])
    end_at: datetime = Field(examples=["2025-03-01T12:00:00+08:00"])
    service_hours: Annotated[Decimal, Field(ge=0, le=999999, decimal_places=1)] = Field(examples=["3.0"])
    amount: Money = Field(default=Decimal("0"), examples=["450.00"])
    content: Text = ""
    way: Literal["占用", "技术", "委托", "远程", "其他"] = "其他"
    user_type: Literal[120, 130] = Field(examples=[130], description="120 internal, 130 external")
    direction: Literal[135, 136, 137, 138] = 135
    applicant_user_id: IdStr | None = None
    applicant_name: Short = ""
    applicant_org_id: IdStr | None = None
    applicant_org_name: Short = ""
    satisfaction: Annotated[int, Field(ge=1, le=5)] | None = None
    contract_no: Short = ""
    sample_count: Annotated[int, Field(ge=0, le=10_000_000)] | None = Field(
        default=None, examples=[12], description="samples or items, for prices per sample / per item (fee check)")


_SR_COLS = ("id, unit_id, instrument_id, record_no, start_at, end_at, service_hours, amount, content, way,"
            " user_type, direction, applicant_user_id, applicant_name, applicant_org_id, applicant_org_name,"
            " satisfaction, contract_no, sample_count, import_batch_id, created_at")


def _sr_view(p: Principal, pseudo: Any, r: dict[str, Any]) -> dict[str, Any]:
    if p.sees_names:
        return r
    out = dict(r)
    out["applicant_user_id"] = pseudo.person(r["applicant_user_id"], None, None) or None
    out["applicant_name"] = None
    return out


@router.get("/service-records", summary="Self-reported service records (pseudonymous for evaluators)")
def list_service_records(
    who: Who,
    db: Db,
    unit_id: Annotated[str | None, Query(max_length=64)] = None,
    instrument_id: Annotated[str | None, Query(max_length=64)] = None,
    year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[dict[str, Any]]:
    with db.read() as conn:
        if unit_id is not None:
            scope.unit(conn, who, unit_id)
        if instrument_id is not None:
            scope.instrument(conn, who, instrument_id)
        found = rows(
            conn,
            f"SELECT {_SR_COLS} FROM service_records WHERE (%(s)s::text[] IS NULL OR unit_id = ANY(%(s)s::text[]))"
            " AND (%(u)s::text IS NULL OR unit_id = %(u)s) AND (%(i)s::text IS NULL OR instrument_id = %(i)s)"
            " AND (%(y)s::int IS NULL OR start_at >= make_timestamptz(%(y)s, 1, 1, 0, 0, 0, 'Asia/Shanghai')"
            "      AND start_at < make_timestamptz(%(y)s + 1, 1, 1, 0, 0, 0, 'Asia/Shanghai'))"
            " ORDER BY start_at, id LIMIT %(l)s OFFSET %(o)s",
            {"s": who.unit_scope(), "u": unit_id, "i": instrument_id, "y": year, "l": limit, "o": offset},
        )
        pseudo = scope.pseudonymizer(conn) if not who.sees_names else None
        return [_sr_view(who, pseudo, r) for r in found]


def _aware(t: datetime) -> datetime:
    """A time without zone is Asia/Shanghai local time (as people type it)."""
    return t if t.tzinfo is not None else t.replace(tzinfo=TZ)


@router.post("/service-records", status_code=201, summary="Add a service record (own unit)")
def create_service_record(body: ServiceRecordIn, who: Who, db: Db) -> dict[str, Any]:
    body.start_at, body.end_at = _aware(body.start_at), _aware(body.end_at)
    if body.end_at <= body.start_at:
        raise field_error("end_at", "must be after start_at / 结束时间须晚于开始时间")
    with db.write(who.actor) as conn:
        inst = scope.instrument(conn, who, body.instrument_id, write=True)
        scope.writable_unit(who, inst["unit_id"])
        values = {**body.model_dump(), "unit_id": inst["unit_id"]}
        cols = ", ".join(values)
        ph = ", ".join(f"%({c})s" for c in values)
        got = one(conn, f"INSERT INTO service_records ({cols}) VALUES ({ph}) RETURNING {_SR_COLS}", values)
    assert got is not None
    return got


@router.delete("/service-records/{record_id}", status_code=204, summary="Remove a service record (own unit)")
def delete_service_record(record_id: int, who: Who, db: Db) -> None:
    with db.write(who.actor) as conn:
        row = one(conn, "SELECT unit_id FROM service_records WHERE id = %s", (record_id,))
        if row is None or not who.can_read_unit(row["unit_id"]):
            raise not_found("what.service_record", record_id)
        scope.writable_unit(who, row["unit_id"])
        conn.execute("DELETE FROM service_records WHERE id = %s", (record_id,))


class ServiceRecordPatch(Model):
    instrument_id: IdStr | None = None
    record_no: Short | None = Field(default=None, min_length=1, examples=["2025-0001"])
    start_at: datetime | None = Field(default=None, examples=["2025-03-01T09:00:00+08:00"])
    end_at: datetime | None = Field(default=None, examples=["2025-03-01T12:00:00+08:00"])
    service_hours: Annotated[Decimal, Field(ge=0, le=999999, decimal_places=1)] | None = None
    amount: Money | None = None
    content: Text | None = None
    way: Literal["占用", "技术", "委托", "远程", "其他"] | None = None
    user_type: Literal[120, 130] | None = None
    direction: Literal[135, 136, 137, 138] | None = None
    applicant_user_id: IdStr | None = None
    applicant_name: Short | None = None
    applicant_org_id: IdStr | None = None
    applicant_org_name: Short | None = None
    satisfaction: Annotated[int, Field(ge=1, le=5)] | None = None
    contract_no: Short | None = None
    sample_count: Annotated[int, Field(ge=0, le=10_000_000)] | None = None


_SR_NULLABLE = {"applicant_user_id", "applicant_org_id", "satisfaction", "sample_count"}


@router.patch("/service-records/{record_id}", summary="Change a service record (own unit)")
def patch_service_record(record_id: int, body: ServiceRecordPatch, who: Who, db: Db) -> dict[str, Any]:
    changes = _changes(body, _SR_NULLABLE)
    with db.write(who.actor) as conn:
        row = one(conn, "SELECT unit_id, start_at, end_at FROM service_records WHERE id = %s", (record_id,))
        if row is None or not who.can_read_unit(row["unit_id"]):
            raise not_found("what.service_record", record_id)
        scope.writable_unit(who, row["unit_id"])
        if "instrument_id" in changes:
            inst = scope.instrument(conn, who, changes["instrument_id"], write=True)
            if inst["unit_id"] != row["unit_id"]:
                raise field_error("instrument_id", "an instrument of the record's unit / 须为本单位仪器")
        for k in ("start_at", "end_at"):
            if k in changes:
                changes[k] = _aware(changes[k])
        start, end = changes.get("start_at", row["start_at"]), changes.get("end_at", row["end_at"])
        if end <= start:
            raise field_error("end_at", "must be after start_at / 结束时间须晚于开始时间")
        _update(conn, "service_records", "id", record_id, changes)
        got = one(conn, f"SELECT {_SR_COLS} FROM service_records WHERE id = %s", (record_id,))
    assert got is not None
    return got
