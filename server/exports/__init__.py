"""What leaves the system: evaluation workbooks, the national-platform layout, evidence bundles.

`server.exports.verify` imports nothing from the server (only `protocols` and the standard
library): an evaluator runs it on their own PC without a database.
"""
