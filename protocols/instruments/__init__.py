"""Instrument-side protocols: serial status dialects and Modbus power-meter register maps.

Shared by the agent's detectors (which read instruments) and `sim/` (which imitates them), so a
dialect or register map is written once. Pure Python, no I/O, no pydantic.
"""
