"""The Jishi agent-server contract: topics, records, envelopes, signing, the hash chain, the
derivation, the instrument dialects and the evidence bundle's entry format.

Nothing here imports agent/, server/, sim/, tests/ or bench/ (the import contracts in
pyproject.toml check it). The modules an agent needs at run time (canonical, topics, signing,
chain, envelope, instruments) avoid pydantic to keep the agent within its memory budget;
`records` and `validate` hold the strict pydantic models and checks used by the server and the
tools. `derive` (records -> machine-hours) and `bundle` are pure and shared by the server and the
offline verifier.
"""

PROTOCOL_VERSION = 1
