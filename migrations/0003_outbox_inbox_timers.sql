-- Messages to publish, written in the transaction that decided to send them and
-- deleted once the broker acknowledged them. Published in id order.
CREATE TABLE outbox (
    id          BIGSERIAL   PRIMARY KEY,
    saga_id     UUID        NOT NULL,
    topic       TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    headers     JSONB       NOT NULL,
    payload     BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Ids of messages already applied, so a redelivered reply or trigger is applied once.
CREATE TABLE inbox (
    message_id   TEXT        PRIMARY KEY,
    saga_id      UUID,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX inbox_received ON inbox (received_at);

-- Step timeouts, retry backoffs and saga deadlines. A row fires once: the transition
-- it triggers deletes it in the same transaction.
CREATE TABLE timers (
    saga_id   UUID        NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
    timer     TEXT        NOT NULL,  -- canonical JSON of engine::Timer
    due_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (saga_id, timer)
);

CREATE INDEX timers_due ON timers (due_at);
