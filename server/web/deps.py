"""FastAPI dependencies shared by the routes: the database, settings, and who is asking."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from protocols.derive import Params
from server.config import WebSettings
from server.web import auth
from server.web.auth import Principal, current, optional
from server.web.db import Database

SAFE = frozenset({"GET", "HEAD"})


def get_db(request: Request) -> Database:
    """The app's database; for a GET or HEAD request a view whose reads go to the replica when
    `web.read_dsn` names one (server/web/db.py: writes and authentication stay on the primary)."""
    db: Database = request.app.state.db
    return db.for_reads() if request.method in SAFE else db


def get_settings(request: Request) -> WebSettings:
    s: WebSettings = request.app.state.settings
    return s


def get_derive(request: Request) -> Params:
    """The process's derivation parameters: for agents whose stored rows do not record their own."""
    p: Params = request.app.state.derive
    return p


Db = Annotated[Database, Depends(get_db)]
Settings = Annotated[WebSettings, Depends(get_settings)]
Derive = Annotated[Params, Depends(get_derive)]
Who = Annotated[Principal, Depends(current)]
MaybeWho = Annotated[Principal | None, Depends(optional)]
Person = Annotated[auth.Person, Depends(auth.person_current)]
MaybePerson = Annotated[auth.Person | None, Depends(auth.person_optional)]
Someone = Annotated[auth.Person | Principal, Depends(auth.someone_current)]
MaybeSomeone = Annotated[auth.Person | Principal | None, Depends(auth.someone_optional)]
