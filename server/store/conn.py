"""The one database connection type every query function takes."""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.Connection[Any]
