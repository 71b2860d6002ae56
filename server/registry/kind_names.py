"""The names of the importable kinds, without importing the importer (openpyxl, psycopg): the
console builds its argument parser from them, and `jishi verify` must stay light."""

from __future__ import annotations

from typing import Literal, get_args

Kind = Literal["instruments", "services", "exemptions", "prices", "cases", "users", "identities"]
KIND_NAMES: tuple[str, ...] = get_args(Kind)
