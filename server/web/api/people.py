"""People who use the instruments (platform users) and the identity maps that say who an identity
the agents see is.

People belong to someone (issue 13): a person is registered by a unit (recorded as the owner) or
by the operator. A unit manager maps identities only to the unit's own people (or new people it
registers), renames only them, and cannot move anyone to another organisation: that change is a
proposal the operator accepts. Models from the registry schema; writes through the data layer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import Field

from server.config import WebSettings
from server.registry import proposals, queries, schema
from server.registry.import_identities import card_hash
from server.store.conn import Conn
from server.web import scope
from server.web.api.imports import card_key
from server.web.auth import Principal, require_role
from server.web.db import one, rows
from server.web.deps import Db, Settings, Who
from server.web.errors import ApiError, field_error, not_found

router = APIRouter(prefix="/api/v1", tags=["registry"])

IdentityIn = schema.api_model("IdentityIn", schema.IDENTITY, "create")
if TYPE_CHECKING:
    PersonIn = schema.Model
    PersonPatch = schema.Model
    MappingIn = schema.Model
else:
    PersonIn = schema.api_model(
        "PersonIn", schema.PERSON, "create",
        unit_id=(schema.value_type(schema.UNIT.field("id")) | None,
                 Field(default=None, description="unit whose identity map gets `identities`")),
        identities=(list[IdentityIn], Field(default_factory=list, max_length=20)))
    PersonPatch = schema.api_model("PersonPatch", schema.PERSON, "patch")
    MappingIn = schema.api_model("MappingIn", schema.IDENTITY, "create",
                                 user_id=(schema.value_type(schema.PERSON.field("id")), ...))

_PERSON = ("SELECT p.id, p.name, p.org_id, o.name AS org_name FROM platform_users p"
           " JOIN organisations o ON o.id = p.org_id WHERE p.id = %s")


def _person_view(p: Principal, pseudo: Any, r: dict[str, Any]) -> dict[str, Any]:
    r = {k: v for k, v in r.items() if k != "owner_unit_id"}
    if p.sees_names:
        return r
    return {"id": pseudo.user(r["id"]), "name": None, "org_id": r["org_id"], "org_name": r["org_name"]}


@router.get("/people", summary="People who use the instruments (pseudonyms for evaluators)")
def list_people(who: Who, db: Db) -> list[dict[str, Any]]:
    with db.read() as conn:
        found = rows(conn, queries.PEOPLE + " ORDER BY p.id", {"s": who.unit_scope()})
        pseudo = scope.pseudonymizer(conn) if not who.sees_names else None
        return [_person_view(who, pseudo, r) for r in found]


_CARD_HASH = re.compile(r"^hmac-sha256:[0-9a-f]{64}$")


def stored_identifier(settings: WebSettings, method: str, identifier: str, field: str) -> str:
    """The identifier as the agents report it. Card numbers travel only as `hmac-sha256:<hex>` keyed
    with the deployment's card key: a raw number is hashed with the configured key (`card_key_file`,
    as the agents' card readers do), and refused without one — stored raw it would never match."""
    if method != "card" or _CARD_HASH.match(identifier):
        return identifier
    key = card_key(settings)
    if key is None:
        raise field_error(field, "card numbers as the agents send them (hmac-sha256:…); the server has no card key"
                                 " / 卡号须为采集端上报的哈希值（hmac-sha256:…），服务器未配置卡号密钥")
    return card_hash(key, identifier)


