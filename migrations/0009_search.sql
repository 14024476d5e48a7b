-- Search (docs/api.md, "Finding sagas"): the step a saga is at, the text of its
-- failure, a business-key prefix and a field of its input. Every filter has an index.
--
-- `current_step` and `failure_reason` change with the saga and are written with every
-- transition. The input never changes, so it lives in a table of its own that is
-- written once at start: a GIN index over `sagas.state` would be rewritten by every
-- transition of every saga.
ALTER TABLE sagas ADD COLUMN current_step TEXT, ADD COLUMN failure_reason TEXT;

UPDATE sagas SET failure_reason = state->'failure'->>'reason', current_step = state->'failure'->>'step'
    WHERE state->'failure' IS NOT NULL AND state->'failure' <> 'null'::jsonb;

CREATE INDEX sagas_step_created ON sagas (current_step, created_at, id) WHERE current_step IS NOT NULL;
CREATE INDEX sagas_key_prefix ON sagas (business_key text_pattern_ops) WHERE business_key IS NOT NULL;

-- pg_trgm ships with PostgreSQL (contrib) and is a trusted extension: the database
-- owner may create it. It serves `failure_reason ILIKE '%text%'`.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX sagas_failure_trgm ON sagas USING gin (failure_reason gin_trgm_ops)
    WHERE failure_reason IS NOT NULL;

CREATE TABLE saga_inputs (
    saga_id  UUID  PRIMARY KEY REFERENCES sagas (id) ON DELETE CASCADE,
    input    JSONB NOT NULL
);
INSERT INTO saga_inputs (saga_id, input) SELECT id, state->'input' FROM sagas;
CREATE INDEX saga_inputs_input ON saga_inputs USING gin (input jsonb_path_ops);
