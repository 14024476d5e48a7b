-- Every message the consumer dead-letters is also kept here, so operators can list,
-- inspect, redrive or discard it through the API (docs/operations in api.md, "Dead
-- letters"). The dead-letter topic still gets each one, for tools that read it.
-- One row per source message: a redelivery of the same offset is not a second row.
CREATE TABLE dead_letters (
    id                BIGSERIAL   PRIMARY KEY,
    at                TIMESTAMPTZ NOT NULL DEFAULT now(),
    kind              TEXT        NOT NULL,
    reason            TEXT        NOT NULL,
    source_topic      TEXT        NOT NULL,
    source_partition  INTEGER     NOT NULL,
    source_offset     BIGINT      NOT NULL,
    message_key       TEXT        NOT NULL,
    -- [[name, value], …] as text; `redrivable` is false when a name, value or the key
    -- held bytes that could not be kept exactly (U+0000, invalid UTF-8).
    headers           JSONB       NOT NULL,
    payload           BYTEA       NOT NULL,
    redrivable        BOOLEAN     NOT NULL,
    saga_id           UUID,
    status            TEXT        NOT NULL DEFAULT 'open',
    resolved_at       TIMESTAMPTZ,
    resolved_by       TEXT,
    resolution        TEXT,
    UNIQUE (source_topic, source_partition, source_offset)
);
CREATE INDEX dead_letters_status ON dead_letters (status, id);
