-- Every version of every definition a saga has run on. A saga is pinned to
-- (definition, version) so a changed YAML file never changes a running saga.
CREATE TABLE definition_snapshots (
    name        TEXT        NOT NULL,
    version     TEXT        NOT NULL,  -- SHA-256 of the YAML source
    source      TEXT        NOT NULL,
    file        TEXT        NOT NULL,
    first_seen  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE sagas (
    id             UUID        PRIMARY KEY,
    definition     TEXT        NOT NULL,
    version        TEXT        NOT NULL,
    status         TEXT        NOT NULL,
    business_key   TEXT,
    -- Hash of the start input, so a repeated start with the same key but another input is told apart.
    input_hash     TEXT        NOT NULL,
    -- The engine's Instance as JSON: the single source of truth for the saga's state.
    state          JSONB       NOT NULL,
    -- Optimistic concurrency: bumped by every transition.
    revision       BIGINT      NOT NULL DEFAULT 1,
    trace_context  TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    FOREIGN KEY (definition, version) REFERENCES definition_snapshots (name, version)
);

CREATE UNIQUE INDEX sagas_business_key ON sagas (definition, business_key) WHERE business_key IS NOT NULL;
CREATE INDEX sagas_status_updated ON sagas (status, updated_at);
CREATE INDEX sagas_definition_created ON sagas (definition, created_at, id);
CREATE INDEX sagas_created ON sagas (created_at, id);