@router.post("/people", status_code=201, summary="Register a person and their identities in a unit")
def create_person(body: PersonIn, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    require_role(who, "operator", "unit_manager")
    v = body.model_dump()
    unit_id = v["unit_id"] or who.unit_id
    if v["identities"] and unit_id is None:
        raise field_error("unit_id", "identities need a unit_id / 登记身份需要单位")
    if unit_id is not None:
        scope.writable_unit(who, unit_id)
    idents = [(i["method"], stored_identifier(settings, i["method"], i["identifier"], f"identities.{n}.identifier"))
              for n, i in enumerate(v["identities"])]
    owner = who.unit_id if who.role == "unit_manager" else None
    with db.write(who.actor) as conn:
        if queries.exists(conn, schema.PERSON, "id", v["id"]):
            raise ApiError(409, "exists", "err.exists", what="what.person", id=v["id"])
        queries.upsert_platform_user(conn, v["id"], v["name"], v["org_id"], owner)
        for method, identifier in idents:
            queries.upsert_identity(conn, unit_id or "", method, identifier, v["id"])
    return {**v, "identities": [{"method": m, "identifier": i} for m, i in idents]}


def _seen(conn: Conn, who: Principal, person_id: str) -> dict[str, Any]:
    seen = one(conn, "SELECT x.* FROM (" + queries.PEOPLE + ") x WHERE x.id = %(id)s",
               {"s": who.unit_scope(), "id": person_id})
    if seen is None:
        raise not_found("what.person", person_id)
    return seen


@router.patch("/people/{person_id}", summary="Change a person (operator; a unit manager renames the unit's people"
                                              " and proposes a change of organisation)")
def patch_person(person_id: str, body: PersonPatch, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator", "unit_manager")
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    with db.write(who.actor) as conn:
        current = _seen(conn, who, person_id)
        if "org_id" in changes and not queries.exists(conn, schema.ORGANISATION, "id", changes["org_id"]):
            raise field_error("org_id", "no such organisation / 组织不存在")
        proposed: dict[str, Any] = {}
        if who.role == "unit_manager":
            assert who.unit_id is not None
            if not queries.person_of_unit(conn, person_id, who.unit_id):
                raise ApiError(403, "other_unit", "err.other_unit", unit=who.unit_id)
            changes, proposed = proposals.split(schema.PERSON, changes, current)
            for field, value in proposed.items():
                proposals.propose(conn, who.unit_id, "platform_users", person_id, field, current[field], value,
                                  who.actor)
        queries.update_row(conn, schema.PERSON, "id", person_id, changes)
        got = one(conn, _PERSON, (person_id,))
        assert got is not None
        return {**got, "proposed": proposals.pending_for(conn, "platform_users", person_id)}


@router.get("/units/{unit_id}/identities", summary="A unit's identity map (managers and operators)")
def list_identities(unit_id: str, who: Who, db: Db) -> list[dict[str, Any]]:
    require_role(who, "operator", "unit_manager")
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        return rows(conn, "SELECT m.method, m.identifier, m.user_id, p.name FROM identity_map m"
                          " JOIN platform_users p ON p.id = m.user_id WHERE m.unit_id = %s ORDER BY 1, 2", (unit_id,))


@router.put("/units/{unit_id}/identities", summary="Map an identity the agents see to a person (a unit manager:"
                                                  " to the unit's own people)")
def put_identity(unit_id: str, body: MappingIn, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    v = body.model_dump()
    identifier = stored_identifier(settings, v["method"], v["identifier"], "identifier")
    with db.write(who.actor) as conn:
        scope.unit(conn, who, unit_id)
        scope.writable_unit(who, unit_id)
        if who.role == "operator":
            if not queries.exists(conn, schema.PERSON, "id", v["user_id"]):
                raise not_found("what.person", v["user_id"])
        elif not queries.person_of_unit(conn, v["user_id"], unit_id):
            # the same answer for another unit's person as for nobody: nothing is revealed
            raise not_found("what.person", v["user_id"])
        queries.upsert_identity(conn, unit_id, v["method"], identifier, v["user_id"])
    return {"unit_id": unit_id, **v, "identifier": identifier}


@router.delete("/units/{unit_id}/identities/{method}/{identifier:path}", status_code=204, summary="Remove a mapping",
               description="`identifier` may contain `/` (a check-in account or booking code); percent-encode it.")
def delete_identity(unit_id: str, method: str, identifier: str, who: Who, db: Db) -> None:
    with db.write(who.actor) as conn:
        scope.unit(conn, who, unit_id)
        scope.writable_unit(who, unit_id)
        if queries.delete_identity(conn, unit_id, method, identifier) == 0:
            raise not_found("what.identity", f"{method}:{identifier}")
