"""FastAPI dependencies shared by the routes: the database, settings, and who is asking."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.web.auth import Principal, current, optional
from server.web.db import Database
from server.web.settings import WebSettings


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings(request: Request) -> WebSettings:
    s: WebSettings = request.app.state.settings
    return s


Db = Annotated[Database, Depends(get_db)]
Settings = Annotated[WebSettings, Depends(get_settings)]
Who = Annotated[Principal, Depends(current)]
MaybeWho = Annotated[Principal | None, Depends(optional)]
