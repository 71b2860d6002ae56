"""Incremental use of protocols/derive.py on the server: usage segments, sessions, coverage."""
