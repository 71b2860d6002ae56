"""The Jishi agent-server contract: topics, records, envelopes, signing and the hash chain.

Nothing here imports agent/ or server/. The modules an agent needs at run time (canonical,
topics, signing, chain, build) avoid pydantic to keep the agent within its memory budget;
`records` and `envelope` hold the strict pydantic models used by the server and the tools.
"""

PROTOCOL_VERSION = 1
