"""Tests of the server: ingest, derivation, live state."""
