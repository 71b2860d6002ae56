-- Issue 13: registry facts the graded unit cannot bend.
--
-- People belong to someone: the unit that registered a platform person (NULL: the operator).
-- A unit manager maps identities only to the unit's own people, never moves a person to another
-- organisation. Existing people are given to the one unit whose identity map names them, if
-- exactly one does; the others stay the operator's.
ALTER TABLE platform_users ADD COLUMN owner_unit_id text REFERENCES units (id);
UPDATE platform_users p SET owner_unit_id = m.unit_id
FROM (SELECT user_id, min(unit_id) AS unit_id FROM identity_map GROUP BY user_id
      HAVING count(DISTINCT unit_id) = 1) m
WHERE m.user_id = p.id;

-- Changes that move the figures are proposals: a unit manager's change of an instrument's rated
-- hours, value, category, dates, opening or sharing mode, of a person's organisation, of an
-- affiliation or an exemption waits here until the operator (or an evaluator, per deployment
-- setting) accepts it; only then is it written to the registry (and audited there as well).
-- One row per field: before and after as JSON values.
CREATE TABLE registry_proposals (
    id           bigserial PRIMARY KEY,
    unit_id      text NOT NULL REFERENCES units (id),
    target       text NOT NULL CHECK (target IN ('instruments', 'platform_users', 'unit_affiliations',
                                                 'instrument_exemptions')),
    row_key      text NOT NULL CHECK (btrim(row_key) <> ''),
    field        text NOT NULL CHECK (btrim(field) <> ''),
    before       jsonb,
    after        jsonb,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'accepted', 'declined', 'superseded')),
    proposed_by  text NOT NULL,
    proposed_at  timestamptz NOT NULL,
    decided_by   text,
    decided_at   timestamptz,
    note         text NOT NULL DEFAULT '',
    CHECK ((status IN ('pending', 'superseded')) = (decided_at IS NULL))
);
CREATE INDEX registry_proposals_unit ON registry_proposals (unit_id, status, proposed_at);
-- at most one open proposal per field of a row: a newer one supersedes it
CREATE UNIQUE INDEX registry_proposals_open ON registry_proposals (target, row_key, field)
    WHERE status = 'pending';

CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON registry_proposals
    FOR EACH ROW EXECUTE FUNCTION audit_row('id');
