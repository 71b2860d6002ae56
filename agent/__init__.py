"""Jishi agent: detects real runs and session users on an instrument PC and publishes signed,
hash-chained records. Imports only `protocols` modules that avoid pydantic (memory budget)."""

__version__ = "0.1.0"
SOFTWARE = f"jishi-agent/{__version__}"
