"""The yearly evaluation of the regulation's annex: indicators, reconciliation, grades, subsidies.

Everything is computed from the derived tables (003) and the registry (001, 010); sums over time
are done in SQL so that a region's year never has to be loaded into Python.
"""
