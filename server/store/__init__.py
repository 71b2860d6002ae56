"""The storage layer: what every server package agrees on about stored data.

One definition each of the connection type (`conn`), the regulation's time zone and the
millisecond/microsecond <-> datetime conversions (`times`), the record type and state codes of the
`records` table (`codes`) and the kept signed envelopes, hot and packed (`archive`, its SQL in
`envelope_queries`). The entry format of an evidence bundle's envelope files is
protocols/bundle.py, because the offline verifier reads it without any server module. This package
imports nothing above it (db, ingest, derive, evaluation, exports, web, registry): the import
contracts in pyproject.toml check that.
"""
