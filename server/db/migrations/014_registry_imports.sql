-- Imports of the rest of the registry (exemptions, price lists, service cases, platform users and
-- their organisations, identity mapping) and the fee check of service records against price lists.

-- Every importable kind leaves its batch and per-row report here.
ALTER TABLE import_batches DROP CONSTRAINT import_batches_kind_check;
ALTER TABLE import_batches ADD CONSTRAINT import_batches_kind_check
    CHECK (kind IN ('instruments', 'services', 'exemptions', 'prices', 'cases', 'users', 'identities'));

-- Samples (or items) a service record charged for: a per-sample price needs the count to give the fee.
ALTER TABLE service_records
    ADD COLUMN sample_count integer CHECK (sample_count IS NULL OR sample_count >= 0);

-- Which import wrote a row (NULL: typed in elsewhere), so a batch can be traced to what it changed.
ALTER TABLE instrument_exemptions ADD COLUMN import_batch_id bigint REFERENCES import_batches (id);
ALTER TABLE price_list ADD COLUMN import_batch_id bigint REFERENCES import_batches (id);
ALTER TABLE service_cases ADD COLUMN import_batch_id bigint REFERENCES import_batches (id);
