-- Hot raw envelopes compressed with lz4 (issue 17, third round).
--
-- 002 stored envelopes.raw out of line and uncompressed (STORAGE EXTERNAL): pglz, the default
-- then, cost ingest more CPU than it saved. lz4 is several times faster than pglz, and canonical
-- JSON envelopes of many records (the same keys and ids in every record) shrink ~4x with it, so
-- the backend now writes ~4x fewer TOAST chunks, TOAST index entries and WAL bytes per envelope:
-- measured, the COPY of envelopes costs PostgreSQL ~half the CPU it did (bench/RESULTS.md,
-- "ingest3"). Readers see the same bytes (decompression is transparent); the packer still
-- packs and xz-compresses them a day later. Values stored before keep their form; only new
-- values are compressed. Needs a PostgreSQL built with lz4 (Debian's is).
ALTER TABLE envelopes ALTER COLUMN raw SET STORAGE EXTENDED;
ALTER TABLE envelopes ALTER COLUMN raw SET COMPRESSION lz4;
