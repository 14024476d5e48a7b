-- The timeline: one row per thing that happened to a saga (every attempt, reply,
-- timeout, compensation, operator action), written in the same transaction as the state.
CREATE TABLE saga_history (
    id          BIGSERIAL   PRIMARY KEY,
    saga_id     UUID        NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
    at          TIMESTAMPTZ NOT NULL,
    kind        TEXT        NOT NULL,
    step        TEXT,
    phase       TEXT,
    attempt     INTEGER,
    command_id  UUID,
    detail      JSONB       NOT NULL DEFAULT '{}'
);

CREATE INDEX saga_history_saga ON saga_history (saga_id, id);
